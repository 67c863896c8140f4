"""The toy world's CLIP (notebook 02): its key and checkpoint in the run, its caption data, its contrastive
pretraining, its zero-shot scores, and the copy shipped with the kit.

The kit ships the toy CLIP of ``params/toy.yaml`` (``lib/mlc/modeling/toy_weights/toy_clip.pt``, with its
provenance ``toy_clip.json``), as users of the real recipes download OpenAI's weights instead of pretraining
them.  A run whose toy CLIP has the shipped key installs it instead of training (``train_toy_clip``'s
``use_shipped``); any change of the config, recipe, world or seed gives another key, and the run trains its own.

    python -m mlc.cli.toy_clip [--params params/toy.yaml]    # train it and write the shipped file
    python -m mlc.cli.toy_clip --check                        # train it again and compare with the file

The file leaves out what training never touched: the rows of the token embedding that no caption token reaches
keep their initial values (embeddings get no weight decay, and AdamW moves nothing with a zero gradient), so
they are rebuilt from the seed at install, and the whole state dict is checked against the fingerprint the
provenance records (a torch whose initialisation draws other numbers falls back to training).
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

from mlc.config.params import TrainParams
from mlc.core.io import atomic_write_json, atomic_write_stream
from mlc.core.progress import bar as progress_bar
from mlc.core.safe_load import load_torch
from mlc.data.dataset import MultiLabelDataset
from mlc.data.toyworld import SCENE_PHRASES
from mlc.engine.optim import build_scheduler
from mlc.engine.precision import Autocast, resolve_amp
from mlc.metrics.multilabel import per_class_ap
from mlc.modeling.backbones import TOY_CNN_WEIGHTS
from mlc.modeling.clip import _register_configs, encode_prompts
from mlc.runs.toy_backbone import cpu_kind, file_sha256, fingerprint, git_commit

SHIPPED_CLIP = TOY_CNN_WEIGHTS.with_name("toy_clip.pt")
SHIPPED_PARAMS = "params/toy.yaml"
COMMAND = "python -m mlc.cli.toy_clip"
FIRST_STEPS = 4     # the provenance records the loss and state after these steps: what CI trains again
_TOKENS = "token_embedding.weight"


def clip_key(params, precision: str | None = None) -> str:
    """A key of everything that determines a trained toy CLIP (its config, recipe, the toy world, and the precision
    it really trains in: here, or ``precision`` "bf16" / "fp32" as on another CPU)."""
    import open_clip
    _register_configs()
    recipe = {k: v for k, v in asdict(params.clip).items() if k not in ("zero_shot_template", "pretrained", "amp")}
    if precision is None:
        precision = "fp32" if resolve_amp(params.clip.amp, torch.device("cpu")) is None else "bf16"
    if precision == "bf16":
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
        # the variants rephrase what the caption names, never more: a world whose captions leave out small
        # objects (as alt-text does) must not have them named back by the variants
        named = df["caption_labels"] if "caption_labels" in df else df["pos"]
        self.objects = [[names[i] for i in labels] for labels in named]
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
        """A caption naming a random subset of the objects the image's caption names, in random order (and the
        scene half the time)."""
        objs = list(self.objects[i])
        if not objs:
            return self.captions[i]
        k = self.rng.integers(1, len(objs) + 1)
        picked = [objs[j] for j in self.rng.permutation(len(objs))[:k]]
        text = " and ".join(("an " if o[0] in "aeiou" else "a ") + o for o in picked)
        if self.scenes[i] and self.rng.random() < 0.5:
            text += " " + SCENE_PHRASES.get(self.scenes[i], f"at the {self.scenes[i]}")
        return text

    def __getitem__(self, i):
        if self.variants:
            return self.images[i], self.tokenizer([self.variant(i)])[0]
        return self.images[i], self.tokens[i]


def train_toy_clip(params, manifest, progress: bool = True, use_shipped: bool = True,
                   steps: int | None = None, shipped_path: str | Path | None = None) -> dict:
    """Contrastive pretraining of ``params.clip.model`` on the train captions; returns the record
    (path, history, seconds).  Reuses a finished checkpoint with the same key, or installs the shipped toy CLIP
    when its key is this run's (``use_shipped``; ``shipped_path``: another file than the kit's).  ``steps``: stop
    after that many steps of the first epoch and write nothing (the record holds their mean loss and the state's
    fingerprint: a regeneration's first steps)."""
    import open_clip
    path = clip_checkpoint(params)
    record_path = path.with_suffix(".json")
    if steps is None and path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if use_shipped or not record.get("shipped"):    # retraining replaces an installed copy of the shipped one
            return record
    if params.clip.pretrained:
        raise ValueError("clip.pretrained is set: nothing to train")
    if steps is None and use_shipped:
        record = install_shipped(params, shipped_path or SHIPPED_CLIP, progress=progress)
        if record is not None:
            return record
    cp = params.clip
    n_train = len(manifest.split("train"))
    if cp.epochs > 0 and n_train < cp.batch_size:
        raise ValueError(f"{params.source}: clip.batch_size {cp.batch_size} is larger than the {n_train} training "
                         f"images, so the toy CLIP would take no step and keep its random weights: lower "
                         f"clip.batch_size")
    model, preprocess = _seeded_model(params)
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
    schedule = TrainParams(scheduler="cosine", epochs=cp.epochs, lr=cp.lr, min_lr=0.0, warmup_epochs=cp.warmup_epochs)
    sched, _ = build_scheduler(opt, schedule, len(loader))
    loss_fn = open_clip.ClipLoss()
    autocast = Autocast(torch.device("cpu"), cp.amp)   # bf16 only where the CPU has it in hardware
    precision = "bf16" if autocast.enabled else "fp32"
    history, t0 = [], time.time()
    first_steps = None
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
            if epoch == 0 and len(losses) == (steps or FIRST_STEPS):
                first_steps = {"steps": len(losses), "train_loss": float(np.mean(losses)),
                               "state_sha256": fingerprint(model.state_dict()), "cpu_kind": cpu_kind(
                                   torch.get_num_threads()), "precision": precision}
                if steps is not None:
                    return {"first_steps": first_steps, "key": clip_key(params)}
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
              "precision": precision, "key": clip_key(params), "first_steps": first_steps,
              "state_sha256": fingerprint(model.state_dict()), "cpu_kind": cpu_kind(torch.get_num_threads())}
    atomic_write_json(record_path, record)
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
    ds = MultiLabelDataset(manifest, split, preprocess)
    out = []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
    for batch in progress_bar(loader, desc=f"encode {split}", leave=False, disable=not progress):
        out.append(model.encode_image(batch["image"], normalize=True))
    return torch.cat(out).numpy()


