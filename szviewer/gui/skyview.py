"""The sky view: the footprint's cutout grid coloured by outcome, score, split or label, with the true halos,
the matched-filter detections and the selected cutout; click to open the cutout there. RA increases to the
left (as on the sky); the aspect ratio is 1 / cos(Dec) at the middle of the footprint so shapes are true.

Behind the cutouts the view can show a band map of the sky (90, 148 or 219 GHz, every stored component summed,
no noise), block-averaged to 1.5' pixels from the tile files of a synthetic workspace. It is built on a worker
thread the first time it is asked for (all bands at once) and kept until another workspace is opened; while it
shows, the cutout colours are drawn translucent over it.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from szviewer.gui.common import OUTCOME_RGB, OUTCOME_TEXT_RGB, lut
from szviewer.gui.skymap import SkyBackground, SkyRaster, band_backgrounds, sky_raster
from szviewer.gui.state import METHODS, OUTCOMES, ViewerState

SPLIT_RGB = {"train": (70, 90, 130), "val": (170, 140, 60), "test": (70, 150, 110)}
BACKGROUND_BANDS = (90, 148, 219)
#: opacity of the cutout colours over a background map
OVERLAY_OPACITY = 0.35
NO_BACKGROUND_TIP = ("a band map behind the cutouts needs the sky tiles of a synthetic workspace; "
                     "this workspace's sky ({kind}) is read from elsewhere")


class _Loaded(QtCore.QObject):
    """Carries a worker thread's background maps to the GUI thread (a queued signal)."""

    done = QtCore.pyqtSignal(object, object)  # (token, {band: SkyBackground} or an error message)


