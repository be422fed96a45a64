"""The export dialog: the candidate catalogue of a method at its thresholds (ECSV, FITS, CSV, VOTable) and a
DS9 region file, prefilled with the current method and thresholds, written by the same call as ``szviewer
export`` (:func:`szviewer.gui.exporting.export_catalog`).
"""

from __future__ import annotations

from pathlib import Path

from PyQt6 import QtGui, QtWidgets

from szviewer.errors import SzviewerError
from szviewer.evaluate.export import FORMATS
from szviewer.gui.state import METHOD_LABELS, ViewerState

SUFFIX = {"ecsv": ".ecsv", "fits": ".fits", "csv": ".csv", "votable": ".xml"}


class _ThresholdEdit(QtWidgets.QLineEdit):
    """A threshold at full precision (a spin box would round it)."""

    def __init__(self):
        super().__init__()
        v = QtGui.QDoubleValidator()
        v.setNotation(QtGui.QDoubleValidator.Notation.ScientificNotation)
        self.setValidator(v)

    def setValue(self, x: float) -> None:  # noqa: N802 - like QDoubleSpinBox
        self.setText(repr(float(x)))

    def value(self) -> float:
        return float(self.text())


class ExportDialog(QtWidgets.QDialog):
    def __init__(self, state: ViewerState, method: str | None = None, parent=None):
        super().__init__(parent)
        self.state = state
        self.setWindowTitle("Export candidate catalogue")
        self.result_paths = None
        f = QtWidgets.QFormLayout(self)
        self.method = QtWidgets.QComboBox()
        for m in state.available_methods():
            self.method.addItem(f"{m} — {METHOD_LABELS[m]}", m)
        if method is not None and self.method.findData(method) >= 0:
            self.method.setCurrentIndex(self.method.findData(method))
        f.addRow("method", self.method)
        self.t1 = _ThresholdEdit()
        self.t2 = _ThresholdEdit()
        self.t1_label = QtWidgets.QLabel("threshold")
        self.t2_label = QtWidgets.QLabel("S/N ≥")
        f.addRow(self.t1_label, self.t1)
        f.addRow(self.t2_label, self.t2)
        self.split = QtWidgets.QComboBox()
        for sp in ("all", "test", "val", "train"):
            self.split.addItem(sp)
        f.addRow("split", self.split)
        self.rows = QtWidgets.QComboBox(toolTip="objects: one row per candidate object (MF / CNN catalogues); "
                                                "cutouts: one row per positive cutout (the Table 1 view)")
        self.rows.addItem("as szviewer export does", None)
        self.rows.addItem("objects", "objects")
        self.rows.addItem("cutouts", "cutouts")
        f.addRow("rows", self.rows)
        self.fmt = QtWidgets.QComboBox()
        for name in FORMATS:
            self.fmt.addItem(name)
        f.addRow("format", self.fmt)
        base = (state.path / "exports") if state.path else Path.home()
        self.path = QtWidgets.QLineEdit(str(base / "candidates.ecsv"))
        browse = QtWidgets.QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        f.addRow("catalogue", row)
        self.regions = QtWidgets.QCheckBox("also a DS9 region file", checked=True)
        self.regions_path = QtWidgets.QLineEdit(str(base / "candidates.reg"))
        f.addRow(self.regions, self.regions_path)
        self.overwrite = QtWidgets.QCheckBox("replace existing files", checked=True)
        f.addRow("", self.overwrite)
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        f.addRow(self.message)
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Save
                                        | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self._save)
        bb.rejected.connect(self.reject)
        f.addRow(bb)
        self.method.currentIndexChanged.connect(self._prefill)
        self.fmt.currentTextChanged.connect(self._fmt_changed)
        self._prefill()

    def _prefill(self, *_):
        m = self.method.currentData()
        if m is None:
            self.message.setText("nothing to export: no scores yet (run the matched filter or the CNN)")
            return
        t = self.state.thresholds[m]
        is_and = m == "AND"
        self.t2.setVisible(is_and)
        self.t2_label.setVisible(is_and)
        if is_and:
            self.t1_label.setText("CNN ≥")
            self.t1.setValue(t[0])
            self.t2.setValue(t[1])
        else:
            self.t1_label.setText({"MF": "S/N ≥", "CNN": "CNN p ≥", "PROD": "q_CNN q_MF ≥"}[m])
            self.t1.setValue(t)
        stem = Path(self.path.text()).with_suffix("").name
        if stem.startswith("candidates"):
            p = Path(self.path.text())
            self.path.setText(str(p.with_name(f"candidates_{m.lower()}{p.suffix}")))
            self.regions_path.setText(str(p.with_name(f"candidates_{m.lower()}.reg")))

    def _fmt_changed(self, name: str) -> None:
        p = Path(self.path.text())
        self.path.setText(str(p.with_suffix(SUFFIX[name])))

    def _browse(self) -> None:
        p = QtWidgets.QFileDialog.getSaveFileName(self, "Catalogue", self.path.text())[0]
        if p:
            self.path.setText(p)

    def thresholds(self):
        m = self.method.currentData()
        return (self.t1.value(), self.t2.value()) if m == "AND" else self.t1.value()

    def export(self):
        """Write the files with the dialog's settings; returns (catalogue path, region path or None, table)."""
        m = self.method.currentData()
        if m is None:
            raise ValueError("no method with scores to export")
        path = Path(self.path.text()).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        reg = Path(self.regions_path.text()).expanduser() if self.regions.isChecked() else None
        out = self.state.export_catalog(path, m, thresholds=self.thresholds(), split=self.split.currentText(),
                                        fmt=self.fmt.currentText(), regions_path=reg, rows=self.rows.currentData(),
                                        overwrite=self.overwrite.isChecked())
        self.result_paths = out[:2]
        return out

    def _save(self) -> None:
        try:
            path, reg, table = self.export()
        except (SzviewerError, ValueError, FileExistsError, OSError) as exc:  # a bad threshold, an existing file
            self.message.setText(f"<span style='color:#ff7070'>{exc}</span>")
            return
        done = f"wrote {len(table)} candidates to {path}" + (f" and {reg}" if reg else "")
        self.message.setText(done)
        parent = self.parent()
        if isinstance(parent, QtWidgets.QMainWindow):
            parent.statusBar().showMessage(done, 15000)
        self.accept()
