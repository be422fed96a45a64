"""The F1 panel: F1, purity and completeness against threshold over the score histograms, with draggable
threshold lines (CNN, MF, PROD), the AND heat map with a draggable point, and live counts on val and test: of
cutouts, and of objects (candidates matched to halos, test region) under each plot, at the current threshold.

Curves are exact (:func:`szviewer.evaluate.curves.f1_curve`) and drawn at up to 800 thresholds; moving a line
is a binary search per split (``F1Curve.counts_at``). Drag events are coalesced: only the latest position per
method is applied on each pass of the event loop, so a fast drag never queues stale updates.
The object counts are a comparison per candidate of the test region, prepared once per workspace
(:meth:`ViewerState.object_set`, :class:`szviewer.evaluate.objects.ObjectCounter`); the candidates are read on a
worker thread (:mod:`szviewer.gui.objectset`, polled here from a timer), and the line says 'loading…' until then.

The table of counts under the plots is :mod:`szviewer.gui.statstable`.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from szviewer.gui.common import CURVE_COLOURS, METHOD_COLOURS, Coalescer, fmt, fmt_threshold, lut
from szviewer.gui.objectset import LOADING_NOTE
from szviewer.gui.state import METHOD_LABELS, ViewerState
from szviewer.gui.statstable import StatsTable

NGRID = 800
NBINS = 60
XLABEL = {"CNN": "CNN probability", "MF": "matched-filter S/N", "PROD": "rank product q_CNN × q_MF"}


def curve_on_grid(curve, lo: float, hi: float, n: int = NGRID):
    """(x, f1, purity, completeness) of an F1Curve at ``n`` thresholds from lo to hi (exact at each)."""
    x = np.linspace(lo, hi, n)
    k = np.searchsorted(curve.thresholds, x, side="left")
    f1 = np.append(curve.f1, 0.0 if curve.n_pos else np.nan)
    pur = np.append(curve.purity, np.nan)
    comp = np.append(curve.completeness, 0.0 if curve.n_pos else np.nan)
    return x, f1[k], pur[k], comp[k]


def _elastic(label: QtWidgets.QLabel) -> QtWidgets.QLabel:
    """A label that never sets the panel's minimum width (long live numbers are cut, not the window)."""
    label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
    return label


def _summary_label() -> QtWidgets.QLabel:
    """The live F1 / purity / completeness line: wrapped, never cut, and never widening the panel."""
    label = _elastic(QtWidgets.QLabel(""))
    label.setWordWrap(True)
    return label


OBJECTS_RULE = ("objects: the candidates of the test region matched one-to-one to qualifying halos within 1', "
                "counted at this threshold (the rule of szviewer evaluate)")


def object_line(state: ViewerState, method: str) -> tuple[str, str]:
    """(text, tooltip) of the object-level purity, completeness and F1 of ``method`` on the test region at its
    current threshold (:meth:`ViewerState.object_counts`), or a short hint where there is no object set."""
    counter, note = state.object_set()
    if state.objects.loading:
        return f"test objects: {LOADING_NOTE}", "reading the workspace's candidates in the background"
    if counter is None:
        return (f"objects: {note}" if note else ""), ""
    c = state.object_counts(method)
    if c is None:
        why = "no CNN candidates with positions (dense CNN)" if method == "CNN" else f"no {method} candidates"
        return f"test objects: {why}", OBJECTS_RULE
    tip = f"{OBJECTS_RULE}: TP {c['tp']}, FP {c['fp']}, FN {c['fn']} of {counter.n_halos} halos"
    if method == "PROD":
        tip += ". PROD ranks the candidates of the test region, not the cutouts: the same q is another cut"
    if note:
        tip += f". Stale inputs: {note}"
    return (f"test objects: F1 <b>{fmt(c['f1'])}</b>, purity {fmt(c['purity'])}, completeness "
            f"{fmt(c['completeness'])}" + (" (stale)" if note else "")), tip


def _show_summary(label: QtWidgets.QLabel, state: ViewerState, method: str, cutouts: str) -> None:
    """The cutout-level line and, under it, the object-level one (:func:`object_line`)."""
    text, tip = object_line(state, method)
    label.setText(cutouts + (f"<br>{text}" if text else ""))
    label.setToolTip(tip)


