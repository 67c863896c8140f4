"""SGRE: semantic-guided representation enhancement (Zhu et al., IEEE TCSVT 2024), faithful to jasonseu/SGRE @ 8439d14.

image -> backbone tokens [B, N, D] (-> drop CLS) -> + sine positions -> one-layer encoder -> x [B, N, D]
  object level: label attention (label embeddings x tokens) -> label features f [B, C, D]
                -> one linear classifier per label -> auxiliary logits [B, C]   (loss only)
  pixel level:  every pixel attends to the label features (softmax over labels, no 1/sqrt(D))
                -> enhanced pixels x^ [B, N, D] -> MLP on [x, x^] -> [B, N, C] -> max over pixels
                -> logits [B, C]   (the prediction)

Loss (inside the official forward; here :func:`sgre_method`): ASL(logits) + lambda ASL(aux logits).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core.registry import register_method, register_model, register_official
from mlc.modeling.backbones import create_backbone
from mlc.modeling.convert import official_backbone_keys, rename_state_dict
from mlc.modeling.embeddings import fixed_label_embeddings
from mlc.modeling.layers import EncoderLayer, GroupWiseLinear, LowRankBilinearAttention, sine_position_encoding
from mlc.modeling.losses import build_loss
from mlc.modeling.method import Method


@dataclass
class SGREConfig:
    backbone: str = "toy_cnn"
    pretrained: bool = False
    backbone_weights: str | None = path_field()
    pos: bool = True                     # sine positional encoding (--pos, in every README command)
    rm_cls: bool = False                 # drop a ViT's CLS token (--rm-cls, as the README's ViT commands do)
    enc_layers: int = 1
    heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    pre_norm: bool = False               # --normalize-before
    att_dim: int = 1024
    tau: float = 1.0                     # label-attention temperature (--tau)
    head_dropout: float = 0.5            # dropout inside the pixel-level MLP
    label_embeddings: str = path_field("words")      # "random" (learnable), "words" (toy), or a .npy file [C, E]
    embed_dim: int = 768
    label_chunk: int | None = None
    fuse_score: bool = True
    object_loss_weight: float = 1.0      # lambda (--lamda): VOC 0.1, COCO 0.4, NUS-WIDE 0.05 in the README


def _pointwise_block(dim: int) -> nn.Sequential:
    """1x1 Conv1d (no bias) + BatchNorm1d + ReLU on channel-first [B, D, L] sequences (official net1..net4)."""
    return nn.Sequential(nn.Conv1d(dim, dim, 1, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))


class SGRE(nn.Module):
    def __init__(self, cfg: SGREConfig, num_classes: int, label_names: list[str] | None = None):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.backbone_weights)
        d = self.backbone.num_features
        embed = fixed_label_embeddings(cfg.label_embeddings, label_names, num_classes, cfg.embed_dim)
        if embed is None:                   # official --embed-type random: learnable, kaiming-uniform
            self.label_embeddings = nn.Parameter(torch.empty(num_classes, cfg.embed_dim))
            nn.init.kaiming_uniform_(self.label_embeddings)
        else:                               # official: a plain CUDA attribute; here it follows .to()
            self.register_buffer("label_embeddings", embed.float(), persistent=False)
        self.encoder = nn.ModuleList([EncoderLayer(d, cfg.heads, cfg.dim_feedforward, cfg.dropout, cfg.pre_norm)
                                      for _ in range(cfg.enc_layers)])
        self.attention = LowRankBilinearAttention(d, self.label_embeddings.shape[1], cfg.att_dim, tau=cfg.tau,
                                                  fuse_score=cfg.fuse_score, label_chunk=cfg.label_chunk)
        self.object_classifier = GroupWiseLinear(num_classes, d)
        self.pixel_query, self.label_key = _pointwise_block(d), _pointwise_block(d)
        self.label_value, self.pixel_out = _pointwise_block(d), _pointwise_block(d)
        self.pixel_head = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.ReLU(inplace=True), nn.Dropout(cfg.head_dropout),
                                        nn.Linear(2 * d, num_classes))

    @staticmethod
    def _channels(block: nn.Module, seq: torch.Tensor) -> torch.Tensor:
        """Apply a channel-first block to [B, L, D] and return [B, L, D]."""
        return block(seq.transpose(1, 2)).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> logits [B, C] of the pixel branch, object-branch logits and attention maps."""
        tokens, (h, w) = self.backbone(images)                       # [B, N(+1), D]
        keep_cls = self.backbone.has_cls and not self.cfg.rm_cls
        if self.backbone.has_cls and self.cfg.rm_cls:
            tokens = tokens[:, 1:]
        pos = None
        if self.cfg.pos:
            pos = sine_position_encoding(h, w, tokens.shape[-1]).to(tokens)
            if keep_cls:                                             # official crashes here; the CLS token gets 0
                pos = torch.cat([pos.new_zeros(1, pos.shape[1]), pos])
            pos = pos[None]
        x = tokens
        for layer in self.encoder:
            x = layer(x, pos)                                        # [B, N, D]

        feats, alpha = self.attention(x, self.label_embeddings.to(x))   # [B, C, D], [B, C, N]
        object_logits = self.object_classifier(feats)                # [B, C]

        q = self._channels(self.pixel_query, x)                      # [B, N, D]
        k = self.label_key(feats.transpose(1, 2))                    # [B, D, C]
        pixel_to_label = (q @ k).softmax(dim=-1)                     # [B, N, C], unscaled as officially
        v = self._channels(self.label_value, feats)                  # [B, C, D]
        enhanced = self._channels(self.pixel_out, pixel_to_label @ v)    # [B, N, D]
        pixel_logits = self.pixel_head(torch.cat([x, enhanced], dim=-1))  # [B, N, C]
        logits = pixel_logits.max(dim=1).values

        spatial = alpha[:, :, 1:] if keep_cls else alpha
        return {"logits": logits, "object_logits": object_logits, "alpha": alpha,
                "attention": spatial.reshape(*alpha.shape[:2], h, w), "pixel_to_label": pixel_to_label}


