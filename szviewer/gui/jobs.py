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

from psygnal import Signal

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
    #: thread mode only: report the function's result itself (e.g. a prepared object for a view), not a short
    #: picklable summary of it
    keep_result: bool = False

    def __post_init__(self):
        if self.keep_result and self.mode != "thread":
            raise ValueError(f"job {self.title!r}: keep_result needs mode='thread' (a process sends a summary)")


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


def run_job(target: str, kwargs: dict, q, cancel_event, keep_result: bool = False) -> None:
    """Child side (also used in thread mode): run the target, report through ``q`` (the result itself where
    ``keep_result``, else :func:`_summarise` of it)."""
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
        q.put(("done", result if keep_result else _summarise(result)))
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


def eta_words(seconds: float | None) -> str:
    """A time left in words: 'about 40 s left', 'about 3 min left', 'about 1 h 20 min left'."""
    if seconds is None or not seconds == seconds:
        return ""
    s = float(seconds)
    if s < 10:
        return "a few seconds left"
    if s < 90:
        return f"about {int(round(s / 5.0) * 5)} s left"
    if s < 3600:
        return f"about {int(round(s / 60.0))} min left"
    h, m = divmod(int(round(s / 60.0)), 60)
    return f"about {h} h {m} min left" if m else f"about {h} h left"


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
        self._first_progress: tuple[float, int, int] | None = None  # (time, done, total) where this phase began

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
                                            args=(self.spec.target, self.spec.kwargs, self._q, self._cancel,
                                                  self.spec.keep_result))
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

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the mean rate since the first progress message (None until it can be told)."""
        if not self.active or not self.total or self._first_progress is None:
            return None
        t0, d0, _ = self._first_progress
        dt, dd = time.monotonic() - t0, self.done - d0
        if dd <= 0 or dt < 1.0:
            return None
        return max(self.total - self.done, 0) * dt / dd

    def eta_text(self) -> str:
        """The time left in words ("about 3 min left"), or '' while it cannot be told."""
        return eta_words(self.eta_s)

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
                fp = self._first_progress
                if fp is None or msg[1] < fp[1] or msg[2] != fp[2]:  # a new phase (e.g. reading, then training)
                    self._first_progress = (time.monotonic(), msg[1], msg[2])
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
    """The jobs model: starts jobs and polls them; events ``started(job)``, ``progress(job)``, ``log(job, line)``,
    ``finished(job)`` (psygnal, like the other models of the app)."""

    started = Signal(object)
    progress = Signal(object)
    log = Signal(object, str)
    finished = Signal(object)

    def __init__(self):
        self.jobs: list[Job] = []

    def submit(self, spec: JobSpec) -> Job:
        job = Job(spec)
        self.jobs.append(job)
        job.start()
        self.started.emit(job)
        return job

    def active(self) -> list[Job]:
        return [j for j in self.jobs if j.active]

    def poll(self) -> None:
        for job in self.active():
            for ev in job.poll():
                if ev[0] == "progress":
                    self.progress.emit(job)
                elif ev[0] == "log":
                    self.log.emit(job, ev[1])
                elif ev[0] == "finished":
                    self.finished.emit(job)

    def cancel_all(self) -> None:
        for job in self.active():
            job.cancel()


# the job functions and kinds (also reachable as szviewer.gui.jobs:NAME, the targets older specs name)
from szviewer.gui.jobkinds import (  # noqa: E402, F401
    JOB_KINDS,
    available,
    cutouts,
    demo,
    evaluate,
    mf,
    predict,
    simulate,
    train,
    train_estimate,
)

if __name__ == "__main__":
    raise SystemExit(child_main())
