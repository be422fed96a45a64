"""The cutout inspector: the three bands side by side, an RGB composite, overlays and the cutout's properties.

Orientation: image rows run south -> north and columns east -> west, so with row 0 at the bottom north is
up and east (increasing RA) is left, as on the sky. Overlays: the true halo (cross and a circle of theta500,
from ``halo_dx_arcmin`` east and ``halo_dy_arcmin`` north of the centre), the central 6' x 6' cell whose halos
make the label, matched-filter detections (triangle and a circle of theta_c) when the workspace has an MF
catalogue, and the scores with each method's decision at the current thresholds.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from szviewer.cutouts.levels import LEVEL_LABELS
from szviewer.gui import display
from szviewer.gui.annotations import VET_CLASSES, VET_KEYS, VET_LABELS
from szviewer.gui.common import CMAPS, OUTCOME_TEXT_RGB, fmt, lut
from szviewer.gui.infotext import info_html
from szviewer.gui.state import ViewerState

CELL_ARCMIN = 6.0


def _symmetric(m: np.ndarray | None) -> tuple[float, float]:
    """Levels symmetric about 0 at the 99.5th percentile of |m| (a y map: decrements and residuals alike)."""
    if m is None:
        return (-1.0, 1.0)
    a = float(np.nanpercentile(np.abs(m), 99.5)) if np.isfinite(m).any() else 1.0
    return (-a, a) if a > 0 else (-1.0, 1.0)
BAND_TITLES = ("90 GHz", "148 GHz", "219 GHz")


class _Panel:
    """One image view: a ViewBox with its image and overlay items."""

    def __init__(self, title: str):
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setMinimumSize(120, 120)
        self.widget.ci.setContentsMargins(2, 2, 2, 2)
        self.label = self.widget.addLabel(title, row=0, col=0)
        self.vb = self.widget.addViewBox(row=1, col=0, lockAspect=True, enableMouse=False)
        self.vb.setDefaultPadding(0.02)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image)
        # overlays live in a group clipped to the cutout, in pixel coordinates (the image's rect is 0..npix)
        self.overlay = QtWidgets.QGraphicsRectItem(0, 0, 32, 32)
        self.overlay.setPen(pg.mkPen(None))
        self.overlay.setFlag(QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape)
        self.overlay.setZValue(10)
        self.vb.addItem(self.overlay)
        self.cell = QtWidgets.QGraphicsRectItem(self.overlay)
        self.cell.setPen(pg.mkPen((255, 255, 255, 150), width=1, style=QtCore.Qt.PenStyle.DashLine, cosmetic=True))
        self.halo = pg.ScatterPlotItem(symbol="x", size=12, pen=pg.mkPen("#ffffff", width=2),
                                       brush=None, pxMode=True)
        self.halo.setParentItem(self.overlay)
        self.halo_circle = QtWidgets.QGraphicsEllipseItem(self.overlay)
        self.halo_circle.setPen(pg.mkPen("#ffffff", width=1, cosmetic=True))
        self.mf = pg.ScatterPlotItem(symbol="t1", size=12, pen=pg.mkPen("#ffb347", width=2), brush=None)
        self.mf.setParentItem(self.overlay)
        self.mf_circles: list[QtWidgets.QGraphicsEllipseItem] = []


class CutoutInspector(QtWidgets.QWidget):
    """Shows ``state.current``; controls write display settings into the state."""

    inspect_prev = QtCore.pyqtSignal()

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.setObjectName("inspector")
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        v = QtWidgets.QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)

        # ---- controls, in two rows so that the inspector fits beside the docks on a 1366 px screen
        bar = QtWidgets.QHBoxLayout()
        bar2 = QtWidgets.QHBoxLayout()
        self.level = QtWidgets.QComboBox(toolTip="component level: each adds one component to the previous")
        self.stretch = QtWidgets.QComboBox(toolTip="stretch shared by all cutouts")
        self.stretch.addItems(["linear", "asinh"])
        self.scaling = QtWidgets.QComboBox(toolTip="how the shared levels are measured on a sample of cutouts")
        self.scaling.addItem("percentile 0.5-99.5", "percentile")
        self.scaling.addItem("min-max", "minmax")
        self.cmap = QtWidgets.QComboBox(toolTip="colour map of the single bands")
        self.cmap.addItems(list(CMAPS) + ["grey"])
        self.view = QtWidgets.QComboBox(toolTip="the three bands and their RGB composite, or filtered views: "
                                                "the MF S/N map at the candidate's scale and a Compton-y ILC")
        self.view.addItem("bands + RGB", "bands")
        self.view.addItem("filtered: MF S/N, y", "filtered")
        for w in (self.level, self.scaling, self.view):
            w.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.show_halo = QtWidgets.QCheckBox("halo")
        self.show_cell = QtWidgets.QCheckBox("6' cell")
        self.show_mf = QtWidgets.QCheckBox("MF")
        for text, w in (("level", self.level), ("levels", self.scaling), ("colours", self.cmap)):
            bar.addWidget(QtWidgets.QLabel(text))
            bar.addWidget(w)
        bar.addStretch(1)
        for text, w in (("show", self.view), ("stretch", self.stretch)):
            bar2.addWidget(QtWidgets.QLabel(text))
            bar2.addWidget(w)
        bar2.addSpacing(8)
        for w in (self.show_halo, self.show_cell, self.show_mf):
            bar2.addWidget(w)
        bar2.addStretch(1)
        self.prev_btn = QtWidgets.QToolButton(text="◀ k", toolTip="previous cutout in the gallery (k)")
        self.next_btn = QtWidgets.QToolButton(text="j ▶", toolTip="next cutout in the gallery (j)")
        bar2.addWidget(self.prev_btn)
        bar2.addWidget(self.next_btn)
        v.addLayout(bar)
        v.addLayout(bar2)

        # ---- images: one view per band and the RGB composite, in a row of four or two rows of two
        self.glw = QtWidgets.QWidget()
        self.glw.setMinimumHeight(180)
        self.grid = QtWidgets.QGridLayout(self.glw)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.panels = [_Panel(t) for t in BAND_TITLES + ("RGB  90 / 148 / 219",)]
        self._ncols = 0
        self._arrange(2)
        self.text = pg.TextItem(anchor=(0, 0))
        self.text.setZValue(20)
        self.panels[3].vb.addItem(self.text, ignoreBounds=True)
        v.addWidget(self.glw, 1)

        # ---- properties and annotation
        low = QtWidgets.QHBoxLayout()
        self.info = QtWidgets.QLabel(textFormat=QtCore.Qt.TextFormat.RichText)
        self.info.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        self.info.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.info.setMinimumWidth(160)
        low.addWidget(self.info, 3)
        ann = QtWidgets.QVBoxLayout()
        self.flag = QtWidgets.QCheckBox("flag this cutout (f)")
        vet_row = QtWidgets.QHBoxLayout()
        vet_row.setSpacing(2)
        self.vet_buttons: dict[str, QtWidgets.QToolButton] = {}
        for cls, key in (("cluster", "c"), ("not", "n"), ("unsure", "u")):
            b = QtWidgets.QToolButton(text=f"{cls} ({key})", checkable=True,
                                      toolTip=f"vet: {VET_LABELS[cls]} (key {key} or {VET_CLASSES.index(cls) + 1}; "
                                              "again to clear)")
            b.setStyleSheet("QToolButton:checked { background-color: #346ebe; color: #ffffff; font-weight: bold }")
            b.clicked.connect(lambda on, cls=cls: self.set_vet(cls if on else None))
            vet_row.addWidget(b)
            self.vet_buttons[cls] = b
        vet_row.addStretch(1)
        self.note = QtWidgets.QPlainTextEdit(placeholderText="note, saved in the workspace")
        self.note.setMaximumHeight(56)
        ann.addWidget(self.flag)
        ann.addLayout(vet_row)
        ann.addWidget(self.note)
        ann.addStretch(1)
        low.addLayout(ann, 1)
        v.addLayout(low, 0)
        self.empty = QtWidgets.QLabel("", alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        v.addWidget(self.empty)
        self.empty.hide()

        self._note_timer = QtCore.QTimer(self, singleShot=True, interval=600)
        self._note_timer.timeout.connect(self._save_note)
        self._updating = False

        self.level.currentIndexChanged.connect(self._controls_changed)
        self.stretch.currentIndexChanged.connect(self._controls_changed)
        self.scaling.currentIndexChanged.connect(self._controls_changed)
        self.cmap.currentIndexChanged.connect(self._controls_changed)
        self.view.currentIndexChanged.connect(self._controls_changed)
        for w in (self.show_halo, self.show_cell, self.show_mf):
            w.toggled.connect(self._controls_changed)
        self.flag.toggled.connect(self._flag_toggled)
        self.note.textChanged.connect(lambda: None if self._updating else self._note_timer.start())
        self.prev_btn.clicked.connect(lambda: state.step(-1))
        self.next_btn.clicked.connect(lambda: state.step(+1))

        state.events.workspace.connect(self._on_workspace)
        state.events.selection.connect(self._on_selection)
        state.events.display.connect(self._on_display)
        state.events.thresholds.connect(self._on_thresholds)
        state.events.scores.connect(self._on_thresholds)
        state.events.annotations.connect(self._on_annotation)
        self._on_workspace(state)

    # ------------------------------------------------------------------ state -> widgets
    def _sync_controls(self) -> None:
        d = self.state.display
        self._updating = True
        try:
            self.level.clear()
            for name in self.state.levels():
                self.level.addItem(LEVEL_LABELS.get(name, name), name)
            k = self.level.findData(d.level)
            self.level.setCurrentIndex(k if k >= 0 else self.level.count() - 1)
            self.stretch.setCurrentText(d.stretch)
            self.scaling.setCurrentIndex(max(0, self.scaling.findData(d.scaling)))
            self.cmap.setCurrentText(d.cmap)
            self.show_halo.setChecked(d.show_halo)
            self.show_cell.setChecked(d.show_cell)
            self.show_mf.setChecked(d.show_mf)
            self.view.setCurrentIndex(max(0, self.view.findData(d.view)))
        finally:
            self._updating = False

    def _titles(self) -> list[str]:
        bands = tuple(self.state.store.bands) if self.state.store is not None else (90, 148, 219)
        rgb = f"RGB  {' / '.join(str(b) for b in bands[:3])}"
        if self.state.display.view == "filtered":
            mid = bands[1] if len(bands) > 1 else bands[0]
            return [f"{mid} GHz", "MF S/N (θc …)", "Compton y (ILC)", rgb]
        return [f"{b} GHz" for b in bands[:3]] + [rgb]

    def _on_workspace(self, _state=None) -> None:
        self._filtered_cache = {}
        self._sync_controls()
        self._redraw()

    def _on_display(self) -> None:
        self._sync_controls()
        self._redraw()

    def _on_selection(self, _row) -> None:
        self._redraw()

    def _on_thresholds(self, method=None) -> None:
        self._update_text()
        if method == "MF" and self.state.current is not None and self.state.mf_catalog() is not None:
            self._draw_overlays(self.state.current)

    def _on_annotation(self, row) -> None:
        if row == self.state.current:
            self._update_annotation()

    def _controls_changed(self, *_):
        if self._updating:
            return
        self.state.set_display(level=self.level.currentData() or self.state.display.level,
                               stretch=self.stretch.currentText(), scaling=self.scaling.currentData(),
                               cmap=self.cmap.currentText(), show_halo=self.show_halo.isChecked(),
                               show_cell=self.show_cell.isChecked(), show_mf=self.show_mf.isChecked(),
                               view=self.view.currentData() or "bands")

    def _flag_toggled(self, on: bool) -> None:
        if not self._updating and self.state.current is not None:
            self.state.set_annotation(self.state.current, flag=on)

    def _save_note(self) -> None:
        if self.state.current is not None and self.state.data is not None:
            if self.note.toPlainText() != self.state.annotation(self.state.current).get("note", ""):
                self.state.set_annotation(self.state.current, note=self.note.toPlainText())

    def set_vet(self, cls: str | None) -> None:
        """Vet the shown cutout: 'cluster', 'not', 'unsure', or None to clear (saved in the workspace)."""
        if self.state.current is not None:
            self.state.set_annotation(self.state.current, vet=cls)

    def toggle_vet(self, cls: str) -> None:
        """What the keys c / n / u (1 / 2 / 3) do: set the class, or clear it when it is the cutout's already."""
        if self.state.current is not None:
            same = self.state.annotation(self.state.current).get("vet") == cls
            self.set_vet(None if same else cls)

    def toggle_flag(self) -> None:
        if self.state.current is not None:
            a = self.state.annotation(self.state.current)
            self.state.set_annotation(self.state.current, flag=not a.get("flag", False))

    # ------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        s = self.state
        row = s.current
        if self._note_timer.isActive():
            self._note_timer.stop()
            self._save_note()
        if s.data is None or row is None:
            for p in self.panels:
                p.image.clear()
                p.halo.clear()
                p.mf.clear()
                p.halo_circle.hide()
                p.cell.hide()
            self.text.setText("")
            self.info.setText("<i>no cutout selected</i>" if s.data is not None else
                              "<i>no cutouts: open a workspace that has them, or build them in Jobs</i>")
            self._update_annotation()
            return
        if s.store is not None:
            self._draw_images(row)
        self._draw_overlays(row)
        self._update_text()
        self._update_annotation()

    def _draw_images(self, row: int) -> None:
        s = self.state
        d = s.display
        level = d.level if d.level in s.store.levels else list(s.store.levels)[-1]
        imgs = s.images(row, level)
        levels = s.band_levels(level, d.scaling)
        table = lut(d.cmap)
        npix = imgs.shape[-1]
        titles = self._titles()
        if d.view == "filtered":
            mid = 1 if imgs.shape[0] > 1 else 0
            snr, y, theta = self._filtered(row, level, imgs)
            titles[1] = f"MF S/N (θc {theta:g}′)"
            singles = [display.stretch(imgs[mid], levels[mid, 0], levels[mid, 1], d.stretch)]
            for m, (lo, hi) in ((snr, (-5.0, 5.0)), (y, _symmetric(y))):
                singles.append(display.stretch(m, lo, hi, d.stretch) if m is not None else None)
        else:
            singles = [display.stretch(imgs[b], levels[b, 0], levels[b, 1], d.stretch)
                       for b in range(min(3, imgs.shape[0]))]
        for panel, title in zip(self.panels, titles, strict=False):
            panel.label.setText(title)
        for b, t in enumerate(singles):
            if t is None:
                self.panels[b].image.clear()
                continue
            self.panels[b].image.setImage(t, levels=(0.0, 1.0), lut=table, autoLevels=False)
            self.panels[b].image.setRect(QtCore.QRectF(0, 0, npix, npix))
        rgb = display.rgb_composite(imgs, levels, d.stretch)
        self.panels[3].image.setImage(rgb, levels=(0, 255), autoLevels=False)
        self.panels[3].image.setRect(QtCore.QRectF(0, 0, npix, npix))
        for p in self.panels:
            p.vb.setRange(xRange=(0, npix), yRange=(0, npix), padding=0.02)
        self.text.setPos(0.5, npix - 0.5)

    def _filtered(self, row: int, level: str, imgs: np.ndarray):
        """(MF S/N map, Compton-y map, theta_c) of a cutout (:func:`szviewer.gui.views.filtered_views`), cached."""
        key = (row, level)
        if key not in self._filtered_cache:
            from szviewer.gui.views import filtered_views

            if len(self._filtered_cache) > 64:
                self._filtered_cache.clear()
            self._filtered_cache[key] = filtered_views(self.state, row, imgs)
        return self._filtered_cache[key]

    def _pix(self) -> tuple[float, int]:
        s = self.state
        if s.store is not None:
            return s.store.pixel_arcmin, s.store.npix
        return 0.25, 32

    def _draw_overlays(self, row: int) -> None:
        s = self.state
        d = s.display
        c = s.data.columns
        pix, npix = self._pix()
        ctr = npix / 2.0
        half = CELL_ARCMIN / pix / 2.0
        dx = float(c["halo_dx_arcmin"][row]) if "halo_dx_arcmin" in c else np.nan
        dy = float(c["halo_dy_arcmin"][row]) if "halo_dy_arcmin" in c else np.nan
        theta = float(c["theta500_arcmin"][row]) if "theta500_arcmin" in c else np.nan
        has_halo = np.isfinite(dx) and np.isfinite(dy)
        hx, hy = ctr - dx / pix, ctr + dy / pix  # east is left, north is up
        dets = s.detections_near(row) if d.show_mf else []
        for p in self.panels:
            p.cell.setRect(QtCore.QRectF(ctr - half, ctr - half, 2 * half, 2 * half))
            p.cell.setVisible(d.show_cell)
            if has_halo and d.show_halo:
                p.halo.setData([hx], [hy])
                if np.isfinite(theta):
                    r = theta / pix
                    p.halo_circle.setRect(QtCore.QRectF(hx - r, hy - r, 2 * r, 2 * r))
                    p.halo_circle.show()
                else:
                    p.halo_circle.hide()
            else:
                p.halo.clear()
                p.halo_circle.hide()
            p.overlay.setRect(QtCore.QRectF(0, 0, npix, npix))
            for item in p.mf_circles:
                item.setParentItem(None)
                if item.scene() is not None:
                    item.scene().removeItem(item)
            p.mf_circles = []
            if dets:
                t_mf = s.thresholds.get("MF", -np.inf)
                xs = [ctr - e["dx_arcmin"] / pix for e in dets]
                ys = [ctr + e["dy_arcmin"] / pix for e in dets]
                # detections above the MF threshold in orange, the others grey
                pens = [pg.mkPen("#ffb347" if e["snr"] >= t_mf else (170, 170, 170, 200), width=2) for e in dets]
                p.mf.setData(xs, ys, pen=pens)
                for x, y, e, pen in zip(xs, ys, dets, pens, strict=True):
                    r = e["theta_c_arcmin"] / pix
                    circ = QtWidgets.QGraphicsEllipseItem(x - r, y - r, 2 * r, 2 * r, p.overlay)
                    q = pg.mkPen(pen.color(), width=1, style=QtCore.Qt.PenStyle.DotLine, cosmetic=True)
                    circ.setPen(q)
                    p.mf_circles.append(circ)
            else:
                p.mf.clear()

    def _update_text(self) -> None:
        s = self.state
        row = s.current
        if s.data is None or row is None:
            return
        c = s.data.columns
        sc = s.data.scores
        def tag(m):
            o = s.outcome_of(m, row)
            return "" if o is None else f" <span style='color: rgb{OUTCOME_TEXT_RGB[o]}'><b>{o}</b></span>"

        lines = []
        if "cnn_prob" in sc:
            lines.append(f"CNN p {fmt(sc['cnn_prob'][row])}{tag('CNN')}")
        if "mf_snr" in sc:
            v = sc["mf_snr"][row]
            lines.append((f"MF S/N {fmt(v)}" if np.isfinite(v) else "MF: no detection") + tag("MF"))
        ens = [f"{m}{tag(m)}" for m in ("PROD", "AND") if s.has_method(m)]
        if ens:
            lines.append(" ".join(ens))
        label = "cluster" if c["label"][row] else "no cluster"
        head = "<br>".join(lines) or "<i>no scores yet</i>"
        self.text.setHtml(f"<div style='color:#ffffff; font-size:8pt; background-color: rgba(0,0,0,120)'>"
                          f"{head}</div>")
        self.info.setText(info_html(s, row, label))

    def _update_annotation(self) -> None:
        s = self.state
        self._updating = True
        try:
            enabled = s.data is not None and s.current is not None
            self.flag.setEnabled(enabled)
            self.note.setEnabled(enabled)
            a = s.annotation(s.current) if enabled else {"flag": False, "note": ""}
            self.flag.setChecked(bool(a.get("flag")))
            for cls, b in self.vet_buttons.items():
                b.setEnabled(enabled)
                b.setChecked(a.get("vet") == cls)
            if self.note.toPlainText() != a.get("note", ""):
                self.note.setPlainText(a.get("note", ""))
        finally:
            self._updating = False

    def _arrange(self, ncols: int) -> None:
        """Panels in one row of four, or two rows of two, whichever fits the widget's shape."""
        if ncols == self._ncols:
            return
        for p in self.panels:
            self.grid.removeWidget(p.widget)
        for k, p in enumerate(self.panels):
            r, c = divmod(k, ncols)
            self.grid.addWidget(p.widget, r, c)
        for k in range(4):
            self.grid.setColumnStretch(k, 1 if k < ncols else 0)
            self.grid.setRowStretch(k, 1 if k < 4 // ncols else 0)
        self._ncols = ncols

    def resizeEvent(self, ev) -> None:  # noqa: N802
        super().resizeEvent(ev)
        g = self.glw.size()
        w, h = g.width(), g.height() - 40
        one_row = min(w / 4, h)
        two_rows = min(w / 2, h / 2 - 20)
        self._arrange(4 if one_row >= two_rows else 2)

    def keyPressEvent(self, ev: QtGui.QKeyEvent) -> None:  # noqa: N802
        Key = QtCore.Qt.Key
        if ev.key() in (Key.Key_J, Key.Key_Right):
            self.state.step(1)
        elif ev.key() in (Key.Key_K, Key.Key_Left):
            self.state.step(-1)
        elif ev.key() == Key.Key_F:
            self.toggle_flag()
        elif ev.text().lower() in VET_KEYS:
            self.toggle_vet(VET_KEYS[ev.text().lower()])
        elif ev.key() == Key.Key_0:
            self.set_vet(None)
        else:
            super().keyPressEvent(ev)

    def grab_rgb(self) -> np.ndarray | None:
        """The RGB composite currently shown (for tests)."""
        return self.panels[3].image.image

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 - Qt API
        return QtCore.QSize(600, 420)

