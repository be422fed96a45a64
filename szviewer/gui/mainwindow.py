"""The main window: the cutout inspector in the centre, docks for the gallery, the F1 panel, the sky view and
the jobs; the welcome view when no workspace (or no cutouts) is open. Layout, last workspace, thresholds and
display settings are restored from the previous session.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6 import QtCore, QtGui, QtWidgets

from szviewer.errors import SzviewerError
from szviewer.gui import session
from szviewer.gui.export_dialog import ExportDialog
from szviewer.gui.f1panel import F1Panel
from szviewer.gui.gallery import Gallery
from szviewer.gui.inspector import CutoutInspector
from szviewer.gui.jobs import Job
from szviewer.gui.jobspanel import JobsPanel, QtJobRunner
from szviewer.gui.skyview import SkyView
from szviewer.gui.state import DisplaySettings, ViewerState
from szviewer.gui.welcome import WelcomeView

LAYOUT_VERSION = 1


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, state: ViewerState | None = None, restore: bool = True):
        super().__init__()
        self.state = state or ViewerState()
        self.setWindowTitle("szviewer")
        self.runner = QtJobRunner(self)
        self.confirm_close = self._ask_close  # tests replace it

        self.welcome = WelcomeView(self.runner)
        self.inspector = CutoutInspector(self.state)
        self.central = QtWidgets.QStackedWidget()
        self.central.addWidget(self.welcome)
        self.central.addWidget(self.inspector)
        self.setCentralWidget(self.central)

        self.gallery = Gallery(self.state)
        self.f1 = F1Panel(self.state)
        self.sky = SkyView(self.state)
        self.jobs = JobsPanel(self.state, self.runner)
        self.docks: dict[str, QtWidgets.QDockWidget] = {}
        A = QtCore.Qt.DockWidgetArea
        for name, title, widget, area in (("gallery", "Gallery", self.gallery, A.LeftDockWidgetArea),
                                          ("f1", "F1 and thresholds", self.f1, A.RightDockWidgetArea),
                                          ("sky", "Sky", self.sky, A.RightDockWidgetArea),
                                          ("jobs", "Jobs", self.jobs, A.BottomDockWidgetArea)):
            dock = QtWidgets.QDockWidget(title, self)
            dock.setObjectName(f"dock_{name}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        self.splitDockWidget(self.docks["f1"], self.docks["sky"], QtCore.Qt.Orientation.Vertical)
        self._layout_restored = False

        self._make_menus()
        self.status_label = QtWidgets.QLabel("")
        self.statusBar().addWidget(self.status_label, 1)

        self.welcome.open_workspace.connect(self.open_workspace)
        self.welcome.choose_workspace.connect(self.choose_workspace)
        self.gallery.inspect.connect(self._inspect)
        self.runner.finished.connect(self._job_finished)
        self.state.events.workspace.connect(self._on_workspace)
        self.state.events.scores.connect(self._on_workspace)
        self.state.events.display.connect(self._save_display)

        screen = QtWidgets.QApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else QtCore.QRect(0, 0, 1600, 980)
        self.resize(min(1600, int(avail.width() * 0.92)), min(980, int(avail.height() * 0.9)))
        if restore:
            self._restore_layout()
        self._on_workspace()

    # ------------------------------------------------------------------ menus
    def _make_menus(self) -> None:
        def act(menu, text, slot, shortcut=None):
            a = menu.addAction(text)
            a.triggered.connect(lambda _=False: slot())
            if shortcut is not None:
                a.setShortcut(QtGui.QKeySequence(shortcut))
            return a

        mb = self.menuBar()
        m = mb.addMenu("&File")
        self.act_open = act(m, "&Open workspace…", self.choose_workspace, QtGui.QKeySequence.StandardKey.Open)
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        act(m, "&Welcome / demo workspace", self.show_welcome)
        m.addSeparator()
        self.act_export = act(m, "&Export catalogue…", self.export_dialog, "Ctrl+E")
        m.addSeparator()
        act(m, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)
        v = mb.addMenu("&View")
        for dock in self.docks.values():
            v.addAction(dock.toggleViewAction())
        v.addSeparator()
        act(v, "Reset layout", self.reset_layout)
        j = mb.addMenu("&Jobs")
        act(j, "Simulate a sky…", self.jobs.simulate_dialog)
        act(j, "Build cutouts", lambda: self.jobs.run_on_workspace("cutouts"))
        act(j, "Cancel all jobs", self.runner.cancel_all)
        n = mb.addMenu("&Go")
        act(n, "Next cutout", lambda: self.state.step(1), "Ctrl+J")
        act(n, "Previous cutout", lambda: self.state.step(-1), "Ctrl+K")
        act(n, "Gallery", lambda: (self.docks["gallery"].raise_(), self.gallery.focus_table()), "Ctrl+G")
        act(n, "Flag / unflag cutout", self.inspector.toggle_flag, "Ctrl+F")

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in session.recent_workspaces():
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.open_workspace(p))

    # ------------------------------------------------------------------ workspace
    def open_initial(self, workspace: str | None = None) -> None:
        """What the app does on start: the given workspace, else the last one, else the welcome view."""
        path = workspace or session.last_workspace()
        if path:
            self.open_workspace(path)
        else:
            self.show_welcome()

    def choose_workspace(self) -> None:
        start = str(self.state.path.parent) if self.state.path else str(Path.home())
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a workspace folder", start)
        if d:
            self.open_workspace(d)

    def open_workspace(self, path: str) -> bool:
        self._save_thresholds()
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.CursorShape.WaitCursor)
        try:
            self.state.open_workspace(path, thresholds=session.load_thresholds(path))
        except (SzviewerError, OSError) as exc:
            QtWidgets.QApplication.restoreOverrideCursor()
            self.statusBar().showMessage(f"cannot open {path}: {exc}", 10000)
            if self.state.workspace is None:
                self.show_welcome()
            self._last_error = str(exc)
            return False
        finally:
            if QtWidgets.QApplication.overrideCursor() is not None:
                QtWidgets.QApplication.restoreOverrideCursor()
        session.remember_workspace(path)
        if self.state.warnings:
            self.statusBar().showMessage("; ".join(self.state.warnings), 20000)
        return True

    def show_welcome(self) -> None:
        self.welcome.refresh(self.state.workspace if self.state.workspace is not None else None)
        self.central.setCurrentWidget(self.welcome)

    def _on_workspace(self, *_):
        s = self.state
        if s.data is None:
            self.show_welcome()
        else:
            self.central.setCurrentWidget(self.inspector)
        self.act_export.setEnabled(bool(s.available_methods()))
        if s.workspace is None:
            self.setWindowTitle("szviewer")
            self.status_label.setText("no workspace open")
            return
        self.setWindowTitle(f"szviewer — {s.workspace.root}")
        cols = ", ".join(sorted(s.score_columns())) or "none yet"
        missing = ", ".join(n for n, _ in s.workspace.missing())
        self.status_label.setText(f"{s.workspace.root}  ·  {s.n:,} cutouts  ·  {int(s.labels.sum()) if s.n else 0} "
                                  f"clusters  ·  scores: {cols}" + (f"  ·  missing: {missing}" if missing else ""))

    def _inspect(self, row: int) -> None:
        self.state.select(row)
        self.central.setCurrentWidget(self.inspector)
        self.inspector.setFocus()

    def _job_finished(self, job: Job) -> None:
        if job.status == "done":
            self.statusBar().showMessage(f"{job.spec.title}: done", 8000)
            if job.spec.open_when_done and job.spec.creates:
                self.open_workspace(job.spec.creates)
            elif job.spec.reload_when_done and self.state.path is not None \
                    and Path(job.spec.reload_when_done).resolve() == self.state.path.resolve():
                self.state.reload()
                self._on_workspace()
        else:
            self.statusBar().showMessage(f"{job.spec.title}: {job.status}" + (f" ({job.error})" if job.error
                                                                               else ""), 8000)

    def export_dialog(self) -> ExportDialog | None:
        if not self.state.available_methods():
            QtWidgets.QMessageBox.information(self, "Export", "No scores to export yet: run the matched filter "
                                                              "or the CNN first.")
            return None
        method = self.current_method()
        dlg = ExportDialog(self.state, method, self)
        dlg.open()
        return dlg

    def current_method(self) -> str | None:
        w = self.f1.tabs.currentWidget()
        for m, p in self.f1.plots.items():
            if p is w and self.state.has_method(m):
                return m
        av = self.state.available_methods()
        return av[0] if av else None

    # ------------------------------------------------------------------ session
    def _restore_layout(self) -> None:
        s = session.settings()
        geo = s.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        st = s.value("window_state")
        if st is not None:
            self._layout_restored = bool(self.restoreState(st, LAYOUT_VERSION))
        d = session.load_json("display")
        if d:
            self.state.display = DisplaySettings.from_dict(d)
        split = s.value("curve_split")
        if split in ("val", "test", "train", "all"):
            self.state.curve_split = split

    def save_session(self) -> None:
        s = session.settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState(LAYOUT_VERSION))
        s.setValue("curve_split", self.state.curve_split)
        self._save_display()
        self._save_thresholds()
        s.sync()

    def _save_display(self) -> None:
        session.save_json("display", self.state.display.to_dict())

    def _save_thresholds(self) -> None:
        if self.state.path is not None and self.state.thresholds:
            session.save_thresholds(self.state.path, self.state.thresholds)

    def default_dock_sizes(self) -> None:
        w, h = max(self.width(), 800), max(self.height(), 600)
        H, V = QtCore.Qt.Orientation.Horizontal, QtCore.Qt.Orientation.Vertical
        self.resizeDocks([self.docks["gallery"], self.docks["f1"]], [int(0.23 * w), int(0.3 * w)], H)
        self.resizeDocks([self.docks["f1"], self.docks["sky"]], [int(0.55 * h), int(0.45 * h)], V)
        self.resizeDocks([self.docks["jobs"]], [120], V)

    def showEvent(self, ev) -> None:  # noqa: N802
        super().showEvent(ev)
        if not self._layout_restored:
            self._layout_restored = True
            QtCore.QTimer.singleShot(0, self.default_dock_sizes)

    def reset_layout(self) -> None:
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.splitDockWidget(self.docks["f1"], self.docks["sky"], QtCore.Qt.Orientation.Vertical)
        self.default_dock_sizes()

    def _ask_close(self) -> bool:
        n = len(self.runner.active())
        ans = QtWidgets.QMessageBox.question(
            self, "Jobs are running",
            f"{n} job{'s are' if n > 1 else ' is'} still running. Cancel {'them' if n > 1 else 'it'} and quit?",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No)
        return ans == QtWidgets.QMessageBox.StandardButton.Yes

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:  # noqa: N802
        if self.runner.active():
            if not self.confirm_close():
                ev.ignore()
                return
            self.runner.cancel_all()
            for job in list(self.runner.active()):
                job.wait(timeout=job.grace_s + 5)
        self.save_session()
        self.state.close()  # views let go of the data; the cutout file is closed
        ev.accept()
