"""Max-pooled label maps: a 1x1 convolution scores every label at every grid position (its ``attention``) and an
image's logit is the label's highest position score (multiple-instance pooling)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlc.core.registry import register_model
from mlc.modeling.backbones import create_backbone


@dataclass
class MaxPoolConfig:
    backbone: str = "toy_cnn"
    pretrained: bool = False
    backbone_weights: str | None = None


class MaxPoolMaps(nn.Module):
    def __init__(self, cfg: MaxPoolConfig, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.backbone_weights)
        self.score = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens, (h, w) = self.backbone(images)                        # [B, N, D]
        maps = self.score(tokens).transpose(1, 2)                     # [B, C, N]
        return {"logits": maps.amax(-1), "attention": maps.reshape(maps.shape[0], self.num_classes, h, w)}


@register_model("maxpool_dummy", MaxPoolConfig)
def build(cfg: MaxPoolConfig, num_classes: int, label_names: list[str] | None = None) -> MaxPoolMaps:
    return MaxPoolMaps(cfg, num_classes)
