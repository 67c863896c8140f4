"""SALGL: scene-aware label graph learning (Zhu et al., ICCV 2023), faithful to jasonseu/SALGL @ a77cab3.

image -> backbone tokens [B, N, D] -> one-layer encoder -> x [B, N, D]
  x.mean(tokens) -> scene classifier -> scene probabilities p [B, S]
  per-scene co-occurrence memory M [S, C, C] (a buffer; counted while training) -> P_s(b | a)
  adjacency per image: P of the argmax scene (hard) or sum_s p_s P_s (soft)
  label attention (label embeddings x tokens) -> label features [B, C, D]
  gated graph network over the adjacency -> [label features, graph output] -> Linear + Tanh
  -> one linear classifier per label -> logits [B, C]

The official repo has no training script; :func:`salgl_method` is the kit's reconstruction (see
docs/methods/salgl.md for every choice it makes).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core import distributed as dist
from mlc.core.registry import register_method, register_model, register_official
from mlc.modeling.backbones import create_backbone
from mlc.modeling.convert import official_backbone_keys, rename_state_dict
from mlc.modeling.embeddings import fixed_label_embeddings
from mlc.modeling.layers import EncoderLayer, GroupWiseLinear, LowRankBilinearAttention, sine_position_encoding
from mlc.modeling.losses import build_loss
from mlc.modeling.method import Method


@dataclass
class SALGLConfig:
    backbone: str = "toy_cnn"
    pretrained: bool = False
    backbone_weights: str | None = path_field()
    num_scenes: int = 4                  # official --num-scenes
    num_steps: int = 3                   # GGNN steps (--num-steps); 0 disables the graph
    soft: bool = False                   # soft scene assignment (--soft)
    outmess: bool = False                # messages along both edge directions (--outmess)
    normalize: bool = False              # row-normalise the transition matrices (--normalize)
    ignore_self: bool = False            # zero their diagonal (--ignore-self)
    pos: bool = False                    # sine positional encoding in the encoder (--pos)
    heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    att_dim: int = 1024
    # "random" (learnable), "words" (toy), "checkpoint" (the weights file's table), or a .npy file [C, E]
    label_embeddings: str = path_field("words")
    embed_dim: int = 768                 # width of the "words" embeddings (BERT's width)
    label_chunk: int | None = None       # compute label attention this many labels at a time
    fuse_score: bool = True              # see LowRankBilinearAttention
    sample_entropy_weight: float = 1.0   # loss = ASL + w1 sample_en + w2 batch_en
    batch_entropy_weight: float = 1.0
    comat_ema: bool = True               # False = official --no-comat-ema: the EMA model uses the live memory


def entropy(p: torch.Tensor) -> torch.Tensor:
    """-sum p log(p + 1e-7) over the last axis (the official formula)."""
    return -(p * torch.log(p + 1e-7)).sum(-1)


def comatrix_to_transition(comatrix: torch.Tensor, ignore_self: bool = False, normalize: bool = False
                           ) -> torch.Tensor:
    """[S, C, C] counts -> P_s[a, b] = M_s[b, a] / (M_s[a, a] + 1e-8), i.e. P(b | a, scene s)."""
    diag = comatrix.diagonal(dim1=-2, dim2=-1)                   # [S, C]
    prob = comatrix.transpose(-1, -2) / (diag[..., None] + 1e-8)
    if ignore_self:
        prob = prob * (1 - torch.eye(prob.shape[-1], device=prob.device, dtype=prob.dtype))
    if normalize:
        prob = prob / (prob.sum(-1, keepdim=True) + 1e-8)
    return prob


class GatedGraphNetwork(nn.Module):
    """GGNN with weights shared over ``steps``: GRU-style gates on messages a = A h (and A^T h)."""

    def __init__(self, dim: int, steps: int, outmess: bool = False):
        super().__init__()
        in_dim = 2 * dim if outmess else dim
        self.steps, self.outmess = steps, outmess
        self.update_a, self.update_h = nn.Linear(in_dim, dim), nn.Linear(dim, dim)        # official fc1_w, fc1_u
        self.reset_a, self.reset_h = nn.Linear(in_dim, dim), nn.Linear(dim, dim)          # fc2_w, fc2_u
        self.candidate_a, self.candidate_h = nn.Linear(in_dim, dim), nn.Linear(dim, dim)  # fc3_w, fc3_u

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """h [B, C, D], adj [B, C, C] -> [B, C, D]."""
        for _ in range(self.steps):
            a = adj @ h
            if self.outmess:
                a = torch.cat([a, adj.transpose(1, 2) @ h], dim=-1)
            z = torch.sigmoid(self.update_a(a) + self.update_h(h))
            r = torch.sigmoid(self.reset_a(a) + self.reset_h(h))
            candidate = torch.tanh(self.candidate_a(a) + self.candidate_h(r * h))
            h = (1 - z) * h + z * candidate
        return h


class SALGL(nn.Module):
    def __init__(self, cfg: SALGLConfig, num_classes: int, label_names: list[str] | None = None):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.backbone_weights)
        d = self.backbone.num_features
        embed = fixed_label_embeddings(cfg.label_embeddings, label_names, num_classes, cfg.embed_dim)
        if embed is None:                       # official: a learnable [C, D] table drawn from N(0, 1)
            self.label_embeddings = nn.Parameter(torch.randn(num_classes, d))
        else:
            self.register_buffer("label_embeddings", embed.float())
        self.register_buffer("comatrix", torch.zeros(cfg.num_scenes, num_classes, num_classes))
        # the official bound: the entropy formula (with its +1e-7) on the uniform distribution
        self.max_entropy = -math.log(1.0 / cfg.num_scenes + 1e-7)
        self.encoder = nn.ModuleList([EncoderLayer(d, cfg.heads, cfg.dim_feedforward, cfg.dropout)])
        self.scene_linear = nn.Linear(d, cfg.num_scenes, bias=False)
        self.attention = LowRankBilinearAttention(d, self.label_embeddings.shape[1], cfg.att_dim,
                                                  fuse_score=cfg.fuse_score, label_chunk=cfg.label_chunk)
        self.ggnn = GatedGraphNetwork(d, cfg.num_steps, cfg.outmess)
        self.fuse = nn.Sequential(nn.Linear(2 * d, d), nn.Tanh()) if cfg.num_steps > 0 else nn.Identity()
        self.classifier = GroupWiseLinear(num_classes, d)

    @torch.no_grad()
    def update_comatrix(self, scene_probs: torch.Tensor, targets: torch.Tensor) -> None:
        """M_s += sum_b w_bs y_b y_b^T, w = one-hot(argmax p) (hard) or p (soft), over the global batch."""
        y = targets.detach().clamp(min=0).float()                   # unknown labels (-1) count as absent
        p = scene_probs.detach().float()
        w = p if self.cfg.soft else nn.functional.one_hot(p.argmax(1), self.cfg.num_scenes).float()
        w, y = dist.all_gather_cat(w), dist.all_gather_cat(y)
        self.comatrix += torch.einsum("bs,bi,bj->sij", w, y, y).to(self.comatrix.dtype)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Images (and, in training, targets for the co-occurrence memory) -> logits, scenes, graphs, attention."""
        tokens, (h, w) = self.backbone(images)                     # [B, N, D], N = hw (+1 with a CLS token)
        pos = None
        if self.cfg.pos:
            pos = sine_position_encoding(h, w, tokens.shape[-1]).to(tokens)
            if self.backbone.has_cls:                              # official crashes here; the CLS token gets 0
                pos = torch.cat([pos.new_zeros(1, pos.shape[1]), pos])
            pos = pos[None]
        x = tokens
        for layer in self.encoder:
            x = layer(x, pos)
        scene_probs = self.scene_linear(x.mean(1)).softmax(-1)   # [B, S]
        sample_en = entropy(scene_probs).mean()
        batch_en = 100 * (self.max_entropy - entropy(scene_probs.mean(0)))
        if self.training and targets is not None:
            self.update_comatrix(scene_probs, targets)            # before the graph step, as officially
        transition = comatrix_to_transition(self.comatrix, self.cfg.ignore_self, self.cfg.normalize)
        if self.cfg.soft:
            adj = torch.einsum("bs,sij->bij", scene_probs, transition.to(scene_probs))
        else:
            adj = transition[scene_probs.argmax(1)]                  # [B, C, C]
        feats, alpha = self.attention(x, self.label_embeddings.to(x))   # [B, C, D], [B, C, N]
        if self.cfg.num_steps > 0:
            feats = self.fuse(torch.cat([feats, self.ggnn(feats, adj.to(feats))], dim=-1))
        logits = self.classifier(feats)
        spatial = alpha[:, :, 1:] if self.backbone.has_cls else alpha
        return {"logits": logits, "scene_probs": scene_probs, "sample_en": sample_en, "batch_en": batch_en,
                "att_weights": alpha, "attention": spatial.reshape(*alpha.shape[:2], h, w), "comat": adj}


