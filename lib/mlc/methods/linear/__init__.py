"""The backbone + linear head baseline (Q2L's comparison)."""
from mlc.methods.linear import model  # noqa: F401  (each registers what it defines)
