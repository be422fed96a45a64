"""The paper's Table 1: thresholds chosen to maximise F1 on the validation split, applied to the test split.

Methods (paper section 3.2): MF (column ``mf_snr``), CNN (column ``cnn_prob``), AND (both pass), PROD
(product of the rank percentiles, ranks computed within each split separately) and OR (either passes).
A method whose columns are missing is skipped.

Degenerate splits never raise: if the validation split has no positive labels (or no threshold gives F1 > 0)
the thresholds are NaN and the method predicts nothing on test; a test split without positives then has
F1 = NaN and completeness = NaN (undefined), one without predictions purity = NaN. See
:mod:`szviewer.evaluate.curves` for the NaN-score rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import policy
from .curves import Counts, confusion

__all__ = ["METHODS", "Table1Row", "table1", "format_table1"]

METHODS: tuple[str, ...] = ("MF", "CNN", "AND", "PROD", "OR", "LEARNED")
PROD_COLUMN = policy.PROD_COLUMN


@dataclass(frozen=True)
class Table1Row:
    """One method's row: thresholds (column -> value, chosen on the fit split) and test-split counts."""

    method: str
    thresholds: dict[str, float]
    counts: Counts
    fit_f1: float
    n_fit: int
    n_apply: int
    extra: dict = field(default_factory=dict)

    tp = property(lambda self: self.counts.tp)
    fp = property(lambda self: self.counts.fp)
    fn = property(lambda self: self.counts.fn)
    tn = property(lambda self: self.counts.tn)
    purity = property(lambda self: self.counts.purity)
    completeness = property(lambda self: self.counts.completeness)
    f1 = property(lambda self: self.counts.f1)

    def as_dict(self) -> dict:
        """Flat dict (for tables and JSON): method, threshold_<column>..., TP FP FN TN, ratios, fit_f1."""
        d: dict = {"method": self.method}
        d.update({f"threshold_{k}": v for k, v in self.thresholds.items()})
        d.update(
            tp=self.tp,
            fp=self.fp,
            fn=self.fn,
            tn=self.tn,
            purity=self.purity,
            completeness=self.completeness,
            f1=self.f1,
            fit_f1=self.fit_f1,
        )
        return d


def table1(
    columns: Mapping[str, np.ndarray],
    labels,
    split,
    *,
    mf: str = "mf_snr",
    cnn: str = "cnn_prob",
    methods: Sequence[str] = METHODS,
    fit: str = "val",
    apply: str = "test",
    levels: int = 200,
) -> list[Table1Row]:
    """Table 1 rows: each method's threshold maximises F1 on split ``fit``; counts are on split ``apply``.

    ``columns`` maps names to score arrays (NaN = no score); ``labels`` are booleans; ``split`` holds
    'train' / 'val' / 'test'. Thresholds come from the one evaluation policy
    (:func:`szviewer.evaluate.policy.choose`; AND and OR on a ``levels`` x ``levels`` quantile grid of each
    score on the fit split), so export and the app choose the same ones. ``mf`` / ``cnn`` rename the input
    columns. LEARNED appears when ``columns`` holds ``learned_prob``.
    """
    y = np.asarray(labels).ravel().astype(bool)
    sp = np.asarray(split).ravel().astype(str)
    if sp.shape != y.shape:
        raise ValueError(f"split ({sp.size}) and labels ({y.size}) differ in length")
    cols = {}
    for src, name in ((mf, policy.MF), (cnn, policy.CNN), (policy.LEARNED_COLUMN, policy.LEARNED_COLUMN)):
        if src in columns:
            cols[name] = np.asarray(columns[src], dtype=float).ravel()
            if cols[name].shape != y.shape:
                raise ValueError(f"column {src!r} ({cols[name].size}) and labels ({y.size}) differ in length")
    unknown = set(methods) - set(policy.METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {tuple(policy.METHODS)}")
    settings = policy.PolicySettings(fit=fit, apply=apply, levels=levels)
    app_m = sp == apply
    have = policy.available(cols)
    rows: list[Table1Row] = []
    for method in methods:
        if method not in have:
            continue
        choice = policy.choose(method, cols, y, sp, settings=settings)
        s = policy.method_scores(method, cols, groups=sp)
        pred = policy.decide(method, {k: v[app_m] for k, v in s.items()}, choice.thresholds)
        extra = {"grid": choice.grid.tp.shape} if choice.grid is not None else {}
        thresholds = {_rename(k, mf, cnn): v for k, v in choice.thresholds.items()}
        rows.append(Table1Row(method, thresholds, confusion(pred, y[app_m]), choice.fit_f1, choice.n_fit,
                              int(app_m.sum()), extra))
    return rows


def _rename(col: str, mf: str, cnn: str) -> str:
    return {policy.MF: mf, policy.CNN: cnn}.get(col, col)


def _fmt(x: float, digits: int = 2) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _thr(thresholds: Mapping[str, float]) -> str:
    return ", ".join(f"{k}>={'nan' if math.isnan(v) else f'{v:.4g}'}" for k, v in thresholds.items())


def format_table1(rows: Sequence[Table1Row], style: str = "rows") -> str:
    """Text table. ``style='rows'``: one line per method (thresholds, TP FP FN TN, purity, completeness, F1,
    validation F1). ``style='paper'``: the paper's layout, a 2x2 confusion matrix per method."""
    if style == "rows":
        thr = [_thr(r.thresholds) for r in rows]
        w = max([len("thresholds (val)")] + [len(t) for t in thr])
        head = (
            f"{'method':<6}  {'thresholds (val)':<{w}}  {'TP':>7} {'FP':>7} {'FN':>7} {'TN':>9}  "
            f"{'purity':>6} {'compl.':>6} {'F1':>5}  {'val F1':>6}"
        )
        lines = [head, "-" * len(head)]
        for r, t in zip(rows, thr, strict=True):
            lines.append(
                f"{r.method:<6}  {t:<{w}}  {r.tp:>7d} {r.fp:>7d} {r.fn:>7d} {r.tn:>9d}  "
                f"{_fmt(r.purity):>6} {_fmt(r.completeness):>6} {_fmt(r.f1):>5}  {_fmt(r.fit_f1):>6}"
            )
        return "\n".join(lines)
    if style == "paper":
        head = (
            f"{'Method':<8} {'Prediction':<12} {'Has Cluster':>12} {'No Cluster':>12}  "
            f"{'Precision':>9} {'Recall':>7} {'F1':>5}"
        )
        lines = ["Columns: truth; counts on the test split.", head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.method:<8} {'Has Cluster':<12} {r.tp:>12d} {r.fp:>12d}  "
                f"{_fmt(r.purity):>9} {_fmt(r.completeness):>7} {_fmt(r.f1):>5}"
            )
            lines.append(f"{'':<8} {'No Cluster':<12} {r.fn:>12d} {r.tn:>12d}")
        return "\n".join(lines)
    raise ValueError(f"unknown style {style!r}; use 'rows' or 'paper'")
