"""Shared Qt pieces: pyqtgraph configuration, colours, number formats and the slider-burst coalescer."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui

# float32 row-major images (row 0 at the bottom: cutout rows run south -> north), no antialiasing for speed
pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="#16181d", foreground="#c8ccd4")

#: Outcome colours (TN, FP, FN, TP), as in OUTCOMES.
OUTCOME_RGB = {"TN": (70, 74, 84), "FP": (240, 160, 40), "FN": (230, 60, 60), "TP": (60, 200, 90)}
#: Outcome colours for text on the dark background (TN's fill colour would be unreadable there).
OUTCOME_TEXT_RGB = dict(OUTCOME_RGB, TN=(165, 170, 182))
METHOD_COLOURS = {"CNN": "#4fa3ff", "MF": "#ffb347", "PROD": "#c78cff", "AND": "#5fd7a0"}
CURVE_COLOURS = {"f1": "#ffffff", "purity": "#4fc3f7", "completeness": "#ff8a65"}
CMAPS = ("CET-D1A", "viridis", "inferno", "magma", "CET-L1", "CET-D4")


def qcolor(rgb, alpha: int = 255) -> QtGui.QColor:
    if isinstance(rgb, str):
        c = QtGui.QColor(rgb)
        c.setAlpha(alpha)
        return c
    return QtGui.QColor(int(rgb[0]), int(rgb[1]), int(rgb[2]), alpha)


_LUTS: dict[str, np.ndarray] = {}


def lut(name: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colour table (at most 256 entries: pyqtgraph's fast path)."""
    key = f"{name}:{n}"
    if key not in _LUTS:
        if name == "grey":
            g = np.linspace(0, 255, n).astype(np.uint8)
            _LUTS[key] = np.stack([g, g, g], axis=1)
        else:
            _LUTS[key] = pg.colormap.get(name).getLookupTable(0.0, 1.0, n, alpha=False).astype(np.uint8)
    return _LUTS[key]


def fmt(v, digits: int = 3) -> str:
    """A number for a table cell: NaN as an en dash, integers plainly, otherwise ``digits`` significant."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}"


def fmt_threshold(method: str, t) -> str:
    if method == "AND":
        return f"CNN ≥ {t[0]:.3g}, S/N ≥ {t[1]:.3g}"
    what = {"MF": "S/N", "CNN": "p", "PROD": "q"}[method]
    return f"{what} ≥ {t:.4g}"


class Coalescer(QtCore.QObject):
    """Keep only the latest request per key and apply them on the next pass of the event loop.

    A burst of slider or drag events (many per frame) becomes one update: ``request(key, value)`` stores the
    value and arms a zero-delay timer; when it fires, ``apply(key, value)`` runs once per key with the newest
    value. ``applied`` counts the updates that ran (the benchmark reads it).
    """

    def __init__(self, apply: Callable, interval_ms: int = 0, parent=None):
        super().__init__(parent)
        self._apply = apply
        self._pending: dict = {}
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        self.applied = 0

    def request(self, key, value) -> None:
        self._pending[key] = value
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            self._apply(key, value)
            self.applied += 1

    @property
    def busy(self) -> bool:
        return bool(self._pending)
