"""The welcome view: build the demo workspace in the background (with progress and Cancel), open a workspace
folder, import Sehgal HEALPix or FITS maps, or reopen a recent workspace. Also shown for an open workspace
that has no cutouts yet, with what is missing and the job that makes it.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from szviewer.gui import session
from szviewer.gui.jobs import Job, JobSpec
from szviewer.gui.jobspanel import QtJobRunner
from szviewer.jobs.demo import DEMO_AREA_DEG2, DEMO_SEED


def demo_path() -> Path:
    from szviewer.jobs.demo import demo_workspace_path

    return demo_workspace_path()


def _has_cutouts(path) -> bool:
    """True when ``path`` is a workspace whose cutout set is built (its manifest says so and the files exist)."""
    from szviewer.errors import SzviewerError
    from szviewer.workspace import Workspace

    if not (path / "workspace.json").exists():
        return False
    try:
        return Workspace(path).has("cutouts")
    except SzviewerError:
        return False

class WelcomeView(QtWidgets.QWidget):
    open_workspace = QtCore.pyqtSignal(str)
    choose_workspace = QtCore.pyqtSignal()

    def __init__(self, runner: QtJobRunner, parent=None):
        super().__init__(parent)
        self.runner = runner
        self.job: Job | None = None
        outer = QtWidgets.QVBoxLayout(self)
        outer.addStretch(1)
        box = QtWidgets.QFrame()
        box.setMaximumWidth(640)
        v = QtWidgets.QVBoxLayout(box)
        title = QtWidgets.QLabel("<h1>szviewer</h1>")
        v.addWidget(title)
        self.blurb = QtWidgets.QLabel(
            "Find Sunyaev–Zel'dovich galaxy clusters in mm-wave sky maps with the matched filter, the DeepSZ "
            "CNN and their ensemble, and see why each finds or misses a cluster.")
        self.blurb.setWordWrap(True)
        v.addWidget(self.blurb)
        v.addSpacing(12)
        self.headline = QtWidgets.QLabel("")
        self.headline.setWordWrap(True)
        v.addWidget(self.headline)

        demo = QtWidgets.QGroupBox("Demo workspace: a synthetic Sehgal-like sky and its cutouts")
        dv = QtWidgets.QVBoxLayout(demo)
        row = QtWidgets.QHBoxLayout()
        self.area = QtWidgets.QDoubleSpinBox(decimals=0, minimum=1, maximum=400, value=DEMO_AREA_DEG2, suffix=" deg²",
                                             toolTip="sky area of the demo (the README's: 100 deg²)")
        self.demo_btn = QtWidgets.QPushButton("Build the demo workspace")
        self.demo_btn.setDefault(True)
        self.demo_btn.clicked.connect(self.build_demo)
        self.open_demo_btn = QtWidgets.QPushButton("Open the demo workspace")
        self.open_demo_btn.clicked.connect(lambda: self.open_workspace.emit(str(demo_path())))
        row.addWidget(self.area)
        row.addWidget(self.demo_btn)
        row.addWidget(self.open_demo_btn)
        row.addStretch(1)
        dv.addLayout(row)
        prow = QtWidgets.QHBoxLayout()
        self.progress = QtWidgets.QProgressBar()
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel_btn)
        dv.addLayout(prow)
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        dv.addWidget(self.status)
        v.addWidget(demo)

        own = QtWidgets.QGroupBox("Your data")
        ov = QtWidgets.QHBoxLayout(own)
        self.open_btn = QtWidgets.QPushButton("Open a workspace folder…")
        self.open_btn.clicked.connect(self.choose_workspace)
        self.sehgal_btn = QtWidgets.QPushButton("Import Sehgal HEALPix maps…")
        self.sehgal_btn.clicked.connect(self.import_sehgal)
        self.fits_btn = QtWidgets.QPushButton("Import FITS maps…")
        self.fits_btn.clicked.connect(self.import_fits)
        for b in (self.open_btn, self.sehgal_btn, self.fits_btn):
            ov.addWidget(b)
        v.addWidget(own)
        self.recent = QtWidgets.QListWidget()
        self.recent.setMaximumHeight(120)
        self.recent.itemActivated.connect(lambda it: self.open_workspace.emit(it.text()))
        self.recent_box = QtWidgets.QGroupBox("Recent workspaces")
        QtWidgets.QVBoxLayout(self.recent_box).addWidget(self.recent)
        v.addWidget(self.recent_box)
        h = QtWidgets.QHBoxLayout()
        h.addStretch(1)
        h.addWidget(box, 3)
        h.addStretch(1)
        outer.addLayout(h)
        outer.addStretch(2)
        runner.progress.connect(self._progress)
        runner.finished.connect(self._finished)
        self.refresh()

    def refresh(self, workspace=None) -> None:
        """Update for no workspace, or for an open ``workspace`` that has no cutouts yet."""
        self.progress.setVisible(self.job is not None and self.job.active)
        self.cancel_btn.setVisible(self.job is not None and self.job.active)
        self.demo_btn.setEnabled(not (self.job is not None and self.job.active))
        dp = demo_path()
        complete = _has_cutouts(dp)
        self.open_demo_btn.setVisible(complete)
        self.demo_btn.setText("Rebuild the demo workspace" if complete else "Build the demo workspace")
        if workspace is not None:
            missing = ", ".join(f"{n} ({how})" for n, how in workspace.missing())
            self.headline.setText(f"<b>{workspace.root}</b> is open but has no cutouts yet. Missing: {missing}. "
                                  "Build them in the Jobs panel (View → Jobs).")
        else:
            self.headline.setText(f"The demo workspace (as <code>szviewer --headless</code> builds it) goes to "
                                  f"<code>{dp}</code>: a synthetic sky, its cutouts, the matched filter and the "
                                  "shipped CNN (a few minutes for 100 deg² on two cores).")
        self.recent.clear()
        rec = session.recent_workspaces()
        self.recent.addItems(rec)
        self.recent_box.setVisible(bool(rec))

    # ------------------------------------------------------------------ jobs
    def build_demo(self) -> Job:
        dp = demo_path()
        if _has_cutouts(dp):
            ans = QtWidgets.QMessageBox.question(self, "Rebuild the demo workspace",
                                                 f"Replace the demo workspace at {dp}?")
            if ans != QtWidgets.QMessageBox.StandardButton.Yes:
                return None
            import shutil

            shutil.rmtree(dp, ignore_errors=True)
        spec = JobSpec(f"demo workspace ({self.area.value():g} deg²)", "szviewer.gui.jobkinds:demo",
                       {"out": str(dp), "area_deg2": float(self.area.value()), "seed": DEMO_SEED},
                       creates=str(dp), open_when_done=True)
        self.job = self.runner.submit(spec)
        self.status.setText("starting…")
        self.progress.setRange(0, 0)
        self.refresh()
        return self.job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("cancelling…")

    def _progress(self, job: Job) -> None:
        if job is not self.job:
            return
        if job.total:
            self.progress.setRange(0, job.total)
            self.progress.setValue(job.done)
        self.status.setText(job.message)

    def _finished(self, job: Job) -> None:
        if job is not self.job:
            return
        self.status.setText({"done": "done: opening it", "cancelled": "cancelled: nothing was left behind",
                             "failed": f"failed: {job.error}"}.get(job.status, job.status))
        self.refresh()

    def import_sehgal(self) -> Job | None:
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder with {090,148,219}_*_healpix.fits")
        if not d:
            return None
        out = QtWidgets.QFileDialog.getSaveFileName(self, "New workspace folder", str(Path(d).parent / "sehgal"))[0]
        if not out:
            return None
        self.job = self.runner.submit(JobSpec(f"import Sehgal maps → {out}", "szviewer.jobs.importing:import_sehgal",
                                              {"directory": d, "out": out}, creates=out, open_when_done=True))
        self.refresh()
        return self.job

    def import_fits(self) -> Job | None:
        maps = {}
        for band in (90, 148, 219):
            p = QtWidgets.QFileDialog.getOpenFileName(self, f"{band} GHz map (uK_CMB, celestial WCS)", "",
                                                      "FITS (*.fits *.fit *.fits.gz)")[0]
            if not p:
                return None
            maps[band] = p
        halos = QtWidgets.QFileDialog.getOpenFileName(self, "Halo catalogue (optional: Cancel to skip)")[0] or None
        out = QtWidgets.QFileDialog.getSaveFileName(self, "New workspace folder",
                                                    str(Path(maps[90]).parent / "fits_ws"))[0]
        if not out:
            return None
        self.job = self.runner.submit(JobSpec(f"import FITS maps → {out}", "szviewer.jobs.importing:import_fits",
                                              {"maps": {str(b): p for b, p in maps.items()}, "out": out,
                                               "halo_file": halos}, creates=out, open_when_done=True))
        self.refresh()
        return self.job
