"""Ensembles of the CNN and matched-filter scores: EnsemblePROD, EnsembleAND, OR (paper section 3.2, Fig. 6).

Rank percentile (paper): q_i = (1/N) #{j : s_j <= s_i}. Tied scores all get the same, highest rank (the
count includes every tie). NaN scores are treated as -inf (see :mod:`szviewer.evaluate.curves`): they tie at
the bottom, each with q = (number of NaN or -inf scores) / N, which is what DeepSZ obtained by filling
cutouts without a detection with S/N 2.0.

Ranks are computed within the set being evaluated. Pass ``groups`` (e.g. the split array) to rank each
group separately, as the paper did: the PROD threshold is chosen on validation ranks and applied to test
ranks, each computed within its own split.

EnsembleAND predicts positive where ``a >= t_a`` and ``b >= t_b``; OR where either holds; a NaN score never
passes. :func:`two_score_grid` gives the exact confusion counts over a whole grid of threshold pairs from one
2-D histogram of grid-bin indices and cumulative sums from the top, O(N log K + K L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .curves import Counts, _as_scores_labels, _ratio, valid_mask

__all__ = [
    "rank_percentile",
    "prod_score",
    "quantile_thresholds",
    "TwoScoreGrid",
    "two_score_grid",
    "and_grid",
    "or_grid",
    "and_predict",
    "or_predict",
]


def _rank_one(s: np.ndarray) -> np.ndarray:
    f = np.where(valid_mask(s), s, -np.inf)
    srt = np.sort(f)
    return np.searchsorted(srt, f, side="right") / max(f.size, 1)


def rank_percentile(scores, groups=None) -> np.ndarray:
    """Rank percentile q_i = #{j : s_j <= s_i} / N in (0, 1] (paper section 3.2, EnsemblePROD).

    Ties share the highest rank; NaN counts as -inf. With ``groups`` (an array of labels, e.g. split names)
    the ranks are computed within each group separately.
    """
    s = np.asarray(scores, dtype=float).ravel()
    if groups is None:
        return _rank_one(s)
    g = np.asarray(groups).ravel()
    if g.shape != s.shape:
        raise ValueError(f"groups ({g.size}) and scores ({s.size}) differ in length")
    q = np.empty(s.size)
    for value in np.unique(g):
        idx = np.flatnonzero(g == value)
        q[idx] = _rank_one(s[idx])
    return q


def prod_score(a, b, groups=None) -> np.ndarray:
    """EnsemblePROD score q_a * q_b, the product of the two rank percentiles (paper section 3.2, Fig. 6a)."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two score arrays differ in length ({a.size} and {b.size})")
    return rank_percentile(a, groups) * rank_percentile(b, groups)


def quantile_thresholds(scores, levels: int = 200, spacing: str = "tail") -> np.ndarray:
    """Up to ``levels`` distinct thresholds taken from the valid scores themselves, ascending.

    ``spacing='tail'`` (default) spaces the fraction of cutouts passing the threshold geometrically from all
    valid cutouts down to one, so the rare high-score region where the clusters are gets as many grid lines
    as the bulk; ``'linear'`` spaces that fraction uniformly (plain quantiles). Duplicates are dropped, so
    fewer than ``levels`` may be returned.
    """
    s = np.asarray(scores, dtype=float).ravel()
    s = np.sort(s[valid_mask(s)])
    n = s.size
    if n == 0 or levels < 1:
        return np.zeros(0)
    if spacing == "tail":
        # number of cutouts passing, geometric from n down to 1; refine until `levels` distinct counts exist
        m = levels
        n_pass = np.unique(np.rint(np.geomspace(1, n, m)).astype(np.int64))
        while n_pass.size < min(levels, n):
            m = 2 * m
            n_pass = np.unique(np.rint(np.geomspace(1, n, m)).astype(np.int64))
    elif spacing == "linear":
        n_pass = np.unique(np.rint(np.linspace(1, n, levels)).astype(np.int64))
    else:
        raise ValueError(f"unknown spacing {spacing!r}; use 'tail' or 'linear'")
    if n_pass.size > levels:
        n_pass = n_pass[np.unique(np.rint(np.linspace(0, n_pass.size - 1, levels)).astype(np.int64))]
    return np.unique(s[n - n_pass])


def and_predict(a, b, t_a: float, t_b: float) -> np.ndarray:
    """EnsembleAND decision ``a >= t_a`` and ``b >= t_b`` (NaN scores and NaN thresholds never pass)."""
    return (
        (np.asarray(a, dtype=float) >= t_a)
        & (np.asarray(b, dtype=float) >= t_b)
        & valid_mask(a)
        & valid_mask(b)
    )


