"""QKS: see docs/methods/open_vocabulary.md."""
from mlc.methods.qks import claim, figures, model, prompts  # noqa: F401  (each registers what it defines)
