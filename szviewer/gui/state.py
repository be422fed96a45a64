"""The viewer model: the open workspace and everything the app shows, in pure Python (no Qt).

:class:`ViewerState` is built of small evented models (napari's ``ViewerModel``, glue's viewer state), each of
which emits its event when a value is set (psygnal):

- in :mod:`szviewer.gui.models`: ``thresholds`` (``Thresholds``), ``filter`` (``GalleryFilter``), ``selection``
  (``Selection``), ``display`` (``DisplaySettings``), ``plot`` (``PlotSettings``);
- ``annotations`` (:class:`~szviewer.gui.annotations.Annotations`, saved in the workspace);
- ``scores`` (:class:`~szviewer.gui.scores.ScoreModel`): curves, decisions and outcomes at the thresholds;
- ``objects`` (:class:`~szviewer.gui.objectset.ObjectSetLoader`): the object-level candidates, read off the GUI
  thread the first time they are asked for.

``events`` gathers what views listen to: the models' own signals (``objects``: the object set started loading
or arrived) plus ``workspace`` (opened / closed), ``scores`` (score columns changed) and ``filter`` (the
gallery's rows changed: a filter field, the sort, or a threshold a filter depends on). The Qt views read the
state and bind to these; they never compute science themselves. The gallery's rows (filter and sort) are
:mod:`szviewer.gui.galleryrows`, the object-level counts :mod:`szviewer.gui.detections`.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
from psygnal import Signal

from szviewer.gui.annotations import Annotations
from szviewer.gui.detections import detections_near, halo_positions, policy_thresholds, read_mf_catalog
from szviewer.gui.galleryrows import SPLITS, column, filter_depends_on, gallery_rows, valid_filter
from szviewer.gui.models import DisplaySettings, GalleryFilter, PlotSettings, Selection, SkySettings, Thresholds
from szviewer.gui.objectset import ObjectSetLoader
from szviewer.gui.scores import COLUMN_OF, METHODS, OUTCOMES, CutoutData, ScoreModel, missing_message

__all__ = ["ViewerState", "CutoutData", "DisplaySettings", "METHODS", "OUTCOMES", "COLUMN_OF", "FOUND",
           "METHOD_LABELS", "SPLITS", "missing_message"]

SINGLE_METHODS = ("MF", "CNN", "PROD")
METHOD_LABELS = {"MF": "matched filter S/N", "CNN": "CNN probability", "PROD": "rank product q_CNN q_MF",
                 "AND": "AND: CNN and MF"}
#: Comparisons of the two finders on the true clusters (label True).
FOUND = {"MF_ONLY": "found by MF only", "CNN_ONLY": "found by CNN only", "BOTH": "found by both",
         "NEITHER": "missed by both"}
#: Table columns the gallery can sort on, besides the score columns.
SORTABLE = ("id", "ra", "dec", "split", "label", "m_vir", "z", "m500", "offset_arcmin", "n_halos", "flag", "vet")


class Events:
    """What views can listen to (see the module docstring)."""

    workspace = Signal(object)  # (state) a workspace was opened / closed / reloaded
    scores = Signal()  # score columns changed
    filter = Signal()  # the gallery's rows changed

    def __init__(self, state: ViewerState):
        self.thresholds = state.thresholds.changed  # (method)
        self.selection = state.selection.changed  # (row or None)
        self.display = state.display.events.all  # (EmissionInfo) a display setting changed
        self.annotations = state.annotations.changed  # (row)
        self.curve_split = state.plot.events.curve_split  # (split)
        self.objects = state.objects.changed  # () the object set started loading, or arrived


class ViewerState:
    """The open workspace and the models the views show; see the module docstring."""

    def __init__(self):
        self.thresholds = Thresholds()
        self.filter = GalleryFilter()
        self.selection = Selection()
        self.display = DisplaySettings()
        self.plot = PlotSettings()
        self.sky = SkySettings()
        self.annotations = Annotations()
        self.scores = ScoreModel(self.thresholds)
        self.objects = ObjectSetLoader(lambda: self.workspace)
        self.events = Events(self)
        self.workspace = None
        self.store = None
        self.warnings: list[str] = []
        self._visible: np.ndarray | None = None
        self._batch = 0
        self._filter_pending = False
        self._levels: dict[tuple[str, str], np.ndarray] = {}
        self._mf_catalog = False  # False = not looked for yet
        self.filter.events.all.connect(self._on_filter_field)
        self.thresholds.changed.connect(self._on_threshold)
        self.annotations.changed.connect(self._on_annotation)

    # ------------------------------------------------------------------ compatibility views of the models
    data = property(lambda self: self.scores.data)
    current = property(lambda self: self.selection.row)
    curve_split = property(lambda self: self.plot.curve_split)
    split_filter = property(lambda self: self.filter.split)
    outcome_filter = property(lambda self: self.filter.outcome)
    flagged_only = property(lambda self: self.filter.flagged_only)
    sort_key = property(lambda self: self.filter.sort_key)
    sort_descending = property(lambda self: self.filter.sort_descending)

    # ------------------------------------------------------------------ loading
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

    def set_data(self, data: CutoutData | None, workspace=None, store=None, thresholds: dict | None = None,
                 view: dict | None = None) -> None:
        """Show ``data`` (arrays; the workspace and store are optional: without a store there are no images).

        ``view``: the gallery filter to keep (:meth:`GalleryFilter.to_dict`); by default the outcome filter is
        cleared, the rest kept."""
        self.close(emit=False)
        self.warnings = []
        self.workspace = workspace
        self.store = store
        self.scores.reset(data)
        self._levels = {}
        self._mf_catalog = False
        self.objects.reset()
        self._visible = None
        c = data.columns if data is not None else {}
        self.annotations.open(None if workspace is None else Path(workspace.root), c.get("id"), c.get("ra"),
                              c.get("dec"))
        self.thresholds.reset(self.scores.initial_thresholds(thresholds or {}) if data is not None else {})
        with self.batch():
            self.filter.update(**self._valid_filter(view if view is not None else {"outcome": None}))
        self.events.workspace.emit(self)
        if data is not None and data.n:
            vis = self.visible_rows()
            self.select(int(vis[0]) if vis.size else None)

    def _valid_filter(self, view: dict) -> dict:
        """The parts of a saved gallery filter that apply to the open data."""
        return valid_filter(self, view)

    def reload_scores(self) -> None:
        """Read the score table again (after a finder ran) and keep what the user set."""
        if self.workspace is None or self.data is None:
            return
        self.data.scores = {k: np.asarray(v, dtype=float)
                            for k, v in self.workspace.scores(self.data.columns["id"]).items()}
        keep = self.thresholds.copy()
        self.scores.scores_changed()
        self._visible = None
        self._mf_catalog = False
        self.objects.reset()
        self.thresholds.reset(self.scores.initial_thresholds(keep))
        self.events.scores.emit()
        self.events.filter.emit()
        if self.current is not None:
            self.events.selection.emit(self.current)

    def reload(self) -> None:
        """Open the current workspace again (after a job changed it), keeping thresholds, filter and selection."""
        if self.workspace is None:
            return
        keep = self.thresholds.copy()
        view = self.filter.to_dict()
        current_id = self.current_id()
        self.open_workspace(self.workspace.root, thresholds=keep)
        with self.batch():
            self.filter.update(**self._valid_filter(view))
        if current_id is not None:
            with contextlib.suppress(KeyError, TypeError):
                self.select_id(current_id)

    def close(self, emit: bool = True) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):  # an already closed h5py file
                self.store.close()
        self.workspace = None
        self.store = None
        self.scores.reset(None)
        self.selection.reset()
        self.annotations.open(None, None)
        self._visible = None
        self._levels = {}
        self._mf_catalog = False
        self.objects.reset()
        if emit:
            self.events.workspace.emit(self)

    @property
    def n(self) -> int:
        return self.scores.n

    @property
    def path(self) -> Path | None:
        return None if self.workspace is None else Path(self.workspace.root)

    # ------------------------------------------------------------------ methods, scores, thresholds
    def score_columns(self) -> set[str]:
        return self.scores.score_columns()

    def has_method(self, method: str) -> bool:
        return self.scores.has_method(method)

    def available_methods(self) -> list[str]:
        return [m for m in METHODS if self.has_method(m)]

    def missing_message(self, method: str) -> str | None:
        if self.workspace is None and self.data is None:
            return "no workspace open — build the demo workspace or open one (File → Open)"
        if self.data is None:
            return "no cutouts yet — build them (Jobs → Build cutouts, or szviewer cutouts WS)"
        return missing_message(method, self.score_columns())

    @property
    def labels(self) -> np.ndarray:
        return self.scores.labels

    def score(self, method: str) -> np.ndarray:
        return self.scores.score(method)

    def split_mask(self, split: str) -> np.ndarray:
        return self.scores.split_mask(split)

    def split_index(self, split: str) -> np.ndarray:
        return self.scores.split_index(split)

    def curve(self, method: str, split: str | None = None):
        return self.scores.curve(method, split or self.curve_split)

    def and_grid(self, split: str | None = None):
        return self.scores.and_grid(split or self.curve_split)

    def optimum(self, method: str, split: str = "val"):
        return self.scores.optimum(method, split)

    def counts(self, method: str, split: str):
        return self.scores.counts(method, split)

    def predicted(self, method: str) -> np.ndarray:
        return self.scores.predicted(method)

    def outcome(self, method: str) -> np.ndarray:
        return self.scores.outcome(method)

    def outcome_of(self, method: str, row: int) -> str | None:
        return self.scores.outcome_of(method, row)

    def set_curve_split(self, split: str) -> None:
        self.plot.curve_split = split

    def set_threshold(self, method: str, value) -> None:
        """Move a threshold (a float; for AND a pair (t_cnn, t_mf)); cheap, views update from the event."""
        self.thresholds.set(method, value)

    def snap(self, method: str, split: str = "val") -> None:
        """Snap a method's threshold to its F1 optimum on ``split``."""
        self.set_threshold(method, self.optimum(method, split))

    # ------------------------------------------------------------------ gallery: filter, sort, selection
    @contextlib.contextmanager
    def batch(self):
        """Several filter changes, one ``events.filter``."""
        self._batch += 1
        try:
            yield
        finally:
            self._batch -= 1
            if not self._batch and self._filter_pending:
                self._filter_pending = False
                self._emit_filter()

    def _on_filter_field(self, *_):
        self._visible = None
        if self._batch:
            self._filter_pending = True
        else:
            self._emit_filter()

    def _emit_filter(self) -> None:
        self._visible = None
        self.events.filter.emit()
        if self.current is not None and self.data is not None:
            vis = self.visible_rows()
            if vis.size and not np.any(vis == self.current):
                self.select(int(vis[0]))

    def set_filter(self, split: str | None = ..., outcome: tuple[str, str] | None = ...,
                   flagged_only: bool | None = None, vet: str | None = ...) -> None:
        """Change the gallery filter; arguments left out keep their value. ``split`` None = every split."""
        changes = {}
        if split is not ...:
            changes["split"] = None if split in (None, "", "all") else split
        if outcome is not ...:
            changes["outcome"] = None if outcome is None else tuple(outcome)
        if flagged_only is not None:
            changes["flagged_only"] = bool(flagged_only)
        if vet is not ...:
            changes["vet"] = vet or None
        with self.batch():
            self.filter.update(**changes)

    def set_sort(self, key: str, descending: bool = False) -> None:
        with self.batch():
            self.filter.update(sort_key=key, sort_descending=bool(descending))

    def filter_depends_on(self, method: str) -> bool:
        """Whether the gallery rows change when ``method``'s threshold moves."""
        return filter_depends_on(self.filter, method)

    def _on_threshold(self, method: str) -> None:
        if self.filter_depends_on(method):
            self._visible = None

    def _on_annotation(self, row: int) -> None:
        if self.filter.flagged_only or self.filter.vet:
            self._visible = None

    def column(self, name: str) -> np.ndarray:
        """A gallery column over all cutouts: table columns, score columns, 'rank_product', 'flag', 'vet'."""
        return column(self, name)

    def visible_rows(self) -> np.ndarray:
        """Row indices the gallery shows, filtered and sorted (cached until a filter or threshold changes)."""
        if self._visible is None:
            self._visible = gallery_rows(self)
        return self._visible

    def select(self, row: int | None) -> None:
        if row is not None:
            row = int(row)
            if not 0 <= row < self.n:
                raise IndexError(f"cutout row {row} out of range (0..{self.n - 1})")
        self.selection.row = row

    def select_id(self, cutout_id: int) -> None:
        self.select(self.row_of_id(cutout_id))

    def row_of_id(self, cutout_id: int) -> int:
        return self.annotations.row_of_id(cutout_id)

    def current_id(self) -> int | None:
        return None if self.current is None or self.data is None else int(self.data.columns["id"][self.current])

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
        self.display.update(**changes)

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
        return halo_positions(self.data.columns)

    def mf_catalog(self) -> dict | None:
        """The matched filter's candidate catalogue (ra, dec, snr, theta_c_arcmin) if the workspace has one."""
        if self._mf_catalog is False:
            self._mf_catalog = read_mf_catalog(self.workspace)
        return self._mf_catalog

    def object_set(self) -> tuple:
        """(counter, note) of the candidates on the test region, or (None, why), or (None, 'loading…') while they
        are read on a worker thread (:class:`~szviewer.gui.objectset.ObjectSetLoader`, ``events.objects`` when they
        arrive): read once per workspace or score change, so a threshold drag only counts."""
        return self.objects.get()

    def object_counts(self, method: str) -> dict | None:
        """Object-level tp, fp, fn, purity, completeness and F1 of ``method`` on the test region at its current
        threshold (:func:`szviewer.evaluate.objects.object_counts`); None without an object set or that method."""
        counter = self.object_set()[0]
        if counter is None or method not in counter.scores or method not in self.thresholds:
            return None
        return counter.counts(method, policy_thresholds(method, self.thresholds[method]))

    def detections_near(self, row: int, half_arcmin: float = 4.0) -> list[dict]:
        """MF detections inside a cutout, with offsets east (dx) and north (dy) of its centre [arcmin]."""
        c = self.data.columns
        return detections_near(self.mf_catalog(), float(c["ra"][row]), float(c["dec"][row]), half_arcmin)

    # ------------------------------------------------------------------ annotations
    def annotation(self, row: int) -> dict:
        return self.annotations.get(row)

    def set_annotation(self, row: int, flag: bool | None = None, note: str | None = None, vet=...) -> None:
        """Flag, annotate or vet a cutout; saved at once (atomically) in the workspace's annotations.json."""
        self.annotations.set(row, flag=flag, note=note, vet=vet)

    def flags(self) -> np.ndarray:
        return self.annotations.flags()

    def export_catalog(self, path, method: str, **kwargs):
        """Write the candidate catalogue of ``method`` (see :func:`szviewer.gui.exporting.export_catalog`)."""
        from szviewer.gui.exporting import export_catalog

        return export_catalog(self, path, method, **kwargs)
