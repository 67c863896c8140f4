"""Query2Label's claim: it beats its backbone with a linear head (the ``baseline_for: q2l`` run)."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.evaluation.claims import baselines_of, test_map


@register_claim("q2l", "Q2L beats its backbone with a linear head", order=0)
def measure(params, method: str) -> tuple[str, dict]:
    """Test mAP of the Q2L run and of each of its baselines."""
    values = {method: test_map(params, method)}
    for b in baselines_of(params, method):
        label = "backbone + linear head" if params.methods[b].model_name == "linear" else b
        values[f"{label} [{b}]"] = test_map(params, b)
    return "test mAP", values