@register_model("salgl", SALGLConfig)
def build_salgl(cfg: SALGLConfig, num_classes: int, label_names: list[str] | None = None) -> SALGL:
    """Build SALGL (registered as ``salgl``)."""
    return SALGL(cfg, num_classes, label_names)


@register_method("salgl")
def salgl_method(model: SALGL, loss_params):
    """The training the official repo left out (reconstructed; see docs/methods/salgl.md).

    loss = ASL(logits) + w1 sample_en + w2 batch_en; the targets go into the forward so that the
    memory counts them (training mode only); with ``comat_ema: false`` the EMA model's memory is the
    live one's after every step instead of its average.
    """
    criterion, cfg = build_loss(loss_params), model.cfg

    def loss_fn(out, targets):
        cls = criterion(out["logits"], targets)
        loss = cls + cfg.sample_entropy_weight * out["sample_en"] + cfg.batch_entropy_weight * out["batch_en"]
        return {"loss": loss, "classification": cls, "sample_en": out["sample_en"], "batch_en": out["batch_en"]}

    def on_step_end(live: SALGL, ema: SALGL | None) -> None:
        if ema is not None and not cfg.comat_ema:
            ema.comatrix.copy_(live.comatrix)

    return Method(model=model, loss_fn=loss_fn, forward_fn=lambda m, images, targets: m(images, targets),
                  on_step_end=on_step_end)


