"""The science the app shows, in pure numpy (no Qt): the cutout table, score columns, F1 curves, the AND map,
decisions and outcomes at the current thresholds.

Speed at the paper's 808k cutouts: F1 curves (one sort each) and the PROD ranks are computed once and cached;
a threshold change is a binary search (:meth:`F1Curve.counts_at`) for MF, CNN and PROD and a vectorised test
over a split for AND. Per-cutout decisions are cached per threshold and computed only when a view asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from szviewer.evaluate.curves import Counts, F1Curve, confusion, f1_curve
from szviewer.evaluate.ensembles import TwoScoreGrid, and_predict, prod_score, two_score_grid
from szviewer.gui.models import Thresholds

METHODS = ("MF", "CNN", "PROD", "AND")
COLUMN_OF = {"MF": "mf_snr", "CNN": "cnn_prob", "PROD": "rank_product"}
#: Outcome codes: 2 * label + predicted.
OUTCOMES = ("TN", "FP", "FN", "TP")
#: Used when a method's threshold cannot be chosen from the validation split.
FALLBACK_THRESHOLD = {"MF": 5.0, "CNN": 0.5, "PROD": 0.9}
#: Levels per score of the AND threshold grid (the F1 heat map the app draws).
AND_LEVELS = 100


def missing_message(method: str, have: set[str] | dict) -> str | None:
    """Why ``method`` cannot be shown with the score columns ``have``, or None when it can."""
    mf = "mf_snr" in have
    cnn = "cnn_prob" in have
    if method == "MF" and not mf:
        return "no MF scores yet — run the matched filter (szviewer mf WS)"
    if method == "CNN" and not cnn:
        return "no CNN scores yet — run the CNN (szviewer predict WS)"
    if method in ("PROD", "AND") and not (mf and cnn):
        need = [name for name, ok in (("MF", mf), ("CNN", cnn)) if not ok]
        return f"{method} needs MF and CNN scores; no {' or '.join(need)} scores yet"
    return None


@dataclass
class CutoutData:
    """The cutout table as numpy columns (row order = the store's) and the score columns aligned with it."""

    columns: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.columns["id"].size)

    @classmethod
    def from_table(cls, table, scores: dict | None = None) -> CutoutData:
        cols = {name: np.asarray(table[name]) for name in table.colnames}
        cols["label"] = cols["label"].astype(bool)
        cols["split"] = cols["split"].astype(str)
        return cls(cols, {k: np.asarray(v, dtype=float) for k, v in (scores or {}).items()}, dict(table.meta))


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def validation_optimum(method: str, scores: dict[str, np.ndarray], labels: np.ndarray, split: np.ndarray,
                       fit: str = "val"):
    """The threshold of maximal F1 of ``method`` on the cutouts of split ``fit`` (the paper's rule, Sec. 3.2) by
    :func:`szviewer.evaluate.policy.choose`, the one threshold search that Table 1 and ``szviewer export`` use,
    so the app and the CLI pick the same thresholds. A float (AND: (t_cnn, t_mf)), or None when there is none."""
    from szviewer.evaluate import policy

    values = policy.choose(method, scores, labels, split, settings=policy.PolicySettings(fit=fit)).values
    if not all(_finite(v) for v in values):
        return None
    return (float(values[0]), float(values[1])) if method == "AND" else float(values[0])


