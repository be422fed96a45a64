"""The table under the F1 plots: confusion matrix, purity, completeness and F1 of every method on val and test
at the current thresholds (updated per method as a threshold moves)."""

from __future__ import annotations

import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from szviewer.gui.common import METHOD_COLOURS, fmt, fmt_threshold
from szviewer.gui.state import METHODS, ViewerState

#: F1 and the threshold first: at 1366 px the dock shows about six columns before it scrolls sideways
STAT_COLUMNS = ("method", "split", "F1", "threshold", "purity", "compl.", "TP", "FP", "FN", "TN")


def short_threshold(method: str, t) -> str:
    """A threshold for the table's threshold column (the method is in the first): '≥ 0.2613', AND 'p ≥ 0.262,
    S/N ≥ 4.5'."""
    if method == "AND":
        return f"p ≥ {t[0]:.3g}, S/N ≥ {t[1]:.3g}"
    return f"≥ {t:.4g}"


class StatsTable(QtWidgets.QTableWidget):
    """Confusion matrix, purity, completeness and F1 of every method on val and test at the thresholds."""

    SPLITS = ("val", "test")

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(0, len(STAT_COLUMNS), parent)
        self.state = state
        self.setHorizontalHeaderLabels(list(STAT_COLUMNS))
        self.verticalHeader().hide()
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setDefaultSectionSize(20)
        self.rows: dict[tuple[str, str], int] = {}

    def rebuild(self) -> None:
        s = self.state
        methods = [m for m in METHODS if s.has_method(m)]
        self.rows = {}
        self.setRowCount(len(methods) * len(self.SPLITS))
        r = 0
        for m in methods:
            for sp in self.SPLITS:
                self.rows[(m, sp)] = r
                for col in range(len(STAT_COLUMNS)):
                    item = QtWidgets.QTableWidgetItem("")
                    item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
                    self.setItem(r, col, item)
                self.item(r, 0).setText(m)
                self.item(r, 0).setForeground(pg.mkColor(METHOD_COLOURS[m]))
                self.item(r, 1).setText(sp)
                r += 1
        for m in methods:
            self.update_method(m)
        self.resizeColumnsToContents()  # once: sizing to contents on every update would cost a relayout each
        self.setMinimumHeight(min(26 + 20 * self.rowCount(), 110))

    def update_method(self, method: str) -> None:
        s = self.state
        for sp in self.SPLITS:
            r = self.rows.get((method, sp))
            if r is None:
                continue
            c = s.counts(method, sp)
            t = s.thresholds[method]
            vals = {"F1": c.f1, "threshold": short_threshold(method, t), "purity": c.purity,
                    "compl.": c.completeness, "TP": c.tp, "FP": c.fp, "FN": c.fn, "TN": c.tn}
            for name, v in vals.items():
                item = self.item(r, STAT_COLUMNS.index(name))
                text = v if isinstance(v, str) else fmt(v)
                if item.text() != text:
                    item.setText(text)
                    if isinstance(v, str):
                        item.setToolTip(fmt_threshold(method, t))
        col = STAT_COLUMNS.index("threshold")
        need = max((self.fontMetrics().horizontalAdvance(self.item(r, col).text()) + 16
                    for r in range(self.rowCount()) if self.item(r, col) is not None), default=0)
        if need > self.columnWidth(col):  # threshold texts are never cut (AND's pair is the longest)
            self.setColumnWidth(col, need)

    def shown(self, method: str, split: str, column: str) -> str:
        """The text shown in a cell (tests compare it with the engine)."""
        return self.item(self.rows[(method, split)], STAT_COLUMNS.index(column)).text()
