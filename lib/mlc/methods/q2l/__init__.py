"""Query2Label: see docs/methods/q2l.md."""
from mlc.methods.q2l import claim, model  # noqa: F401  (each registers what it defines)
