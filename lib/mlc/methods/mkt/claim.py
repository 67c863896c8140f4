"""MKT's claim: it beats CLIP zero-shot on the unseen labels (its better stage against ``baselines_zsl.json``)."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.evaluation.claims import clip_zero_shot, methods_of, zsl_map


def _best_stage_against_clip(values: dict) -> tuple:
    mine = max([v for k, v in values.items() if k != "CLIP zero-shot" and v is not None], default=None)
    return mine, [values["CLIP zero-shot"]] if values["CLIP zero-shot"] is not None else []


def _image_stage(mp) -> bool:
    # the prompt stage (stage 2) is shown beside stage 1, not in a row of its own
    return getattr(mp.model, "stage", "image") != "prompt"


@register_claim("mkt", "MKT beats CLIP zero-shot on the unseen labels", order=3, compare=_best_stage_against_clip,
                shown=_image_stage)
def measure(params, method: str) -> tuple[str, dict]:
    """ZSL mAP of this MKT run, of the other MKT stage beside it, and of CLIP zero-shot."""
    values = {method: zsl_map(params, method)}
    for m in methods_of(params, "mkt"):
        if m != method:
            values[m] = zsl_map(params, m)
    values["CLIP zero-shot"] = clip_zero_shot(params)
    return "ZSL mAP", values
