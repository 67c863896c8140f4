"""MKT: see docs/methods/mkt.md."""
from mlc.methods.mkt import model, prompts  # noqa: F401  (each registers what it defines)
