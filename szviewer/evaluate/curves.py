"""F1, purity and completeness as a function of a score threshold, and the ROC curve (paper section 3.2).

A cutout is predicted positive where ``score >= threshold``. Purity is precision TP / (TP + FP),
completeness is recall TP / (TP + FN), and F1 = 2 TP / (2 TP + FP + FN) (paper eq. 1).

NaN rule: a NaN score (e.g. a cutout without a matched-filter detection) is treated as -inf, i.e. it is
never predicted positive at any threshold; a score of -inf likewise. Such cutouts still count in FN and TN.
A NaN *threshold* predicts nothing positive (it is what :meth:`F1Curve.best` returns when no threshold
can be chosen).

Undefined ratios are NaN: purity when nothing is predicted positive, completeness when there are no
positive labels, F1 when there are neither positive labels nor positive predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Counts",
    "BestF1",
    "F1Curve",
    "RocCurve",
    "confusion",
    "f1_curve",
    "best_threshold",
    "roc_curve",
    "valid_mask",
]


def _ratio(num, den):
    """num / den with NaN where den == 0 (works for scalars and arrays)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out if out.ndim else float(out)


def valid_mask(scores: np.ndarray) -> np.ndarray:
    """True where a score can pass a threshold: not NaN and not -inf (the NaN rule of this module)."""
    return np.asarray(scores) > -np.inf  # NaN compares False


def _as_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel()
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be boolean or 0/1")
        y = y.astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    return s, y


@dataclass(frozen=True)
class Counts:
    """A confusion matrix at one operating point."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def purity(self) -> float:
        """TP / (TP + FP); NaN if nothing is predicted positive."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def completeness(self) -> float:
        """TP / (TP + FN); NaN if there are no positive labels."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN) (paper eq. 1); NaN if there are no positives, true or predicted."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(predicted, labels) -> Counts:
    """Confusion matrix of boolean predictions against boolean labels."""
    p = np.asarray(predicted, dtype=bool).ravel()
    _, y = _as_scores_labels(np.zeros(p.size), labels)
    tp = int(np.count_nonzero(p & y))
    n_pred = int(np.count_nonzero(p))
    n_pos = int(np.count_nonzero(y))
    return Counts(tp=tp, fp=n_pred - tp, fn=n_pos - tp, tn=p.size - n_pos - (n_pred - tp))


@dataclass(frozen=True)
class BestF1:
    """The threshold that maximises F1; NaN (predict nothing) when no threshold gives F1 > 0."""

    threshold: float
    f1: float
    counts: Counts


@dataclass(frozen=True, eq=False)
class F1Curve:
    """Exact confusion counts at every distinct score, ascending (built by :func:`f1_curve`).

    ``thresholds[k]`` is the k-th distinct valid score; at it the cutouts with ``score >= thresholds[k]``
    are positive. ``tp, fp, fn, tn`` are int64 arrays, ``purity, completeness, f1`` float arrays.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    purity: np.ndarray
    completeness: np.ndarray
    f1: np.ndarray
    n_pos: int
    n_neg: int
    sorted_scores: np.ndarray = field(repr=False)  # valid scores, ascending
    _cum_pos: np.ndarray = field(repr=False)  # _cum_pos[i] = positives among sorted_scores[:i]

    @property
    def n(self) -> int:
        return self.n_pos + self.n_neg

    @property
    def precision(self) -> np.ndarray:
        """Alias of ``purity``."""
        return self.purity

    @property
    def recall(self) -> np.ndarray:
        """Alias of ``completeness``."""
        return self.completeness

    def counts_at(self, threshold: float) -> Counts:
        """Confusion counts for ``score >= threshold``: one binary search, a few microseconds."""
        n_valid = self.sorted_scores.size
        if threshold != threshold:  # NaN threshold: predict nothing
            i = n_valid
        else:
            i = int(np.searchsorted(self.sorted_scores, threshold, side="left"))
        n_pred = n_valid - i
        tp = int(self._cum_pos[-1] - self._cum_pos[i])
        fp = n_pred - tp
        return Counts(tp=tp, fp=fp, fn=self.n_pos - tp, tn=self.n_neg - fp)

    def best(self) -> BestF1:
        """Threshold of maximal F1 (ties: the highest such threshold, i.e. the fewest positives).

        If no positive labels exist, or the best F1 is 0, the threshold is NaN (predict nothing); its F1 is
        then NaN (no positives) or 0.
        """
        none = self.counts_at(np.nan)
        if self.n_pos == 0 or self.f1.size == 0:
            return BestF1(threshold=np.nan, f1=none.f1, counts=none)
        k = self.f1.size - 1 - int(np.argmax(self.f1[::-1]))
        if not self.f1[k] > 0:
            return BestF1(threshold=np.nan, f1=none.f1, counts=none)
        t = float(self.thresholds[k])
        return BestF1(threshold=t, f1=float(self.f1[k]), counts=self.counts_at(t))

    def percentile_of(self, threshold: float) -> float:
        """Fraction of all cutouts (NaN scores included) scoring below ``threshold``."""
        if threshold != threshold:
            return np.nan
        n_below = (
            self.n - self.sorted_scores.size + int(np.searchsorted(self.sorted_scores, threshold, "left"))
        )
        return n_below / self.n if self.n else np.nan


