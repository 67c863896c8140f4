"""SALGL: see docs/methods/salgl.md."""
from mlc.methods.salgl import claim, figures, model  # noqa: F401  (each registers what it defines)
