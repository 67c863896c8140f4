"""QKS's prompt templates: the label embeddings its queries are compared with (encoder ``clip_qks``)."""
from __future__ import annotations

from mlc.core.registry import register_prompts

# QKS's data/prompt_templates.txt: CLIP's 80 ImageNet templates, then 5 scene templates.
QKS_SCENE_TEMPLATES = ["there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
                       "this is the {} in the scene.", "this is one {} in the scene."]


@register_prompts("clip_qks")
def qks_templates() -> list[str]:
    """QKS's 85 prompt templates: open_clip's 80 ImageNet templates plus 5 scene templates."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES] + QKS_SCENE_TEMPLATES