# Official name -> kit name (after "module." is stripped); the first match wins.
_KEY_RULES = [
    (r"^embeddings$", "label_embeddings"),
    (r"^comatrix$", "comatrix"),
    (r"^backbone\.", "backbone.body."),
    (r"^tb\.layers\.(\d+)\.linear([12])\.", r"encoder.\1.ffn.linear\2."),
    (r"^tb\.layers\.(\d+)\.", r"encoder.\1."),
    (r"^scene_linear\.", "scene_linear."),
    (r"^ggnn\.fc1_w\.", "ggnn.update_a."), (r"^ggnn\.fc1_u\.", "ggnn.update_h."),
    (r"^ggnn\.fc2_w\.", "ggnn.reset_a."), (r"^ggnn\.fc2_u\.", "ggnn.reset_h."),
    (r"^ggnn\.fc3_w\.", "ggnn.candidate_a."), (r"^ggnn\.fc3_u\.", "ggnn.candidate_h."),
    (r"^attention\.linear1\.", "attention.token_proj."),
    (r"^attention\.linear2\.", "attention.label_proj."),
    (r"^attention\.hidden_linear\.", "attention.hidden."),
    (r"^attention\.target_linear\.", "attention.score."),
    (r"^fc\.0\.", "fuse.0."),
    (r"^classifier\.", "classifier."),
]


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official SALGL state dict (e.g. ``ema_best_model.pth``, ``module.`` prefixed) onto :class:`SALGL`.

    ================================  ==========================================
    official                          kit
    ================================  ==========================================
    ``embeddings``                    ``label_embeddings`` (buffer, or parameter with "random")
    ``comatrix``                      ``comatrix`` (co-occurrence counts, buffer)
    ``backbone.*``                    ``backbone.body.*``
    ``tb.layers.i.linear{1,2}``       ``encoder.i.ffn.linear{1,2}``
    ``tb.layers.i.*``                 ``encoder.i.*``
    ``ggnn.fc{1,2,3}_{w,u}``          ``ggnn.{update,reset,candidate}_{a,h}``
    ``attention.linear1 / linear2``   ``attention.token_proj / label_proj``
    ``attention.hidden_linear``       ``attention.hidden``
    ``attention.target_linear``       ``attention.score``
    ``fc.0`` (Linear 2D -> D, Tanh)   ``fuse.0``
    ``classifier.{weight,bias}``      ``classifier.{weight,bias}``
    ================================  ==========================================
    """
    return rename_state_dict(official, _KEY_RULES, method="official SALGL")


def _table_width_of_file(state: dict[str, torch.Tensor], cfg: SALGLConfig) -> SALGLConfig:
    """``label_embeddings: checkpoint``: the table's width is the file's (768 for BERT, the official default;
    300 for GloVe; the backbone width for ``--embed-type random``), so that any release loads without BERT."""
    if cfg.label_embeddings != "checkpoint":
        return cfg
    table = state.get("embeddings", state.get("label_embeddings"))
    if table is None or table.ndim != 2:
        raise ValueError("label_embeddings is 'checkpoint' but the file holds no label-embedding table "
                         "('embeddings' [C, E])")
    return dataclasses.replace(cfg, embed_dim=int(table.shape[1]))


@register_official("salgl", files=("ema_best_model.pth", "best_model.pth", "latest_model.pth"),
                   adapt_config=_table_width_of_file,
                   description="SALGL experiments/<exp>/checkpoints/ema_best_model.pth: the EMA model's state dict "
                               "('module.'-prefixed, ModelEma wrapper); best_model.pth the live model's")
def _official_salgl(official: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    return official_backbone_keys(convert_official_state_dict(official), model)
