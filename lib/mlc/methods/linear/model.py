"""The baseline every paper measures itself against: the backbone, global average pooling and one linear layer
(Q2L's Table 1 "ResNet-101" row; SALGL's and SGRE's plain backbones).

Because the head is linear, the logits of the pooled feature equal the mean over the grid of each position's
logits; those per-position logits are the label's class activation map (CAM, Zhou et al. 2016), which is its
``attention`` here (signed, like MKT's similarities).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core.registry import register_model
from mlc.modeling.backbones import create_backbone


@dataclass
class LinearConfig:
    backbone: str = "toy_cnn"
    pretrained: bool = False             # ImageNet weights for the backbone (local file or cache)
    backbone_weights: str | None = path_field()


class BackboneLinear(nn.Module):
    def __init__(self, cfg: LinearConfig, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.backbone_weights)
        self.head = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> logits [B, C] of the pooled feature, and each label's activation map [B, C, h, w]."""
        tokens, (h, w) = self.backbone(images)                      # [B, N(+1), D]
        if self.backbone.has_cls:
            tokens = tokens[:, 1:]
        per_position = self.head(tokens)                            # [B, N, C]
        b = per_position.shape[0]
        return {"logits": per_position.mean(1),                     # = head(mean of the tokens)
                "attention": per_position.transpose(1, 2).reshape(b, self.num_classes, h, w)}


@register_model("linear", LinearConfig)
def build_linear(cfg: LinearConfig, num_classes: int, label_names: list[str] | None = None) -> BackboneLinear:
    """Build the backbone + linear head baseline (registered as ``linear``)."""
    return BackboneLinear(cfg, num_classes)
