"""The MF selection function of the open workspace (``szviewer mf WS --inject N``): its summary line and figures
(recovered fraction against noise-free S/N, (y0, theta_c) and (M500, z); S/N-ratio and offset histograms)."""

from __future__ import annotations

from PyQt6 import QtCore, QtGui, QtWidgets

from szviewer.jobs.selection import load_selection, selection_summary_line


class SelectionDialog(QtWidgets.QDialog):
    """Shows a workspace's selection function, or says how to measure it when it has none."""

    def __init__(self, ws, parent=None):
        super().__init__(parent)
        self.setWindowTitle("MF selection function (injections)")
        lay = QtWidgets.QVBoxLayout(self)
        got = load_selection(ws)
        self.figures: dict[str, bytes] = {}
        if got is None:
            self.summary_label = QtWidgets.QLabel(
                "No selection function yet: run <code>szviewer mf WS --inject 1000</code> (clusters of known "
                "profile injected into the maps, the filter rerun, the recovered fraction measured).")
        else:
            from szviewer.evaluate.selection_figures import selection_figures

            tables, summary = got
            why = ws.stale("mf_injection")
            stale = f" STALE: {'; '.join(why)} (refresh: {ws.refresh_command('mf_injection')})" if why else ""
            self.summary_label = QtWidgets.QLabel(selection_summary_line(summary) + stale)
            self.figures = selection_figures(tables, summary)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.summary_label)
        area = QtWidgets.QScrollArea()
        area.setWidgetResizable(True)
        inner = QtWidgets.QWidget()
        col = QtWidgets.QVBoxLayout(inner)
        self.images: list[QtWidgets.QLabel] = []
        for title, png in self.figures.items():
            col.addWidget(QtWidgets.QLabel(f"<b>{title}</b>"))
            pix = QtGui.QPixmap()
            pix.loadFromData(png, "PNG")
            img = QtWidgets.QLabel()
            img.setPixmap(pix)
            col.addWidget(img)
            self.images.append(img)
        col.addStretch(1)
        area.setWidget(inner)
        lay.addWidget(area, 1)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        screen = QtGui.QGuiApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else QtCore.QRect(0, 0, 1366, 768)
        self.resize(min(1320, avail.width() - 40), min(760, avail.height() - 40))