def or_predict(a, b, t_a: float, t_b: float) -> np.ndarray:
    """OR decision ``a >= t_a`` or ``b >= t_b`` (NaN scores and NaN thresholds never pass)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return ((a >= t_a) & valid_mask(a)) | ((b >= t_b) & valid_mask(b))


@dataclass(frozen=True, eq=False)
class TwoScoreGrid:
    """Confusion counts over a grid of threshold pairs; element [k, l] is for (t_a[k], t_b[l])."""

    rule: str
    t_a: np.ndarray
    t_b: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def purity(self) -> np.ndarray:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def completeness(self) -> np.ndarray:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> np.ndarray:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def counts(self, k: int, l: int) -> Counts:
        return Counts(int(self.tp[k, l]), int(self.fp[k, l]), int(self.fn[k, l]), int(self.tn[k, l]))

    def best(self) -> tuple[float, float, float, Counts]:
        """(t_a, t_b, F1, counts) at the maximal F1 (ties: first in row-major order, lowest t_a then t_b).

        Thresholds are NaN (predict nothing) when no pair gives F1 > 0.
        """
        f1 = self.f1
        if self.n_pos == 0 or f1.size == 0 or not np.nanmax(f1) > 0:
            none = Counts(0, 0, self.n_pos, self.n_neg)
            return np.nan, np.nan, none.f1, none
        k, l = np.unravel_index(int(np.nanargmax(f1)), f1.shape)
        return float(self.t_a[k]), float(self.t_b[l]), float(f1[k, l]), self.counts(k, l)


def _bin_index(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of thresholds <= x (so x passes thresholds[k] iff index > k); 0 for NaN / -inf."""
    idx = np.searchsorted(thresholds, x, side="right")
    idx[~valid_mask(x)] = 0
    return idx


def _check_thresholds(t, name: str) -> np.ndarray:
    t = np.asarray(t, dtype=float).ravel()
    if np.isnan(t).any():
        raise ValueError(f"{name} thresholds contain NaN")
    if np.any(np.diff(t) < 0):
        raise ValueError(f"{name} thresholds must be ascending")
    return t


def _tail_sum(h: np.ndarray) -> np.ndarray:
    """c[i, j] = sum of h[i:, j:]."""
    return h[::-1, ::-1].cumsum(axis=0).cumsum(axis=1)[::-1, ::-1]


def two_score_grid(
    a,
    b,
    labels,
    *,
    rule: str = "and",
    levels: int | tuple[int, int] = 200,
    t_a=None,
    t_b=None,
    spacing: str = "tail",
) -> TwoScoreGrid:
    """Exact confusion counts of the AND (or OR) of two thresholded scores over a grid (paper Fig. 6b).

    The grid is ``t_a`` x ``t_b`` if given (ascending), otherwise :func:`quantile_thresholds` of each score
    with ``levels`` (default 200 x 200). Each cutout is binned by how many thresholds each score passes; a
    2-D histogram of those bins, for positives and for all, summed from the top gives every cell at once.
    """
    a, y = _as_scores_labels(a, labels)
    b = np.asarray(b, dtype=float).ravel()
    if b.shape != a.shape:
        raise ValueError(f"the two score arrays differ in length ({a.size} and {b.size})")
    if rule not in ("and", "or"):
        raise ValueError(f"unknown rule {rule!r}; use 'and' or 'or'")
    la, lb = (levels, levels) if np.isscalar(levels) else levels
    t_a = quantile_thresholds(a, la, spacing) if t_a is None else _check_thresholds(t_a, "first")
    t_b = quantile_thresholds(b, lb, spacing) if t_b is None else _check_thresholds(t_b, "second")
    ka, kb = t_a.size, t_b.size
    ia = _bin_index(a, t_a)
    ib = _bin_index(b, t_b)
    flat = ia * (kb + 1) + ib
    h_all = np.bincount(flat, minlength=(ka + 1) * (kb + 1)).reshape(ka + 1, kb + 1)
    h_pos = np.bincount(flat[y], minlength=(ka + 1) * (kb + 1)).reshape(ka + 1, kb + 1)
    c_all = _tail_sum(h_all)
    c_pos = _tail_sum(h_pos)
    pred = c_all[1:, 1:]  # a passes t_a[k] and b passes t_b[l]
    tp = c_pos[1:, 1:]
    if rule == "or":  # |A or B| = |A| + |B| - |A and B|
        pred = c_all[1:, :1] + c_all[:1, 1:] - pred
        tp = c_pos[1:, :1] + c_pos[:1, 1:] - tp
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    fp = pred - tp
    return TwoScoreGrid(
        rule=rule, t_a=t_a, t_b=t_b, tp=tp, fp=fp, fn=n_pos - tp, tn=n_neg - fp, n_pos=n_pos, n_neg=n_neg
    )


def and_grid(a, b, labels, **kwargs) -> TwoScoreGrid:
    """EnsembleAND F1 heat map: :func:`two_score_grid` with ``rule='and'`` (paper Fig. 6b)."""
    return two_score_grid(a, b, labels, rule="and", **kwargs)


def or_grid(a, b, labels, **kwargs) -> TwoScoreGrid:
    """OR ensemble (positive where either score passes): :func:`two_score_grid` with ``rule='or'``."""
    return two_score_grid(a, b, labels, rule="or", **kwargs)
