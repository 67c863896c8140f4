"""MKT's prompt: the one template of its label embeddings (encoder ``clip_mkt``)."""
from __future__ import annotations

from mlc.core.registry import register_prompts

MKT_TEMPLATE = "There is a {} in the scene"


@register_prompts("clip_mkt")
def mkt_templates() -> list[str]:
    """MKT's single template."""
    return [MKT_TEMPLATE]
