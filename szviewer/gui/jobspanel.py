"""The jobs panel: start simulate / cutouts (and the MF, training and prediction when they exist) in the
background, watch their progress and logs, cancel them. :class:`QtJobRunner` drives the Qt-free
:class:`szviewer.gui.jobs.JobRunner` from a timer and turns its callbacks into Qt signals.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from szviewer.gui.compute import ComputeChooser, cluster_line
from szviewer.gui.jobkinds import TILE_KINDS
from szviewer.gui.jobs import JOB_KINDS, Job, JobRunner, JobSpec, available
from szviewer.gui.state import ViewerState

#: The workspace product each job kind replaces (asked before, as the CLI's --overwrite).
REPLACES = {"cutouts": "cutouts", "mf": "mf", "predict": "cnn", "train": "cnn_model", "dense": "cnn_dense"}
STATUS_TEXT = {"queued": "queued", "running": "running", "done": "done", "failed": "FAILED",
               "cancelled": "cancelled"}


def progress_text(job: Job) -> str:
    """'42% · tile 2/4: pass 3/8 · about 3 min left' (the step, what it does, and the time left in words)."""
    parts = []
    if job.total:
        parts.append(f"{100.0 * job.done / job.total:.0f}%")
    if job.message:
        parts.append(job.message)
    eta = job.eta_text()
    if eta:
        parts.append(eta)
    return " · ".join(parts)


class QtJobRunner(QtCore.QObject):
    started = QtCore.pyqtSignal(object)
    progress = QtCore.pyqtSignal(object)
    log = QtCore.pyqtSignal(object, str)
    finished = QtCore.pyqtSignal(object)

    def __init__(self, parent=None, interval_ms: int = 50):
        super().__init__(parent)
        self.runner = JobRunner()
        # the pure-Python jobs model's events, re-emitted as Qt signals (lambdas: held strongly by psygnal)
        self.runner.started.connect(lambda job: self.started.emit(job))
        self.runner.progress.connect(lambda job: self.progress.emit(job))
        self.runner.log.connect(lambda job, line: self.log.emit(job, line))
        self.runner.finished.connect(lambda job: self.finished.emit(job))
        self.timer = QtCore.QTimer(self, interval=interval_ms)
        self.timer.timeout.connect(self._poll)

    def submit(self, spec: JobSpec) -> Job:
        job = self.runner.submit(spec)
        self.timer.start()
        return job

    def _poll(self) -> None:
        self.runner.poll()
        if not self.runner.active():
            self.timer.stop()

    def active(self) -> list[Job]:
        return self.runner.active()

    @property
    def jobs(self) -> list[Job]:
        return self.runner.jobs

    def cancel_all(self) -> None:
        self.runner.cancel_all()


class SimulateDialog(QtWidgets.QDialog):
    """Where and what to simulate."""

    def __init__(self, parent=None, default_dir: str | None = None):
        super().__init__(parent)
        self.setWindowTitle("Simulate a synthetic sky")
        f = QtWidgets.QFormLayout(self)
        self.out = QtWidgets.QLineEdit(str(Path(default_dir or Path.home()) / "sky"))
        browse = QtWidgets.QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        f.addRow("new workspace", row)
        self.area = QtWidgets.QDoubleSpinBox(decimals=1, minimum=0.5, maximum=5157.0, value=25.0, suffix=" deg²")
        self.seed = QtWidgets.QSpinBox(minimum=0, maximum=2 ** 31 - 1, value=0)
        self.cut = QtWidgets.QCheckBox("then build the cutouts", checked=True)
        f.addRow("area", self.area)
        f.addRow("seed", self.seed)
        f.addRow("", self.cut)
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Ok
                                        | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        f.addRow(bb)

    def _browse(self) -> None:
        d = QtWidgets.QFileDialog.getSaveFileName(self, "New workspace folder", self.out.text())[0]
        if d:
            self.out.setText(d)

    def spec(self) -> JobSpec:
        out = self.out.text().strip()
        if self.cut.isChecked():
            return JobSpec(f"simulate {self.area.value():g} deg² + cutouts → {out}", "szviewer.gui.jobkinds:demo",
                           {"out": out, "area_deg2": self.area.value(), "seed": self.seed.value()},
                           creates=out, open_when_done=True)
        return JobSpec(f"simulate {self.area.value():g} deg² → {out}", "szviewer.gui.jobkinds:simulate",
                       {"out": out, "area_deg2": self.area.value(), "seed": self.seed.value()},
                       creates=out, open_when_done=True)


class TrainDialog(QtWidgets.QDialog):
    """Preset and device of a CNN training run, with how long it can take on this machine.

    The estimate is measured, not promised (:func:`szviewer.jobs.cnn.train_estimate`): a step time remembered from
    an earlier measurement here is shown at once; otherwise a few real training steps of the preset are timed in
    a background process (torch never loads in the app) and the label updates when they are done.
    """

    PRESETS = (("quick", "quick: at most 1,200 batches of 64 (for ~100 deg²)"),
               ("long", "long: at most 8,000 batches of 128 (for 1,000 deg² or more)"),
               ("paper", "paper: the paper's schedule exactly (20 ratios, patience 1,000)"),
               ("finetune", "finetune: start from the shipped paper model, at most 1,800 batches of 64 "
                            "(for act-dr6, so-lat and other instruments)"))

    def __init__(self, parent=None, workspace: str | None = None, measure_mode: str = "process"):
        super().__init__(parent)
        self.setWindowTitle("Train the CNN")
        self.workspace = workspace
        self.measure_mode = measure_mode
        self._job: Job | None = None
        self._job_key: tuple | None = None
        f = QtWidgets.QFormLayout(self)
        self.preset = QtWidgets.QComboBox()
        for name, text in self.PRESETS:
            self.preset.addItem(text, name)
        self.device = QtWidgets.QComboBox()
        for d in ("auto", "cpu", "cuda"):  # szviewer.jobs.cnn.resolve_device
            self.device.addItem(d)
        f.addRow("preset", self.preset)
        f.addRow("device", self.device)
        self.estimate = QtWidgets.QLabel("")
        self.estimate.setWordWrap(True)
        f.addRow("time here", self.estimate)
        f.addRow(QtWidgets.QLabel("Training runs in its own process: Cancel stops it at once, and the model is "
                                  "only written when training completes."))
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Ok
                                        | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        f.addRow(bb)
        self.timer = QtCore.QTimer(self, interval=200)
        self.timer.timeout.connect(self._poll)
        self.preset.currentIndexChanged.connect(self.update_estimate)
        self.device.currentIndexChanged.connect(self.update_estimate)
        self.finished.connect(lambda *_: self._stop_measuring())
        self.update_estimate()

    def options(self) -> dict:
        return {"preset": self.preset.currentData(), "device": self.device.currentText()}

    def update_estimate(self, *_) -> None:
        """Show the remembered estimate of the chosen preset, or start measuring it in the background."""
        self._stop_measuring()
        if not self.workspace:
            self.estimate.setText("open a workspace to measure how long training takes here")
            return
        from szviewer.errors import SzviewerError
        from szviewer.jobs.cnn import train_estimate
        from szviewer.workspace import Workspace

        opts = self.options()
        try:
            est = train_estimate(Workspace(self.workspace), measure=False, **opts)
        except (SzviewerError, OSError, ValueError) as exc:
            self.estimate.setText(f"cannot estimate: {exc}")
            return
        if est is not None:
            self.estimate.setText(est["text"])
            return
        self.estimate.setText(f"measuring a few {opts['preset']} training steps on this machine…")
        self._job_key = (opts["preset"], opts["device"])
        self._job = Job(JobSpec("measure training speed", "szviewer.gui.jobkinds:train_estimate",
                                {"workspace": str(self.workspace), **opts}, mode=self.measure_mode))
        self._job.start()
        self.timer.start()

    def _poll(self) -> None:
        job = self._job
        if job is None:
            self.timer.stop()
            return
        job.poll()
        if job.active:
            return
        self.timer.stop()
        self._job = None
        if (self.preset.currentData(), self.device.currentText()) != self._job_key:
            return
        if job.status == "done" and isinstance(job.result, dict) and job.result.get("text"):
            self.estimate.setText(job.result["text"])
        else:
            self.estimate.setText(f"could not measure the training speed here ({job.error or job.status})")

    def _stop_measuring(self) -> None:
        """Drop a measurement in flight: it is asked to stop and ends by itself at its next step (never waited on)."""
        self.timer.stop()
        if self._job is not None and self._job.active:
            self._job.cancel()
        self._job = None


class JobsPanel(QtWidgets.QWidget):
    """Buttons to start jobs, the list of jobs with progress, the selected job's log, Cancel."""

    def __init__(self, state: ViewerState, runner: QtJobRunner, parent=None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        h = QtWidgets.QHBoxLayout(self)
        h.setContentsMargins(4, 4, 4, 4)
        left = QtWidgets.QGridLayout()
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        b = QtWidgets.QPushButton("Simulate a sky…")
        b.clicked.connect(self.simulate_dialog)
        self.buttons["simulate"] = b
        left.addWidget(b, 0, 0)
        for k, (kind, spec) in enumerate(JOB_KINDS.items(), start=1):
            b = QtWidgets.QPushButton(spec["label"][0].upper() + spec["label"][1:])
            b.clicked.connect(lambda _=False, kind=kind: self._clicked(kind))
            self.buttons[kind] = b
            left.addWidget(b, k // 2, k % 2)
        self.compute = ComputeChooser()
        left.addWidget(self.compute, 4, 0, 1, 2)
        left.setRowStretch(5, 1)
        h.addLayout(left)
        mid = QtWidgets.QVBoxLayout()
        self.list = QtWidgets.QTreeWidget()
        self.list.setHeaderLabels(["job", "status", "progress"])
        self.list.setRootIsDecorated(False)
        hdr = self.list.header()  # the job's title takes the room there is; status and progress keep theirs
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.list.setColumnWidth(2, 150)
        mid.addWidget(self.list, 1)
        row = QtWidgets.QHBoxLayout()
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_selected)
        self.status = QtWidgets.QLabel("")
        row.addWidget(self.cancel_btn)
        row.addWidget(self.status, 1)
        mid.addLayout(row)
        self.cluster = QtWidgets.QLabel("")  # the selected job's Dask cluster and its dashboard link
        self.cluster.setOpenExternalLinks(True)
        self.cluster.setVisible(False)
        mid.addWidget(self.cluster)
        h.addLayout(mid, 2)
        self.log_view = QtWidgets.QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("the selected job's log")
        h.addWidget(self.log_view, 2)
        self.items: dict[int, tuple[QtWidgets.QTreeWidgetItem, QtWidgets.QProgressBar]] = {}
        self.list.currentItemChanged.connect(lambda *_: self._show_log())
        runner.started.connect(self._started)
        runner.progress.connect(self._progress)
        runner.log.connect(self._log)
        runner.finished.connect(self._finished)
        state.events.workspace.connect(self._update_buttons)
        self._update_buttons()

    # ------------------------------------------------------------------ starting jobs
    def _update_buttons(self, *_):
        ws = self.state.workspace
        for kind, spec in JOB_KINDS.items():
            b = self.buttons[kind]
            if not available(kind):
                b.setEnabled(False)
                b.setToolTip(f"{spec['label']}: not built yet")
            elif ws is None:
                b.setEnabled(False)
                b.setToolTip("open a workspace first")
            else:
                b.setEnabled(True)
                b.setToolTip(f"{spec['label']} on {ws.root}")

    def simulate_dialog(self) -> Job | None:
        base = str(self.state.path.parent) if self.state.path else None
        dlg = SimulateDialog(self, base)
        if dlg.exec() != QtWidgets.QDialog.DialogCode.Accepted:
            return None
        spec = dlg.spec()
        if spec.target.endswith(":simulate"):
            spec.kwargs |= self.compute.options()
        return self.submit(spec)

    def _clicked(self, kind: str) -> Job | None:
        if kind == "train":
            ws = self.state.workspace
            dlg = TrainDialog(self, str(ws.root) if ws is not None else None)
            if dlg.exec() != QtWidgets.QDialog.DialogCode.Accepted:
                return None
            return self.run_on_workspace(kind, **dlg.options())
        return self.run_on_workspace(kind)

    def run_on_workspace(self, kind: str, **kwargs) -> Job | None:
        """Run a JOB_KINDS job on the open workspace; it is reloaded when the job is done (new scores appear)."""
        ws = self.state.workspace
        if ws is None:
            return None
        spec = JOB_KINDS[kind]
        kw = {"workspace": str(ws.root)}
        product = REPLACES.get(kind)
        if product and product in ws.products and "overwrite" not in kwargs:
            ans = QtWidgets.QMessageBox.question(self, "Replace results",
                                                 f"This workspace already has {product} results. Replace them?")
            if ans != QtWidgets.QMessageBox.StandardButton.Yes:
                return None
            kw["overwrite"] = True
        if kind in TILE_KINDS:
            kwargs = self.compute.options() | kwargs
        extra = ", ".join(f"{k} {v}" for k, v in kwargs.items())
        return self.submit(JobSpec(f"{spec['label']}: {ws.root.name}" + (f" ({extra})" if extra else ""),
                                   spec["target"], kw | kwargs, reload_when_done=str(ws.root)))

    def submit(self, spec: JobSpec) -> Job:
        return self.runner.submit(spec)

    # ------------------------------------------------------------------ runner -> view
    def _started(self, job: Job) -> None:
        item = QtWidgets.QTreeWidgetItem([job.spec.title, STATUS_TEXT[job.status], ""])
        self.list.addTopLevelItem(item)
        bar = QtWidgets.QProgressBar()
        bar.setRange(0, 0)  # busy until the first progress message
        bar.setMaximumHeight(16)
        self.list.setItemWidget(item, 2, bar)
        self.items[job.id] = (item, bar)
        item.setData(0, QtCore.Qt.ItemDataRole.UserRole, job.id)
        self.list.setCurrentItem(item)
        self._show_log()

    def _job(self, job_id: int) -> Job | None:
        return next((j for j in self.runner.jobs if j.id == job_id), None)

    def selected(self) -> Job | None:
        item = self.list.currentItem()
        return None if item is None else self._job(item.data(0, QtCore.Qt.ItemDataRole.UserRole))

    def _progress(self, job: Job) -> None:
        item, bar = self.items[job.id]
        if job.total:
            bar.setRange(0, job.total)
            bar.setValue(job.done)
        eta = job.eta_text()
        bar.setFormat("%p%" + (f"  {eta}" if eta else ""))
        bar.setToolTip(job.message)
        item.setText(1, STATUS_TEXT[job.status])
        item.setToolTip(0, job.message)
        if job is self.selected():
            self.status.setText(progress_text(job))

    def _log(self, job: Job, line: str) -> None:
        if job is self.selected():
            self.log_view.appendPlainText(line)
            if line.startswith("Dask "):
                self._show_cluster(job)

    def _show_cluster(self, job: Job | None) -> None:
        found = None if job is None else cluster_line(job.log)
        self.cluster.setText(found[0] if found else "")
        self.cluster.setToolTip(found[1] if found else "")
        self.cluster.setVisible(found is not None)

    def _finished(self, job: Job) -> None:
        item, bar = self.items[job.id]
        item.setText(1, STATUS_TEXT[job.status])
        bar.setRange(0, 1)
        bar.setValue(1 if job.status == "done" else 0)
        bar.setFormat(job.status)
        if job is self.selected():
            self._show_log()

    def _show_log(self) -> None:
        job = self.selected()
        self.log_view.setPlainText("" if job is None else "\n".join(job.log))
        self.log_view.verticalScrollBar().setValue(self.log_view.verticalScrollBar().maximum())
        self.cancel_btn.setEnabled(job is not None and job.active)
        self._show_cluster(job)
        self.status.setText("" if job is None else f"{job.status}" + (f": {job.error}" if job.error else ""))

    def cancel_selected(self) -> None:
        job = self.selected()
        if job is not None:
            job.cancel()
            self._show_log()