class _MessagePage(QtWidgets.QLabel):
    def __init__(self):
        super().__init__(alignment=QtCore.Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self.setStyleSheet("color: #9aa0aa; font-size: 13px; padding: 20px")


class _PlotCard(QtWidgets.QWidget):
    """A plot with a row of controls under it (``self.page_layout``), or a message in its place when the
    method has no scores to draw."""

    def __init__(self, state: ViewerState, method: str, coalescer: Coalescer, parent=None):
        super().__init__(parent)
        self.state = state
        self.method = method
        self.coalescer = coalescer
        v = QtWidgets.QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        self.stack = QtWidgets.QStackedWidget()
        self.message = _MessagePage()
        page = QtWidgets.QWidget()
        self.page_layout = QtWidgets.QVBoxLayout(page)
        self.page_layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(120)
        self.plot.getPlotItem().setMenuEnabled(False)
        self.page_layout.addWidget(self.plot, 1)
        self.stack.addWidget(page)
        self.stack.addWidget(self.message)
        v.addWidget(self.stack)

    def _show_missing(self) -> bool:
        """Show the state's message in place of the plot when the method cannot be drawn; True if so."""
        msg = self.state.missing_message(self.method)
        if msg:
            self.message.setText(msg)
            self.stack.setCurrentWidget(self.message)
            return True
        self.stack.setCurrentIndex(0)
        return False


class MethodPlot(_PlotCard):
    """F1 / purity / completeness vs threshold for one score, over its histograms, with a draggable line."""

    def __init__(self, state: ViewerState, method: str, coalescer: Coalescer, parent=None):
        super().__init__(state, method, coalescer, parent)
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", XLABEL[method])
        # no left axis title: the legend above names the curves (a title is cut on a short plot, 1366 x 768)
        pi.showGrid(x=True, y=True, alpha=0.15)
        # the legend sits above the plot, never over the curves or the threshold region
        self.legend = QtWidgets.QLabel(
            " &nbsp; ".join(f"<span style='color:{c}'>━</span> {name}" for name, c in (
                ("F1", CURVE_COLOURS["f1"]), ("purity", CURVE_COLOURS["purity"]),
                ("completeness", CURVE_COLOURS["completeness"])))
            + " &nbsp; <span style='color:rgb(90,200,120)'>▇</span> clusters"
              " &nbsp; <span style='color:rgb(150,150,160)'>▇</span> others (right)")
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("font-size: 8pt")
        self.page_layout.insertWidget(0, self.legend)
        # histograms behind the curves, in the same view box: log10(count + 1) scaled to the plot's 0-1 range, with
        # the counts on the right axis (one view box, so nothing is linked across items that Qt deletes apart)
        pi.showAxis("right")
        pi.getAxis("right").setLabel("cutouts")
        pi.getAxis("right").setStyle(maxTickLevel=0)  # decades only (set in rebuild): no piled-up minor ticks
        self.hist_neg = pg.PlotCurveItem(fillLevel=0, pen=pg.mkPen((150, 150, 160, 200)),
                                         brush=(120, 120, 135, 70))
        self.hist_pos = pg.PlotCurveItem(fillLevel=0, pen=pg.mkPen((90, 200, 120, 230)),
                                         brush=(60, 200, 90, 70))
        for h in (self.hist_neg, self.hist_pos):
            h.setZValue(-10)
            pi.addItem(h)
        self.c_f1 = pi.plot(pen=pg.mkPen(CURVE_COLOURS["f1"], width=2), name="F1")
        self.c_pur = pi.plot(pen=pg.mkPen(CURVE_COLOURS["purity"], width=1.5), name="purity")
        self.c_comp = pi.plot(pen=pg.mkPen(CURVE_COLOURS["completeness"], width=1.5), name="completeness")
        self.best = pg.ScatterPlotItem(symbol="star", size=12, pen=None, brush=pg.mkBrush("#ffe066"))
        pi.addItem(self.best)
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(METHOD_COLOURS[method], width=2),
                                    hoverPen=pg.mkPen("#ffffff", width=3),
                                    label="{value:.4g}", labelOpts={"position": 0.95, "color": "#ffffff",
                                                                   "fill": (0, 0, 0, 140)})
        pi.addItem(self.line)
        self.line.sigPositionChanged.connect(self._line_moved)
        row = QtWidgets.QHBoxLayout()
        self.spin = QtWidgets.QDoubleSpinBox(decimals=4, keyboardTracking=False)
        self.spin.setRange(*((-1e4, 1e5) if method == "MF" else (-1.0, 2.0)))
        self.spin.setSingleStep(0.01 if method != "MF" else 0.1)
        self.spin.valueChanged.connect(lambda v: self.state.set_threshold(self.method, v))
        self.snap_btn = QtWidgets.QPushButton("F1 optimum", toolTip="snap the threshold to the F1 optimum on the "
                                                                    "validation split")
        self.snap_btn.clicked.connect(lambda: self.state.snap(self.method, "val"))
        self.summary = _summary_label()
        row.addWidget(QtWidgets.QLabel("threshold"))
        row.addWidget(self.spin)
        row.addWidget(self.snap_btn)
        row.addStretch(1)
        self.page_layout.addLayout(row)
        self.page_layout.addWidget(self.summary)
        self._setting = False

    # ------------------------------------------------------------------ state -> view
    def rebuild(self) -> None:
        s = self.state
        if self._show_missing():
            return
        split = s.curve_split
        curve = s.curve(self.method, split)
        scores = s.score(self.method)[s.split_mask(split)]
        ok = np.isfinite(scores)
        valid = scores[ok]
        y = s.labels[s.split_mask(split)][ok]
        if self.method in ("CNN", "PROD"):
            lo, hi = 0.0, 1.0
            view_hi = hi
        elif valid.size:
            lo, hi = float(valid.min()), float(valid.max())
            if hi <= lo:
                hi = lo + 1.0
            # S/N has a long tail (massive clusters at S/N 100+): show up to the 99th percentile, zoom out to see it
            view_hi = min(hi, max(float(np.percentile(valid, 99)), 2 * float(s.thresholds.get(self.method, lo))))
            view_hi = view_hi if view_hi > lo else hi
        else:
            lo, hi = 0.0, 10.0
            view_hi = hi
        self.lo, self.hi = lo, hi
        npts = min(int(NGRID * (hi - lo) / max(view_hi - lo, 1e-12)), 25 * NGRID)  # NGRID across the view
        x, f1, pur, comp = curve_on_grid(curve, lo, hi, max(npts, NGRID))
        self.c_f1.setData(x, np.nan_to_num(f1, nan=0.0), connect="finite")
        self.c_pur.setData(x, pur, connect="finite")
        self.c_comp.setData(x, comp, connect="finite")
        edges = np.linspace(lo, view_hi, NBINS + 1)
        clipped = np.minimum(valid, view_hi)  # the tail beyond the view goes into the last bin
        hn, _ = np.histogram(clipped[~y], bins=edges)
        hp, _ = np.histogram(clipped[y], bins=edges)
        top = np.log10(max(hn.max(initial=0), hp.max(initial=0)) + 1.0)
        ytop = max(top, 1.0) * 1.05  # log10(count + 1) = ytop at the top of the 0-1 range
        self.hist_neg.setData(edges, np.log10(hn + 1.0) / ytop, stepMode="center")
        self.hist_pos.setData(edges, np.log10(hp + 1.0) / ytop, stepMode="center")
        # the right axis labels the decades 1, 10, 100, ... of the histograms (at most 7 labels)
        step = max(1, int(np.ceil(ytop / 7)))
        decades = [(k / ytop, f"{10 ** k:,}") for k in range(0, int(ytop) + 1, step)]
        self.plot.getPlotItem().getAxis("right").setTicks([decades, []])
        b = curve.best()
        if np.isfinite(b.threshold):
            self.best.setData([b.threshold], [b.f1])
        else:
            self.best.clear()
        pi = self.plot.getPlotItem()
        pi.setXRange(lo, view_hi, padding=0.02)
        pi.setYRange(0, 1.02, padding=0)
        unscored = int(scores.size - valid.size)
        pi.setTitle(f"{split}: {int(curve.n_pos)} clusters, {int(curve.n_neg):,} others"
                    + (f"; {unscored:,} unscored" if unscored else ""), size="9pt")
        pi.setToolTip(f"{METHOD_LABELS[self.method]}: F1, purity and completeness against the threshold on the "
                      f"{split} split, over the score histograms (right axis, log). Drag the line.")
        self.line.setBounds((lo - (hi - lo), hi + (hi - lo)))
        self.update_threshold()

    def update_threshold(self) -> None:
        s = self.state
        if s.missing_message(self.method) or self.method not in s.thresholds:
            return
        t = s.thresholds[self.method]
        self._setting = True
        try:
            if abs(self.line.value() - t) > 1e-12:
                self.line.setValue(t)
            if abs(self.spin.value() - t) > 10 ** -self.spin.decimals():
                self.spin.blockSignals(True)
                self.spin.setValue(t)
                self.spin.blockSignals(False)
        finally:
            self._setting = False
        c = s.counts(self.method, s.curve_split)
        _show_summary(self.summary, s, self.method, f"{s.curve_split}: F1 <b>{fmt(c.f1)}</b>, purity "
                      f"{fmt(c.purity)}, completeness {fmt(c.completeness)} at {fmt_threshold(self.method, t)}")

    def _line_moved(self) -> None:
        if not self._setting:
            self.coalescer.request(self.method, float(self.line.value()))


