"""The dummy's paper claim: max-pooled label maps beat the baselines the params give it."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.evaluation.claims import baselines_of, test_map


@register_claim("maxpool_dummy", "max-pooled label maps beat mean pooling", order=5)
def measure(params, method: str) -> tuple[str, dict]:
    values = {method: test_map(params, method)}
    for b in baselines_of(params, method):
        values[f"mean pooling [{b}]"] = test_map(params, b)
    return "test mAP", values
