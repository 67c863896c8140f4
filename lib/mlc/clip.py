"""CLIP through open_clip: OpenAI ViT-B/16 on real data, the toy CLIP in the toy world.

The toy CLIP is an ordinary open_clip model built from the kit's config ``mlc-toy-clip``
(``lib/mlc/clip_configs/``: a ViT with 8 px patches on 64 px images and a small text transformer),
pretrained contrastively on the toy world's captions by :func:`train_toy_clip` and saved as a plain
open_clip state dict.  Every consumer loads either model the same way::

    model, preprocess, tokenizer = load_clip("mlc-toy-clip", "outputs/toy/clip/mlc-toy-clip.pt")
    model, preprocess, tokenizer = load_clip("ViT-B-16", "/models/ViT-B-16.pt")   # or "openai" from the cache
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write_stream, atomic_write_text
from .models.backbones import MissingWeightsError
from .online import hf_cached, offline, offline_hint
from .progress import bar as progress_bar

CONFIG_DIR = Path(__file__).parent / "clip_configs"
_registered = False


def _register_configs() -> None:
    global _registered
    if not _registered:
        import open_clip
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def load_clip(model_name: str, pretrained: str | None = None, device: str = "cpu"):
    """(model in eval mode, eval preprocess, tokenizer).  ``pretrained``: a local file, "openai" (open_clip's
    download into its cache; offline, the cached file only: see :mod:`mlc.online`), or None (random weights).
    A missing file is an error saying what to fetch."""
    import open_clip
    _register_configs()
    config = open_clip.get_model_config(model_name) or {}
    if pretrained == "openai" and not config.get("quick_gelu", False):
        # open_clip builds e.g. ViT-B-16 with nn.GELU; OpenAI's weights were trained with QuickGELU, and loading
        # them into a GELU model changes every output without a word
        raise ValueError(f"CLIP {model_name!r} is built with nn.GELU, but OpenAI's weights were trained with "
                         f"QuickGELU: use {model_name + '-quickgelu'!r} (as the kit's paper configs do)")
    if pretrained not in (None, "openai") and not Path(pretrained).is_file():
        hint = ("train it with notebooks/02_toy_clip.ipynb" if model_name.startswith("mlc-") else
                f"download the OpenAI weights (e.g. ViT-B-16.pt from openaipublic) and save them as {pretrained}")
        raise MissingWeightsError(f"CLIP weights not found: {pretrained}; {hint}")
    if pretrained == "openai" and offline():         # no network: the cached file, or an error at once
        pretrained = _cached_openai(model_name)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device,
                                                                     output_dict=True)
    except RuntimeError as e:
        if pretrained == "openai":
            raise MissingWeightsError(f"OpenAI weights for {model_name} could not be downloaded by open_clip ({e}); "
                                      f"set clip.pretrained to a local file such as ViT-B-16.pt") from None
        raise
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


def openai_weights(model_name: str) -> tuple[str, str | None]:
    """(where open_clip downloads ``model_name``'s OpenAI weights from, the file already in its caches or None):
    the Hugging Face repo of open_clip's pretrained config, or the legacy URL cache ~/.cache/clip.  No request."""
    import open_clip
    _register_configs()
    cfg = open_clip.get_pretrained_cfg(model_name, "openai") or {}
    hub = (cfg.get("hf_hub") or "").rstrip("/")
    path = hf_cached(hub, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")) if hub else None
    legacy = Path("~/.cache/clip").expanduser() / Path(cfg.get("url", "none")).name
    if path is None and legacy.is_file():
        path = str(legacy)
    return (f"https://huggingface.co/{hub}" if hub else cfg.get("url", "?")), path


def _cached_openai(model_name: str) -> str:
    """The OpenAI weights of ``model_name`` in open_clip's caches; missing is an error at once."""
    source, path = openai_weights(model_name)
    if path is None:
        raise MissingWeightsError(f"OpenAI weights for {model_name} are not in open_clip's cache ({source}, or "
                                  f"~/.cache/clip); set clip.pretrained to a local file such as ViT-B-16.pt\n"
                                  + offline_hint("them"))
    return path


def clip_key(params) -> str:
    """A key of everything that determines a trained toy CLIP (its config, recipe and the toy world)."""
    import open_clip
    _register_configs()
    from .engine import resolve_amp
    recipe = {k: v for k, v in asdict(params.clip).items() if k not in ("zero_shot_template", "pretrained", "amp")}
    if resolve_amp(params.clip.amp, torch.device("cpu")) is not None:   # the precision it really trains in here
        recipe["precision"] = "bf16"
    blob = json.dumps({"config": open_clip.get_model_config(params.clip.model), "recipe": recipe,
                       "world": params.data.toy.key(), "seed": params.seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def clip_checkpoint(params) -> Path:
    """Where the run's CLIP weights are: ``clip.pretrained`` or the toy CLIP trained for this run."""
    if params.clip.pretrained:
        return Path(params.clip.pretrained) if params.clip.pretrained == "openai" else \
            params.resolve_path(params.clip.pretrained)
    return params.resolve_path(params.output_root) / "clip" / f"{params.clip.model}-{clip_key(params)}.pt"


class CaptionDataset(torch.utils.data.Dataset):
    """(image, caption tokens) pairs; the small toy images are decoded once and kept in memory.

    With ``variants`` each draw rewrites the caption from what it names (the image's objects and, half
    of the time, its scene), with a random subset of the objects in random order: "a blue star and a red
    circle", "a red circle at the beach".  Web captions vary like this; one fixed sentence per image
    teaches a small model little about single objects.  It uses no more than the caption already says.
    """

    def __init__(self, manifest, split, preprocess, tokenizer, variants: bool = False, seed: int = 0):
        from PIL import Image
        df = manifest.split(split)
        if "caption" not in df:
            raise ValueError(f"{manifest.root}: split {split!r} has no captions to pretrain a CLIP on")
        self.tokenizer, self.variants = tokenizer, variants
        self.captions = df["caption"].tolist()
        self.tokens = tokenizer(self.captions)
        names = manifest.label_names
        self.objects = [[names[i] for i in pos] for pos in df["pos"]]
        scenes = manifest.meta.get("scenes")
        self.scenes = [scenes[s] for s in df["scene"]] if scenes and "scene" in df else [None] * len(df)
        self.rng = np.random.default_rng(seed)
        images = []
        for rel in df["image"]:
            with Image.open(manifest.image_root / rel) as img:
                images.append(preprocess(img.convert("RGB")))
        self.images = torch.stack(images)

    def __len__(self):
        return len(self.tokens)

    def variant(self, i: int) -> str:
        """A caption naming a random subset of the image's objects, in random order (and the scene half the time)."""
        objs = list(self.objects[i])
        if not objs:
            return self.captions[i]
        k = self.rng.integers(1, len(objs) + 1)
        picked = [objs[j] for j in self.rng.permutation(len(objs))[:k]]
        text = " and ".join(("an " if o[0] in "aeiou" else "a ") + o for o in picked)
        if self.scenes[i] and self.rng.random() < 0.5:
            from .data.toyworld import SCENE_PHRASES
            text += " " + SCENE_PHRASES.get(self.scenes[i], f"at the {self.scenes[i]}")
        return text

    def __getitem__(self, i):
        if self.variants:
            return self.images[i], self.tokenizer([self.variant(i)])[0]
        return self.images[i], self.tokens[i]


def train_toy_clip(params, manifest, progress: bool = True) -> dict:
    """Contrastive pretraining of ``params.clip.model`` on the train captions; returns the record
    (path, history, seconds).  Reuses a finished checkpoint with the same key."""
    import open_clip
    path = clip_checkpoint(params)
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return json.loads(record_path.read_text())
    if params.clip.pretrained:
        raise ValueError("clip.pretrained is set: nothing to train")
    cp = params.clip
    torch.manual_seed(params.seed)
    _register_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(cp.model, output_dict=True)
    tokenizer = open_clip.get_tokenizer(cp.model)
    data = CaptionDataset(manifest, "train", preprocess, tokenizer, variants=cp.caption_variants, seed=params.seed)
    val = CaptionDataset(manifest, "val", preprocess, tokenizer) if "val" in manifest.split_names else None
    g = torch.Generator().manual_seed(params.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=cp.batch_size, shuffle=True, drop_last=True, generator=g)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cp.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cp.lr, betas=(0.9, 0.98), eps=1e-6)
    # the engine's per-step cosine schedule with linear warm-up (to zero; CLIP pretraining has no floor)
    from types import SimpleNamespace

    from .engine import build_scheduler
    sched, _ = build_scheduler(opt, SimpleNamespace(scheduler="cosine", epochs=cp.epochs, lr=cp.lr, min_lr=0.0,
                                                    warmup_epochs=cp.warmup_epochs), len(loader))
    loss_fn = open_clip.ClipLoss()
    from .engine import _Autocast
    autocast = _Autocast(torch.device("cpu"), cp.amp)   # bf16 only where the CPU has it in hardware
    history, t0 = [], time.time()
    for epoch in range(cp.epochs):
        model.train()
        losses = []
        for images, texts in progress_bar(loader, desc=f"toy CLIP epoch {epoch + 1}/{cp.epochs}", leave=False,
                                  disable=not progress):
            loss = contrastive_step(model, images, texts, loss_fn, opt, autocast)
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)),
               "logit_scale": float(model.logit_scale.exp().detach())}
        if val is not None:
            rec["val_loss"] = _caption_loss(model, val, loss_fn, cp.batch_size)
        history.append(rec)
        if progress:
            print(f"[toy CLIP] epoch {epoch + 1}/{cp.epochs} loss {rec['train_loss']:.3f}"
                  + (f" val {rec['val_loss']:.3f}" if "val_loss" in rec else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_stream(path, lambda f: torch.save(model.state_dict(), f))
    record = {"path": str(path), "model": cp.model, "seconds": round(time.time() - t0, 1), "history": history,
              "precision": "bf16" if autocast.enabled else "fp32",
              "key": clip_key(params)}
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return record


def contrastive_step(model, images, texts, loss_fn, opt, autocast) -> torch.Tensor:
    """One optimizer step of contrastive pretraining (forward and loss under ``autocast()``); returns the loss."""
    with autocast():
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


@torch.no_grad()
def _caption_loss(model, dataset, loss_fn, batch_size) -> float:
    model.eval()
    losses = []
    for images, texts in torch.utils.data.DataLoader(dataset, batch_size=batch_size, drop_last=True):
        out = model(images, texts)
        losses.append(loss_fn(out["image_features"], out["text_features"], out["logit_scale"]).item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def encode_images(model, preprocess, manifest, split: str, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """L2-normalised image embeddings [N, E] of a split."""
    from .data.dataset import MultiLabelDataset
    ds = MultiLabelDataset(manifest, split, preprocess)
    out = []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
    for batch in progress_bar(loader, desc=f"encode {split}", leave=False, disable=not progress):
        out.append(model.encode_image(batch["image"], normalize=True))
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_prompts(model, tokenizer, names: list[str], templates: list[str], normalize_each: bool = True,
                   normalize_mean: bool = True) -> np.ndarray:
    """[C, E]: per label the mean over templates of its text embedding.  CLIP's zero-shot recipe normalises
    each prompt and the mean; QKS averages the raw outputs (both flags False)."""
    out = []
    for name in names:
        emb = model.encode_text(tokenizer([t.format(name) for t in templates]))
        if normalize_each:
            emb = emb / emb.norm(dim=-1, keepdim=True)
        emb = emb.mean(0)
        if normalize_mean:
            emb = emb / emb.norm()
        out.append(emb)
    return torch.stack(out).numpy()


def zero_shot_scores(model, preprocess, tokenizer, manifest, split: str, template: str, progress: bool = True
                     ) -> np.ndarray:
    """Cosine similarity of every image of a split to every label's prompt: [N, C] (all labels)."""
    images = encode_images(model, preprocess, manifest, split, progress=progress)
    texts = encode_prompts(model, tokenizer, manifest.label_names, [template])
    return images @ texts.T


def visual_tokens(visual, images: torch.Tensor) -> torch.Tensor:
    """All tokens of an open_clip ViT after ``ln_post``, CLS first, without the projection: [B, 1 + N, W].

    (open_clip's forward pools to the CLS token; MKT and QKS modify CLIP to keep every token.)
    """
    x = visual._embeds(images)                 # conv1 -> + CLS -> + positions -> ln_pre, [B, 1 + N, W]
    x = visual.transformer(x)
    return visual.ln_post(x)


def grid_size(visual) -> tuple[int, int]:
    """(h, w) of the token grid of a CLIP ViT's visual tower."""
    g = visual.grid_size
    return (g, g) if isinstance(g, int) else tuple(g)


def zero_shot_report(params, manifest, model, preprocess, tokenizer, split: str = "test", progress: bool = True):
    """CLIP zero-shot on a split (one prompt per label, ``clip.zero_shot_template``) against a random ranking,
    for the seen and the unseen labels; writes ``<run>/clip_zero_shot.json``.  Returns (table %, per-class AP)."""
    import pandas as pd

    from .metrics import per_class_ap
    scores = zero_shot_scores(model, preprocess, tokenizer, manifest, split, params.clip.zero_shot_template,
                              progress=progress)
    targets = manifest.dense_targets(split)
    ap = per_class_ap(scores, targets, "noninterp")
    rng = np.random.default_rng(0)
    random_ap = np.nanmean([per_class_ap(rng.random(scores.shape), targets, "noninterp") for _ in range(5)], axis=0)
    groups = {"seen": manifest.seen_indices, "unseen": manifest.unseen_indices}
    table = pd.DataFrame({name: {"CLIP zero-shot mAP": 100 * np.nanmean(ap[idx]),
                                 "random ranking mAP": 100 * np.nanmean(random_ap[idx]), "labels": len(idx)}
                          for name, idx in groups.items() if len(idx)}).T
    params.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(params.run_dir / "clip_zero_shot.json", json.dumps(
        {"model": params.clip.model, "template": params.clip.zero_shot_template,
         **{f"{k}_mAP": float(v) / 100 for k, v in table["CLIP zero-shot mAP"].items()},
         **{f"{k}_random_mAP": float(v) / 100 for k, v in table["random ranking mAP"].items()},
         "per_class_AP": [None if np.isnan(a) else float(a) for a in ap]}, indent=1))
    return table, ap
