"""The gallery: every cutout in a table (a QAbstractTableModel over numpy columns), filterable and sortable.

The model keeps only the state's array of visible row indices; each cell is formatted on demand, so 500k
rows cost nothing until they scroll into view. Filters: split, outcome of a method (TP/FP/FN/TN) or "found
by MF only / CNN only / both / missed by both", flagged cutouts. Keys: j / k (or the arrows) move, Enter
inspects, f flags. Outcome categories follow the thresholds: a threshold drag refreshes them (coalesced).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PyQt6 import QtCore, QtGui, QtWidgets

from szviewer.gui import display
from szviewer.gui.annotations import VET_CLASSES, VET_KEYS, VET_LABELS
from szviewer.gui.common import OUTCOME_RGB, fmt, qcolor
from szviewer.gui.state import FOUND, METHODS, OUTCOMES, ViewerState

THUMB = 34


def _columns(state: ViewerState) -> list[tuple[str, str]]:
    """(key, header) of the columns to show for the scores that exist."""
    cols = [("id", "id"), ("split", "split"), ("label", "cluster")]
    sc = state.score_columns()
    if "mf_snr" in sc:
        cols.append(("mf_snr", "MF S/N"))
    if "cnn_prob" in sc:
        cols.append(("cnn_prob", "CNN p"))
    if state.has_method("PROD"):
        cols.append(("rank_product", "PROD q"))
    cols += [(f"outcome:{m}", m) for m in METHODS if state.has_method(m)]
    if state.data is not None:
        c = state.data.columns
        cols += [(k, h) for k, h in (("m_vir", "M_vir [1e14]"), ("z", "z"), ("offset_arcmin", "offset ′"))
                 if k in c]
    cols += [("flag", "flag"), ("vet", "vetting"), ("note", "note")]
    return cols


class CutoutTableModel(QtCore.QAbstractTableModel):
    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.cols = _columns(state)
        self.rows = np.zeros(0, dtype=np.int64)
        self._thumbs: OrderedDict[int, QtGui.QPixmap] = OrderedDict()
        self.show_thumbnails = True

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> None:
        self.beginResetModel()
        self.cols = _columns(self.state)
        self.rows = self.state.visible_rows() if self.state.data is not None else np.zeros(0, dtype=np.int64)
        self.endResetModel()

    def refresh_outcomes(self) -> None:
        first = [k for k, (key, _) in enumerate(self.cols) if key.startswith("outcome:")]
        if first and self.rows.size:
            self.dataChanged.emit(self.index(0, first[0]), self.index(self.rows.size - 1, first[-1]))

    def clear_thumbnails(self) -> None:
        self._thumbs.clear()
        if self.rows.size:
            self.dataChanged.emit(self.index(0, 0), self.index(self.rows.size - 1, 0),
                                  [QtCore.Qt.ItemDataRole.DecorationRole])

    # ------------------------------------------------------------------ Qt model API
    def rowCount(self, parent=None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else int(self.rows.size)

    def columnCount(self, parent=None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(self.cols)

    def headerData(self, section, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return self.cols[section][1]
        return None

    def row_at(self, i: int) -> int:
        return int(self.rows[i])

    def position_of(self, row: int) -> int | None:
        where = np.flatnonzero(self.rows == row)
        return int(where[0]) if where.size else None

    def data(self, index, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        s = self.state
        row = int(self.rows[index.row()])
        key = self.cols[index.column()][0]
        R = QtCore.Qt.ItemDataRole
        if role == R.DisplayRole:
            return self._text(row, key)
        if role == R.TextAlignmentRole:
            if key in ("note", "split"):
                return int(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter)
            return int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        if key.startswith("outcome:") and role in (R.BackgroundRole, R.ForegroundRole):
            o = s.outcome_of(key.split(":", 1)[1], row)
            if o is None:
                return None
            if role == R.BackgroundRole:
                return QtGui.QBrush(qcolor(OUTCOME_RGB[o], 90 if o != "TN" else 30))
            return None
        if key == "label" and role == R.ForegroundRole and s.data.columns["label"][row]:
            return QtGui.QBrush(QtGui.QColor("#ffffff"))
        if role == R.DecorationRole and key == "id" and self.show_thumbnails and s.store is not None:
            return self._thumbnail(row)
        if role == R.ToolTipRole and key == "note":
            return s.annotation(row).get("note") or None
        return None

    def _text(self, row: int, key: str) -> str:
        s = self.state
        if key.startswith("outcome:"):
            return s.outcome_of(key.split(":", 1)[1], row) or ""
        if key == "flag":
            return "⚑" if s.annotation(row).get("flag") else ""
        if key == "vet":
            return VET_LABELS.get(s.annotation(row).get("vet"), "")
        if key == "note":
            return s.annotation(row).get("note", "").splitlines()[0] if s.annotation(row).get("note") else ""
        if key == "label":
            return "yes" if s.data.columns["label"][row] else ""
        v = s.column(key)[row]
        if key == "m_vir":
            return fmt(v / 1e14)
        if isinstance(v, (str, np.str_)):
            return str(v)
        return fmt(v)

    def _thumbnail(self, row: int) -> QtGui.QPixmap | None:
        pm = self._thumbs.get(row)
        if pm is not None:
            self._thumbs.move_to_end(row)
            return pm
        s = self.state
        try:
            d = s.display
            level = d.level if d.level in s.store.levels else list(s.store.levels)[-1]
            rgb = display.rgb_composite(s.images(row, level), s.band_levels(level, d.scaling), d.stretch)
        except Exception:  # a damaged chunk: no thumbnail rather than a broken table
            return None
        rgb = np.ascontiguousarray(rgb[::-1])  # row 0 (south) at the bottom
        h, w, _ = rgb.shape
        img = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()
        pm = QtGui.QPixmap.fromImage(img).scaled(THUMB, THUMB)
        self._thumbs[row] = pm
        if len(self._thumbs) > 3000:
            self._thumbs.popitem(last=False)
        return pm

    def sort(self, column: int, order=QtCore.Qt.SortOrder.AscendingOrder) -> None:
        key = self.cols[column][0]
        if key == "note":
            return
        self.state.set_sort(key, order == QtCore.Qt.SortOrder.DescendingOrder)


class GalleryTable(QtWidgets.QTableView):
    """The table with j/k navigation, Enter to inspect, f to flag, c/n/u (1/2/3) to vet, 0 to clear."""

    inspect = QtCore.pyqtSignal(int)
    flag = QtCore.pyqtSignal()
    vet = QtCore.pyqtSignal(str)  # a class, or '' to clear

    def keyPressEvent(self, ev: QtGui.QKeyEvent) -> None:  # noqa: N802
        k = ev.key()
        Key = QtCore.Qt.Key
        if k in (Key.Key_J, Key.Key_K):
            self.move(1 if k == Key.Key_J else -1)
            return
        if k in (Key.Key_Return, Key.Key_Enter):
            idx = self.currentIndex()
            if idx.isValid():
                self.inspect.emit(self.model().row_at(idx.row()))
            return
        if k == Key.Key_F:
            self.flag.emit()
            return
        if ev.text().lower() in VET_KEYS:
            self.vet.emit(VET_KEYS[ev.text().lower()])
            return
        if k == Key.Key_0:
            self.vet.emit("")
            return
        super().keyPressEvent(ev)

    def move(self, delta: int) -> None:
        m = self.model()
        if m.rowCount() == 0:
            return
        cur = self.currentIndex()
        r = 0 if not cur.isValid() else min(max(cur.row() + delta, 0), m.rowCount() - 1)
        col = cur.column() if cur.isValid() else 0
        self.setCurrentIndex(m.index(r, col))


class Gallery(QtWidgets.QWidget):
    """Filter bar + table, bound to the state."""

    inspect = QtCore.pyqtSignal(int)

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        v = QtWidgets.QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)
        bar = QtWidgets.QHBoxLayout()
        self.split = QtWidgets.QComboBox(toolTip="split")
        self.split.addItem("all splits", None)
        for sp in ("train", "val", "test"):
            self.split.addItem(sp, sp)
        self.show = QtWidgets.QComboBox(toolTip="which cutouts: outcome of a method at its threshold")
        self.show.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.show.setMinimumContentsLength(12)
        self.flagged = QtWidgets.QCheckBox("flagged")
        self.vet = QtWidgets.QComboBox(toolTip="vetting class (keys c / n / u or 1 / 2 / 3 in the table)")
        self.vet.addItem("any vetting", None)
        for cls in VET_CLASSES:
            self.vet.addItem(f"vetted: {VET_LABELS[cls]}", cls)
        self.vet.addItem("vetted: any class", "vetted")
        self.vet.addItem("not vetted yet", "unvetted")
        self.vet.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.vet.setMinimumContentsLength(10)
        self.thumbs = QtWidgets.QCheckBox("thumbnails", checked=True)
        bar.addWidget(self.split)
        bar.addWidget(self.show, 1)
        bar2 = QtWidgets.QHBoxLayout()
        bar2.addWidget(self.vet, 1)
        bar2.addWidget(self.flagged)
        bar2.addWidget(self.thumbs)
        v.addLayout(bar)
        v.addLayout(bar2)
        self.count = QtWidgets.QLabel("")
        v.addWidget(self.count)

        self.model = CutoutTableModel(state, self)
        self.table = GalleryTable()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(False)
        hdr = self.table.horizontalHeader()
        hdr.setSectionsClickable(True)
        hdr.setSortIndicatorShown(True)
        hdr.sectionClicked.connect(self._header_clicked)
        hdr.setStretchLastSection(True)
        vh = self.table.verticalHeader()
        vh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(THUMB + 4)
        vh.hide()
        self.table.setIconSize(QtCore.QSize(THUMB, THUMB))
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        v.addWidget(self.table, 1)

        self._guard = False
        self._refresh_timer = QtCore.QTimer(self, singleShot=True, interval=120)
        self._refresh_timer.timeout.connect(self.refresh)

        self.split.currentIndexChanged.connect(self._filter_changed)
        self.show.currentIndexChanged.connect(self._filter_changed)
        self.flagged.toggled.connect(self._filter_changed)
        self.vet.currentIndexChanged.connect(self._filter_changed)
        self.thumbs.toggled.connect(self._thumbs_toggled)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.table.inspect.connect(self.inspect)
        self.table.flag.connect(self._flag)
        self.table.vet.connect(self._vet)

        state.events.workspace.connect(self._on_workspace)
        state.events.scores.connect(self._on_workspace)
        state.events.filter.connect(self.refresh)
        state.events.selection.connect(self._on_selection)
        state.events.thresholds.connect(self._on_thresholds)
        state.events.annotations.connect(self._on_annotation)
        state.events.display.connect(self.model.clear_thumbnails)
        self._on_workspace()

    # ------------------------------------------------------------------ filter widgets
    def _fill_show(self) -> None:
        s = self.state
        self._guard = True
        try:
            self.show.clear()
            self.show.addItem("all cutouts", None)
            for m in METHODS:
                if s.has_method(m):
                    for o in ("FN", "FP", "TP", "TN"):
                        self.show.addItem(f"{m}: {o}", f"{m}:{o}")
            if s.has_method("MF") and s.has_method("CNN"):
                for key, text in FOUND.items():
                    self.show.addItem(text, f"FOUND:{key}")
        finally:
            self._guard = False
        self._sync_filter_widgets()

    def _sync_filter_widgets(self) -> None:
        """The filter widgets show the state's filter model (bound: they follow any change of it)."""
        s = self.state
        was, self._guard = self._guard, True
        try:
            want = s.filter.outcome
            k = self.show.findData(":".join(want)) if want else 0
            self.show.setCurrentIndex(max(k, 0))
            self.split.setCurrentIndex(max(0, self.split.findData(s.filter.split)))
            self.flagged.setChecked(s.filter.flagged_only)
            self.vet.setCurrentIndex(max(0, self.vet.findData(s.filter.vet)))
        finally:
            self._guard = was

    def _filter_changed(self, *_):
        if self._guard:
            return
        data = self.show.currentData()
        self.state.set_filter(split=self.split.currentData(), outcome=tuple(data.split(":")) if data else None,
                              flagged_only=self.flagged.isChecked(), vet=self.vet.currentData())

    def set_outcome_filter(self, method: str, outcome: str) -> None:
        """Show e.g. ('CNN', 'FN') or ('FOUND', 'MF_ONLY') (also what the combo box does)."""
        k = self.show.findData(f"{method}:{outcome}")
        if k < 0:
            raise ValueError(f"no filter {method} {outcome} for the scores there are")
        self.show.setCurrentIndex(k)

    def _thumbs_toggled(self, on: bool) -> None:
        self.model.show_thumbnails = on
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 4 if on else 22)
        self.model.clear_thumbnails()

    def _header_clicked(self, section: int) -> None:
        key = self.model.cols[section][0]
        if key == self.state.sort_key:
            desc = not self.state.sort_descending
        else:
            desc = key not in ("id", "split")  # scores, masses, redshifts: largest first
        self.model.sort(section, QtCore.Qt.SortOrder.DescendingOrder if desc else QtCore.Qt.SortOrder.AscendingOrder)

    # ------------------------------------------------------------------ state -> view
    def _on_workspace(self, *_):
        self._fill_show()
        self.refresh()
        self._column_widths()

    def refresh(self) -> None:
        self._refresh_timer.stop()
        self._sync_filter_widgets()
        cols_before = [k for k, _ in self.model.cols]
        self.model.refresh()
        if [k for k, _ in self.model.cols] != cols_before:
            self._column_widths()
        s = self.state
        n = s.n
        self.count.setText(f"{self.model.rowCount():,} of {n:,} cutouts" if s.data is not None else "no cutouts")
        for k, (key, _) in enumerate(self.model.cols):
            if key == s.sort_key:
                self.table.horizontalHeader().setSortIndicator(
                    k, QtCore.Qt.SortOrder.DescendingOrder if s.sort_descending else QtCore.Qt.SortOrder.AscendingOrder)
        self._on_selection(s.current)

    def _on_thresholds(self, method: str) -> None:
        if self.state.filter_depends_on(method):
            if not self._refresh_timer.isActive():
                self._refresh_timer.start()
        else:
            self.model.refresh_outcomes()

    def _column_widths(self) -> None:
        widths = {"id": THUMB + 60, "split": 46, "label": 52, "flag": 34, "vet": 90}
        hdr = self.table.horizontalHeader()
        fm = hdr.fontMetrics()
        for k, (key, title) in enumerate(self.model.cols):
            w = widths.get(key, 50 if key.startswith("outcome:") else 64)
            # never cut a header: its text, the sort arrow and the margins
            self.table.setColumnWidth(k, max(w, fm.horizontalAdvance(title) + 26))

    def _on_annotation(self, row: int) -> None:
        if self.state.flagged_only or self.state.filter.vet:
            self.refresh()
            return
        pos = self.model.position_of(row)
        if pos is not None:
            self.model.dataChanged.emit(self.model.index(pos, 0), self.model.index(pos, len(self.model.cols) - 1))

    def _on_selection(self, row) -> None:
        if self._guard:
            return
        self._guard = True
        try:
            pos = None if row is None else self.model.position_of(row)
            if pos is None:
                self.table.clearSelection()
                return
            idx = self.model.index(pos, max(0, self.table.currentIndex().column()))
            self.table.setCurrentIndex(idx)
            self.table.scrollTo(idx)
        finally:
            self._guard = False

    def _current_changed(self, cur: QtCore.QModelIndex, _prev) -> None:
        if self._guard or not cur.isValid():
            return
        self._guard = True
        try:
            self.state.select(self.model.row_at(cur.row()))
        finally:
            self._guard = False

    def _flag(self) -> None:
        s = self.state
        if s.current is not None:
            s.set_annotation(s.current, flag=not s.annotation(s.current).get("flag", False))

    def _vet(self, cls: str) -> None:
        s = self.state
        if s.current is not None:
            same = s.annotation(s.current).get("vet") == cls
            s.set_annotation(s.current, vet=None if (not cls or same) else cls)

    def focus_table(self) -> None:
        self.table.setFocus()


__all__ = ["Gallery", "CutoutTableModel", "GalleryTable", "OUTCOMES"]
