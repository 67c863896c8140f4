"""Where MKT's zero-shot gain comes from: its two streams scored apart on the unseen labels, by object size.

MKT's paper says its local stream finds what CLIP's global embedding misses, small objects the caption never
named; so ZSL AP per size group (:func:`mlc.evaluation.mechanisms.positive_groups`) is set side by side for the
two streams alone and together, and for CLIP zero-shot.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mlc.config.params import RunParams
from mlc.core.io import atomic_write_json
from mlc.engine import stage
from mlc.engine.loop import make_loader, to_device
from mlc.engine.precision import Autocast
from mlc.evaluation.mechanisms import grouped_map, positive_groups
from mlc.evaluation.open_vocab import all_labels_dataset, label_order
from mlc.methods.mkt.model import stream_scores
from mlc.modeling import clip
from mlc.runs import toy_clip
from mlc.runs.checkpoints import load
from mlc.runs.data import prepare_data
from mlc.runs.resolve import method_params

ZSL_ROWS = ("both streams", "global stream only", "local stream only", "CLIP zero-shot")


def zero_shot_streams(params: RunParams, method: str, progress: bool = False) -> dict[str, dict]:
    """ZSL mAP (non-interpolated, on the images with an unseen label, as the ZSL protocol's; in %) by size group
    of the unseen positives, for a
    finished MKT run scored three ways (its two streams combined as trained, the global stream alone, the local
    stream alone) and for the run's CLIP zero-shot (``clip.zero_shot_template``).  Rows :data:`ZSL_ROWS`;
    each a :func:`grouped_map` dict. Written to ``<run>/<method>/zero_shot_streams.json``."""
    mp = method_params(params, method)
    if mp.model_name != "mkt":
        raise ValueError(f"{method!r} is a {mp.model_name} run: the stream measurement needs MKT's two streams")
    folder = params.run_dir / method
    if not stage.is_finished(folder):
        raise FileNotFoundError(f"{folder}: not a finished run (train {method!r} first)")
    manifest = prepare_data(params, progress=False)
    order, n_seen = label_order(manifest)
    unseen = order[n_seen:]
    names = [manifest.label_names[i] for i in unseen]
    model = load(params, method, None, device="cpu",
                 label_names=[manifest.label_names[i] for i in manifest.label_subset(mp.label_subset)]).model.eval()
    model.set_label_names(names)                           # ZSL: the unseen labels only, as the protocol scores
    dataset = all_labels_dataset(params, method, manifest)
    normalize = getattr(dataset, "device_normalize", None)
    loader = make_loader(dataset, mp.train.eval_batch_size, shuffle=False, num_workers=0)
    autocast = Autocast(torch.device("cpu"), mp.train.amp)
    local, glob, targets = [], [], []
    with torch.no_grad(), autocast():
        label_embed = model.prompt() if model.prompt is not None else model.label_embeddings
        for batch in loader:
            images, target = to_device(batch, torch.device("cpu"), False, normalize)
            patches, cls = model.encode_image(images)
            stream_local, stream_global, _ = stream_scores(patches, cls, label_embed, model.cfg.topk)
            local.append(stream_local.float())
            glob.append(stream_global.float())
            targets.append(target[:, n_seen:])
    local, glob = torch.cat(local), torch.cat(glob)
    both = (local / local.norm(dim=-1, keepdim=True) + glob / glob.norm(dim=-1, keepdim=True)) / 2
    targets = torch.cat(targets).numpy()
    scores = {"both streams": both.numpy(), "global stream only": glob.numpy(), "local stream only": local.numpy()}
    if params.clip is not None:
        cmodel, preprocess, tokenizer = clip.load_clip(params.clip.model, str(toy_clip.clip_checkpoint(params)))
        scores["CLIP zero-shot"] = toy_clip.zero_shot_scores(cmodel, preprocess, tokenizer, manifest, "test",
                                                             params.clip.zero_shot_template, progress)[:, unseen]
    # the ZSL protocol scores only the images with an unseen label (mlc.metrics.zsl), so the "all" column is the
    # ZSL mAP of metrics_zsl.json's "corrected" variant
    keep = (targets == 1).any(1)
    groups = {g: mask[keep] for g, mask in positive_groups(manifest, "test", np.asarray(unseen)).items()}
    out = {row: grouped_map(s[keep], targets[keep], groups, "noninterp") for row, s in scores.items()}
    atomic_write_json(folder / "zero_shot_streams.json", out)
    return out


def zero_shot_table(streams: dict[str, dict], decimals: int | None = 1) -> pd.DataFrame:
    """:func:`zero_shot_streams` as a table: a row per way of scoring, a column per group, and the local stream's
    and the combination's gains over the global stream ("both - global")."""
    table = pd.DataFrame({row: {g: v["mAP"] for g, v in groups.items()} for row, groups in streams.items()}).T
    table.loc["both - global"] = table.loc["both streams"] - table.loc["global stream only"]
    if "CLIP zero-shot" in table.index:
        table.loc["both - CLIP"] = table.loc["both streams"] - table.loc["CLIP zero-shot"]
    first = next(iter(streams.values()))
    table.loc["positives"] = [first[g]["positives"] for g in table.columns]
    return table if decimals is None else table.round(decimals)
