"""The viewer model: everything the app shows, in pure Python (no Qt), with callbacks (napari / glue style).

:class:`ViewerState` holds the open workspace, the cutout table as numpy columns, the score columns that exist,
the current threshold of each method, the gallery's filter, sort and selection, the display settings and the
user's flags and notes. The Qt views in ``szviewer.gui`` read it and connect to its :class:`Events`; they never
compute science themselves. Everything here works with whatever score columns the workspace has: a method
whose scores are missing is reported by :func:`missing_message` instead of failing.

Speed at the paper's 808k cutouts: F1 curves (one sort each) and the PROD ranks are computed once and cached;
a threshold change is a binary search (:meth:`F1Curve.counts_at`) for MF, CNN and PROD and a vectorised test
over the validation and test splits for AND. Per-cutout outcomes (TP/FP/FN/TN), which the gallery and the sky
view need, are computed lazily, only when a view asks for them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from szviewer.evaluate.curves import Counts, F1Curve, confusion, f1_curve
from szviewer.evaluate.ensembles import TwoScoreGrid, and_predict, prod_score, two_score_grid
from szviewer.gui.events import Event

SPLITS = ("train", "val", "test")
METHODS = ("MF", "CNN", "PROD", "AND")
SINGLE_METHODS = ("MF", "CNN", "PROD")
COLUMN_OF = {"MF": "mf_snr", "CNN": "cnn_prob", "PROD": "rank_product"}
METHOD_LABELS = {"MF": "matched filter S/N", "CNN": "CNN probability", "PROD": "rank product q_CNN q_MF",
                 "AND": "AND: CNN and MF"}
#: Outcome codes: 2 * label + predicted.
OUTCOMES = ("TN", "FP", "FN", "TP")
#: Comparisons of the two finders on the true clusters (label True).
FOUND = {"MF_ONLY": "found by MF only", "CNN_ONLY": "found by CNN only", "BOTH": "found by both",
         "NEITHER": "missed by both"}
ANNOTATIONS = "annotations.json"
ANNOTATIONS_FORMAT = "szviewer-annotations"
#: Table columns the gallery can sort on, besides the score columns.
SORTABLE = ("id", "ra", "dec", "split", "label", "m_vir", "z", "m500", "offset_arcmin", "n_halos", "flag")
#: Used when a method's threshold cannot be chosen from the validation split.
FALLBACK_THRESHOLD = {"MF": 5.0, "CNN": 0.5, "PROD": 0.9}


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
class DisplaySettings:
    """How cutouts are drawn: component level, stretch, scaling and colour map, and which overlays."""

    level: str = "all"
    stretch: str = "linear"  # linear | asinh
    scaling: str = "percentile"  # percentile | minmax
    cmap: str = "CET-D1A"
    show_halo: bool = True
    show_cell: bool = True
    show_mf: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> DisplaySettings:
        out = cls()
        for f in dataclasses.fields(cls):
            if d and f.name in d and isinstance(d[f.name], type(getattr(out, f.name))):
                setattr(out, f.name, d[f.name])
        return out


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


class Events:
    """What views can listen to."""

    def __init__(self):
        self.workspace = Event("workspace")  # (state) a workspace was opened / closed / reloaded
        self.scores = Event("scores")  # () score columns changed
        self.thresholds = Event("thresholds")  # (method) a threshold moved
        self.filter = Event("filter")  # () gallery filter or sort changed
        self.selection = Event("selection")  # (row or None)
        self.display = Event("display")  # () display settings changed
        self.annotations = Event("annotations")  # (row) a flag or note changed
        self.curve_split = Event("curve_split")  # (split) the split the F1 curves are drawn on


class ViewerState:
    """The open workspace and everything the views show; see the module docstring."""

    def __init__(self):
        self.events = Events()
        self.workspace = None
        self.store = None
        self.data: CutoutData | None = None
        self.thresholds: dict[str, float | tuple[float, float]] = {}
        self.split_filter: str | None = None
        self.outcome_filter: tuple[str, str] | None = None  # (method, 'TP'...) or ('FOUND', 'MF_ONLY'...)
        self.flagged_only = False
        self.sort_key = "id"
        self.sort_descending = False
        self.current: int | None = None
        self.display = DisplaySettings()
        self.curve_split = "val"
        self.annotations: dict[str, dict] = {}
        self.warnings: list[str] = []
        self._reset_caches()

    # ------------------------------------------------------------------ loading
    def _reset_caches(self) -> None:
        self._curves: dict[tuple[str, str], F1Curve] = {}
        self._grids: dict[str, TwoScoreGrid] = {}
        self._split_masks: dict[str, np.ndarray] = {}
        self._split_index: dict[str, np.ndarray] = {}
        self._prod: np.ndarray | None = None
        self._pred: dict[str, tuple[object, np.ndarray]] = {}
        self._visible: np.ndarray | None = None
        self._flags: np.ndarray | None = None
        self._id_to_row: dict[int, int] | None = None
        self._levels: dict[tuple[str, str], np.ndarray] = {}
        self._mf_catalog = False  # False = not looked for yet

    def open_workspace(self, path: str | os.PathLike, thresholds: dict | None = None) -> None:
        """Open a workspace folder (raises :class:`~szviewer.errors.InputError` for a bad one); ``thresholds``
        (method -> value, e.g. from the last session) replace the validation optima where they apply."""
        from szviewer.errors import InputError
        from szviewer.workspace import Workspace

        ws = Workspace(path)
        store = ws.cutout_store() if ws.has("cutouts") else None
        data = None
        warnings = []
        if store is not None:
            data = CutoutData.from_table(store.table)
            try:
                data.scores = {k: np.asarray(v, dtype=float) for k, v in ws.scores(data.columns["id"]).items()}
            except InputError as exc:  # e.g. scores of older cutouts: show the cutouts, say why there are no scores
                warnings.append(str(exc))
            for product in ws.score_products():
                why = ws.stale(product)
                if why:
                    warnings.append(f"{product} scores are stale ({'; '.join(why)}): refresh with "
                                    f"`{ws.refresh_command(product)}`")
        self.set_data(data, workspace=ws, store=store, thresholds=thresholds)
        self.warnings = warnings

    def set_data(self, data: CutoutData | None, workspace=None, store=None,
                 thresholds: dict | None = None) -> None:
        """Show ``data`` (arrays; the workspace and store are optional: without a store there are no images)."""
        self.close(emit=False)
        self.warnings = []
        self.workspace = workspace
        self.store = store
        self.data = data
        self._reset_caches()
        self._load_annotations()
        self.current = None
        self.outcome_filter = None
        self.thresholds = {}
        self._init_thresholds(thresholds or {})
        self.events.workspace.emit(self)
        if data is not None and data.n:
            self.select(int(self.visible_rows()[0]) if self.visible_rows().size else None)

    def reload_scores(self) -> None:
        """Read the score table again (after a finder ran) and keep what the user set."""
        if self.workspace is None or self.data is None:
            return
        self.data.scores = {k: np.asarray(v, dtype=float)
                            for k, v in self.workspace.scores(self.data.columns["id"]).items()}
        keep = dict(self.thresholds)
        self._curves.clear()
        self._grids.clear()
        self._prod = None
        self._pred.clear()
        self._visible = None
        self._mf_catalog = False
        self.thresholds = {}
        self._init_thresholds(keep)
        self.events.scores.emit()
        self.events.filter.emit()
        if self.current is not None:
            self.events.selection.emit(self.current)

    def reload(self) -> None:
        """Open the current workspace again (after a job changed it)."""
        if self.workspace is None:
            return
        keep = dict(self.thresholds)
        current = self.current
        self.open_workspace(self.workspace.root, thresholds=keep)
        if current is not None and self.data is not None and current < self.data.n:
            self.select(current)

    def close(self, emit: bool = True) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # an already closed h5py file
                pass
        self.workspace = None
        self.store = None
        self.data = None
        self.current = None
        self._reset_caches()
        if emit:
            self.events.workspace.emit(self)

    @property
    def n(self) -> int:
        return 0 if self.data is None else self.data.n

    @property
    def path(self) -> Path | None:
        return None if self.workspace is None else Path(self.workspace.root)

    # ------------------------------------------------------------------ methods and scores
    def score_columns(self) -> set[str]:
        return set() if self.data is None else set(self.data.scores)

    def has_method(self, method: str) -> bool:
        return self.data is not None and missing_message(method, self.score_columns()) is None

    def available_methods(self) -> list[str]:
        return [m for m in METHODS if self.has_method(m)]

    def missing_message(self, method: str) -> str | None:
        if self.workspace is None and self.data is None:
            return "no workspace open — build the demo workspace or open one (File → Open)"
        if self.data is None:
            return "no cutouts yet — build them (Jobs → Build cutouts, or szviewer cutouts WS)"
        return missing_message(method, self.score_columns())

    def score(self, method: str) -> np.ndarray:
        """The score array of MF, CNN or PROD over all cutouts (NaN = no score)."""
        if method == "PROD":
            if self._prod is None:
                d = self.data
                self._prod = prod_score(d.scores["cnn_prob"], d.scores["mf_snr"], groups=d.columns["split"])
            return self._prod
        return self.data.scores[COLUMN_OF[method]]

    @property
    def labels(self) -> np.ndarray:
        return self.data.columns["label"]

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

    def curve(self, method: str, split: str | None = None) -> F1Curve:
        """The exact F1 curve of a single-score method on a split (cached)."""
        split = split or self.curve_split
        key = (method, split)
        if key not in self._curves:
            m = self.split_mask(split)
            self._curves[key] = f1_curve(self.score(method)[m], self.labels[m])
        return self._curves[key]

    def and_grid(self, split: str | None = None, levels: int = 100) -> TwoScoreGrid:
        """The AND F1 heat map over (CNN, MF) threshold pairs on a split (cached)."""
        split = split or self.curve_split
        if split not in self._grids:
            m = self.split_mask(split)
            self._grids[split] = two_score_grid(self.data.scores["cnn_prob"][m], self.data.scores["mf_snr"][m],
                                                self.labels[m], rule="and", levels=levels)
        return self._grids[split]

    def set_curve_split(self, split: str) -> None:
        if split != self.curve_split:
            self.curve_split = split
            self.events.curve_split.emit(split)

    # ------------------------------------------------------------------ thresholds
    def _init_thresholds(self, wanted: dict) -> None:
        for method in METHODS:
            if not self.has_method(method):
                continue
            t = wanted.get(method)
            if method == "AND":
                ok = isinstance(t, (tuple, list)) and len(t) == 2 and all(_finite(v) for v in t)
                self.thresholds[method] = (float(t[0]), float(t[1])) if ok else self.optimum(method)
            else:
                self.thresholds[method] = float(t) if _finite(t) else self.optimum(method)

    def optimum(self, method: str, split: str = "val") -> float | tuple[float, float]:
        """The threshold of maximal F1 on ``split`` (the paper's rule); a fallback when there is none."""
        if method == "AND":
            t_cnn, t_mf, _, _ = self.and_grid(split).best() if self.split_mask(split).any() else (np.nan,) * 4
            if not (_finite(t_cnn) and _finite(t_mf)):
                return (FALLBACK_THRESHOLD["CNN"], FALLBACK_THRESHOLD["MF"])
            return (float(t_cnn), float(t_mf))
        best = self.curve(method, split).best()
        return float(best.threshold) if _finite(best.threshold) else FALLBACK_THRESHOLD[method]

    def set_threshold(self, method: str, value) -> None:
        """Move a threshold (a float; for AND a pair (t_cnn, t_mf)); cheap, views update from the event."""
        if method == "AND":
            value = (float(value[0]), float(value[1]))
        else:
            value = float(value)
        if self.thresholds.get(method) == value:
            return
        self.thresholds[method] = value
        self._visible_depends(method)
        self.events.thresholds.emit(method)

    def snap(self, method: str, split: str = "val") -> None:
        """Snap a method's threshold to its F1 optimum on ``split``."""
        self.set_threshold(method, self.optimum(method, split))

    def counts(self, method: str, split: str) -> Counts:
        """Confusion counts of a method at its current threshold on a split."""
        t = self.thresholds[method]
        if method == "AND":
            idx = self.split_index(split)
            pred = and_predict(self.data.scores["cnn_prob"][idx], self.data.scores["mf_snr"][idx], t[0], t[1])
            return confusion(pred, self.labels[idx])
        return self.curve(method, split).counts_at(t)

    def predicted(self, method: str) -> np.ndarray:
        """Boolean decisions of a method over all cutouts at the current threshold (cached per threshold)."""
        t = self.thresholds[method]
        hit = self._pred.get(method)
        if hit is not None and hit[0] == t:
            return hit[1]
        if method == "AND":
            p = and_predict(self.data.scores["cnn_prob"], self.data.scores["mf_snr"], t[0], t[1])
        else:
            p = self.score(method) >= t  # NaN scores compare False: never positive
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
            c = self.data.scores["cnn_prob"][row]
            m = self.data.scores["mf_snr"][row]
            return bool(c >= t[0] and m >= t[1])
        return bool(self.score(method)[row] >= t)

    def outcome_of(self, method: str, row: int) -> str | None:
        d = self.decision(method, row)
        if d is None:
            return None
        return OUTCOMES[2 * int(self.labels[row]) + int(d)]

    # ------------------------------------------------------------------ gallery: filter, sort, selection
    def set_filter(self, split: str | None = ..., outcome: tuple[str, str] | None = ...,
                   flagged_only: bool | None = None) -> None:
        """Change the gallery filter; arguments left out keep their value. ``split`` None = every split."""
        if split is not ...:
            self.split_filter = None if split in (None, "", "all") else split
        if outcome is not ...:
            self.outcome_filter = outcome
        if flagged_only is not None:
            self.flagged_only = bool(flagged_only)
        self._visible = None
        self.events.filter.emit()
        if self.current is not None and self.data is not None:
            vis = self.visible_rows()
            if vis.size and not np.any(vis == self.current):
                self.select(int(vis[0]))

    def set_sort(self, key: str, descending: bool = False) -> None:
        self.sort_key = key
        self.sort_descending = bool(descending)
        self._visible = None
        self.events.filter.emit()

    def filter_depends_on(self, method: str) -> bool:
        """Whether the gallery rows change when ``method``'s threshold moves."""
        f = self.outcome_filter
        if f is None:
            return False
        if f[0] == "FOUND":
            return method in ("MF", "CNN")
        return f[0] == method

    def _visible_depends(self, method: str) -> None:
        if self.filter_depends_on(method):
            self._visible = None

    def column(self, name: str) -> np.ndarray:
        """A gallery column over all cutouts: table columns, score columns, 'rank_product', 'flag'."""
        d = self.data
        if name == "flag":
            return self.flags()
        if name == "rank_product":
            return self.score("PROD")
        if name.startswith("outcome:"):
            return self.outcome(name.split(":", 1)[1])
        if name in d.scores:
            return d.scores[name]
        return d.columns[name]

    def visible_rows(self) -> np.ndarray:
        """Row indices the gallery shows, filtered and sorted (cached until a filter or threshold changes)."""
        if self._visible is not None:
            return self._visible
        if self.data is None:
            self._visible = np.zeros(0, dtype=np.int64)
            return self._visible
        mask = None

        def both(m):
            return m if mask is None else (mask & m)

        if self.split_filter:
            mask = both(self.split_mask(self.split_filter))
        f = self.outcome_filter
        if f is not None:
            kind, what = f
            if kind == "FOUND":
                if self.has_method("MF") and self.has_method("CNN"):
                    mf, cnn = self.predicted("MF"), self.predicted("CNN")
                    sel = {"MF_ONLY": mf & ~cnn, "CNN_ONLY": cnn & ~mf, "BOTH": mf & cnn,
                           "NEITHER": ~mf & ~cnn}[what]
                    mask = both(sel & self.labels)
                else:
                    mask = np.zeros(self.n, dtype=bool)
            elif self.has_method(kind):
                mask = both(self.outcome(kind) == OUTCOMES.index(what))
            else:
                mask = np.zeros(self.n, dtype=bool)
        if self.flagged_only:
            mask = both(self.flags())
        idx = np.arange(self.n, dtype=np.int64) if mask is None else np.flatnonzero(mask)
        key = self.sort_key
        if key and key != "id" and idx.size:
            try:
                vals = self.column(key)
            except KeyError:
                vals = None
            if vals is not None:
                v = vals[idx]
                if v.dtype.kind in "fc":
                    v = -v if self.sort_descending else v  # NaN stays last either way
                    order = np.argsort(v, kind="stable")
                else:
                    order = np.argsort(v, kind="stable")
                    if self.sort_descending:
                        order = order[::-1]
                idx = idx[order]
        elif self.sort_descending:
            idx = idx[::-1]
        self._visible = idx
        return idx

    def select(self, row: int | None) -> None:
        if row is not None:
            row = int(row)
            if not 0 <= row < self.n:
                raise IndexError(f"cutout row {row} out of range (0..{self.n - 1})")
        if row == self.current:
            return
        self.current = row
        self.events.selection.emit(row)

    def select_id(self, cutout_id: int) -> None:
        self.select(self.row_of_id(cutout_id))

    def row_of_id(self, cutout_id: int) -> int:
        if self._id_to_row is None:
            self._id_to_row = {int(i): k for k, i in enumerate(self.data.columns["id"])}
        return self._id_to_row[int(cutout_id)]

    def step(self, delta: int) -> int | None:
        """Select the cutout ``delta`` places further in the gallery order; returns the new row."""
        vis = self.visible_rows()
        if vis.size == 0:
            return None
        if self.current is None:
            pos = 0 if delta >= 0 else vis.size - 1
        else:
            where = np.flatnonzero(vis == self.current)
            pos = int(where[0]) + delta if where.size else 0
        pos = min(max(pos, 0), vis.size - 1)
        self.select(int(vis[pos]))
        return self.current

    def nearest(self, ra: float, dec: float) -> int | None:
        """The cutout whose centre is nearest to (ra, dec) [deg], or None when there are no cutouts."""
        if not self.n:
            return None
        c = self.data.columns
        dra = (c["ra"] - ra + 180.0) % 360.0 - 180.0
        d2 = (dra * math.cos(math.radians(dec))) ** 2 + (c["dec"] - dec) ** 2
        return int(np.argmin(d2))

    # ------------------------------------------------------------------ display
    def set_display(self, **changes) -> None:
        changed = False
        for k, v in changes.items():
            if not hasattr(self.display, k):
                raise AttributeError(f"no display setting {k!r}")
            if getattr(self.display, k) != v:
                setattr(self.display, k, v)
                changed = True
        if changed:
            self.events.display.emit()

    def levels(self) -> list[str]:
        return [] if self.store is None else list(self.store.levels)

    def band_levels(self, level: str | None = None, scaling: str | None = None) -> np.ndarray:
        """Per-band (lo, hi) shared by all cutouts of a level, from a fixed sample of cutouts (cached)."""
        from szviewer.gui.display import shared_levels

        level = level or self.display.level
        scaling = scaling or self.display.scaling
        key = (level, scaling)
        if key not in self._levels:
            self._levels[key] = shared_levels(self.store, level, scaling)
        return self._levels[key]

    def images(self, row: int, level: str | None = None) -> np.ndarray:
        """(nband, npix, npix) float32 images of one cutout at a component level."""
        level = level or self.display.level
        if level not in self.store.levels:
            level = "all" if "all" in self.store.levels else next(iter(self.store.levels))
        return self.store.images([row], level)[0]

    # ------------------------------------------------------------------ halos and detections
    def halo_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ra, dec, row) of the labelled halos (positive cutouts), from the cutout table."""
        c = self.data.columns
        if "halo_dx_arcmin" not in c or "halo_dy_arcmin" not in c:
            empty = np.zeros(0)
            return empty, empty, empty.astype(np.int64)
        rows = np.flatnonzero(self.labels & np.isfinite(c["halo_dx_arcmin"]))
        dec0 = c["dec"][rows]
        dec = dec0 + c["halo_dy_arcmin"][rows] / 60.0
        ra = c["ra"][rows] + c["halo_dx_arcmin"][rows] / 60.0 / np.cos(np.radians(dec0))
        return ra, dec, rows

    def mf_catalog(self) -> dict | None:
        """The matched filter's candidate catalogue (ra, dec, snr, theta_c_arcmin) if the workspace has one."""
        if self._mf_catalog is not False:
            return self._mf_catalog
        self._mf_catalog = None
        ws = self.workspace
        if ws is None or not ws.has("mf"):
            return None
        from astropy.table import Table

        for rel in ws.products["mf"].get("files", []):
            if not rel.lower().endswith((".fits", ".ecsv", ".fit")):
                continue
            try:
                t = Table.read(ws.path(rel))
            except Exception:  # not a table: some other MF product
                continue
            if {"ra", "dec", "snr"} <= set(t.colnames):
                n = len(t)
                theta = np.asarray(t["theta_c_arcmin"], float) if "theta_c_arcmin" in t.colnames else np.full(n, 1.)
                self._mf_catalog = {"ra": np.asarray(t["ra"], float), "dec": np.asarray(t["dec"], float),
                                    "snr": np.asarray(t["snr"], float), "theta_c_arcmin": theta}
                break
        return self._mf_catalog

    def detections_near(self, row: int, half_arcmin: float = 4.0) -> list[dict]:
        """MF detections inside a cutout, with offsets east (dx) and north (dy) of its centre [arcmin]."""
        cat = self.mf_catalog()
        if cat is None:
            return []
        ra0 = float(self.data.columns["ra"][row])
        dec0 = float(self.data.columns["dec"][row])
        dx = ((cat["ra"] - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0)) * 60.0
        dy = (cat["dec"] - dec0) * 60.0
        k = np.flatnonzero((np.abs(dx) <= half_arcmin) & (np.abs(dy) <= half_arcmin))
        return [{"dx_arcmin": float(dx[i]), "dy_arcmin": float(dy[i]), "snr": float(cat["snr"][i]),
                 "theta_c_arcmin": float(cat["theta_c_arcmin"][i])} for i in k]

    # ------------------------------------------------------------------ annotations
    def _annotations_path(self) -> Path | None:
        return None if self.workspace is None else Path(self.workspace.root) / ANNOTATIONS

    def _load_annotations(self) -> None:
        self.annotations = {}
        path = self._annotations_path()
        if path is None or not path.is_file():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") == ANNOTATIONS_FORMAT:
                self.annotations = {str(k): dict(v) for k, v in doc.get("cutouts", {}).items()}
        except (OSError, ValueError, AttributeError):
            self.annotations = {}  # unreadable: start afresh, the next save replaces it

    def annotation(self, row: int) -> dict:
        return self.annotations.get(str(int(self.data.columns["id"][row])), {"flag": False, "note": ""})

    def set_annotation(self, row: int, flag: bool | None = None, note: str | None = None) -> None:
        """Flag or annotate a cutout; saved at once (atomically) in the workspace's annotations.json."""
        from szviewer.atomic import write_json
        from szviewer.workspace import now_iso

        key = str(int(self.data.columns["id"][row]))
        a = dict(self.annotations.get(key, {"flag": False, "note": ""}))
        if flag is not None:
            a["flag"] = bool(flag)
        if note is not None:
            a["note"] = str(note)
        if not a["flag"] and not a["note"]:
            self.annotations.pop(key, None)
        else:
            a["modified"] = now_iso()
            self.annotations[key] = a
        self._flags = None
        if self.flagged_only:
            self._visible = None
        path = self._annotations_path()
        if path is not None:
            write_json(path, {"format": ANNOTATIONS_FORMAT, "version": 1, "cutouts": self.annotations})
        self.events.annotations.emit(row)

    def flags(self) -> np.ndarray:
        if self._flags is None:
            f = np.zeros(self.n, dtype=bool)
            for key, a in self.annotations.items():
                if a.get("flag"):
                    try:
                        f[self.row_of_id(int(key))] = True
                    except (KeyError, ValueError):
                        pass  # an annotation of a cutout that no longer exists
            self._flags = f
        return self._flags

    # ------------------------------------------------------------------ export
    def export_catalog(self, path, method: str, thresholds=None, split: str = "test", fmt: str | None = None,
                       regions_path=None, candidates_only: bool = True, overwrite: bool = False,
                       radius_arcmin: float = 3.0):
        """Write the candidate catalogue of ``method`` at ``thresholds`` (default: the current ones) on
        ``split`` ('all' for every cutout) with :mod:`szviewer.evaluate.export`, and a DS9 region file."""
        from szviewer.evaluate.export import build_catalog, write_catalog, write_ds9_regions

        if self.missing_message(method):
            raise ValueError(self.missing_message(method))
        old = self.thresholds.get(method)
        if thresholds is not None:
            self.thresholds[method] = tuple(thresholds) if method == "AND" else float(thresholds)
        try:
            pred = self.predicted(method).copy()
            t = self.thresholds[method]
        finally:
            if thresholds is not None:
                self.thresholds[method] = old
                self._pred.pop(method, None)
        idx = self.split_index(split)
        c = self.data.columns
        scores = {k: v[idx] for k, v in self.data.scores.items()}
        if self.has_method("PROD"):
            scores["rank_product"] = self.score("PROD")[idx]
        thr = {"cnn_prob": t[0], "mf_snr": t[1]} if method == "AND" else {COLUMN_OF[method]: t}
        halo = {k: c[k][idx] for k in ("halo_id", "m_vir", "z", "m500", "offset_arcmin") if k in c}
        prov = {"workspace": str(self.path) if self.path else None, "split": split, "n_cutouts": int(idx.size)}
        table = build_catalog(c["ra"][idx], c["dec"][idx], scores, pred[idx], halo=halo, method=method,
                              thresholds=thr, provenance=prov, candidates_only=candidates_only)
        kept = idx[pred[idx]] if candidates_only else idx
        table.add_column(c["id"][kept], name="cutout_id", index=0)
        table.add_column(c["split"][kept], name="split", index=3)
        table.add_column(c["label"][kept], name="label", index=4)
        out = write_catalog(table, path, format=fmt, overwrite=overwrite)
        reg = None
        if regions_path:
            score = "cnn_prob" if method == "AND" else COLUMN_OF[method]
            reg = write_ds9_regions(regions_path, table, score=score, radius_arcmin=radius_arcmin,
                                    overwrite=overwrite)
        return out, reg, table


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
