"""SGRE: see docs/methods/sgre.md."""
from mlc.methods.sgre import claim, model  # noqa: F401  (each registers what it defines)
