"""The one evaluation policy: the method registry and the threshold search (paper section 3.2, Table 1).

Every front end (Table 1, ``szviewer export``, the evaluate job, the app, the CNN job) asks this module which
score columns a method reads, how it combines them and which thresholds maximise F1 on the fit split, so the
same request gives the same thresholds everywhere.

Methods (``METHODS``):

- ``MF``: ``mf_snr >= t``; ``CNN``: ``cnn_prob >= t``.
- ``PROD``: EnsemblePROD, ``q(cnn_prob) * q(mf_snr) >= t`` with rank percentiles q computed within each
  split (``groups``), as the paper did; the score column is ``rank_product``.
- ``AND`` / ``OR``: both / either of ``cnn_prob >= t_cnn`` and ``mf_snr >= t_mf`` (paper Fig. 6b).
- ``LEARNED``: a calibrated classifier on per-candidate features (:mod:`szviewer.evaluate.learned`), column
  ``learned_prob >= t``.

Threshold search (:func:`search`): one score -> the exact F1 curve over every distinct score
(:func:`szviewer.evaluate.curves.f1_curve`, ties: the highest threshold); two scores -> the exact confusion
counts over a ``levels`` x ``levels`` grid of score quantiles of the fit split
(:func:`szviewer.evaluate.ensembles.two_score_grid`, ``spacing='tail'``; ties: lowest t_cnn, then t_mf).
``n_missed`` adds positives that have no scored row at all (object level: halos no candidate lies near), so
the same search serves cutouts and catalogues. No threshold with F1 > 0 -> NaN thresholds (predict nothing).

A method whose score is a calibrated probability (``Method.calibrated``: LEARNED) takes ``t = F1* / 2``, half
the best F1 of the fit split's curve: for calibrated probabilities that is where F1 is maximal (Lipton, Elkan &
Naryanaswamy 2014, "Optimal thresholding of classifiers to maximize F1 measure", theorem 1), and the height of
a flat F1 curve is far less noisy than the place of its highest point on a small validation region (measured on
five unseen 400 deg^2 skies, ``benchmarks/bench_objects.py``: object-level test F1 of LEARNED +0.002 to +0.055,
mean +0.015).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .curves import F1Curve, f1_curve
from .ensembles import TwoScoreGrid, and_predict, or_predict, prod_score, two_score_grid

__all__ = [
    "Method",
    "METHODS",
    "PolicySettings",
    "Choice",
    "method_of",
    "available",
    "method_scores",
    "search",
    "choose",
    "decide",
    "format_thresholds",
    "format_threshold",
    "thresholds_from_values",
]

CNN, MF, PROD_COLUMN, LEARNED_COLUMN = "cnn_prob", "mf_snr", "rank_product", "learned_prob"


@dataclass(frozen=True)
class Method:
    """A detection method: its name, the score columns it needs, its rule and the column(s) it thresholds."""

    name: str
    needs: tuple[str, ...]  # score columns that must exist
    rule: str  # 'single' | 'prod' | 'and' | 'or'
    thresholded: tuple[str, ...]  # the columns the decision compares to thresholds, in threshold order
    description: str = ""
    calibrated: bool = False  # the score is a calibrated probability: threshold F1* / 2 (module docstring)

    @property
    def n_thresholds(self) -> int:
        return len(self.thresholded)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("MF", (MF,), "single", (MF,), "matched-filter S/N >= t"),
        Method("CNN", (CNN,), "single", (CNN,), "CNN probability >= t"),
        Method("AND", (CNN, MF), "and", (CNN, MF), "CNN probability >= t_cnn and MF S/N >= t_mf"),
        Method("PROD", (CNN, MF), "prod", (PROD_COLUMN,), "rank product q(cnn) q(mf) >= t (ranks per split)"),
        Method("OR", (CNN, MF), "or", (CNN, MF), "CNN probability >= t_cnn or MF S/N >= t_mf"),
        Method("LEARNED", (LEARNED_COLUMN,), "single", (LEARNED_COLUMN,), "calibrated learned ensemble >= t",
               calibrated=True),
    )
}


@dataclass(frozen=True)
class PolicySettings:
    """Where thresholds are chosen and applied, and the two-score grid (paper section 3.2: validation -> test)."""

    fit: str = "val"
    apply: str = "test"
    levels: int = 200  # per score, for AND / OR
    spacing: str = "tail"  # see ensembles.quantile_thresholds


@dataclass(frozen=True, eq=False)
class Choice:
    """The thresholds chosen for a method (column -> value; NaN = predict nothing) and the fit-split F1."""

    method: str
    thresholds: dict[str, float]
    fit_f1: float
    n_fit: int
    curve: F1Curve | None = field(default=None, repr=False)
    grid: TwoScoreGrid | None = field(default=None, repr=False)

    @property
    def values(self) -> tuple[float, ...]:
        """Thresholds in the method's order (AND / OR: CNN, then MF)."""
        return tuple(self.thresholds[c] for c in METHODS[self.method].thresholded)


def method_of(name: str) -> Method:
    """The registered method of ``name`` (any case); ValueError naming the choices otherwise."""
    key = str(name).upper()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[key]


def available(columns) -> list[str]:
    """Names of the methods whose score columns are all in ``columns`` (registry order)."""
    have = set(columns)
    return [m.name for m in METHODS.values() if set(m.needs) <= have]