@register_model("sgre", SGREConfig)
def build_sgre(cfg: SGREConfig, num_classes: int, label_names: list[str] | None = None) -> SGRE:
    """Build SGRE (registered as ``sgre``)."""
    return SGRE(cfg, num_classes, label_names)


@register_method("sgre")
def sgre_method(model: SGRE, loss_params):
    """loss = ASL(pixel-level logits) + lambda ASL(object-level logits), as the official forward computes it."""
    criterion, weight = build_loss(loss_params), model.cfg.object_loss_weight

    def loss_fn(out, targets):
        pixel, obj = criterion(out["logits"], targets), criterion(out["object_logits"], targets)
        return {"loss": pixel + weight * obj, "pixel": pixel, "object": obj}

    return Method(model=model, loss_fn=loss_fn)


_KEY_RULES = [
    (r"^backbone\.", "backbone.body."),
    (r"^encoder\.layers\.(\d+)\.linear([12])\.", r"encoder.\1.ffn.linear\2."),
    (r"^encoder\.layers\.(\d+)\.", r"encoder.\1."),
    (r"^attention\.linear1\.", "attention.token_proj."),
    (r"^attention\.linear2\.", "attention.label_proj."),
    (r"^attention\.hidden_linear\.", "attention.hidden."),
    (r"^attention\.target_linear\.", "attention.score."),
    (r"^fc\.", "object_classifier."),
    (r"^fc2\.", "pixel_head."),
    (r"^net1\.", "pixel_query."), (r"^net2\.", "label_key."),
    (r"^net3\.", "label_value."), (r"^net4\.", "pixel_out."),
    (r"^embeddings$", "label_embeddings"),        # only with --embed-type random (a parameter)
]


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official SGRE state dict (``best_ema_model.pth``, ``module.`` prefixed) onto :class:`SGRE`.

    ==================================  ==========================================
    official                            kit
    ==================================  ==========================================
    ``backbone.*``                      ``backbone.body.*``
    ``position_embedding.pe``           dropped: recomputed from the grid size
    ``encoder.layers.i.linear{1,2}``    ``encoder.i.ffn.linear{1,2}``
    ``encoder.layers.i.*``              ``encoder.i.*``
    ``attention.*``                     as in SALGL (``token_proj``, ``label_proj``, ``hidden``, ``score``)
    ``fc.{weight,bias}``                ``object_classifier.{weight,bias}``
    ``fc2.{0,3}``                       ``pixel_head.{0,3}``
    ``net1 / net2 / net3 / net4``       ``pixel_query / label_key / label_value / pixel_out``
    ==================================  ==========================================

    The backbone's own layout (ASL's TResNet, the vendored timm ViT with its unused 1000-class ``head``) is
    mapped onto the kit's backbone by :func:`mlc.modeling.convert.official_backbone_keys` when the file is
    loaded into a model (:func:`_official_sgre`).

    The label embeddings are not in official checkpoints (a plain tensor attribute): the kit
    rebuilds them from the params (``label_embeddings``), as the official code reloads its .npy.
    """
    return rename_state_dict(official, _KEY_RULES, drop=("position_embedding.pe",), method="official SGRE")


@register_official("sgre", files=("best_ema_model.pth", "best_model.pth"),
                   description="SGRE experiments/mlic_<data>/<exp>/checkpoints/best_ema_model.pth: the EMA model's "
                               "state dict ('module.'-prefixed); the label embeddings come from the params")
def _official_sgre(official: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    return official_backbone_keys(convert_official_state_dict(official), model)
