"""SALGL's claim: scene-aware label graphs beat one global graph (the ``baseline_for: salgl`` run with
``num_scenes: 1``)."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.evaluation.claims import baselines_of, test_map


@register_claim("salgl", "scene-aware label graphs beat one global graph", order=1)
def measure(params, method: str) -> tuple[str, dict]:
    """Test mAP of the SALGL run and of each of its baselines."""
    values = {method: test_map(params, method)}
    for b in baselines_of(params, method):
        label = "one scene (one global graph)" if getattr(params.methods[b].model, "num_scenes", 0) == 1 else b
        values[f"{label} [{b}]"] = test_map(params, b)
    return "test mAP", values