def method_scores(method: str | Method, columns: Mapping[str, np.ndarray], groups=None) -> dict[str, np.ndarray]:
    """The arrays the method thresholds (its ``thresholded`` columns), as float; PROD's ``rank_product`` is
    computed here from ``cnn_prob`` and ``mf_snr`` with ranks within each of ``groups`` (the split)."""
    m = method if isinstance(method, Method) else method_of(method)
    missing = [c for c in m.needs if c not in columns]
    if missing:
        raise ValueError(f"method {m.name} needs score column(s) {', '.join(missing)}")
    if m.rule == "prod":
        if PROD_COLUMN in columns and CNN not in columns:
            return {PROD_COLUMN: np.asarray(columns[PROD_COLUMN], dtype=float)}
        return {PROD_COLUMN: prod_score(columns[CNN], columns[MF], groups=groups)}
    return {c: np.asarray(columns[c], dtype=float).ravel() for c in m.thresholded}


def _pad(s: np.ndarray, y: np.ndarray, n_missed: int) -> tuple[np.ndarray, np.ndarray]:
    if n_missed <= 0:
        return s, y
    return np.concatenate([s, np.full(n_missed, np.nan)]), np.concatenate([y, np.ones(n_missed, bool)])


def search(method: str | Method, scores: Mapping[str, np.ndarray], labels, *, n_missed: int = 0,
           settings: PolicySettings | None = None) -> Choice:
    """The threshold search: thresholds of maximal F1 of ``method`` over the rows given (already the fit set);
    for a calibrated method ``F1* / 2`` (module docstring), ``fit_f1`` then the F1 there.

    ``scores`` holds the method's thresholded columns (:func:`method_scores`); ``labels`` are booleans;
    ``n_missed`` positives without any row count as false negatives at every threshold.
    """
    m = method if isinstance(method, Method) else method_of(method)
    settings = settings or PolicySettings()
    y = np.asarray(labels).ravel().astype(bool)
    if m.n_thresholds == 1:
        col = m.thresholded[0]
        s, yy = _pad(np.asarray(scores[col], dtype=float).ravel(), y, n_missed)
        curve = f1_curve(s, yy)
        best = curve.best()
        if m.calibrated and best.f1 > 0:  # F1* / 2 (module docstring)
            t = float(best.f1) / 2.0
            return Choice(m.name, {col: t}, float(curve.counts_at(t).f1), int(y.size), curve=curve)
        return Choice(m.name, {col: float(best.threshold)}, float(best.f1), int(y.size), curve=curve)
    a_col, b_col = m.thresholded
    a, yy = _pad(np.asarray(scores[a_col], dtype=float).ravel(), y, n_missed)
    b, _ = _pad(np.asarray(scores[b_col], dtype=float).ravel(), y, n_missed)
    g = two_score_grid(a, b, yy, rule=m.rule, levels=settings.levels, spacing=settings.spacing)
    t_a, t_b, f1, _ = g.best()
    return Choice(m.name, {a_col: float(t_a), b_col: float(t_b)}, float(f1), int(y.size), grid=g)


def choose(method: str | Method, columns: Mapping[str, np.ndarray], labels, split, *,
           settings: PolicySettings | None = None) -> Choice:
    """Thresholds of ``method`` chosen on the rows whose ``split`` is ``settings.fit`` (the paper's rule).

    ``columns`` are whole score columns (all splits) aligned with ``labels`` and ``split``; PROD ranks are
    computed within each split. The same call gives the same thresholds in Table 1, export and the app.
    """
    m = method if isinstance(method, Method) else method_of(method)
    settings = settings or PolicySettings()
    sp = np.asarray(split).ravel().astype(str)
    y = np.asarray(labels).ravel().astype(bool)
    if sp.shape != y.shape:
        raise ValueError(f"split ({sp.size}) and labels ({y.size}) differ in length")
    fit = sp == settings.fit
    s = method_scores(m, columns, groups=sp)
    return search(m, {k: v[fit] for k, v in s.items()}, y[fit], settings=settings)


def decide(method: str | Method, scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> np.ndarray:
    """Boolean decisions of ``method`` at ``thresholds`` (column -> value) over ``scores`` (its thresholded
    columns, :func:`method_scores`); NaN scores and NaN thresholds never pass."""
    m = method if isinstance(method, Method) else method_of(method)
    if m.n_thresholds == 1:
        c = m.thresholded[0]
        s = np.asarray(scores[c], dtype=float)
        with np.errstate(invalid="ignore"):
            return s >= float(thresholds[c])
    a_col, b_col = m.thresholded
    fn = and_predict if m.rule == "and" else or_predict
    return fn(scores[a_col], scores[b_col], float(thresholds[a_col]), float(thresholds[b_col]))


def thresholds_from_values(method: str | Method, values) -> dict[str, float]:
    """Thresholds (column -> value) from values in the method's order (AND / OR: CNN, then MF S/N);
    ValueError if the count is wrong."""
    m = method if isinstance(method, Method) else method_of(method)
    values = [float(v) for v in values]
    if len(values) != m.n_thresholds:
        order = " then ".join(m.thresholded)
        raise ValueError(f"method {m.name} takes {m.n_thresholds} threshold(s) ({order}), got {len(values)}")
    return dict(zip(m.thresholded, values, strict=True))


def format_threshold(v: float, digits: int = 4) -> str:
    """A threshold with ``digits`` significant digits ('nan' for none)."""
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}g}"


def format_thresholds(thresholds: Mapping[str, float], digits: int = 4) -> str:
    """E.g. 'cnn_prob >= 0.2553, mf_snr >= 4.871'."""
    return ", ".join(f"{k} >= {format_threshold(v, digits)}" for k, v in thresholds.items())
