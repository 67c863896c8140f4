"""Open-vocabulary evaluation of a run: a trained MKT or QKS, the CLIP zero-shot baseline and a random
ranking, all through the same SEEN / ZSL / GZSL report (:mod:`mlc.metrics.zsl`)."""
from __future__ import annotations

import numpy as np
import torch

from mlc.core.io import atomic_write_json
from mlc.data.dataset import MultiLabelDataset
from mlc.data.transforms import build_transform
from mlc.engine.loop import make_loader, pick_device, predict
from mlc.metrics.zsl import random_ranking_scores, zsl_report
from mlc.modeling import clip
from mlc.modeling.method import Method
from mlc.runs import toy_clip
from mlc.runs.checkpoints import load
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params


def label_order(manifest) -> tuple[list[int], int]:
    """Label indices with the seen ones first (the protocol's column order) and the number seen."""
    seen, unseen = list(manifest.seen_indices), list(manifest.unseen_indices)
    return seen + unseen, len(seen)


def all_labels_dataset(params, name: str, manifest, split: str = "test"):
    """A split with every label as target, seen columns first (the protocol's order), eval transform."""
    return MultiLabelDataset(manifest, split, build_transform(method_params(params, name).input, train=False),
                             label_order(manifest)[0])


def _reports(scores, targets, n_seen, ks, zsl_scores=None) -> dict:
    return {"faithful": zsl_report(scores, targets, n_seen, ks, "zero", zsl_scores),
            "corrected": zsl_report(scores, targets, n_seen, ks, "skip", zsl_scores)}


def evaluate_open_vocabulary(params, name: str, progress: bool = True, checkpoint=None) -> dict:
    """Score the test split against seen + unseen labels with a trained method (or the weights of
    ``checkpoint`` / the params' released file, see :func:`mlc.runs.checkpoints.load`); writes
    ``outputs/<run>/<method>/metrics_zsl.json``.  ``faithful``: a label without test positives counts
    as AP 0 (MKT, QKS); ``corrected``: it is left out."""
    mp = method_params(params, name)
    manifest = prepare_data(params, progress=False)
    order, n_seen = label_order(manifest)
    names = [manifest.label_names[i] for i in order]
    device = pick_device(mp.train.device)
    loaded = load(params, name, checkpoint, device=str(device),
                  label_names=[manifest.label_names[i] for i in manifest.label_subset(mp.label_subset)])
    model = loaded.model
    dataset = all_labels_dataset(params, name, manifest)
    loader = make_loader(dataset, mp.train.eval_batch_size, shuffle=False, num_workers=params.data.num_workers)
    plain = Method(model=model, loss_fn=lambda out, t: {"loss": torch.zeros((), device=device)})
    model.set_label_names(names)
    pred = predict(model, plain, loader, device, mp.train.amp, desc=f"test {name} (all labels)", progress=progress)
    zsl_scores = None
    if getattr(model, "label_set_dependent", False):
        model.set_label_names(names[n_seen:])
        zsl_scores = predict(model, plain, loader, device, mp.train.amp, desc=f"test {name} (unseen labels)",
                             progress=progress)["scores"]
    ks = params.eval.zsl_top_k
    report = {"method": name, "labels": names, "n_seen": n_seen, "weights": loaded.weights,
              **_reports(pred["scores"], pred["targets"], n_seen, ks, zsl_scores)}
    atomic_write_json(params.run_dir / name / "metrics_zsl.json", report)
    return {"scores": pred["scores"], "targets": pred["targets"], "report": report}


def baseline_reports(params, progress: bool = True) -> dict:
    """The CLIP zero-shot baseline (cosine similarity to one prompt per label, ``clip.zero_shot_template``)
    and a random ranking, on the test split; written to ``outputs/<run>/baselines_zsl.json``."""
    manifest = prepare_data(params, progress=False)
    order, n_seen = label_order(manifest)
    targets = manifest.dense_targets("test", order)
    ks = params.eval.zsl_top_k
    out = {"random ranking": _reports(random_ranking_scores(*targets.shape, seed=params.seed), targets, n_seen, ks)}
    if params.clip is not None:
        path = params.clip.pretrained or str(toy_clip.clip_checkpoint(params))
        model, preprocess, tokenizer = clip.load_clip(params.clip.model, path)
        images = toy_clip.encode_images(model, preprocess, manifest, "test", progress=progress)
        texts = clip.encode_prompts(model, tokenizer, [manifest.label_names[i] for i in order],
                                    [params.clip.zero_shot_template])
        out["CLIP zero-shot"] = _reports(images @ texts.T, targets, n_seen, ks)
    params.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(params.run_dir / "baselines_zsl.json", out)
    return out


@torch.no_grad()
def top_labels(model, image_tensor: torch.Tensor, names: list[str], k: int = 5) -> dict:
    """Single-image inference over a label set: the k best labels, their probabilities (``scores``) and logits,
    and their maps [k, h, w] (MKT: the local-stream patch similarity; QKS: the winning query's cross-attention)."""
    model.eval()
    model.set_label_names(names)
    out = model(image_tensor[None].to(next(model.parameters()).device))
    logits = out["logits"][0].float().cpu()
    best = logits.argsort(descending=True)[:k]
    # scores are probabilities (the sigmoid the evaluation ranks by), as every method's figures print them
    return {"labels": [names[i] for i in best], "scores": torch.sigmoid(logits[best]).tolist(),
            "logits": logits[best].tolist(), "maps": out["attention"][0, best].float().cpu().numpy()}


@torch.no_grad()
def query_usage_counts(model, loader, device) -> np.ndarray:
    """QKS: for every positive (image, label) cell, which query token gave the label's score; counts per query."""
    counts = None
    model.eval()
    for batch in loader:
        out = model(batch["image"].to(device))
        idx = out["indices"].cpu()
        pos = batch["target"] == 1
        c = torch.bincount(idx[pos], minlength=out["query_features"].shape[1]).numpy()
        counts = c if counts is None else counts + c
    return counts