class AndPlot(_PlotCard):
    """The EnsembleAND F1 heat map over (CNN, MF) threshold pairs, with a draggable operating point."""

    def __init__(self, state: ViewerState, coalescer: Coalescer, parent=None):
        super().__init__(state, "AND", coalescer, parent)
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", "CNN threshold")
        pi.setLabel("left", "MF S/N threshold")
        self.image = pg.ImageItem(axisOrder="row-major")
        pi.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("inferno"), label="F1", width=12,
                                   interactive=False)
        self.bar.setImageItem(self.image, insert_in=pi)
        self.target = pg.TargetItem(size=14, movable=True, pen=pg.mkPen("#5fd7a0", width=2),
                                    brush=pg.mkBrush(95, 215, 160, 80))
        pi.addItem(self.target)
        self.target.sigPositionChanged.connect(self._moved)
        row = QtWidgets.QHBoxLayout()
        self.spin_cnn = QtWidgets.QDoubleSpinBox(decimals=4, keyboardTracking=False, singleStep=0.01)
        self.spin_mf = QtWidgets.QDoubleSpinBox(decimals=3, keyboardTracking=False, singleStep=0.1)
        self.spin_cnn.setRange(-1.0, 2.0)
        self.spin_mf.setRange(-1e4, 1e5)
        for w in (self.spin_cnn, self.spin_mf):
            w.valueChanged.connect(self._spun)
        for w in (self.spin_cnn, self.spin_mf):  # the range sets no width: the row fits a narrow dock
            w.setMinimumWidth(62)
        self.snap_btn = QtWidgets.QPushButton("F1 optimum", toolTip="snap both thresholds to the F1 optimum on "
                                                                    "the validation split")
        self.snap_btn.clicked.connect(lambda: self.state.snap("AND", "val"))
        self.summary = _summary_label()
        row.addWidget(QtWidgets.QLabel("CNN ≥"))
        row.addWidget(self.spin_cnn)
        row.addWidget(QtWidgets.QLabel("S/N ≥"))
        row.addWidget(self.spin_mf)
        row.addWidget(self.snap_btn)
        row.addStretch(1)
        self.page_layout.addLayout(row)
        self.page_layout.addWidget(self.summary)
        self._setting = False
        self.grid = None

    def rebuild(self) -> None:
        s = self.state
        if self._show_missing():
            return
        g = s.and_grid(s.curve_split)
        self.grid = g
        f1 = np.nan_to_num(g.f1, nan=0.0).T.astype(np.float32)  # rows: MF index, columns: CNN index
        if f1.size == 0:
            f1 = np.zeros((1, 1), np.float32)
        self.image.setImage(f1, levels=(0.0, max(float(f1.max()), 1e-3)), lut=lut("inferno"), autoLevels=False)
        self.bar.setLevels((0.0, max(float(f1.max()), 1e-3)))
        pi = self.plot.getPlotItem()
        pi.getAxis("bottom").setTicks([self._ticks(g.t_a)])
        pi.getAxis("left").setTicks([self._ticks(g.t_b)])
        pi.setTitle(f"AND F1 on {s.curve_split} ({g.t_a.size}×{g.t_b.size} quantile grid)", size="9pt")
        pi.setRange(xRange=(0, max(g.t_a.size, 1)), yRange=(0, max(g.t_b.size, 1)), padding=0.02)
        self.update_threshold()

    @staticmethod
    def _ticks(t: np.ndarray, n: int = 6) -> list[tuple[float, str]]:
        if t.size == 0:
            return []
        ks = np.unique(np.linspace(0, t.size - 1, n).astype(int))
        return [(k + 0.5, f"{t[k]:.3g}") for k in ks]

    def _to_index(self, t: float, grid: np.ndarray) -> float:
        if grid.size < 2:
            return 0.5
        return float(np.interp(t, grid, np.arange(grid.size))) + 0.5

    def _to_threshold(self, k: float, grid: np.ndarray) -> float:
        if grid.size == 0:
            return np.nan
        return float(np.interp(k - 0.5, np.arange(grid.size), grid))

    def update_threshold(self) -> None:
        s = self.state
        if s.missing_message("AND") or "AND" not in s.thresholds or self.grid is None:
            return
        t_cnn, t_mf = s.thresholds["AND"]
        self._setting = True
        try:
            self.target.setPos(self._to_index(t_cnn, self.grid.t_a), self._to_index(t_mf, self.grid.t_b))
            for w, val in ((self.spin_cnn, t_cnn), (self.spin_mf, t_mf)):
                w.blockSignals(True)
                w.setValue(val)
                w.blockSignals(False)
        finally:
            self._setting = False
        c = s.counts("AND", s.curve_split)
        _show_summary(self.summary, s, "AND", f"{s.curve_split}: F1 <b>{fmt(c.f1)}</b>, purity {fmt(c.purity)}, "
                                              f"completeness {fmt(c.completeness)}")

    def _moved(self) -> None:
        if self._setting or self.grid is None:
            return
        p = self.target.pos()
        self.coalescer.request("AND", (self._to_threshold(p.x(), self.grid.t_a),
                                       self._to_threshold(p.y(), self.grid.t_b)))

    def _spun(self, *_):
        if not self._setting:
            self.state.set_threshold("AND", (self.spin_cnn.value(), self.spin_mf.value()))


