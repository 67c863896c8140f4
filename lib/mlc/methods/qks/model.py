"""QKS: query-based knowledge sharing for open-vocabulary multi-label classification (Zhu et al., ACM TOMM;
arXiv 2401.01181), faithful to jasonseu/QKS @ d06ead7.

image -> frozen CLIP ViT, every token after ln_post [B, 1 + N, W]
      -> Q learnable query tokens (LayerNorm) -> query former: per layer self-attention among the
         queries, cross-attention to the image tokens, feed-forward (post-LN, BERT style)  [B, Q, W]
      -> x proj (CLIP's visual projection, moved out of CLIP and trained)               [B, Q, E]
      -> dot product with the label embeddings (85-prompt CLIP ensembles, not normalised) [B, Q, C]
      -> max over the queries -> logits [B, C]

The query former is written with torch modules (the official code vendors BLIP-2's BERT; its text
embeddings and text FFN are never used and are left out).  Training scores the seen labels; for
open-vocabulary evaluation :meth:`QKS.set_label_embeddings` switches to seen + unseen.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core.registry import register_method, register_model, register_official
from mlc.modeling.clip import grid_size, load_clip, visual_tokens
from mlc.modeling.convert import rename_state_dict, strip_module_prefix
from mlc.modeling.embeddings import build_text_embeddings, default_cache_dir
from mlc.modeling.losses import build_loss
from mlc.modeling.method import Method


@dataclass
class QKSConfig:
    clip_model: str = "mlc-toy-clip"      # open_clip model name (ViT-B-16 for the papers)
    clip_pretrained: str | None = path_field("run")   # "run": the run's CLIP (params.clip); a weight file; None
    num_query_tokens: int = 8             # --num-query-tokens (README: 12 NUS-WIDE, 22 Open Images)
    num_layers: int = 4                   # --num-hidden-layers (README: 7 NUS-WIDE, 8 Open Images)
    heads: int = 12
    ffn_ratio: int = 4                    # FFN width = ratio x the CLIP visual width (3072 for ViT-B/16)
    dropout: float = 0.1
    rm_cls: bool = False                  # --rmcls
    prompts: str = "clip_qks"             # label embeddings: clip_qks (85 templates), clip_mkt, or clip (templates)
    normalize_prompts: bool = False       # QKS averages raw text embeddings
    templates: list[str] = field(default_factory=list)   # prompts: clip: the templates (e.g. the toy captions')
    # where the label-name embeddings are cached; unset: the run's <output_root>/embeddings, or outside a run
    # the user's cache folder
    embedding_cache: str | None = path_field()


class QueryFormerLayer(nn.Module):
    """Self-attention among queries -> cross-attention to image tokens -> FFN, each followed by
    residual + LayerNorm (eps 1e-12), as BLIP-2's Q-Former layers with cross-attention in every layer."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, image_dim: int):
        super().__init__()
        # attention-probability dropout inside MHA; BERT's output projection is MHA's out_proj
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim, eps=1e-12)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True,
                                                kdim=image_dim, vdim=image_dim)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One query-former layer: queries [B, Q, D] attend to themselves, then to the image tokens."""
        a = self.self_attn(q, q, q, need_weights=False)[0]
        q = self.norm_self(q + self.dropout(a))
        c, weights = self.cross_attn(q, image, image, need_weights=True, average_attn_weights=False)
        q = self.norm_cross(q + self.dropout(c))
        q = self.norm_ffn(q + self.dropout(self.ffn(q)))
        return q, weights                                  # weights [B, heads, Q, N]


class QKS(nn.Module):
    def __init__(self, cfg: QKSConfig, num_classes: int, label_names: list[str] | None = None):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        clip_model, _, _ = load_clip(cfg.clip_model, cfg.clip_pretrained)   # the text tower is only used
        # (through the embedding cache) to embed label sets: see set_label_names
        self.visual = clip_model.visual
        width = self.visual.conv1.out_channels
        self.proj = nn.Parameter(self.visual.proj.detach().clone())       # trainable, moved out of CLIP
        self.visual.proj = None
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, width) * 0.02)
        self.query_norm = nn.LayerNorm(width, eps=1e-12)
        self.query_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([QueryFormerLayer(width, cfg.heads, cfg.ffn_ratio * width, cfg.dropout, width)
                                     for _ in range(cfg.num_layers)])
        for m in self.layers.modules():                   # BERT init: N(0, 0.02), zero biases
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.register_buffer("label_embeddings", torch.zeros(num_classes, self.proj.shape[1]), persistent=False)
        if label_names is not None:
            self.set_label_names(label_names)

    def set_label_embeddings(self, table: torch.Tensor) -> None:
        """Score against another label set (e.g. seen + unseen for evaluation)."""
        self.label_embeddings = torch.as_tensor(table, dtype=torch.float32, device=self.proj.device)
        self.num_classes = self.label_embeddings.shape[0]

    def set_label_names(self, names: list[str], cache_dir: str | None = None) -> None:
        """Score the labels ``names`` from now on (their CLIP prompt embeddings, 85 templates by default; cached
        in ``cache_dir``, else the config's ``embedding_cache``)."""
        cache_dir = cache_dir or self.cfg.embedding_cache or default_cache_dir()
        table = build_text_embeddings(self.cfg.prompts, list(names), cache_dir, model_name=self.cfg.clip_model,
                                      pretrained=self.cfg.clip_pretrained, normalize=self.cfg.normalize_prompts,
                                      templates=list(self.cfg.templates))
        self.set_label_embeddings(torch.from_numpy(table))

    def train(self, mode: bool = True):
        """Train mode for the query former only; the frozen CLIP stays in eval mode."""
        super().train(mode)
        self.visual.eval()                                 # frozen tower (no dropout or BN in a CLIP ViT)
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> logits [B, C] (max over queries), winning queries and per-label attention maps."""
        with torch.no_grad():
            tokens = visual_tokens(self.visual, images)    # [B, 1 + N, W]
        if self.cfg.rm_cls:
            tokens = tokens[:, 1:]
        q = self.query_dropout(self.query_norm(self.query_tokens.expand(images.shape[0], -1, -1)))
        attentions = []
        for layer in self.layers:
            q, w = layer(q, tokens)
            attentions.append(w)
        features = q @ self.proj                            # [B, Q, E]
        scores = features @ self.label_embeddings.T         # [B, Q, C]
        logits, indices = scores.max(dim=1)
        # per label: head-averaged last-layer cross-attention of its winning query, on the patch grid
        last = attentions[-1].mean(1)                       # [B, Q, N(+1)]
        patches = last[:, :, 1:] if not self.cfg.rm_cls else last
        h, w = grid_size(self.visual)
        per_label = torch.gather(patches, 1, indices[:, :, None].expand(-1, -1, patches.shape[-1]))
        return {"logits": logits, "indices": indices, "cos_similarity": scores.softmax(1).transpose(1, 2),
                "att_weights": tuple(attentions), "attention": per_label.reshape(*per_label.shape[:2], h, w),
                "query_features": features}


@register_model("qks", QKSConfig)
def build_qks(cfg: QKSConfig, num_classes: int, label_names: list[str] | None = None) -> QKS:
    """Build QKS (registered as ``qks``)."""
    return QKS(cfg, num_classes, label_names)


def _self_attention(sd: dict, prefix: str, out: dict, target: str) -> None:
    q, k, v = (sd.pop(f"{prefix}.self.{n}.weight") for n in ("query", "key", "value"))
    qb, kb, vb = (sd.pop(f"{prefix}.self.{n}.bias") for n in ("query", "key", "value"))
    if q.shape[1] == k.shape[1]:
        out[f"{target}.in_proj_weight"] = torch.cat([q, k, v])
    else:
        out[f"{target}.q_proj_weight"], out[f"{target}.k_proj_weight"], out[f"{target}.v_proj_weight"] = q, k, v
    out[f"{target}.in_proj_bias"] = torch.cat([qb, kb, vb])


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official QKS ``best_model.pth`` onto :class:`QKS`.

    ``clip_model.visual.*`` -> ``visual.*``; ``proj``, ``query_tokens`` kept; ``net.embeddings.LayerNorm`` ->
    ``query_norm``; per layer ``attention.self.{query,key,value}`` -> ``self_attn`` (in_proj),
    ``attention.output.dense`` -> ``self_attn.out_proj``, ``attention.output.LayerNorm`` -> ``norm_self``, the
    same for ``crossattention`` -> ``cross_attn`` (separate q/k/v projections), ``norm_cross``;
    ``intermediate_query.dense`` / ``output_query.dense`` -> ``ffn.0`` / ``ffn.2``, ``output_query.LayerNorm``
    -> ``norm_ffn``.  Dropped: the CLIP text tower, BERT word/position embeddings and the text FFN
    (never used by the forward).
    """
    sd = strip_module_prefix(official)
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("net.encoder.layer.")})
    for i in layers:
        p = f"net.encoder.layer.{i}"
        _self_attention(sd, f"{p}.attention", out, f"layers.{i}.self_attn")
        _self_attention(sd, f"{p}.crossattention", out, f"layers.{i}.cross_attn")
    rules = [
        (r"^clip_model\.visual\.", "visual."),
        (r"^proj$", "proj"), (r"^query_tokens$", "query_tokens"),
        (r"^net\.embeddings\.LayerNorm\.", "query_norm."),
        (r"^net\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.self_attn.out_proj."),
        (r"^net\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.norm_self."),
        (r"^net\.encoder\.layer\.(\d+)\.crossattention\.output\.dense\.", r"layers.\1.cross_attn.out_proj."),
        (r"^net\.encoder\.layer\.(\d+)\.crossattention\.output\.LayerNorm\.", r"layers.\1.norm_cross."),
        (r"^net\.encoder\.layer\.(\d+)\.intermediate_query\.dense\.", r"layers.\1.ffn.0."),
        (r"^net\.encoder\.layer\.(\d+)\.output_query\.dense\.", r"layers.\1.ffn.2."),
        (r"^net\.encoder\.layer\.(\d+)\.output_query\.LayerNorm\.", r"layers.\1.norm_ffn."),
    ]
    # never used by the forward: the CLIP text tower, BERT's word/position embeddings, the text FFN
    unused = re.compile(r"^clip_model\.(?!visual\.)|^net\.embeddings\.(word_embeddings|position_embeddings|"
                        r"position_ids)|^net\.encoder\.layer\.\d+\.(intermediate|output)\.")
    rest = {k: v for k, v in sd.items() if not unused.match(k)}
    out.update(rename_state_dict(rest, rules, method="official QKS"))
    return out


@register_official("qks", files=("best_model.pth",),
                   description="QKS experiments/qks_<data>/<exp>/checkpoints/best_model.pth: the whole model's state "
                               "dict (frozen CLIP included, about 600 MB); the text features come from the params")
def _official_qks(official: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    return convert_official_state_dict(official)


@register_method("qks")
def qks_method(model: QKS, loss_params):
    """Training on the seen labels with the params' loss (README: ASL with gamma_neg 4 on NUS-WIDE, BCE on
    Open Images; unknown labels count as negatives unless ``mask_unknown``)."""
    criterion = build_loss(loss_params)
    return Method(model=model, loss_fn=lambda out, t: {"loss": criterion(out["logits"], t)})
