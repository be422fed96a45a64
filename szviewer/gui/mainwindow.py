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
from szviewer.gui.models import DisplaySettings, SkySettings
from szviewer.gui.skyview import SkyView
from szviewer.gui.state import ViewerState
from szviewer.gui.welcome import WelcomeView

LAYOUT_VERSION = 1


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, state: ViewerState | None = None, restore: bool = True):
        super().__init__()
        self.state = state or ViewerState()
        self.setWindowTitle("szviewer")
        self.runner = QtJobRunner(self)
        self.confirm_close = self._ask_close  # tests replace it
        self.samp = None  # a szviewer.gui.samp.SampLink once connected

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
        # the side docks run the full height; the jobs dock sits under the inspector only (fits 1366 x 768)
        self.setCorner(QtCore.Qt.Corner.BottomLeftCorner, A.LeftDockWidgetArea)
        self.setCorner(QtCore.Qt.Corner.BottomRightCorner, A.RightDockWidgetArea)
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
        # the view and thresholds are also kept as they change (1 s after the last change), not only on close,
        # so a killed or crashed app still comes back where it was
        self._session_timer = QtCore.QTimer(self, singleShot=True, interval=1000)
        self._session_timer.timeout.connect(self._save_workspace_session)
        for ev in (self.state.events.selection, self.state.events.filter, self.state.events.thresholds,
                   self.state.sky.events.all):
            ev.connect(self._session_changed)

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
        act(v, "MF &selection function (injections)…", self.selection_dialog)
        v.addSeparator()
        act(v, "Reset layout", self.reset_layout)
        j = mb.addMenu("&Jobs")
        act(j, "Simulate a sky…", self.jobs.simulate_dialog)
        act(j, "Build cutouts", lambda: self.jobs.run_on_workspace("cutouts"))
        act(j, "Run the matched filter", lambda: self.jobs._clicked("mf"))
        act(j, "Train the CNN…", lambda: self.jobs._clicked("train"))
        act(j, "Score with the CNN", lambda: self.jobs._clicked("predict"))
        act(j, "CNN candidates (map)", lambda: self.jobs._clicked("dense"))
        act(j, "Evaluate (Table 1)", lambda: self.jobs._clicked("evaluate"))
        j.addSeparator()
        act(j, "Cancel all jobs", self.runner.cancel_all)
        sm = mb.addMenu("&SAMP")
        act(sm, "&Connect to a SAMP hub (TOPCAT, Aladin, DS9)", self.samp_connect)
        self.act_samp_table = act(sm, "Send the candidate &table (current method)", self.samp_send_table)
        self.act_samp_point = act(sm, "&Point the sky viewers at the cutout", self.samp_point, "Ctrl+P")
        self.act_samp_cutout = act(sm, "Send the cutout as &FITS", self.samp_cutout)
        self.act_samp_follow = sm.addAction("Follow the selection (point at each cutout)")
        self.act_samp_follow.setCheckable(True)
        act(sm, "&Disconnect", self.samp_disconnect)
        n = mb.addMenu("&Go")
        act(n, "Next cutout", lambda: self.state.step(1), "Ctrl+J")
        act(n, "Previous cutout", lambda: self.state.step(-1), "Ctrl+K")
        act(n, "Gallery", lambda: (self.docks["gallery"].raise_(), self.gallery.focus_table()), "Ctrl+G")
        act(n, "Flag / unflag cutout", self.inspector.toggle_flag, "Ctrl+F")

    # ------------------------------------------------------------------ SAMP
    def samp_connect(self, hub=None) -> bool:
        from szviewer.gui.samp import SampLink

        if self.samp is None:
            self.samp = SampLink(self.state)
            self._samp_timer = QtCore.QTimer(self, interval=100)
            self._samp_timer.timeout.connect(self.samp.poll)
            self.state.events.selection.connect(self._samp_follow)
        try:
            self.samp.connect(hub=hub)
        except Exception as exc:  # astropy's SAMPHubError / SAMPClientError: no hub, or it refused us
            self.statusBar().showMessage(f"SAMP: cannot connect ({exc}); start TOPCAT, Aladin or DS9 first", 10000)
            return False
        self._samp_timer.start()
        names = ", ".join(sorted(self.samp.clients().values())) or "no other clients yet"
        self.statusBar().showMessage(f"SAMP: connected ({names})", 8000)
        return True

    def samp_disconnect(self) -> None:
        if self.samp is not None:
            self.samp.disconnect()
            self._samp_timer.stop()

    def _samp_ready(self) -> bool:
        return (self.samp is not None and self.samp.connected) or self.samp_connect()

    def _samp_do(self, what: str, fn) -> None:
        if self.state.data is None or not self._samp_ready():
            return
        try:
            out = fn()
        except (SzviewerError, OSError, ValueError, RuntimeError) as exc:
            self.statusBar().showMessage(f"SAMP: {what} failed: {exc}", 10000)
            return
        self.statusBar().showMessage(f"SAMP: sent {what}" + (f" ({out})" if isinstance(out, str) else ""), 6000)

    def samp_send_table(self) -> None:
        method = self.current_method()
        if method is not None:
            self._samp_do(f"the {method} candidates", lambda: self.samp.send_table(method)[0])

    def samp_point(self) -> None:
        if self.state.current is not None:
            self._samp_do("the position", self.samp.point_at)

    def samp_cutout(self) -> None:
        if self.state.current is not None:
            self._samp_do("the cutout", lambda: str(self.samp.send_cutout().name))

    def _samp_follow(self, row) -> None:
        if row is not None and self.act_samp_follow.isChecked() and self.samp is not None and self.samp.connected:
            self.samp.point_at(row)

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
        self._save_view()
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
        self._restore_view(session.load_view(path))
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

    def selection_dialog(self):
        """The MF selection function of the open workspace (``szviewer mf WS --inject N``)."""
        from szviewer.gui.selection_dialog import SelectionDialog

        if self.state.workspace is None:
            QtWidgets.QMessageBox.information(self, "Selection function", "Open a workspace first.")
            return None
        dlg = SelectionDialog(self.state.workspace, self)
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
            screen = QtWidgets.QApplication.primaryScreen()
            if screen is not None:  # a layout saved on a larger screen still fits this one
                avail = screen.availableGeometry()
                self.resize(min(self.width(), avail.width()), min(self.height(), avail.height()))
        st = s.value("window_state")
        if st is not None:
            self._layout_restored = bool(self.restoreState(st, LAYOUT_VERSION))
        d = session.load_json("display")
        if d:
            self.state.display.update(**DisplaySettings.from_dict(d).to_dict())
        split = s.value("curve_split")
        if split in ("val", "test", "train", "all"):
            self.state.plot.curve_split = split

    def view(self) -> dict:
        """What is restored per workspace besides the thresholds: filter and sort, selected cutout, F1 tab,
        sky view overlays."""
        s = self.state
        return {"filter": s.filter.to_dict(), "cutout_id": s.current_id(), "tab": self.current_method(),
                "sky": s.sky.to_dict()}

    def _restore_view(self, view: dict) -> None:
        s = self.state
        if s.data is None or not view:
            return
        f = view.get("filter")
        if isinstance(f, dict):
            with s.batch():
                s.filter.update(**s._valid_filter(f))
        cid = view.get("cutout_id")
        if isinstance(cid, int):
            try:
                s.select_id(cid)
            except KeyError:
                pass  # that cutout is gone (rebuilt cutouts)
        tab = view.get("tab")
        if tab in self.f1.plots and s.has_method(tab):
            self.f1.show_method(tab)
        sky = view.get("sky")
        if isinstance(sky, dict):
            s.sky.update(**SkySettings.from_dict(sky).to_dict())

    def _session_changed(self, *_) -> None:
        if self.state.data is not None:
            self._session_timer.start()

    def _save_workspace_session(self) -> None:
        self._save_thresholds()
        self._save_view()
        session.settings().sync()

    def _save_view(self) -> None:
        if self.state.path is not None and self.state.data is not None:
            session.save_view(self.state.path, self.view())

    def save_session(self) -> None:
        s = session.settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState(LAYOUT_VERSION))
        s.setValue("curve_split", self.state.curve_split)
        self._save_display()
        self._save_thresholds()
        self._save_view()
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
        self.samp_disconnect()
        self.state.close()  # views let go of the data; the cutout file is closed
        ev.accept()
