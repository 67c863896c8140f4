"""MKT: multi-modal knowledge transfer for open-vocabulary multi-label classification (He et al., AAAI 2023;
arXiv 2207.01887), faithful to sunanhe/MKT @ 8db956d.

Stage 1 (``stage: image``): the CLIP image encoder, only its last blocks trainable, scored in two streams
against fixed label embeddings E [C, D] (CLIP text embeddings of "There is a {} in the scene"):

    tokens = CLIP ViT, ln_post on every token;  g = CLS @ proj [B, D];  P = patches @ proj [B, N, D]
    local  = mean of the top-k of P E^T over the patches        [B, C]
    global = g E^T                                              [B, C]
    logits = (local / ||local|| + global / ||global||) / 2       (norms across the C labels of an image)

    loss = ranking loss + L1(g, g of the frozen CLIP teacher)   (distillation)

Stage 2 (``stage: prompt``): the image side frozen; the label embeddings come from the CLIP text encoder
with a learnable context: the template's token vectors train, the label-name tokens stay CLIP's own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlc.config.params import path_field
from mlc.core.registry import register_method, register_model, register_official
from mlc.core.safe_load import load_torch
from mlc.methods.mkt.prompts import MKT_TEMPLATE
from mlc.modeling.clip import grid_size, load_clip, visual_tokens
from mlc.modeling.convert import rename_state_dict, strip_module_prefix
from mlc.modeling.embeddings import build_text_embeddings, default_cache_dir
from mlc.modeling.losses import build_loss
from mlc.modeling.method import Method


@dataclass
class MKTConfig:
    clip_model: str = "mlc-toy-clip"      # ViT-B-16 for the paper
    clip_pretrained: str | None = path_field("run")   # "run": the run's CLIP (params.clip); or a weight file
    stage: str = "image"                  # "image" (stage 1) or "prompt" (stage 2, needs image_checkpoint)
    image_checkpoint: str | None = path_field()   # stage 2: the stage-1 model ("run:<method>": its best.pt)
    topk: int = 16                        # local stream: mean of the top-k patch similarities
    distill_weight: float = 1.0           # stage 1: L1 distillation to the frozen CLIP image embedding
    template: str = MKT_TEMPLATE
    # where the label-name embeddings are cached; unset: the run's <output_root>/embeddings, or outside a run
    # the user's cache folder
    embedding_cache: str | None = path_field()


def stream_scores(patches: torch.Tensor, cls: torch.Tensor, label_embed: torch.Tensor, topk: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(local [B, C], global [B, C], patch similarity [B, N, C]): the two streams before they are combined."""
    sim = patches @ label_embed.T                                   # [B, N, C]
    local = sim.topk(min(topk, sim.shape[1]), dim=1).values.mean(1)
    return local, cls @ label_embed.T, sim


def two_stream_logits(patches: torch.Tensor, cls: torch.Tensor, label_embed: torch.Tensor, topk: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """patches [B, N, D], cls [B, D], label_embed [C, D] -> (logits [B, C], patch similarity [B, C, N])."""
    local, glob, sim = stream_scores(patches, cls, label_embed, topk)
    logits = (local / local.norm(dim=-1, keepdim=True) + glob / glob.norm(dim=-1, keepdim=True)) / 2
    return logits, sim.transpose(1, 2)


class PromptLearner(nn.Module):
    """CLIP's text encoder with a learnable context (MKT's stage 2).

    Officially the whole 49408-row token table is trained while the label-name positions are overwritten
    by a frozen snapshot, so only the rows of the template's tokens ever receive gradient.  Here those rows
    are the only parameters (``context``, one per distinct template token id); AdamW treats every row
    independently, so the embeddings after any number of steps are the same (a test shows it).
    """

    def __init__(self, clip_model, tokenizer, label_names: list[str], template: str = MKT_TEMPLATE):
        super().__init__()
        self.tokenizer, self.template = tokenizer, template
        self.register_buffer("token_table", clip_model.token_embedding.weight.detach().clone(), persistent=False)
        self.positional_embedding = clip_model.positional_embedding
        self.transformer, self.ln_final = clip_model.transformer, clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        for p in (*self.transformer.parameters(), *self.ln_final.parameters(), self.positional_embedding,
                  self.text_projection):
            p.requires_grad_(False)
        empty = tokenizer([template.format("")])[0]
        self.register_buffer("context_ids", torch.unique(empty[empty > 0]), persistent=True)
        self.context = nn.Parameter(self.token_table[self.context_ids].clone())
        self.set_label_names(label_names)

    def set_label_names(self, names: list[str]) -> None:
        """Tokenise the prompts; mark the template positions (prefix and suffix around the label)."""
        tokens = self.tokenizer([self.template.format(n) for n in names])
        prefix_len = len(self.tokenizer([self.template.split("{}")[0].strip()])[0].nonzero()) - 1  # SOT + words
        lengths = (tokens > 0).sum(1)
        suffix = self.tokenizer([self.template.split("{}")[1].strip() or "x"])[0]
        suffix_len = int((suffix > 0).sum()) - 1 if self.template.split("{}")[1].strip() else 1
        slot = torch.full_like(tokens, -1)
        lookup = {int(t): i for i, t in enumerate(self.context_ids)}
        for r in range(len(names)):
            n = int(lengths[r])
            positions = list(range(prefix_len)) + list(range(n - suffix_len, n))
            for p in positions:
                slot[r, p] = lookup.get(int(tokens[r, p]), -1)
        self.register_buffer("tokens", tokens.to(self.token_table.device), persistent=False)
        self.register_buffer("slot", slot.to(self.token_table.device), persistent=False)

    def forward(self) -> torch.Tensor:
        """The prompt embeddings of every label [C, E] from the learned context."""
        x = self.token_table[self.tokens]                           # [C, L, W] CLIP's rows (label names)
        mask = self.slot >= 0
        x = torch.where(mask[..., None], self.context[self.slot.clamp(min=0)], x)   # template rows: learnt
        x = x + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0]), self.tokens.argmax(-1)]
        return eot @ self.text_projection                          # [C, D], not normalised