def zero_shot_scores(model, preprocess, tokenizer, manifest, split: str, template: str, progress: bool = True
                     ) -> np.ndarray:
    """Cosine similarity of every image of a split to every label's prompt: [N, C] (all labels)."""
    images = encode_images(model, preprocess, manifest, split, progress=progress)
    texts = encode_prompts(model, tokenizer, manifest.label_names, [template])
    return images @ texts.T


def zero_shot_report(params, manifest, model, preprocess, tokenizer, split: str = "test", progress: bool = True):
    """CLIP zero-shot on a split (one prompt per label, ``clip.zero_shot_template``) against a random ranking,
    for the seen and the unseen labels; writes ``<run>/clip_zero_shot.json``.  Returns (table %, per-class AP)."""
    import pandas as pd
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
    atomic_write_json(params.run_dir / "clip_zero_shot.json",
                      {"model": params.clip.model, "template": params.clip.zero_shot_template,
         **{f"{k}_mAP": float(v) / 100 for k, v in table["CLIP zero-shot mAP"].items()},
         **{f"{k}_random_mAP": float(v) / 100 for k, v in table["random ranking mAP"].items()},
         "per_class_AP": [None if np.isnan(a) else float(a) for a in ap]})
    return table, ap


# ------------------------------------------------------------------------------------------------
# The shipped toy CLIP: written by ``python -m mlc.cli.toy_clip``, installed into a run with its key
# ------------------------------------------------------------------------------------------------
def _seeded_model(params):
    """The untrained toy CLIP and its preprocessing, its weights drawn from ``params.seed`` (seeds the global RNG,
    as training goes on from it): what :func:`train_toy_clip` trains and :func:`install_shipped` rebuilds."""
    import open_clip
    torch.manual_seed(params.seed)
    _register_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(params.clip.model, output_dict=True)
    return model, preprocess


