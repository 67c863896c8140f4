"""SGRE's claim: its prediction (pixel level, fed by the object-level label features) beats the object-level
branch alone; both are outputs of the one trained model, scored alone on the test split."""
from __future__ import annotations

from mlc.core.registry import register_claim
from mlc.engine import stage
from mlc.evaluation.evaluate import output_maps

OUTPUTS = {"prediction (pixel level)": "logits", "object-level branch alone": "object_logits"}


@register_claim("sgre", "SGRE's prediction (pixel level, fed by the object-level label features) beats the "
                "object-level branch alone", order=2, outputs=OUTPUTS)
def measure(params, method: str) -> tuple[str, dict]:
    """Test mAP of the model's two outputs."""
    if not stage.is_finished(params.run_dir / method):
        return "test mAP", dict.fromkeys(OUTPUTS)
    maps = output_maps(params, method, OUTPUTS)
    return "test mAP", {k: 100 * v for k, v in maps.items()}