class MKT(nn.Module):
    def __init__(self, cfg: MKTConfig, num_classes: int, label_names: list[str] | None = None):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        clip_model, _, tokenizer = load_clip(cfg.clip_model, cfg.clip_pretrained)
        self.visual = clip_model.visual                            # student (stage 1), frozen in stage 2
        self.register_buffer("label_embeddings", torch.zeros(num_classes, self.visual.proj.shape[1]),
                             persistent=False)
        self.prompt = None
        if cfg.stage == "prompt":
            if cfg.image_checkpoint:
                self._load_image_encoder(cfg.image_checkpoint)
            for p in self.visual.parameters():
                p.requires_grad_(False)
            self.prompt = PromptLearner(clip_model, tokenizer, list(label_names or ["x"] * num_classes), cfg.template)
        elif label_names is not None:
            self.set_label_names(label_names)

    label_set_dependent = True     # scores are normalised across the label set: ZSL needs its own forward

    def _load_image_encoder(self, path: str) -> None:
        from pathlib import Path
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no stage-1 image encoder; train MKT's first stage (method with "
                                    f"stage: image) before the prompt stage")
        state = load_torch(path)
        state = strip_module_prefix(state.get("model", state.get("state_dict", state)))
        if "conv1.weight" in state and "class_embedding" in state:      # an official stage-1 file (CLIPVIT)
            state = convert_official_state_dict(state)
        visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        try:
            self.visual.load_state_dict(visual)
        except RuntimeError as e:
            raise RuntimeError(f"{path}: the stage-1 checkpoint does not fit {self.cfg.clip_model}: {e}") from None

    def set_label_embeddings(self, table: torch.Tensor) -> None:
        """Use ``table`` [C, E] as the label embeddings (stage 1); C may change."""
        self.label_embeddings = torch.as_tensor(table, dtype=torch.float32, device=self.visual.proj.device)
        self.num_classes = self.label_embeddings.shape[0]

    def set_label_names(self, names: list[str], cache_dir: str | None = None) -> None:
        """Stage 1: CLIP text embeddings of the template (cached in ``cache_dir``, else the config's
        ``embedding_cache``); stage 2: re-tokenise the prompts."""
        if self.prompt is not None:
            self.prompt.set_label_names(list(names))
            self.num_classes = len(names)
            return
        cache_dir = cache_dir or self.cfg.embedding_cache or default_cache_dir()
        table = build_text_embeddings("clip", list(names), cache_dir, model_name=self.cfg.clip_model,
                                      pretrained=self.cfg.clip_pretrained, templates=[self.cfg.template],
                                      normalize=False)
        self.set_label_embeddings(torch.from_numpy(table))

    def train(self, mode: bool = True):
        """Train mode for the trained parts only; the frozen CLIP stays in eval mode."""
        super().train(mode)
        if self.prompt is not None:
            self.visual.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch features [B, N, D], global feature [B, D]): both through CLIP's ``proj``."""
        tokens = visual_tokens(self.visual, images) @ self.visual.proj
        return tokens[:, 1:], tokens[:, 0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> logits [B, C], patch features, the distilled feature and per-label similarity maps."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.prompt is None):
            patches, glob = self.encode_image(images)
        label_embed = self.prompt() if self.prompt is not None else self.label_embeddings
        logits, sim = two_stream_logits(patches, glob, label_embed, self.cfg.topk)
        h, w = grid_size(self.visual)
        return {"logits": logits, "pred_feat": patches, "dist_feat": glob,
                "attention": sim.reshape(*sim.shape[:2], h, w)}


@register_model("mkt", MKTConfig, map_kind="patch-label similarity")
def build_mkt(cfg: MKTConfig, num_classes: int, label_names: list[str] | None = None) -> MKT:
    """Build MKT (registered as ``mkt``)."""
    return MKT(cfg, num_classes, label_names)


_STAGE1_RULES = [
    (r"^class_embedding$", "visual.class_embedding"),
    (r"^positional_embedding$", "visual.positional_embedding"),
    (r"^projection_dist$", "visual.proj"),
    (r"^(conv1|ln_pre|ln_post|transformer)\.", r"visual.\1."),
]


def convert_official_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official stage-1 ``CLIPVIT`` state dict (``model_epoch_*.pth``) onto :class:`MKT` (stage 1).

    ``class_embedding``, ``positional_embedding``, ``conv1``, ``ln_pre``, ``transformer.*``, ``ln_post`` ->
    ``visual.*``; ``projection_dist`` (CLIP's ``visual.proj``) -> ``visual.proj``; the unused ``projection``
    MLP is dropped.
    """
    sd = {k: v for k, v in official.items() if not k.replace("module.", "", 1).startswith("projection.")}
    return rename_state_dict(sd, _STAGE1_RULES, method="official MKT stage-1")


def convert_official_prompt_state_dict(official: dict[str, torch.Tensor], model: "MKT") -> dict[str, torch.Tensor]:
    """Map an official stage-2 ``PromptLearner`` checkpoint (``model_{epoch}.pth``, ``module.`` prefixed) onto
    the prompt of a stage-2 :class:`MKT` built on the same CLIP.

    Only the template rows of the tuned ``token_embedding.weight`` carry what stage 2 learnt: they become
    ``prompt.context``.  The other text weights must equal the CLIP the model was built from (they are
    frozen officially too); a mismatch means another CLIP and is an error.
    """
    sd = strip_module_prefix(official)
    if "token_embedding.weight" not in sd:
        raise KeyError("official MKT stage-2 checkpoint has no 'token_embedding.weight'")
    prompt = model.prompt
    if prompt is None:
        raise ValueError("the model is a stage-1 MKT (stage: image); build it with stage: prompt")
    for key, mine in (("positional_embedding", prompt.positional_embedding),
                      ("text_projection", prompt.text_projection)):
        if key in sd and not torch.allclose(sd[key].float(), mine.detach().float().cpu(), atol=1e-5):
            raise ValueError(f"official MKT stage-2 checkpoint: {key!r} differs from the CLIP this model was built "
                             f"from ({model.cfg.clip_model}); load the same CLIP weights")
    return {"prompt.context": sd["token_embedding.weight"][prompt.context_ids.cpu()].clone()}


@register_official("mkt", files=("model_epoch_*.pth", "model_*.pth"),
                   description="MKT stage 1: the CLIPVIT image encoder's state dict (model_epoch_<e>.pth); stage 2: "
                               "the PromptLearner's DDP state dict (model_<e>.pth, 'module.'-prefixed), whose model "
                               "also needs the stage-1 file as image_checkpoint")
def _official_mkt(official: dict[str, torch.Tensor], model: "MKT") -> dict[str, torch.Tensor]:
    if model.prompt is None:
        return convert_official_state_dict(official)
    if "token_embedding.weight" not in strip_module_prefix(official):
        raise ValueError("this is a stage-2 (prompt) MKT model but the checkpoint has no 'token_embedding.weight': "
                         "give the stage-2 file (model_<epoch>.pth), or build a stage-1 model (stage: image)")
    return {**model.state_dict(), **convert_official_prompt_state_dict(official, model)}


@register_method("mkt")
def mkt_method(model: MKT, loss_params):
    """Stage 1: ranking loss + distill_weight x L1(student CLS feature, frozen CLIP teacher's), images
    without a positive dropped from the loss.  Stage 2: ranking loss only, image side frozen."""
    import copy

    criterion = build_loss(loss_params)
    teacher = None
    if model.prompt is None and model.cfg.distill_weight:
        teacher = copy.deepcopy(model.visual).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def forward_fn(m, images, targets):
        out = m(images)
        if m.training and teacher is not None:
            teacher.to(images.device)
            with torch.no_grad():
                out["teacher_feat"] = visual_tokens(teacher, images)[:, 0] @ teacher.proj
        return out

    def loss_fn(out, targets):
        keep = (targets == 1).any(1)                              # images with a positive label
        rank = criterion(out["logits"][keep], targets[keep]) if keep.any() else out["logits"].sum() * 0
        losses = {"loss": rank, "rank": rank}
        if "teacher_feat" in out:
            dist = nn.functional.l1_loss(out["dist_feat"], out["teacher_feat"])
            losses.update(loss=rank + model.cfg.distill_weight * dist, distill=dist)
        return losses

    return Method(model=model, loss_fn=loss_fn, forward_fn=forward_fn)
