"""Rank percentiles, EnsemblePROD and the AND / OR threshold grids (szviewer.evaluate.ensembles)."""

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from szviewer.evaluate.curves import Counts, confusion
from szviewer.evaluate.ensembles import (
    and_grid,
    and_predict,
    or_grid,
    or_predict,
    prod_score,
    quantile_thresholds,
    rank_percentile,
    two_score_grid,
)


def test_rank_percentile_by_hand_ties_and_nan():
    q = rank_percentile([0.1, 0.5, 0.5, np.nan, 0.9])
    # #{s_j <= s_i} / 5; ties share the highest rank; NaN is the lowest
    np.testing.assert_allclose(q, [2 / 5, 4 / 5, 4 / 5, 1 / 5, 5 / 5])
    np.testing.assert_allclose(rank_percentile([np.nan, np.nan, 3.0]), [2 / 3, 2 / 3, 1.0])


def test_rank_percentile_matches_scipy_max_rank():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(1000), 2)
    np.testing.assert_allclose(rank_percentile(s), rankdata(s, method="max") / s.size)


def test_prod_ranks_within_each_split_by_hand():
    cnn = [0.9, 0.1, 0.5, 0.2, 0.8]
    mf = [3.0, 5.0, 4.0, 1.0, 2.0]
    groups = np.array(["val", "val", "val", "test", "test"])
    # val: cnn ranks 1, 1/3, 2/3; mf ranks 1/3, 1, 2/3.  test: cnn 1/2, 1; mf 1/2, 1
    np.testing.assert_allclose(prod_score(cnn, mf, groups), [1 / 3, 1 / 3, 4 / 9, 1 / 4, 1.0])
    # without groups the ranks are over all five
    np.testing.assert_allclose(
        prod_score(cnn, mf), [1.0 * 3 / 5, 1 / 5 * 1.0, 3 / 5 * 4 / 5, 2 / 5 * 1 / 5, 4 / 5 * 2 / 5]
    )
    with pytest.raises(ValueError):
        prod_score([1.0, 2.0], [1.0])


def test_quantile_thresholds_are_distinct_scores():
    rng = np.random.default_rng(1)
    s = rng.random(10_000)
    s[:100] = np.nan
    for spacing in ("tail", "linear"):
        t = quantile_thresholds(s, 50, spacing)
        assert t.size == 50
        assert np.all(np.diff(t) > 0)
        assert np.isin(t, s).all()
        assert t[0] == np.nanmin(s) and t[-1] == np.nanmax(s)
    # tail spacing puts most grid lines among the highest scores
    assert np.mean(quantile_thresholds(s, 50, "tail") > np.nanquantile(s, 0.9)) > 0.5
    assert quantile_thresholds([np.nan, np.nan], 10).size == 0
    assert quantile_thresholds([1.0, 1.0, 2.0], 10).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        quantile_thresholds(s, 10, "cubic")


def test_grid_by_hand():
    a = [0.9, 0.8, 0.2, 0.7]
    b = [5.0, np.nan, 6.0, 1.0]
    y = [True, True, False, False]
    g = and_grid(a, b, y, t_a=[0.5], t_b=[2.0])
    assert g.counts(0, 0) == Counts(1, 0, 1, 2)  # only cutout 0 passes both; NaN S/N never passes
    g = or_grid(a, b, y, t_a=[0.5], t_b=[2.0])
    assert g.counts(0, 0) == Counts(2, 2, 0, 0)


def _brute(a, b, y, g, predict):
    f1 = np.full(g.tp.shape, np.nan)
    for k, ta in enumerate(g.t_a):
        for l, tb in enumerate(g.t_b):
            c = confusion(predict(a, b, ta, tb), y)
            assert (g.tp[k, l], g.fp[k, l], g.fn[k, l], g.tn[k, l]) == (c.tp, c.fp, c.fn, c.tn)
            f1[k, l] = c.f1
    return f1


@pytest.mark.parametrize("rule, predict", [("and", and_predict), ("or", or_predict)])
@pytest.mark.parametrize("seed", [0, 1])
def test_grid_equals_brute_force(rule, predict, seed):
    rng = np.random.default_rng(seed)
    n = 1500
    y = rng.random(n) < 0.08
    a = np.round(np.where(y, rng.beta(2, 2, n), rng.beta(0.5, 8, n)), 2)  # ties
    b = np.where(y, rng.normal(6, 3, n), rng.normal(0, 2, n))
    b[b < 2.5] = np.nan  # no MF detection
    g = two_score_grid(a, b, y, rule=rule, levels=25)
    assert g.t_a.size == 25 and g.t_b.size == 25
    f1 = _brute(a, b, y, g, predict)
    np.testing.assert_allclose(g.f1, f1)
    t1, t2, best, counts = g.best()
    assert best == pytest.approx(np.nanmax(f1))
    assert confusion(predict(a, b, t1, t2), y) == counts
    assert best > 0.5


def test_grid_degenerate_cases():
    g = and_grid([0.1, 0.2], [1.0, 2.0], [False, False], levels=5)
    t1, t2, f1, counts = g.best()
    assert math.isnan(t1) and math.isnan(t2) and math.isnan(f1)
    g = and_grid([np.nan, np.nan], [np.nan, 1.0], [True, False], levels=5)
    assert g.t_a.size == 0 and g.tp.shape == (0, 1)
    t1, t2, f1, counts = g.best()
    assert math.isnan(t1) and f1 == 0.0 and counts == Counts(0, 0, 1, 1)
    with pytest.raises(ValueError):
        two_score_grid([1.0], [1.0], [True], rule="xor")
    with pytest.raises(ValueError):
        and_grid([1.0], [1.0], [True], t_a=[2.0, 1.0], t_b=[1.0])
