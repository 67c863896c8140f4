"""SEEN / ZSL / GZSL evaluation on hand-worked examples."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlc.metrics.zsl import average_precision_known, subset_report, topk_prf, zsl_report


def test_ap_over_known_cells_matches_hand_computation_and_sklearn():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    t = np.array([1, -1, 0, 1, 0])                      # the unknown at rank 2 is ignored
    # known ranking: 0.9 (+), 0.7 (-), 0.6 (+), 0.5 (-) -> AP = (1/1 + 2/3) / 2
    assert average_precision_known(s, t) == pytest.approx((1 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    s, t = rng.random(50), (rng.random(50) > 0.7).astype(int)
    assert average_precision_known(s, t) == pytest.approx(average_precision_score(t, s))
    assert np.isnan(average_precision_known(s, np.zeros(50, int)))


def test_topk_micro_precision_recall():
    s = np.array([[0.9, 0.1, 0.8, 0.2], [0.1, 0.9, 0.2, 0.8]])
    t = np.array([[1, 0, -1, 1], [0, 1, 0, 0]])
    # top-2: image 0 -> cols 0 (+), 2 (unknown: counts as a false positive); image 1 -> cols 1 (+), 3 (-)
    r = topk_prf(s, t, 2)
    assert r["P@2"] == pytest.approx(2 / 4) and r["R@2"] == pytest.approx(2 / 3)
    assert r["F1@2"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_filtering_and_empty_class_variants():
    s = np.array([[0.9, 0.2, 0.3], [0.1, 0.8, 0.7], [0.5, 0.5, 0.5]])
    t = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])     # image 2: no positive -> dropped; column 2: no positive
    zero = subset_report(s, t, ks=(1,), empty_class="zero")
    skip = subset_report(s, t, ks=(1,), empty_class="skip")
    assert zero["images"] == 2 and zero["labels"] == 3 and zero["labels_without_positive"] == 1
    assert zero["mAP"] == pytest.approx(2 / 3) and skip["mAP"] == pytest.approx(1.0)
    t_unknown = np.array([[1, 0, -1], [0, 1, -1], [0, 0, -1]])   # column 2 entirely unknown -> dropped
    assert subset_report(s, t_unknown, ks=(1,))["labels"] == 2


def test_zsl_report_slices_columns_or_takes_separate_unseen_scores():
    rng = np.random.default_rng(1)
    s, t = rng.random((20, 5)), (rng.random((20, 5)) > 0.6).astype(int)
    rep = zsl_report(s, t, n_seen=3, ks=(3,))
    assert rep["ZSL"] == subset_report(s[:, 3:], t[:, 3:], ks=(3,))
    assert rep["SEEN"] == subset_report(s[:, :3], t[:, :3], ks=(3,))
    assert rep["GZSL"] == subset_report(s, t, ks=(3,))
    other = zsl_report(s, t, n_seen=3, ks=(3,), zsl_scores=-s[:, 3:])
    assert other["ZSL"]["mAP"] != rep["ZSL"]["mAP"] and other["GZSL"] == rep["GZSL"]
