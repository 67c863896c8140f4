"""Multi-label metrics on score matrices [N, C] and targets in {1 positive, 0 negative, -1 unknown}.

Two AP definitions are used by the five papers (see README.md, "Metrics"):

* ``"voc"``      VOC all-point *interpolated* AP (Query2Label's ``voc_mAP``, SALGL/SGRE's ``VOCmAP``):
  precision made monotone from the right, summed over the points where recall changes.
* ``"noninterp"`` non-interpolated AP over known labels (MKT/QKS ``compute_AP``):
  mean of precision@rank at the ranks of the positives; equals scikit-learn's
  ``average_precision_score`` when scores have no ties.

Cells with target -1 are left out of every metric.  All values are fractions in [0, 1].
Ties are ranked in a stable order (by sample index); the official code uses numpy's default sort.
"""
from __future__ import annotations

import numpy as np

AP_MODES = ("voc", "noninterp")
EMPTY_CLASS = ("nan", "zero", "skip")


def finite_scores(scores) -> np.ndarray:
    """The scores as an array; NaN or infinite scores are an error.  A diverged model's or a broken score
    file's scores would otherwise rank to a finite, meaningless mAP (all-NaN scores give the AP of a stable
    sort), so no metric is computed from them, whoever calls it."""
    scores = np.asarray(scores)
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        n_nan, n_inf = int(np.isnan(scores).sum()), int(np.isinf(scores).sum())
        raise ValueError(f"the scores hold {n_nan} NaN and {n_inf} infinite values (of {scores.size}): no metric "
                         f"is computed from them (a diverged model or a broken score file)")
    return scores


def average_precision(scores: np.ndarray, targets: np.ndarray, mode: str = "voc") -> float:
    """AP of one class; NaN if the class has no positive among its known cells."""
    if mode not in AP_MODES:
        raise ValueError(f"AP mode must be one of {AP_MODES}, got {mode!r}")
    scores, targets = finite_scores(np.asarray(scores, dtype=np.float64)), np.asarray(targets)
    known = targets >= 0
    scores, targets = scores[known], targets[known]
    order = np.argsort(-scores, kind="stable")
    hit = targets[order] == 1
    n_pos = int(hit.sum())
    if n_pos == 0:
        return float("nan")
    tp = np.cumsum(hit)
    precision = tp / np.arange(1, len(hit) + 1)
    if mode == "noninterp":
        return float(precision[hit].sum() / n_pos)
    recall = tp / n_pos
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def per_class_ap(scores: np.ndarray, targets: np.ndarray, mode: str = "voc") -> np.ndarray:
    """AP of every class (``voc``: all-point interpolated; ``noninterp``: over known cells); NaN without positives."""
    scores, targets = finite_scores(scores), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [N, C]")
    return np.array([average_precision(scores[:, c], targets[:, c], mode) for c in range(scores.shape[1])])


def mean_average_precision(scores: np.ndarray, targets: np.ndarray, mode: str = "voc",
                           empty_class: str = "skip") -> tuple[float, np.ndarray]:
    """(mAP, per-class AP).  ``empty_class`` says what a class without positives does:

    * ``"nan"``  its AP is NaN and so is the mean (Query2Label's ``voc_mAP``),
    * ``"zero"`` it counts as AP 0 in the mean (SALGL/SGRE ``VOCmAP``, MKT/QKS ``compute_AP``),
    * ``"skip"`` it is left out of the mean (the kit's default).
    """
    if empty_class not in EMPTY_CLASS:
        raise ValueError(f"empty_class must be one of {EMPTY_CLASS}, got {empty_class!r}")
    ap = per_class_ap(scores, targets, mode)
    if empty_class == "zero":
        ap = np.nan_to_num(ap, nan=0.0)
        return float(ap.mean()), ap
    if empty_class == "nan":
        return float(ap.mean()), ap
    return (float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")), ap


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean [N, C] mask of each row's k highest scores (ties broken by column order)."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def threshold_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5, top_k: int | None = None,
                      top_k_needs_threshold: bool = True, empty_class: str = "one") -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 of thresholded scores (probabilities).

    ``top_k``: only each image's k highest scores may be predicted; with ``top_k_needs_threshold``
    (SALGL/SGRE's ``TopkMeter``) they must also reach the threshold, otherwise the top k are
    predicted whatever their score (the "top-3" convention of several papers).
    ``empty_class="one"`` (SALGL/SGRE): a class with no predictions has CP 1 and one without positives
    CR 1; ``"zero"``: they count as 0.  CF1 = 2 CP CR / (CP + CR) (harmonic mean of the averages).
    """
    scores, targets = finite_scores(scores), np.asarray(targets)
    known, gt = targets >= 0, targets == 1
    pred = scores >= threshold
    if top_k is not None:
        mask = top_k_mask(scores, top_k)
        pred = (pred & mask) if top_k_needs_threshold else mask
    pred &= known
    tp = (pred & gt).sum(0).astype(np.float64)
    n_pred = pred.sum(0).astype(np.float64)
    n_gt = gt.sum(0).astype(np.float64)
    op = tp.sum() / max(n_pred.sum(), 1e-12)
    orec = tp.sum() / max(n_gt.sum(), 1e-12)
    if empty_class == "one":
        eps = np.finfo(np.float64).eps
        cp = np.mean(np.maximum(tp, eps) / np.maximum(n_pred, eps))
        cr = np.mean(np.maximum(tp, eps) / np.maximum(n_gt, eps))
    elif empty_class == "zero":
        cp = np.mean(np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0))
        cr = np.mean(np.divide(tp, n_gt, out=np.zeros_like(tp), where=n_gt > 0))
    else:
        raise ValueError(f"empty_class must be 'one' or 'zero', got {empty_class!r}")

    def f1(p, r):
        return float(2 * p * r / (p + r)) if p + r > 0 else 0.0

    return {"CP": float(cp), "CR": float(cr), "CF1": f1(cp, cr),
            "OP": float(op), "OR": float(orec), "OF1": f1(op, orec)}


def label_frequency_baseline(train_targets: np.ndarray, test_targets: np.ndarray, mode: str = "voc",
                             empty_class: str = "skip") -> float:
    """mAP of scoring every test image with the training label frequencies.

    A constant score per class ranks all images equally, so its AP is the positive rate: the floor
    that a model must clear by a wide margin.
    """
    freq = np.clip(np.asarray(train_targets), 0, None).mean(0)
    scores = np.broadcast_to(freq, np.shape(test_targets)).copy()
    return mean_average_precision(scores, test_targets, mode, empty_class)[0]


def evaluate_scores(scores: np.ndarray, targets: np.ndarray, ap_mode: str = "voc", empty_class: str = "skip",
                    threshold: float = 0.5, top_k: int = 3) -> dict:
    """The full closed-set report: mAP, per-class AP, threshold metrics and their top-k variants."""
    m, ap = mean_average_precision(scores, targets, ap_mode, empty_class)
    report = {"mAP": m, "ap_mode": ap_mode, "empty_class": empty_class, "per_class_AP": ap.tolist()}
    report.update(threshold_metrics(scores, targets, threshold))
    report.update({f"top{top_k}_{k}": v for k, v in threshold_metrics(scores, targets, threshold, top_k=top_k).items()})
    return report