def _initial_state(params) -> dict[str, torch.Tensor]:
    """The toy CLIP's state before training (:func:`_seeded_model`), the global RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        return _seeded_model(params)[0].state_dict()


def ship(params, record: dict, out: str | Path = SHIPPED_CLIP, command: str = COMMAND) -> dict:
    """Write a trained toy CLIP (``record``: what :func:`train_toy_clip` returned) as the shipped file: every
    tensor but the token embedding, and of that only the rows training changed; the provenance beside it."""
    out = Path(out)
    state = load_torch(record["path"])
    if fingerprint(state) != record["state_sha256"]:
        raise RuntimeError(f"{record['path']}: not the state its record describes")
    initial = _initial_state(params)
    changed = (state[_TOKENS] != initial[_TOKENS]).any(1).nonzero().flatten()
    pruned = {k: v for k, v in state.items() if k != _TOKENS}
    pruned["token_embedding.rows"], pruned["token_embedding.values"] = changed, state[_TOKENS][changed].clone()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_stream(out, lambda f: torch.save(pruned, f))
    provenance = {
        "what": f"the toy CLIP ({params.clip.model}) of {SHIPPED_PARAMS}, trained on its toy world's captions; "
                f"the token embedding's {len(state[_TOKENS]) - len(changed)} rows no caption reaches are left out "
                "and rebuilt from the seed",
        "command": command, "params_file": SHIPPED_PARAMS, "seed": params.seed, "key": clip_key(params),
        "recipe": {k: v for k, v in asdict(params.clip).items() if k != "pretrained"},
        "commit": git_commit(), "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "train_seconds": record["seconds"], "precision": record["precision"], "cpu_kind": record["cpu_kind"],
        "history": record["history"], "first_steps": record["first_steps"],
        "state_sha256": record["state_sha256"], "initial_sha256": fingerprint(initial),
        "files": {out.name: {"bytes": out.stat().st_size, "sha256": file_sha256(out)}},
    }
    atomic_write_json(out.with_suffix(".json"), provenance)
    return provenance


def shipped_provenance(path: str | Path = SHIPPED_CLIP) -> dict | None:
    """The provenance of the shipped toy CLIP (None where the kit has none)."""
    path = Path(path).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def install_shipped(params, path: str | Path = SHIPPED_CLIP, progress: bool = True) -> dict | None:
    """Install the shipped toy CLIP as this run's (``clip_checkpoint(params)`` and its record) when its key is
    the run's and the rebuilt state has the recorded fingerprint; returns the record, or None (train instead)."""
    provenance = shipped_provenance(path)
    if provenance is None or provenance["key"] != clip_key(params):
        return None
    pruned = load_torch(path)
    state = _initial_state(params)
    if fingerprint(state) != provenance["initial_sha256"]:
        if progress:
            print(f"[toy CLIP] {path}: this torch initialises the toy CLIP otherwise than the one that made the "
                  "shipped file, whose left-out embedding rows cannot be rebuilt here: training this run's own")
        return None
    rows, values = pruned.pop("token_embedding.rows"), pruned.pop("token_embedding.values")
    state[_TOKENS][rows] = values
    state.update(pruned)
    if fingerprint(state) != provenance["state_sha256"]:
        if progress:
            print(f"[toy CLIP] {path}: rebuilt, it is not the state that was shipped: training this run's own")
        return None
    target = clip_checkpoint(params)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_stream(target, lambda f: torch.save(state, f))
    record = {"path": str(target), "model": params.clip.model, "seconds": provenance["train_seconds"],
              "history": provenance["history"], "precision": provenance["precision"], "key": provenance["key"],
              "first_steps": provenance["first_steps"], "state_sha256": provenance["state_sha256"],
              "cpu_kind": provenance["cpu_kind"], "shipped": str(path)}
    atomic_write_json(target.with_suffix(".json"), record)
    if progress:
        print(f"[toy CLIP] installed the shipped weights ({Path(path).name}, trained "
              f"in {provenance['train_seconds']:.0f} s on {provenance['cpu_kind']['cpu']}; {COMMAND} retrains them)")
    return record
