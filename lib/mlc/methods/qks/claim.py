"""QKS's claim: it beats CLIP zero-shot and MKT on the unseen labels."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.evaluation.claims import clip_zero_shot, methods_of, zsl_map


@register_claim("qks", "QKS beats CLIP zero-shot and MKT on the unseen labels", order=4)
def measure(params, method: str) -> tuple[str, dict]:
    """ZSL mAP of the QKS run, of every MKT run, and of CLIP zero-shot."""
    values = {method: zsl_map(params, method)}
    for m in methods_of(params, "mkt"):
        values[f"MKT [{m}]"] = zsl_map(params, m)
    values["CLIP zero-shot"] = clip_zero_shot(params)
    return "ZSL mAP", values