def f1_curve(scores, labels) -> F1Curve:
    """Exact F1-vs-threshold curve: one sort (O(N log N)), then cumulative counts (paper section 3.2, Fig. 5).

    Every distinct non-NaN score is a candidate threshold. See the module docstring for the NaN rule.
    """
    s, y = _as_scores_labels(scores, labels)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    valid = valid_mask(s)
    if valid.all():
        sv, yv = s, y
    else:
        sv, yv = s[valid], y[valid]
    order = np.argsort(sv, kind="stable")
    ss = sv[order]
    cum_pos = np.zeros(ss.size + 1, dtype=np.int64)
    np.cumsum(yv[order], out=cum_pos[1:])
    if ss.size:
        first = np.flatnonzero(np.concatenate(([True], ss[1:] != ss[:-1])))
    else:
        first = np.zeros(0, dtype=np.int64)
    thresholds = ss[first]
    tp = cum_pos[-1] - cum_pos[first]
    n_pred = ss.size - first
    fp = n_pred - tp
    fn = n_pos - tp
    tn = n_neg - fp
    return F1Curve(
        thresholds=thresholds,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        purity=_ratio(tp, n_pred),
        completeness=_ratio(tp, np.full(tp.shape, n_pos)),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        n_pos=n_pos,
        n_neg=n_neg,
        sorted_scores=ss,
        _cum_pos=cum_pos,
    )


def best_threshold(scores, labels) -> BestF1:
    """Threshold maximising F1 (paper section 3.2): ``f1_curve(scores, labels).best()``."""
    return f1_curve(scores, labels).best()


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC curve: false- and true-positive rates at descending thresholds, and the area under it (Fig. 8b).

    The first point (0, 0) has threshold +inf; if some scores are NaN/-inf a last point (1, 1) with threshold
    -inf is added (NaN scores rank below all others and tie among themselves). ``auc`` is NaN when one class
    is absent.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def roc_curve(scores, labels) -> RocCurve:
    """ROC curve and AUC (trapezoidal, equal to the Mann-Whitney probability with ties counted 1/2)."""
    c = f1_curve(scores, labels)
    tp = c.tp[::-1]
    fp = c.fp[::-1]
    thr = c.thresholds[::-1]
    tp = np.concatenate(([0], tp))
    fp = np.concatenate(([0], fp))
    thr = np.concatenate(([np.inf], thr))
    if c.sorted_scores.size < c.n:
        tp = np.concatenate((tp, [c.n_pos]))
        fp = np.concatenate((fp, [c.n_neg]))
        thr = np.concatenate((thr, [-np.inf]))
    tpr = _ratio(tp, np.full(tp.shape, c.n_pos))
    fpr = _ratio(fp, np.full(fp.shape, c.n_neg))
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2) if c.n_pos and c.n_neg else np.nan
    return RocCurve(fpr=np.atleast_1d(fpr), tpr=np.atleast_1d(tpr), thresholds=thr, auc=auc)
