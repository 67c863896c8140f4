"""MKT: see docs/methods/open_vocabulary.md."""
from mlc.methods.mkt import claim, model, prompts  # noqa: F401  (each registers what it defines)
