"""Background jobs for the app: any ``function(**kwargs, progress=, cancelled=)`` in a subprocess (or a thread).

Pure Python (no Qt), so the child process never loads Qt. A :class:`JobSpec` names its function as
``"package.module:function"`` plus keyword arguments; the child calls it with a ``progress(done, total,
message)`` callable (throttled to ~20 messages a second) and a ``cancelled()`` check when the function takes
them, sends its printed output as log lines, and reports the result, the error (with traceback) or the
cancellation through a queue. The app's Qt layer polls :meth:`JobRunner.poll` from a timer.

Cancel first asks the job to stop at its next check (every job leaves nothing half-written when it stops that
way); a child that has not stopped after ``grace_s`` seconds is terminated, and the hidden partial folder a
workspace-creating job was writing (``.NAME.partial-*`` beside ``creates``) is removed, so Cancel is quick and
safe. New kinds of job (MF, training, prediction) are one :data:`JOB_KINDS` entry each.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import os
import queue as queue_mod
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds between progress messages sent by a child.
PROGRESS_INTERVAL = 0.05


@dataclass
class JobSpec:
    """What to run: ``target`` = ``"module:function"``, called as ``function(**kwargs[, progress, cancelled])``.

    ``creates``: the workspace (or file) the job makes, cleaned up after a forced stop and opened when
    ``open_when_done``; ``reload_when_done``: the workspace to reload afterwards (a finder's new scores).
    """

    title: str
    target: str
    kwargs: dict = field(default_factory=dict)
    creates: str | None = None
    open_when_done: bool = False
    reload_when_done: str | None = None
    mode: str = "process"  # process | thread


def resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"job target {target!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(module), name)


class _QueueWriter(io.TextIOBase):
    """A text stream that sends complete lines to the parent as log messages."""

    def __init__(self, q, stream: str):
        self.q = q
        self.stream = stream
        self.buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.buf += s.replace("\r", "\n")
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                self.q.put(("log", line))
        return len(s)

    def flush(self) -> None:
        if self.buf.strip():
            self.q.put(("log", self.buf))
        self.buf = ""


def _summarise(result):
    """Something picklable and short to send back."""
    if result is None or isinstance(result, (bool, int, float, str)):
        return result
    if isinstance(result, dict):
        return {str(k): _summarise(v) for k, v in list(result.items())[:50]}
    if isinstance(result, (list, tuple)):
        return [_summarise(v) for v in list(result)[:50]]
    return repr(result)[:500]


def run_job(target: str, kwargs: dict, q, cancel_event) -> None:
    """Child side (also used in thread mode): run the target, report through ``q``."""
    last = [0.0]

    def progress(done, total, message=""):
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL or (total and done >= total):
            last[0] = now
            q.put(("progress", int(done), int(total), str(message)))

    def cancelled() -> bool:
        return cancel_event.is_set()

    out = _QueueWriter(q, "stdout")
    redirect = threading.current_thread() is threading.main_thread()
    try:
        fn = resolve(target)
        params = inspect.signature(fn).parameters
        kw = dict(kwargs)
        if "progress" in params:
            kw["progress"] = progress
        if "cancelled" in params:
            kw["cancelled"] = cancelled
        elif "cancel" in params:
            kw["cancel"] = cancelled
        q.put(("log", f"started {target}"))
        with contextlib.ExitStack() as stack:
            if redirect:  # in a thread, stdout belongs to the app
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(out))
            result = fn(**kw)
        out.flush()
        q.put(("done", _summarise(result)))
    except BaseException as exc:  # noqa: B036 - report everything, including KeyboardInterrupt, to the parent
        out.flush()
        if type(exc).__name__ == "Cancelled" or cancel_event.is_set():
            q.put(("cancelled", str(exc) or "cancelled"))
        else:
            q.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


PROTOCOL = "\x1eSZJOB "


class _LineChannel:
    """The child's end of the pipe: ``put(message)`` writes one protocol line to the real stdout."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def put(self, msg) -> None:
        line = PROTOCOL + json.dumps(list(msg), default=str) + "\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


def child_main() -> int:
    """Entry of ``python -m szviewer.gui.jobs``: the spec on the first stdin line, then 'cancel' or EOF."""
    real_stdout = sys.stdout
    spec = json.loads(sys.stdin.readline())
    cancel = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        cancel.set()  # 'cancel', or the app went away (EOF)

    threading.Thread(target=watch_stdin, daemon=True).start()
    run_job(spec["target"], spec["kwargs"], _LineChannel(real_stdout), cancel)
    return 0


class Job:
    """One running (or finished) job: status, progress, log; see :class:`JobRunner`."""

    _ids = itertools.count(1)

    def __init__(self, spec: JobSpec, grace_s: float = 1.5):
        self.id = next(Job._ids)
        self.spec = spec
        self.grace_s = grace_s
        self.status = "queued"  # queued running done failed cancelled
        self.done = 0
        self.total = 0
        self.message = ""
        self.log: list[str] = []
        self.result = None
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._cancel_at: float | None = None
        self._proc: subprocess.Popen | None = None
        self._thread = None
        self._q: queue_mod.Queue = queue_mod.Queue()
        self._partials_before: set[Path] = set()

    # ------------------------------------------------------------------ control
    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def _partials(self) -> set[Path]:
        if not self.spec.creates:
            return set()
        p = Path(self.spec.creates)
        if not p.parent.is_dir():
            return set()
        return set(p.parent.glob(f".{p.name}.partial-*"))

    def start(self) -> None:
        self._partials_before = self._partials()
        self.started = time.monotonic()
        self.status = "running"
        self._add_log(f"{time.strftime('%H:%M:%S')} {self.spec.title}")
        self._cancel = threading.Event()
        if self.spec.mode == "thread":
            self._thread = threading.Thread(target=run_job, daemon=True,
                                            args=(self.spec.target, self.spec.kwargs, self._q, self._cancel))
            self._thread.start()
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("QT_QPA_PLATFORM", None)
        self._proc = subprocess.Popen([sys.executable, "-m", "szviewer.gui.jobs"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                      env=env)
        self._proc.stdin.write(json.dumps({"target": self.spec.target, "kwargs": self.spec.kwargs}) + "\n")
        self._proc.stdin.flush()
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if line.startswith(PROTOCOL):
                try:
                    self._q.put(tuple(json.loads(line[len(PROTOCOL):])))
                    continue
                except ValueError:
                    pass
            if line.strip():
                self._q.put(("log", line))
        self._q.put(("eof",))

    def cancel(self) -> None:
        """Ask the job to stop; a subprocess that does not stop within ``grace_s`` is terminated."""
        if not self.active or self._cancel_at is not None:
            return
        self._cancel.set()
        self._cancel_at = time.monotonic()
        self._add_log("cancel requested")
        if self._proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.write("cancel\n")
                self._proc.stdin.flush()

    # ------------------------------------------------------------------ polling
    def _add_log(self, line: str) -> None:
        self.log.append(line)

    def poll(self) -> list[tuple]:
        """Drain the job's messages and check its process; returns the events since the last poll."""
        events: list[tuple] = []
        if self.status != "running":
            return events
        eof = False
        while True:
            try:
                msg = self._q.get_nowait()
            except queue_mod.Empty:
                break
            kind = msg[0]
            if kind == "progress":
                self.done, self.total, self.message = msg[1], msg[2], msg[3]
                events.append(("progress",))
            elif kind == "log":
                self._add_log(msg[1])
                events.append(("log", msg[1]))
            elif kind == "done":
                self.result = msg[1]
                if self.total:
                    self.done = self.total
                return events + self._finish("done")
            elif kind == "cancelled":
                self._add_log(msg[1])
                return events + self._finish("cancelled")
            elif kind == "error":
                self.error = msg[1]
                self._add_log(msg[2].rstrip())
                return events + self._finish("failed")
            elif kind == "eof":
                eof = True
        if self._proc is not None and (eof or self._proc.poll() is not None):
            if self._proc.poll() is None:
                self._proc.wait(5.0)
            # the child ended without a last word (killed, or crashed in C)
            self.error = f"the job's process ended unexpectedly (exit code {self._proc.returncode})"
            return events + self._finish("cancelled" if self._cancel_at else "failed")
        if (self._proc is not None and self._cancel_at is not None
                and time.monotonic() - self._cancel_at > self.grace_s):
            self._add_log(f"did not stop within {self.grace_s:g} s: terminated")
            self._kill()
            return events + self._finish("cancelled")
        return events

    def _kill(self) -> None:
        p = self._proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(2.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(2.0)

    def _finish(self, status: str) -> list[tuple]:
        self.status = status
        self.finished = time.monotonic()
        if self._proc is not None:
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self._kill()
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()
        if status != "done":
            for p in self._partials() - self._partials_before:
                shutil.rmtree(p, ignore_errors=True)
        secs = self.finished - (self.started or self.finished)
        self._add_log(f"{time.strftime('%H:%M:%S')} {status} after {secs:.1f} s"
                      + (f": {self.error}" if self.error else ""))
        return [("finished", status)]

    def wait(self, timeout: float = 60.0, interval: float = 0.02) -> str:
        """Poll until finished (for scripts and tests without an event loop); returns the status."""
        t0 = time.monotonic()
        while self.active and time.monotonic() - t0 < timeout:
            self.poll()
            time.sleep(interval)
        return self.status


class JobRunner:
    """Starts jobs and polls them; callbacks ``on_progress(job)``, ``on_log(job, line)``, ``on_finished(job)``."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.on_started: list[Callable] = []
        self.on_progress: list[Callable] = []
        self.on_log: list[Callable] = []
        self.on_finished: list[Callable] = []

    def submit(self, spec: JobSpec) -> Job:
        job = Job(spec)
        self.jobs.append(job)
        job.start()
        for cb in self.on_started:
            cb(job)
        return job

    def active(self) -> list[Job]:
        return [j for j in self.jobs if j.active]

    def poll(self) -> None:
        for job in self.active():
            for ev in job.poll():
                if ev[0] == "progress":
                    for cb in self.on_progress:
                        cb(job)
                elif ev[0] == "log":
                    for cb in self.on_log:
                        cb(job, ev[1])
                elif ev[0] == "finished":
                    for cb in self.on_finished:
                        cb(job)

    def cancel_all(self) -> None:
        for job in self.active():
            job.cancel()


# ---------------------------------------------------------------------------------------------- job functions
# Module-level functions so a spawned child can import them; each takes plain arguments (paths, numbers).

def simulate(out: str, area_deg2: float = 25.0, seed: int = 0, overwrite: bool = False, progress=None,
             cancelled=None) -> dict:
    """A synthetic sky in a new workspace (szviewer simulate)."""
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    card = simulate_workspace(out, SimulationSettings(seed=int(seed), area_deg2=float(area_deg2)),
                              overwrite=overwrite, progress=progress, cancelled=cancelled)
    print(f"workspace {out}: {area_deg2:g} deg^2, seed {seed}, {card.get('seconds', 0):.1f} s")
    return {"workspace": str(out), "seconds": card.get("seconds")}


def cutouts(workspace: str, overwrite: bool = False, progress=None, cancelled=None) -> dict:
    """The DeepSZ cutout set of a workspace (szviewer cutouts)."""
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.workspace import Workspace

    s = make_cutouts(Workspace(workspace), CutoutSettings(), overwrite=overwrite, progress=progress,
                     cancelled=cancelled)
    print(f"{s['cutouts']} cutouts, {s['positives']} positive, {s['seconds']:.1f} s")
    return {k: v for k, v in s.items() if not isinstance(v, (list, dict))}


def mf(workspace: str, overwrite: bool = False, progress=None, cancelled=None) -> dict:
    """The matched filter over a workspace: its catalogue and the ``mf_snr`` score column (szviewer mf)."""
    from szviewer.jobs.mf import run_mf_on_workspace
    from szviewer.workspace import Workspace

    s = run_mf_on_workspace(Workspace(workspace), progress=progress, cancelled=cancelled, overwrite=overwrite)
    print(f"matched filter: {s.get('detections')} detections, {s.get('positives_detected')} of "
          f"{s.get('positives')} clusters detected, {s.get('seconds')} s")
    return s


def train(workspace: str, preset: str = "quick", device: str = "auto", overwrite: bool = False, progress=None,
          cancelled=None) -> dict:
    """Train the CNN on the workspace's training cutouts (szviewer train); torch loads in this process only."""
    from szviewer.jobs.cnn import train_job
    from szviewer.workspace import Workspace

    s = train_job(Workspace(workspace), preset=preset, device=device, progress=progress, cancelled=cancelled,
                  overwrite=overwrite)
    print(f"trained ({preset}, {device}): val F1 {s.get('val_f1')}, test F1 {s.get('test_f1')}, {s.get('seconds')} s")
    return s


def train_estimate(workspace: str, preset: str = "quick", device: str = "auto", cancelled=None) -> dict:
    """How long training can take on this machine (szviewer train --estimate): a few real training steps are
    timed and remembered for the train dialog; torch loads in this process only."""
    from szviewer.jobs.cnn import train_estimate as estimate
    from szviewer.workspace import Workspace

    return estimate(Workspace(workspace), preset=preset, device=device, cancelled=cancelled)


def predict(workspace: str, device: str = "auto", overwrite: bool = False, progress=None, cancelled=None) -> dict:
    """Score every cutout with the CNN (szviewer predict): the workspace's model, else the shipped one."""
    from szviewer.jobs.cnn import predict_job
    from szviewer.workspace import Workspace

    s = predict_job(Workspace(workspace), device=device, progress=progress, cancelled=cancelled, overwrite=overwrite)
    print(f"CNN: {s.get('cutouts')} cutouts scored with {s.get('model')} in {s.get('seconds')} s")
    return s


def demo(out: str, area_deg2: float = 25.0, seed: int = 0, progress=None, cancelled=None) -> dict:
    """The demo workspace: a synthetic sky, its cutouts, and every finder that is available."""
    from szviewer.errors import Cancelled, SzviewerError
    from szviewer.workspace import Workspace

    def stage(name):
        return None if progress is None else (lambda d, t, m="": progress(d, t, f"{name}: {m}"))

    if not (Path(out) / "workspace.json").exists():
        simulate(out, area_deg2, seed, progress=stage("sky"), cancelled=cancelled)
    ws = Workspace(out)
    if not ws.has("cutouts"):
        cutouts(out, progress=stage("cutouts"), cancelled=cancelled)
    for kind in ("mf", "predict"):
        spec = JOB_KINDS[kind]
        if not available(kind):
            print(f"{spec['label']}: not built yet")
            continue
        try:
            resolve(spec["target"])(out, progress=stage(kind), cancelled=cancelled)
        except Cancelled:
            raise
        except (SzviewerError, OSError) as exc:  # e.g. no shipped model yet: the demo still opens
            print(f"{spec['label']}: skipped ({exc})")
    return {"workspace": str(out)}


#: Jobs the app offers on an open workspace: ``target(workspace, **options, progress=, cancelled=)``. A kind is
#: offered when ``function`` exists in ``module`` (checked without importing it, so torch stays unloaded).
JOB_KINDS: dict[str, dict] = {
    "cutouts": {"label": "build cutouts", "target": "szviewer.gui.jobs:cutouts", "module": "szviewer.jobs.cutouts",
                "function": "make_cutouts"},
    "mf": {"label": "run the matched filter", "target": "szviewer.gui.jobs:mf", "module": "szviewer.jobs.mf",
           "function": "run_mf_on_workspace"},
    "train": {"label": "train the CNN", "target": "szviewer.gui.jobs:train", "module": "szviewer.jobs.cnn",
              "function": "train_job"},
    "predict": {"label": "score with the CNN", "target": "szviewer.gui.jobs:predict", "module": "szviewer.jobs.cnn",
                "function": "predict_job"},
}


def available(kind: str) -> bool:
    """Whether a job kind's module and function exist (read from the source, not imported)."""
    entry = JOB_KINDS[kind]
    try:
        spec = importlib.util.find_spec(entry["module"])
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    try:
        return f"def {entry['function']}(" in Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(child_main())
