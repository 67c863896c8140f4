"""Query2Label (Liu et al., arXiv 2107.10834), faithful to SlongLiu/query2labels @ 55eb050.

image -> backbone tokens [B, N, D] -> (+ sine positional encoding) one-layer encoder
      -> K label queries cross-attend to the tokens in each decoder layer -> LayerNorm
      -> one linear classifier per label (GroupWiseLinear) -> logits [B, K]

Official defaults kept: no input projection (hidden_dim must equal the backbone width), decoder
self-attention removed in every layer, post-norm layers, decoder starts from zeros and adds the
label embeddings as query positions in every layer.  ``convert_official_state_dict`` maps a
released checkpoint onto this module (see its docstring for the key mapping).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core.registry import register_model, register_official
from mlc.methods.q2l.official import check_q2l_config
from mlc.modeling.backbones import create_backbone
from mlc.modeling.convert import official_backbone_keys, rename_state_dict
from mlc.modeling.layers import DecoderLayer, EncoderLayer, GroupWiseLinear, sine_position_encoding


@dataclass
class Q2LConfig:
    backbone: str = "toy_cnn"
    pretrained: bool = False             # ImageNet weights for the backbone (local file or cache)
    backbone_weights: str | None = path_field()  # explicit weight file
    hidden_dim: int = 128
    nheads: int = 4
    enc_layers: int = 1
    dec_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.1
    keep_input_proj: bool = False        # official --keep_input_proj (needed if hidden_dim != backbone width)
    keep_first_self_attn: bool = False   # official --keep_first_self_attn_dec
    keep_other_self_attn: bool = False   # official --keep_other_self_attn_dec


class Query2Label(nn.Module):
    def __init__(self, cfg: Q2LConfig, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.backbone_weights)
        width = self.backbone.num_features
        if cfg.keep_input_proj:
            self.input_proj = nn.Linear(width, cfg.hidden_dim)   # the official 1x1 conv, as a Linear on tokens
        elif width != cfg.hidden_dim:
            raise ValueError(f"Query2Label: hidden_dim {cfg.hidden_dim} differs from the width {width} of backbone "
                             f"{cfg.backbone!r}; set hidden_dim: {width} or keep_input_proj: true")
        else:
            self.input_proj = nn.Identity()
        d = cfg.hidden_dim
        self.encoder = nn.ModuleList([EncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout)
                                      for _ in range(cfg.enc_layers)])
        self.decoder = nn.ModuleList([
            DecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout,
                         self_attention=cfg.keep_first_self_attn if i == 0 else cfg.keep_other_self_attn)
            for i in range(cfg.dec_layers)])
        self.decoder_norm = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() > 1 and (name.startswith("encoder") or name.startswith("decoder")):
                nn.init.xavier_uniform_(p)
        self.query_embed = nn.Embedding(num_classes, d)
        self.head = GroupWiseLinear(num_classes, d)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> logits [B, C], per-label attention maps and the decoder's outputs."""
        tokens, (h, w) = self.backbone(images)                      # [B, N(+1), C]
        if self.backbone.has_cls:
            tokens = tokens[:, 1:]
        src = self.input_proj(tokens)                               # [B, N, d]
        b, _, d = src.shape
        pos = sine_position_encoding(h, w, d).to(src)[None]         # [1, N, d]
        for layer in self.encoder:
            src = layer(src, pos)
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)  # [B, K, d]
        tgt = torch.zeros_like(query_pos)
        attentions = []
        for layer in self.decoder:
            tgt, attn = layer(tgt, src, pos, query_pos)
            attentions.append(attn.reshape(b, self.num_classes, h, w))
        hs = self.decoder_norm(tgt)                                 # [B, K, d]
        return {"logits": self.head(hs), "attention": attentions[-1], "attentions": attentions, "hs": hs}


@register_model("q2l", Q2LConfig)
def build_q2l(cfg: Q2LConfig, num_classes: int, label_names: list[str] | None = None) -> Query2Label:
    """Build Query2Label (registered as ``q2l``)."""
    return Query2Label(cfg, num_classes)


# Official name -> kit name, applied in order to the key after "module." is stripped.
_KEY_RULES = [
    (r"^backbone\.0\.body\.", "backbone.body."),
    (r"^backbone\.0\.", "backbone.body."),          # Swin and CvT are not wrapped in an IntermediateLayerGetter
    (r"^input_proj\.", "input_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear([12])\.", r"encoder.\1.ffn.linear\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.", r"encoder.\1."),
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.", r"decoder.\1.cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear([12])\.", r"decoder.\1.ffn.linear\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"decoder.\1.norm_self."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"decoder.\1.norm_cross."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"decoder.\1.norm_ffn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.", r"decoder.\1.self_attn."),
    (r"^transformer\.decoder\.norm\.", "decoder_norm."),
    (r"^query_embed\.", "query_embed."),
]


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official Query2Label ``state_dict`` (``checkpoint['state_dict']``) onto :class:`Query2Label`.

    ================================================  ==========================================
    official                                          kit
    ================================================  ==========================================
    ``module.`` prefix (DDP)                          stripped
    ``backbone.0.body.*``                             ``backbone.body.*``
    ``backbone.1.pe`` (PE buffer)                     dropped: recomputed from the grid size
    ``input_proj.weight`` [d, C, 1, 1]                ``input_proj.weight`` [d, C]
    ``transformer.encoder.layers.i.linear{1,2}``      ``encoder.i.ffn.linear{1,2}``
    ``transformer.encoder.layers.i.*``                ``encoder.i.*``
    ``transformer.decoder.layers.i.multihead_attn``   ``decoder.i.cross_attn``
    ``transformer.decoder.layers.i.norm{1,2,3}``      ``decoder.i.norm_{self,cross,ffn}``
    ``transformer.decoder.layers.i.linear{1,2}``      ``decoder.i.ffn.linear{1,2}``
    ``transformer.decoder.norm``                      ``decoder_norm``
    ``query_embed.weight``                            ``query_embed.weight``
    ``fc.W`` [1, K, d], ``fc.b`` [1, K]               ``head.weight`` [K, d], ``head.bias`` [K]
    ================================================  ==========================================
    """
    out = rename_state_dict(official, _KEY_RULES + [(r"^fc\.W$", "head.weight"), (r"^fc\.b$", "head.bias")],
                            drop=("backbone.1.pe",), method="official Query2Label")
    out["head.weight"] = out["head.weight"].reshape(out["head.weight"].shape[-2:])     # [1, K, d] -> [K, d]
    out["head.bias"] = out["head.bias"].reshape(-1)
    if "input_proj.weight" in out and out["input_proj.weight"].ndim == 4:               # 1x1 conv -> Linear
        out["input_proj.weight"] = out["input_proj.weight"].flatten(1)
    return out


@register_official("q2l", files=("checkpoint.pkl",), config_file="config_new.json", check_config=check_q2l_config,
                   description="Query2Label model zoo: checkpoint.pkl ({'state_dict', 'epoch', 'best_mAP', ...}, "
                               "keys maybe 'module.'-prefixed) + config_new.json (the training arguments)")
def _official_q2l(official: dict[str, torch.Tensor], model: "Query2Label") -> dict[str, torch.Tensor]:
    return official_backbone_keys(convert_official_state_dict(official), model)