class ScoreModel:
    """Curves, decisions and outcomes of the open cutouts at the thresholds of a :class:`Thresholds` model."""

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        self.data: CutoutData | None = None
        self.reset(None)

    def reset(self, data: CutoutData | None) -> None:
        self.data = data
        self._curves: dict[tuple[str, str], F1Curve] = {}
        self._grids: dict[str, TwoScoreGrid] = {}
        self._split_masks: dict[str, np.ndarray] = {}
        self._split_index: dict[str, np.ndarray] = {}
        self._prod: np.ndarray | None = None
        self._pred: dict[str, tuple[object, np.ndarray]] = {}

    def scores_changed(self) -> None:
        """Drop what depends on the score columns (after a finder ran)."""
        self._curves.clear()
        self._grids.clear()
        self._prod = None
        self._pred.clear()

    @property
    def n(self) -> int:
        return 0 if self.data is None else self.data.n

    @property
    def labels(self) -> np.ndarray:
        return self.data.columns["label"]

    def score_columns(self) -> set[str]:
        return set() if self.data is None else set(self.data.scores)

    def has_method(self, method: str) -> bool:
        return self.data is not None and missing_message(method, self.score_columns()) is None

    def score(self, method: str) -> np.ndarray:
        """The score array of MF, CNN or PROD over all cutouts (NaN = no score)."""
        if method == "PROD":
            if self._prod is None:
                d = self.data
                self._prod = prod_score(d.scores["cnn_prob"], d.scores["mf_snr"], groups=d.columns["split"])
            return self._prod
        return self.data.scores[COLUMN_OF[method]]

    def split_mask(self, split: str) -> np.ndarray:
        if split not in self._split_masks:
            if split == "all":
                self._split_masks[split] = np.ones(self.n, dtype=bool)
            else:
                self._split_masks[split] = self.data.columns["split"] == split
        return self._split_masks[split]

    def split_index(self, split: str) -> np.ndarray:
        if split not in self._split_index:
            self._split_index[split] = np.flatnonzero(self.split_mask(split))
        return self._split_index[split]

    def curve(self, method: str, split: str) -> F1Curve:
        """The exact F1 curve of a single-score method on a split (cached)."""
        key = (method, split)
        if key not in self._curves:
            m = self.split_mask(split)
            self._curves[key] = f1_curve(self.score(method)[m], self.labels[m])
        return self._curves[key]

    def and_grid(self, split: str) -> TwoScoreGrid:
        """The AND F1 heat map over (CNN, MF) threshold pairs on a split (cached)."""
        if split not in self._grids:
            m = self.split_mask(split)
            self._grids[split] = two_score_grid(self.data.scores["cnn_prob"][m], self.data.scores["mf_snr"][m],
                                                self.labels[m], rule="and", levels=AND_LEVELS)
        return self._grids[split]

    def optimum(self, method: str, split: str = "val"):
        """The threshold of maximal F1 on ``split`` (the paper's rule); a fallback when there is none."""
        t = None
        if self.split_mask(split).any():
            sp = self.data.columns["split"] if split != "all" else np.full(self.n, "all")
            t = validation_optimum(method, self.data.scores, self.labels, sp, fit=split)
        if t is None:
            return (FALLBACK_THRESHOLD["CNN"], FALLBACK_THRESHOLD["MF"]) if method == "AND" \
                else FALLBACK_THRESHOLD[method]
        return t

    def initial_thresholds(self, wanted: dict) -> dict:
        """Thresholds of the available methods: ``wanted``'s where they are valid, else the validation optima."""
        from szviewer.gui.models import threshold_value

        out = {}
        for method in METHODS:
            if self.has_method(method):
                t = threshold_value(method, wanted.get(method))
                out[method] = t if t is not None else self.optimum(method)
        return out

    def counts(self, method: str, split: str) -> Counts:
        """Confusion counts of a method at its current threshold on a split."""
        t = self.thresholds[method]
        if method == "AND":
            idx = self.split_index(split)
            pred = and_predict(self.data.scores["cnn_prob"][idx], self.data.scores["mf_snr"][idx], t[0], t[1])
            return confusion(pred, self.labels[idx])
        return self.curve(method, split).counts_at(t)

    def predicted(self, method: str, threshold=None) -> np.ndarray:
        """Boolean decisions of a method over all cutouts at its current threshold (cached per threshold), or at
        ``threshold``."""
        t = self.thresholds[method] if threshold is None else threshold
        hit = self._pred.get(method)
        if hit is not None and hit[0] == t:
            return hit[1]
        if method == "AND":
            p = and_predict(self.data.scores["cnn_prob"], self.data.scores["mf_snr"], t[0], t[1])
        else:
            p = self.score(method) >= t  # NaN scores compare False: never positive
        if threshold is None:
            self._pred[method] = (t, p)
        return p

    def outcome(self, method: str) -> np.ndarray:
        """Outcome codes over all cutouts: 0 TN, 1 FP, 2 FN, 3 TP (see OUTCOMES)."""
        return (2 * self.labels.astype(np.int8) + self.predicted(method).astype(np.int8)).astype(np.int8)

    def decision(self, method: str, row: int) -> bool | None:
        """One cutout's decision (None when the method is not available)."""
        if not self.has_method(method) or method not in self.thresholds:
            return None
        t = self.thresholds[method]
        if method == "AND":
            return bool(self.data.scores["cnn_prob"][row] >= t[0] and self.data.scores["mf_snr"][row] >= t[1])
        return bool(self.score(method)[row] >= t)

    def outcome_of(self, method: str, row: int) -> str | None:
        d = self.decision(method, row)
        return None if d is None else OUTCOMES[2 * int(self.labels[row]) + int(d)]
