"""The mechanism behind each paper's claim, measured on a finished run: where a method gains over its baseline.

A claim says "better mAP"; the paper says why: Q2L's label queries attend to small objects a pooled feature
averages away, SALGL's scene graphs and SGRE's semantic guidance name what appearance cannot decide from the
context.  So each test positive (an image-label pair) is put in a group by what the world knows of it, and AP is
measured per group (the positives of the group against every negative; the other positives left out):

* **by size**: the label's largest instance in the image is small, medium or large (the manifest's
  ``size_bins``; COCO's shares);
* **by what decides it**, for small positives: *context-decided* where the world's own prior names the object
  from its colour and scene but not from its colour alone (what :func:`mlc.data.toyworld.context_oracles`
  counts), *appearance-decided* where colour alone already does.

The scores are those each training wrote (``<run>/<method>/test_scores.npz``, the best checkpoint's), so nothing
is recomputed.

The open-vocabulary claims are measured on the unseen labels in the method's own folder
(:func:`mlc.methods.mkt.streams.zero_shot_streams`), with :func:`grouped_map` and :func:`positive_groups`.

Needs a manifest with boxes and their sizes (the toy world; COCO's converter records boxes too, and areas could
give sizes there).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mlc.config.params import RunParams
from mlc.core.registry import CLAIMS
from mlc.data.manifest import Manifest
from mlc.engine import stage
from mlc.evaluation.evaluate import output_scores
from mlc.metrics.multilabel import mean_average_precision
from mlc.runs.resolve import method_params

SIZE_GROUPS = ("small", "medium", "large")
CONTEXT_GROUPS = ("context-decided", "appearance-decided")


def positive_groups(manifest: Manifest, split: str, columns: np.ndarray) -> dict[str, np.ndarray]:
    """For each group (the three sizes, then the two small-object groups), a boolean [N, len(columns)]: the
    positives of that group.  ``columns``: the manifest label index of each column."""
    df = manifest.split(split)
    for key in ("box_labels", "box_sizes"):
        if key not in df:
            raise ValueError(f"{manifest.root}: split {split!r} has no {key!r}: the mechanism measurements need "
                             f"each object's size (the toy world records it)")
    edges = [hi for _, hi in manifest.meta["size_bins"][:-1]]
    column_of = {int(label): j for j, label in enumerate(columns)}
    groups = {g: np.zeros((len(df), len(columns)), bool) for g in SIZE_GROUPS + CONTEXT_GROUPS}
    prior = np.asarray(manifest.meta.get("scene_prior", []), dtype=float)     # [S, objects]
    objects = manifest.object_indices
    prior_column = {int(label): j for j, label in enumerate(objects)}
    colours = [manifest.label_names[i].split()[0] for i in objects]
    same_colour = np.array([[a == b for b in colours] for a in colours])
    marginal = prior.mean(0) if prior.size else None
    for row, (labels, sizes, scene) in enumerate(zip(df["box_labels"], df["box_sizes"],
                                                     df["scene"] if "scene" in df else [None] * len(df))):
        largest: dict[int, float] = {}
        for label, side in zip(labels, sizes):
            largest[int(label)] = max(largest.get(int(label), 0.0), float(side))
        for label, side in largest.items():
            if label not in column_of:
                continue
            j, size = column_of[label], int(np.searchsorted(edges, side, side="right"))
            groups[SIZE_GROUPS[size]][row, j] = True
            if size == 0 and marginal is not None and scene is not None and label in prior_column:
                c = prior_column[label]
                alone = np.argmax(np.where(same_colour[c], marginal, -1)) == c
                with_scene = np.argmax(np.where(same_colour[c], prior[int(scene)], -1)) == c
                if with_scene and not alone:
                    groups["context-decided"][row, j] = True
                elif alone:
                    groups["appearance-decided"][row, j] = True
    return groups


def grouped_map(scores: np.ndarray, targets: np.ndarray, groups: dict[str, np.ndarray], mode: str = "voc"
                ) -> dict[str, dict]:
    """mAP (in %) over all positives and per group: a group's positives against every negative, labels without a
    positive in the group skipped; with the number of positives and of labels it averages over."""
    out = {"all": {"mAP": 100 * mean_average_precision(scores, targets, mode, "skip")[0],
                   "positives": int((targets == 1).sum()), "labels": int((targets == 1).any(0).sum())}}
    for name, mask in groups.items():
        t = np.where((targets == 1) & ~mask, -1, targets)
        n = int((t == 1).sum())
        out[name] = {"mAP": 100 * mean_average_precision(scores, t, mode, "skip")[0] if n else float("nan"),
                     "positives": n, "labels": int((t == 1).any(0).sum())}
    return out


def _columns(params: RunParams, name: str, manifest: Manifest, n_columns: int, where) -> np.ndarray:
    columns = manifest.label_subset(method_params(params, name).label_subset)
    if n_columns != len(columns):
        raise ValueError(f"{where}: {n_columns} columns, but {name!r} scores {len(columns)} labels of "
                         f"{manifest.root} (label_subset {params.methods[name].label_subset!r}): scores of another "
                         f"dataset?")
    return columns


def run_groups(params: RunParams, name: str, manifest: Manifest) -> dict[str, dict]:
    """:func:`grouped_map` of a finished run's test scores (its ``test_scores.npz``)."""
    folder = params.run_dir / name
    if not stage.is_finished(folder) or not (folder / "test_scores.npz").is_file():
        raise FileNotFoundError(f"{folder}: not a finished run with test scores (train {name!r} first)")
    saved = np.load(folder / "test_scores.npz")
    columns = _columns(params, name, manifest, saved["scores"].shape[1], folder / "test_scores.npz")
    return grouped_map(saved["scores"], saved["targets"], positive_groups(manifest, "test", columns),
                       params.eval.ap_mode)


