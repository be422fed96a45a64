"""F1 / purity / completeness curves and ROC (szviewer.evaluate.curves)."""

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from szviewer.evaluate.curves import Counts, best_threshold, confusion, f1_curve, roc_curve


def test_hand_computed_curve_with_ties_and_nan():
    # thresholds 0.3, 0.8, 0.9; two cutouts tie at 0.8; the NaN one is never positive
    s = np.array([0.9, 0.8, 0.8, 0.3, np.nan])
    y = np.array([True, False, True, True, False])
    c = f1_curve(s, y)
    np.testing.assert_array_equal(c.thresholds, [0.3, 0.8, 0.9])
    np.testing.assert_array_equal(c.tp, [3, 2, 1])
    np.testing.assert_array_equal(c.fp, [1, 1, 0])
    np.testing.assert_array_equal(c.fn, [0, 1, 2])
    np.testing.assert_array_equal(c.tn, [1, 1, 2])
    np.testing.assert_allclose(c.purity, [3 / 4, 2 / 3, 1.0])
    np.testing.assert_allclose(c.completeness, [1.0, 2 / 3, 1 / 3])
    np.testing.assert_allclose(c.f1, [6 / 7, 2 / 3, 1 / 2])
    best = c.best()
    assert best.threshold == 0.3
    assert best.f1 == pytest.approx(6 / 7)
    assert best.counts == Counts(3, 1, 0, 1)
    assert best_threshold(s, y) == best
    assert c.precision is c.purity and c.recall is c.completeness


def test_counts_at_is_inclusive_and_handles_extremes():
    s = np.array([0.9, 0.8, 0.8, 0.3, np.nan])
    y = np.array([True, False, True, True, False])
    c = f1_curve(s, y)
    assert c.counts_at(0.8) == Counts(2, 1, 1, 1)  # >= includes both tied cutouts
    assert c.counts_at(0.85) == Counts(1, 0, 2, 2)
    assert c.counts_at(-np.inf) == Counts(3, 1, 0, 1)  # NaN still not positive
    none = c.counts_at(1.0)
    assert none == Counts(0, 0, 3, 2)
    assert math.isnan(none.purity) and none.completeness == 0.0 and none.f1 == 0.0
    assert c.counts_at(np.nan) == none  # NaN threshold predicts nothing
    assert c.percentile_of(0.8) == pytest.approx(2 / 5)  # NaN and 0.3 lie below


def test_best_ties_choose_highest_threshold():
    c = f1_curve([4.0, 3.0, 2.0, 1.0], [1, 0, 0, 1])
    np.testing.assert_allclose(c.f1, [2 / 3, 0.4, 0.5, 2 / 3])  # thresholds 1, 2, 3, 4
    assert c.best().threshold == 4.0


def test_all_negative_labels():
    c = f1_curve([0.1, 0.5, 0.9], [False, False, False])
    np.testing.assert_array_equal(c.f1, [0.0, 0.0, 0.0])
    assert np.isnan(c.completeness).all()
    best = c.best()
    assert math.isnan(best.threshold) and math.isnan(best.f1)
    assert best.counts == Counts(0, 0, 0, 3)
    assert math.isnan(roc_curve([0.1, 0.5, 0.9], [False] * 3).auc)


def test_all_nan_scores_no_mf_detections():
    y = np.array([True, False, True, False, False])
    c = f1_curve(np.full(5, np.nan), y)
    assert c.thresholds.size == 0
    best = c.best()
    assert math.isnan(best.threshold)
    assert best.f1 == 0.0
    assert best.counts == Counts(0, 0, 2, 3)
    assert c.counts_at(-1e300) == Counts(0, 0, 2, 3)
    r = roc_curve(np.full(5, np.nan), y)
    assert r.auc == pytest.approx(0.5)
    np.testing.assert_array_equal(r.tpr, [0.0, 1.0])


def test_confusion():
    assert confusion([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == Counts(2, 1, 1, 1)
    with pytest.raises(ValueError):
        confusion([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        f1_curve([1.0, 2.0], [0, 2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_precision_recall_curve(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    s = np.round(rng.random(n), 2)  # many ties
    y = rng.random(n) < 0.1 + 0.5 * s
    c = f1_curve(s, y)
    p, r, t = precision_recall_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(c.thresholds, t)
    np.testing.assert_allclose(c.purity, p[:-1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.completeness, r[:-1], rtol=0, atol=1e-15)
    f1_sk = 2 * p[:-1] * r[:-1] / (p[:-1] + r[:-1])
    np.testing.assert_allclose(c.f1, f1_sk, rtol=1e-12)
    # counts_at at arbitrary thresholds agrees with direct counting
    for thr in rng.random(20):
        pred = s >= thr
        assert c.counts_at(thr) == confusion(pred, y)


def test_nan_rule_equals_sklearn_with_nan_as_lowest_score():
    rng = np.random.default_rng(5)
    n = 2000
    s = rng.normal(size=n)
    y = rng.random(n) < 0.3
    s[y] += 1
    s[rng.random(n) < 0.3] = np.nan
    filled = np.where(np.isnan(s), np.nanmin(s) - 1, s)
    c = f1_curve(s, y)
    p, r, t = precision_recall_curve(y, filled, drop_intermediate=False)
    # identical except that the filled value's threshold (everything positive) is not a candidate
    np.testing.assert_array_equal(c.thresholds, t[1:])
    np.testing.assert_allclose(c.purity, p[1:-1])
    np.testing.assert_allclose(c.completeness, r[1:-1])
    roc = roc_curve(s, y)
    assert roc.auc == pytest.approx(roc_auc_score(y, filled), abs=1e-12)
    fpr, tpr, thr = sk_roc_curve(y, filled, drop_intermediate=False)
    np.testing.assert_allclose(roc.fpr, fpr)
    np.testing.assert_allclose(roc.tpr, tpr)


@pytest.mark.parametrize("seed", [3, 4])
def test_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=5000), 1)
    y = rng.random(5000) < 0.05 + 0.1 * (s > 0)
    r = roc_curve(s, y)
    assert r.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(r.fpr, fpr)
    np.testing.assert_allclose(r.tpr, tpr)
    np.testing.assert_array_equal(r.thresholds, thr)
