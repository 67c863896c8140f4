import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlc.metrics.multilabel import (
    average_precision,
    label_frequency_baseline,
    mean_average_precision,
    threshold_metrics,
    top_k_mask,
)


def test_noninterpolated_ap_equals_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = rng.integers(5, 200)
        y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
        if y.sum() == 0:
            y[0] = 1
        s = rng.random(n)  # continuous: no ties
        assert average_precision(s, y, "noninterp") == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert average_precision(s, y, "voc") >= average_precision(s, y, "noninterp") - 1e-12


def test_hand_worked_cases():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 0])
    # ranks of positives 1 and 3: precisions 1 and 2/3
    assert average_precision(s, y, "noninterp") == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(s, y, "voc") == pytest.approx((1 + 2 / 3) / 2)
    # interpolation differs when a later precision is higher: ranks 2 and 3 -> precisions 1/2, 2/3
    y2 = np.array([0, 1, 1, 0, 0])
    assert average_precision(s, y2, "noninterp") == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision(s, y2, "voc") == pytest.approx((2 / 3 + 2 / 3) / 2)
    # unknown cells (-1) are dropped
    y3 = np.array([-1, 1, 1, 0, 0])
    assert average_precision(s, y3, "noninterp") == pytest.approx(1.0)


def test_empty_class_policies():
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.4]])
    y = np.array([[1, 0], [0, 0], [0, 0]])
    assert mean_average_precision(s, y, empty_class="skip")[0] == pytest.approx(1.0)
    assert mean_average_precision(s, y, empty_class="zero")[0] == pytest.approx(0.5)
    assert np.isnan(mean_average_precision(s, y, empty_class="nan")[0])


def test_threshold_metrics_hand_case():
    s = np.array([[0.9, 0.6, 0.1], [0.4, 0.7, 0.8], [0.2, 0.3, 0.55]])
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    m = threshold_metrics(s, y, 0.5)
    # predictions: (0,0) tp, (0,1) fp, (1,1) tp, (1,2) fp, (2,2) fp ; class 0: tp1 pd1 gt2, class1: tp1 pd2 gt1,
    # class2: tp0 pd2 gt0 (no positives -> CR 1 under the SALGL convention)
    assert m["OP"] == pytest.approx(2 / 5) and m["OR"] == pytest.approx(2 / 3)
    assert m["CP"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["CR"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["CF1"] == pytest.approx(2 * m["CP"] * m["CR"] / (m["CP"] + m["CR"]))
    z = threshold_metrics(s, y, 0.5, empty_class="zero")
    assert z["CR"] == pytest.approx((0.5 + 1 + 0) / 3)
    # top-1 with threshold: (0,0), (1,2), (2,2)
    t1 = threshold_metrics(s, y, 0.5, top_k=1)
    assert t1["OP"] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(top_k_mask(s, 1).sum(1), [1, 1, 1])
    # top-2 without threshold predicts (0,0),(0,1),(1,2),(1,1),(2,2),(2,1): tp (0,0),(1,1)
    t2 = threshold_metrics(s, y, 0.5, top_k=2, top_k_needs_threshold=False)
    assert t2["OP"] == pytest.approx(2 / 6) and t2["OR"] == pytest.approx(2 / 3)
    # top-3 without threshold predicts everything, (1,0) with its score 0.4 included
    assert threshold_metrics(s, y, 0.5, top_k=3, top_k_needs_threshold=False)["OR"] == pytest.approx(1.0)


def test_threshold_metrics_against_sklearn_micro_macro():
    from sklearn.metrics import precision_score, recall_score
    rng = np.random.default_rng(3)
    y = (rng.random((200, 6)) < 0.3).astype(int)
    s = np.clip(y * 0.4 + rng.random((200, 6)) * 0.7, 0, 1)
    m = threshold_metrics(s, y, 0.5, empty_class="zero")
    pred = (s >= 0.5).astype(int)
    assert m["OP"] == pytest.approx(precision_score(y, pred, average="micro"))
    assert m["OR"] == pytest.approx(recall_score(y, pred, average="micro"))
    assert m["CP"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
    assert m["CR"] == pytest.approx(recall_score(y, pred, average="macro", zero_division=0))


def test_label_frequency_baseline_is_about_the_positive_rate():
    rng = np.random.default_rng(1)
    y = (rng.random((4000, 5)) < [0.05, 0.1, 0.2, 0.3, 0.5]).astype(int)
    base = label_frequency_baseline(y[:2000], y[2000:], "noninterp")
    assert base == pytest.approx(y[2000:].mean(), abs=0.03)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_no_metric_is_computed_from_nan_or_infinite_scores(bad):
    """All-NaN scores used to rank to a finite mAP (0.17 on this matrix): every metric refuses them instead."""
    from mlc.metrics.zsl import subset_report, topk_prf, zsl_report
    rng = np.random.default_rng(0)
    targets = (rng.random((20, 4)) < 0.4).astype(int)
    targets[0] = 1
    for scores in (np.full((20, 4), bad), np.where(rng.random((20, 4)) < 0.1, bad, rng.random((20, 4)))):
        for metric in (lambda: mean_average_precision(scores, targets), lambda: threshold_metrics(scores, targets),
                       lambda: average_precision(scores[:, 0], targets[:, 0]), lambda: topk_prf(scores, targets, 3),
                       lambda: subset_report(scores, targets), lambda: zsl_report(scores, targets, 2)):
            with pytest.raises(ValueError, match=r"the scores hold \d+ NaN and \d+ infinite values"):
                metric()
