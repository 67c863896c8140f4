"""QKS: see docs/methods/qks.md."""
from mlc.methods.qks import claim, figures, model, prompts  # noqa: F401  (each registers what it defines)