def compared_groups(params: RunParams, method: str, manifest: Manifest) -> dict[str, dict[str, dict]]:
    """:func:`grouped_map` of the method and of what its paper compares it with: its baseline runs
    (``baseline_for``), or the outputs of the one model its claim compares (SGRE's branches). A missing run is
    left out."""
    claim = CLAIMS.find(params.methods[method].model_name)
    if claim is not None and claim.outputs:
        if not stage.is_finished(params.run_dir / method):
            return {}
        scored = output_scores(params, method, claim.outputs)
        columns = _columns(params, method, manifest, next(iter(scored.values()))["scores"].shape[1],
                           params.run_dir / method)
        groups = positive_groups(manifest, "test", columns)
        return {entry: grouped_map(p["scores"], p["targets"], groups, params.eval.ap_mode)
                for entry, p in scored.items()}
    out = {}
    for name in [method] + [m for m, mp in params.methods.items() if mp.baseline_for == method]:
        try:
            out[name] = run_groups(params, name, manifest)
        except FileNotFoundError:
            continue
    return out


def mechanism_table(params: RunParams, method: str, manifest: Manifest, decimals: int | None = 1) -> pd.DataFrame:
    """Rows: the method, what its paper compares it with, and its gain over the best of those ("gain"); columns:
    mAP over all positives and per group (in %), then the number of positives per group ("positives" row).
    ``decimals``: rounding of the table (None: none)."""
    compared = compared_groups(params, method, manifest)
    table = pd.DataFrame({entry: {g: v["mAP"] for g, v in groups.items()} for entry, groups in compared.items()}).T
    if len(compared) > 1:
        first = next(iter(compared))
        table.loc["gain"] = table.loc[first] - table.drop(index=first).max()
        table.loc["positives"] = [compared[first][g]["positives"] for g in table.columns]
    return table if decimals is None else table.round(decimals)


def mechanism_differences(params: RunParams, method: str, manifest: Manifest) -> dict[str, float]:
    """The method's gain over the best of what it is compared with, per group (in mAP points, unrounded): what
    benchmarks/seed_spread.py averages over seeds. Empty when a run is missing."""
    table = mechanism_table(params, method, manifest, decimals=None)
    return {} if "gain" not in table.index else {g: float(v) for g, v in table.loc["gain"].items()}