class _AspectBox(QtWidgets.QWidget):
    """Holds the sky plot at the footprint's shape (letterboxed), so the axes span the data and no more."""

    AXES_PX = (64, 44)  # room the axes and their labels take, horizontally and vertically

    def __init__(self, plot: QtWidgets.QWidget, parent=None):
        super().__init__(parent)
        self.plot = plot
        plot.setParent(self)
        self.ratio = 1.0  # width / height of the data on screen
        self.setMinimumSize(160, 110)

    def set_ratio(self, ratio: float) -> None:
        self.ratio = float(ratio) if ratio > 0 else 1.0
        self._fit()

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self._fit()

    def _fit(self) -> None:
        ax, ay = self.AXES_PX
        w, h = max(self.width() - ax, 20), max(self.height() - ay, 20)
        pw = min(w, h * self.ratio)
        ph = pw / self.ratio
        W, H = int(pw + ax), int(ph + ay)
        self.plot.setGeometry((self.width() - W) // 2, (self.height() - H) // 2, W, H)


class SkyView(QtWidgets.QWidget):
    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        v = QtWidgets.QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("colour by"))
        self.colour = QtWidgets.QComboBox()
        self.colour.setMinimumContentsLength(12)
        self.colour.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        bar.addWidget(self.colour, 1)
        self.background_mode = QtWidgets.QComboBox()
        self.background_mode.addItem("none", None)
        for b in BACKGROUND_BANDS:
            self.background_mode.addItem(f"{b} GHz", b)
        bar2 = QtWidgets.QHBoxLayout()
        bar2.addWidget(QtWidgets.QLabel("background"))
        bar2.addWidget(self.background_mode)
        # off by default: markers over the cutout colours would hide the outcomes they are coloured by
        self.show_halos = QtWidgets.QCheckBox("true halos", checked=False,
                                              toolTip="white circles: the labelled halos (truth)")
        self.show_mf = QtWidgets.QCheckBox("MF detections", checked=False,
                                           toolTip="light-blue crosses: MF detections above the MF threshold")
        bar2.addWidget(self.show_halos)
        bar2.addWidget(self.show_mf)
        bar2.addStretch(1)
        v.addLayout(bar)
        v.addLayout(bar2)
        self.legend = QtWidgets.QLabel("")
        self.legend.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.legend.setTextFormat(QtCore.Qt.TextFormat.RichText)
        v.addWidget(self.legend)
        self.plot = pg.PlotWidget()
        pi = self.plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.setLabel("bottom", "RA [deg]")
        pi.setLabel("left", "Dec [deg]")
        pi.invertX(True)
        self.background = pg.ImageItem(axisOrder="row-major")
        self.background.setZValue(-10)
        self.background.setLookupTable(lut("grey"))
        pi.addItem(self.background)
        self.image = pg.ImageItem(axisOrder="row-major")
        pi.addItem(self.image)
        self.halos = pg.ScatterPlotItem(symbol="o", size=9, pen=pg.mkPen("#ffffff", width=1.2), brush=None)
        self.mf = pg.ScatterPlotItem(symbol="x", size=8, pen=pg.mkPen("#9ecbff", width=1.2), brush=None)
        self.current = pg.ScatterPlotItem(symbol="s", size=16, pen=pg.mkPen("#00e5ff", width=2), brush=None)
        for item in (self.halos, self.mf, self.current):
            pi.addItem(item, ignoreBounds=True)
        self.box = _AspectBox(self.plot)
        v.addWidget(self.box, 1)
        self.raster: SkyRaster | None = None
        self.backgrounds: dict[int, SkyBackground] | None = None  # the cached maps of the open workspace
        self.shown_background: SkyBackground | None = None
        self._bg_token = 0
        self._bg_loading = False
        self._bg_status = ""
        self._bg_error = ""
        self._loaded = _Loaded(self)
        self._loaded.done.connect(self._backgrounds_loaded)
        self.background_mode.currentIndexChanged.connect(lambda *_: self.show_background())
        self._timer = QtCore.QTimer(self, singleShot=True, interval=60)
        self._timer.timeout.connect(self.recolour)
        self._overlay_timer = QtCore.QTimer(self, singleShot=True, interval=60)
        self._overlay_timer.timeout.connect(self._overlays)
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.colour.currentIndexChanged.connect(self._colour_chosen)
        # widgets <-> the evented SkySettings model (state.sky): each writes its field, and follows it
        self.show_halos.toggled.connect(lambda on: setattr(state.sky, "show_halos", bool(on)))
        self.show_mf.toggled.connect(lambda on: setattr(state.sky, "show_mf", bool(on)))
        state.sky.events.show_halos.connect(self._sky_marker_changed)
        state.sky.events.show_mf.connect(self._sky_marker_changed)
        state.sky.events.colour.connect(self._sky_colour_changed)
        state.events.workspace.connect(self._on_workspace)
        state.events.scores.connect(self._on_scores)
        state.events.thresholds.connect(self._on_threshold)
        state.events.selection.connect(self._on_selection)
        self._on_workspace()

    # ------------------------------------------------------------------ state -> view
    def _fill_colour_modes(self) -> None:
        s = self.state
        keep = s.sky.colour
        self.colour.blockSignals(True)
        self.colour.clear()
        for m in METHODS:
            if s.has_method(m):
                self.colour.addItem(f"outcome: {m}", f"outcome:{m}")
        for m in ("CNN", "MF", "PROD"):
            if s.has_method(m):
                self.colour.addItem(f"score: {m}", f"score:{m}")
        self.colour.addItem("truth label", "label:")
        self.colour.addItem("split", "split:")
        k = self.colour.findData(keep) if keep else -1
        self.colour.setCurrentIndex(k if k >= 0 else 0)
        self.colour.blockSignals(False)

    def _colour_chosen(self, *_):
        self.state.sky.colour = self.colour.currentData()
        self.recolour()

    def _sky_marker_changed(self, *_):
        for box, on in ((self.show_halos, self.state.sky.show_halos), (self.show_mf, self.state.sky.show_mf)):
            if box.isChecked() != on:
                box.blockSignals(True)
                box.setChecked(on)
                box.blockSignals(False)
        self._overlays()

    def _sky_colour_changed(self, mode):
        k = self.colour.findData(mode)
        if k >= 0 and k != self.colour.currentIndex():
            self.colour.setCurrentIndex(k)

    def _on_workspace(self, *_):
        s = self.state
        self._fill_colour_modes()
        if s.data is None:
            self.raster = None
            self.image.clear()
            for item in (self.halos, self.mf, self.current):
                item.clear()
            self.legend.setText("no cutouts")
            self.plot.getPlotItem().setRange(xRange=(0, 1), yRange=(0, 1))
            self._reset_background()
            return
        c = s.data.columns
        self.raster = sky_raster(c["ra"], c["dec"], c.get("row"))
        r = self.raster
        dec_mid = 0.5 * (r.dec_min + r.dec_max)
        pi = self.plot.getPlotItem()
        cosd = max(math.cos(math.radians(dec_mid)), 0.05)
        pi.setAspectLocked(True, ratio=1.0 / cosd)
        self.box.set_ratio((r.ra_max - r.ra_min) * cosd / max(r.dec_max - r.dec_min, 1e-6))
        pi.setRange(xRange=(r.ra_min, r.ra_max), yRange=(r.dec_min, r.dec_max), padding=0.02)
        pi.vb.disableAutoRange()  # a click or new overlay data never re-zooms
        self._reset_background()
        self.recolour()
        self._overlays()
        self._on_selection(s.current)

    def _on_scores(self, *_):
        self._fill_colour_modes()
        self.recolour()
        self._overlays()

    def _on_threshold(self, method: str) -> None:
        if method == "MF" and self.state.mf_catalog() is not None and self.state.sky.show_mf:
            if not self._overlay_timer.isActive():
                self._overlay_timer.start()
        mode = self.colour.currentData() or ""
        if mode == f"outcome:{method}" and not self._timer.isActive():
            self._timer.start()

    def _on_selection(self, row) -> None:
        s = self.state
        if row is None or s.data is None:
            self.current.clear()
            return
        self.current.setData([float(s.data.columns["ra"][row])], [float(s.data.columns["dec"][row])])

    def colours(self) -> np.ndarray:
        """(n, 4) uint8 colour of each cutout for the current mode."""
        s = self.state
        kind, _, m = (self.colour.currentData() or "label:").partition(":")
        n = s.n
        if kind == "outcome" and s.has_method(m):
            pal = np.array([OUTCOME_RGB[o] + (255,) for o in OUTCOMES], np.uint8)
            codes = s.outcome(m)
            self.legend.setText(" ".join(f"<span style='color: rgb{OUTCOME_TEXT_RGB[o]}'>■ {o}</span>"
                                         for o in ("TP", "FN", "FP", "TN")) + f" &nbsp; ({m} at its threshold)")
            return pal.view(np.uint32).ravel().take(codes).view(np.uint8).reshape(-1, 4)
        if kind == "score" and s.has_method(m):
            sc = s.score(m)
            ok = np.isfinite(sc)
            table = lut("viridis")
            if ok.any():
                lo, hi = np.percentile(sc[ok], [1, 99.9]) if m == "MF" else (0.0, 1.0)
                hi = hi if hi > lo else lo + 1
                k = np.clip(((np.where(ok, sc, lo) - lo) / (hi - lo) * 255).astype(np.int64), 0, 255)
            else:
                lo, hi = 0.0, 1.0
                k = np.zeros(n, np.int64)
            out = np.empty((n, 4), np.uint8)
            out[:, :3] = table[k]
            out[:, 3] = 255
            out[~ok] = (40, 42, 48, 255)
            self.legend.setText(f"{m} score, viridis from {lo:.3g} to {hi:.3g}; grey: no score")
            return out
        if kind == "split":
            out = np.empty((n, 4), np.uint8)
            out[:, 3] = 255
            for sp, rgb in SPLIT_RGB.items():
                out[s.split_mask(sp), :3] = rgb
            self.legend.setText(" ".join(f"<span style='color: rgb{rgb}'>■ {sp}</span>"
                                         for sp, rgb in SPLIT_RGB.items()))
            return out
        out = np.empty((n, 4), np.uint8)
        out[:] = (45, 48, 56, 255)
        out[s.labels] = (230, 230, 230, 255)
        self.legend.setText("white: cutouts whose central 6′ cell holds a cluster (M_vir ≥ 2e14, z ≥ 0.25)")
        return out

    def recolour(self) -> None:
        self._timer.stop()
        if self.raster is None or self.state.data is None:
            return
        r = self.raster
        self.image.setImage(r.colour(self.colours()), autoLevels=False, levels=(0, 255))
        if self._bg_status:
            self.legend.setText(self.legend.text() + f" &nbsp; | {self._bg_status}")
        self.image.setRect(QtCore.QRectF(r.ra_min, r.dec_min, r.ra_max - r.ra_min, r.dec_max - r.dec_min))

    def _overlays(self) -> None:
        s = self.state
        if s.data is None:
            return
        if self.state.sky.show_halos:
            ra, dec, _ = s.halo_positions()
            self.halos.setData(ra, dec)
        else:
            self.halos.clear()
        cat = s.mf_catalog() if self.state.sky.show_mf else None
        if cat is not None:
            keep = cat["snr"] >= s.thresholds["MF"] if "MF" in s.thresholds else np.ones(cat["snr"].size, bool)
            self.mf.setData(cat["ra"][keep], cat["dec"][keep])  # the detections above the MF threshold
        else:
            self.mf.clear()

    # ------------------------------------------------------------------ background map
    def _tile_paths(self) -> list | None:
        """The workspace's tile files, or None where its sky is not tiled (then there is no background)."""
        ws = self.state.workspace
        if ws is None or getattr(ws, "kind", None) != "synthetic":
            return None
        files = ws.products.get("sky", {}).get("files") or []
        return [ws.path(f) for f in files if str(f).endswith(".h5")] or None

    def _fill_background_bands(self) -> None:
        """The background choices: 'none' and the workspace's own bands (90/148/219 GHz for the paper's sky)."""
        ws = self.state.workspace
        bands = tuple(getattr(ws, "bands", ()) or BACKGROUND_BANDS)
        keep = self.background_mode.currentData()
        self.background_mode.blockSignals(True)
        self.background_mode.clear()
        self.background_mode.addItem("none", None)
        for b in bands:
            self.background_mode.addItem(f"{b} GHz", b)
        i = self.background_mode.findData(keep)
        self.background_mode.setCurrentIndex(max(i, 0))
        self.background_mode.blockSignals(False)

    def _reset_background(self) -> None:
        self._fill_background_bands()
        self._bg_token += 1  # a map still being built for the previous workspace is dropped when it arrives
        self._bg_loading = False
        self.backgrounds = None
        self._bg_error = ""
        ws = self.state.workspace
        usable = self._tile_paths() is not None
        self.background_mode.setEnabled(usable)
        if usable or ws is None:
            self.background_mode.setToolTip("a band map of the observed sky (every component and the noise, as the "
                                            "finders see it) behind the cutouts")
        else:
            self.background_mode.setToolTip(NO_BACKGROUND_TIP.format(kind=getattr(ws, "kind", "?")))
        if not usable:
            self.background_mode.blockSignals(True)
            self.background_mode.setCurrentIndex(0)
            self.background_mode.blockSignals(False)
        self.show_background()

    def background_band(self) -> int | None:
        return self.background_mode.currentData() if self.background_mode.isEnabled() else None

    def show_background(self) -> None:
        """Show the chosen band map (building the maps on a worker thread the first time)."""
        band = self.background_band()
        self.shown_background = None
        if band is None or self.state.data is None:
            self.background.clear()
            self.image.setOpacity(1.0)
            self._set_bg_status("")
            return
        if self.backgrounds is None:
            self.background.clear()
            self.image.setOpacity(1.0)
            self._start_background()
            return
        bg = self.backgrounds.get(int(band))
        if bg is None:
            self.background.clear()
            self.image.setOpacity(1.0)
            self._set_bg_status(self._bg_error or f"no {band} GHz map in the tiles "
                                f"(bands: {', '.join(map(str, self.backgrounds))})")
            return
        lo, hi = bg.levels(1, 99)
        self.background.setImage(bg.image, autoLevels=False, levels=(lo, hi))
        self.background.setRect(QtCore.QRectF(bg.ra_min, bg.dec_min, bg.ra_max - bg.ra_min, bg.dec_max - bg.dec_min))
        self.image.setOpacity(OVERLAY_OPACITY)
        self.shown_background = bg
        self._set_bg_status(f"background {band} GHz, grey from {lo:.0f} to {hi:.0f} µK")

    def _set_bg_status(self, text: str) -> None:
        self._bg_status = text
        self.recolour()

    def _start_background(self) -> None:
        if self._bg_loading:
            return
        paths = self._tile_paths()
        if paths is None:
            return
        self._bg_loading = True
        token = self._bg_token
        self._set_bg_status("building the background map…")
        done = self._loaded.done

        def work():
            try:
                result = band_backgrounds(paths)
            except Exception as exc:  # a damaged tile: say so in the legend
                result = f"no background map: {exc}"
            try:
                done.emit(token, result)
            except RuntimeError:  # the view was closed meanwhile
                pass

        threading.Thread(target=work, name="sky-background", daemon=True).start()

    def _backgrounds_loaded(self, token, result) -> None:
        if token != self._bg_token:
            return
        self._bg_loading = False
        if isinstance(result, str):
            self.backgrounds = {}
            self._bg_error = result
            self.background.clear()
            self._set_bg_status(result)
            return
        self.backgrounds = result
        self.show_background()

    # ------------------------------------------------------------------ view -> state
    def _clicked(self, ev) -> None:
        if self.raster is None or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        vb = self.plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        self.open_at(p.x(), p.y())

    def open_at(self, ra: float, dec: float) -> int | None:
        """Select the cutout whose centre is nearest to (ra, dec) [deg] (what a click does), if the point is on
        the footprint (within half a grid step of it); returns its row. The view keeps its zoom."""
        r = self.raster
        if r is None or self.state.data is None:
            return None
        half = 0.5 * (r.dec_max - r.dec_min) / max(r.index.shape[0], 1)
        if not (r.ra_min - half <= ra <= r.ra_max + half and r.dec_min - half <= dec <= r.dec_max + half):
            return None
        row = self.state.nearest(ra, dec)
        if row is not None:
            self.state.select(row)
        return row