class F1Panel(QtWidgets.QWidget):
    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.coalescer = Coalescer(self._apply, parent=self)
        v = QtWidgets.QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("curves on"))
        self.split = QtWidgets.QComboBox()
        for sp in ("val", "test", "train", "all"):
            self.split.addItem(sp)
        self.split.currentTextChanged.connect(self.state.set_curve_split)
        top.addWidget(self.split)
        self.snap_all = QtWidgets.QPushButton("all to F1 optimum", toolTip="snap every method's threshold to its "
                                                                           "F1 optimum on the validation split")
        self.snap_all.clicked.connect(self._snap_all)
        top.addWidget(self.snap_all)
        top.addStretch(1)
        v.addLayout(top)
        self.tabs = QtWidgets.QTabWidget()
        self.plots: dict[str, QtWidgets.QWidget] = {}
        for m in ("CNN", "MF", "PROD"):
            self.plots[m] = MethodPlot(state, m, self.coalescer)
            self.tabs.addTab(self.plots[m], m)
        self.plots["AND"] = AndPlot(state, self.coalescer)
        self.tabs.addTab(self.plots["AND"], "AND")
        v.addWidget(self.tabs, 3)
        self.stats = StatsTable(state)
        v.addWidget(self.stats, 1)
        state.events.workspace.connect(self._rebuild)
        state.events.scores.connect(self._rebuild)
        state.events.curve_split.connect(self._split_changed)
        state.events.thresholds.connect(self._on_threshold)
        self._objects_timer = QtCore.QTimer(self, interval=50)  # polls the object set's read while it runs
        self._objects_timer.timeout.connect(self._poll_objects)
        state.events.objects.connect(self._on_objects)
        self._rebuild()

    def _apply(self, method: str, value) -> None:
        if self.state.data is not None and self.state.has_method(method):
            self.state.set_threshold(method, value)

    def _snap_all(self) -> None:
        for m in self.state.available_methods():
            self.state.snap(m, "val")

    def _rebuild(self, *_):
        self.split.blockSignals(True)
        self.split.setCurrentText(self.state.curve_split)
        self.split.blockSignals(False)
        for p in self.plots.values():
            p.rebuild()
        self.stats.rebuild()
        avail = self.state.available_methods()
        if avail and self.tabs.currentWidget() is not self.plots.get(avail[0]):
            cur = [m for m, p in self.plots.items() if p is self.tabs.currentWidget()]
            if cur and cur[0] not in avail:
                self.tabs.setCurrentWidget(self.plots[avail[0]])

    def _on_objects(self) -> None:
        """The object set started loading (poll it) or arrived (show its numbers under every plot)."""
        if self.state.objects.loading:
            if not self._objects_timer.isActive():
                self._objects_timer.start()
            return
        self._objects_timer.stop()
        for p in self.plots.values():
            p.update_threshold()

    def _poll_objects(self) -> None:
        if not self.state.objects.poll():
            self._objects_timer.stop()

    def _split_changed(self, split: str) -> None:
        self._rebuild()

    def _on_threshold(self, method: str) -> None:
        p = self.plots.get(method)
        if p is not None:
            p.update_threshold()
        self.stats.update_method(method)

    def show_method(self, method: str) -> None:
        self.tabs.setCurrentWidget(self.plots[method])
