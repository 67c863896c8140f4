"""Open-vocabulary evaluation: SEEN, ZSL and GZSL reports as MKT and QKS compute them (BiAM/LESA metrics).

Scores [N, C] cover all labels, seen columns first; targets use 1 / 0 / -1 (positive / negative /
unknown).  For each subset of columns (SEEN = seen, ZSL = unseen, GZSL = all):

- keep the images with at least one positive in the subset, and the columns with at least one known
  (non-unknown) entry among them (QKS's filtering; on NUS-WIDE nothing is unknown, so no column goes);
- AP per column over its known cells, non-interpolated: (1 / #pos) sum over the ranks of positives of
  precision at that rank.  A column without positives gets AP 0 and counts in the mean (``empty_class=
  "zero"``, the faithful behaviour) or is left out (``"skip"``, the corrected variant);
- for each k: mark every image's k best columns; TP = marked cells that are positive; P = TP / (N k),
  R = TP / #positives, F1 = 2PR / (P + R) (micro; an unknown cell in the top k counts as a false positive).

ZSL is computed by slicing the joint scores, which equals scoring the unseen labels alone for every
method whose per-label scores are independent (QKS, CLIP).  MKT normalises scores across the label set,
so its ZSL scores must come from a forward over the unseen labels only: pass them with ``zsl_scores``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mlc.metrics.multilabel import finite_scores


def average_precision_known(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one column over its known cells; nan when it has no positive."""
    known = targets != -1
    s, t = finite_scores(scores)[known], targets[known] == 1
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    hits = t[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, n_pos + 1) / ranks))


def topk_prf(scores: np.ndarray, targets: np.ndarray, k: int) -> dict:
    """Micro precision, recall and F1 of the top-``k`` labels of each image."""
    scores = finite_scores(scores)
    n, c = scores.shape
    k = min(k, c)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < c else np.tile(np.arange(c), (n, 1))
    tp = int((np.take_along_axis(targets, top, axis=1) == 1).sum())
    n_pos = int((targets == 1).sum())
    p = tp / max(n * k, 1)
    r = tp / n_pos if n_pos else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {f"P@{k}": p, f"R@{k}": r, f"F1@{k}": f1}


def subset_report(scores: np.ndarray, targets: np.ndarray, ks=(3, 5), empty_class: str = "zero") -> dict:
    """mAP and P/R/F1@k on one column subset, with QKS's image and column filtering."""
    if empty_class not in ("zero", "skip"):
        raise ValueError(f"empty_class must be 'zero' (faithful) or 'skip' (corrected), got {empty_class!r}")
    rows = (targets == 1).any(1)
    s, t = scores[rows], targets[rows]
    cols = (t != -1).any(0)
    s, t = s[:, cols], t[:, cols]
    ap = np.array([average_precision_known(s[:, j], t[:, j]) for j in range(s.shape[1])])
    if empty_class == "zero":
        m = float(np.nan_to_num(ap, nan=0.0).mean()) if len(ap) else float("nan")
    else:
        m = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    out = {"mAP": m, "images": int(rows.sum()), "labels": int(cols.sum()),
           "labels_without_positive": int(np.isnan(ap).sum())}
    for k in ks:
        out.update(topk_prf(s, t, k))
    return out


def zsl_report(scores: np.ndarray, targets: np.ndarray, n_seen: int, ks=(3, 5), empty_class: str = "zero",
               zsl_scores: np.ndarray | None = None) -> dict:
    """{"SEEN": ..., "ZSL": ..., "GZSL": ...}; ``zsl_scores`` [N, C_unseen] replaces the sliced unseen
    scores for methods whose scores depend on the label set (MKT)."""
    scores, targets = finite_scores(np.asarray(scores, np.float64)), np.asarray(targets)
    unseen = scores[:, n_seen:] if zsl_scores is None else finite_scores(np.asarray(zsl_scores, np.float64))
    report = {"SEEN": subset_report(scores[:, :n_seen], targets[:, :n_seen], ks, empty_class),
              "ZSL": subset_report(unseen, targets[:, n_seen:], ks, empty_class),
              "GZSL": subset_report(scores, targets, ks, empty_class)}
    return report


def report_table(reports: dict[str, dict], ks=(3, 5)) -> pd.DataFrame:
    """One row per (method, setting), in %: mAP and P/R/F1@k, as the papers print them."""
    rows = {}
    for method, rep in reports.items():
        for setting in ("ZSL", "GZSL", "SEEN"):
            if setting not in rep:
                continue
            r = rep[setting]
            row = {"mAP": 100 * r["mAP"]}
            for k in ks:
                row.update({f"P@{k}": 100 * r[f"P@{k}"], f"R@{k}": 100 * r[f"R@{k}"], f"F1@{k}": 100 * r[f"F1@{k}"]})
            rows[(method, setting)] = row
    return pd.DataFrame(rows).T.round(1)


def random_ranking_scores(n_images: int, n_labels: int, seed: int = 0) -> np.ndarray:
    """Uniform random scores [N, C] (the random-ranking baseline)."""
    return np.random.default_rng(seed).random((n_images, n_labels))
