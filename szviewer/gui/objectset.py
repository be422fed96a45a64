"""The object-level candidates of the open workspace (the F1 panel's live object counts), read off the GUI
thread (pure Python, no Qt).

Reading a workspace's candidates (:func:`~szviewer.gui.detections.object_counter`, through ``load_objects``)
takes seconds on a large sky (an octant's ~80k MF candidates), so :class:`ObjectSetLoader` runs it as a
thread-mode :class:`~szviewer.gui.jobs.Job`, the app's job mechanism: the first :meth:`~ObjectSetLoader.get` of
a workspace starts the read and answers :data:`LOADING`; the Qt layer calls :meth:`~ObjectSetLoader.poll` from a
timer while ``loading``, and ``changed`` is emitted when a read starts and when its set is there. What the
manifest alone tells (no cutouts, no candidate catalogue, no halos) is answered at once, without a read.

A set is shown only if it was made from the inputs the state shows. :meth:`~ObjectSetLoader.reset` (a workspace
opened, reloaded or closed, its scores read again) drops a read in flight: its result is never looked at. A
finished read is dropped when the generations of the products it read
(:func:`~szviewer.gui.detections.object_inputs`) differ between the state's workspace when it was asked for, that
workspace now and the workspace on disk after the read (a job rebuilt one meanwhile): then the panel says so
(:data:`CHANGED`) instead of counting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from psygnal import Signal

from szviewer.gui.detections import object_counter, object_counter_missing, object_inputs
from szviewer.gui.jobs import Job, JobSpec

#: What :meth:`ObjectSetLoader.get` answers while the candidates are being read.
LOADING_NOTE = "loading…"
LOADING = (None, LOADING_NOTE)
#: The note in place of a set whose inputs changed while it was read.
CHANGED = "the candidates changed on disk while they were read: reopen the workspace to count them"


def read_object_set(ws, region: str = "test") -> tuple:
    """The job (on a worker thread): ``(counter, note, inputs)``: :func:`~szviewer.gui.detections.object_counter`
    of ``ws`` and the inputs recorded on disk once it is done (:func:`~szviewer.gui.detections.object_inputs`;
    None where the manifest cannot be read)."""
    from szviewer.errors import InputError
    from szviewer.workspace import Workspace

    counter, note = object_counter(ws, region)
    try:
        after = object_inputs(Workspace(ws.root))
    except (InputError, OSError):  # the folder went away, or its manifest cannot be read
        after = None
    return counter, note, after


class ObjectSetLoader:
    """The ``(ObjectCounter or None, note)`` of the state's workspace, read in the background (module docstring);
    ``workspace()`` gives the state's current workspace. ``changed()`` when a read starts and when it ends."""

    changed = Signal()

    def __init__(self, workspace: Callable[[], object]):
        self._workspace = workspace
        self._value: tuple | None = None
        self._job: Job | None = None
        self._inputs: tuple = ()

    @property
    def loading(self) -> bool:
        """Whether the candidates are being read (then :meth:`get` answers :data:`LOADING`)."""
        return self._job is not None

    def reset(self) -> None:
        """Forget the set and drop a read in flight (it ends by itself, unseen). No event: the state announces
        what made it (a workspace opened, reloaded or closed, or its scores read again)."""
        self._value, self._job, self._inputs = None, None, ()

    def get(self) -> tuple:
        """The set if it is there; else the reason there is none, or :data:`LOADING` (a read is started the first
        time it is asked for)."""
        if self._value is not None:
            return self._value
        if self._job is not None:
            return LOADING
        ws = self._workspace()
        why = object_counter_missing(ws)
        if why is not None:
            self._value = (None, why)
            return self._value
        self._inputs = object_inputs(ws)
        self._job = Job(JobSpec("read the object-level candidates", "szviewer.gui.objectset:read_object_set",
                                {"ws": ws}, mode="thread", keep_result=True))
        self._job.start()
        self.changed.emit()
        return LOADING

    def poll(self) -> bool:
        """Take the read's result once it is there (then ``changed``); True while it is still being read."""
        job = self._job
        if job is None:
            return False
        job.poll()
        if job.active:
            return True
        self._job = None
        if job.status != "done":
            self._value = (None, f"cannot read the candidates: {job.error or job.status}")
        else:
            counter, note, after = job.result
            fresh = self._inputs == object_inputs(self._workspace()) == after
            self._value = (counter, note) if fresh else (None, CHANGED)
        self.changed.emit()
        return False

    def wait(self, timeout: float = 60.0, interval: float = 0.02) -> tuple:
        """:meth:`get`, polling until the read is done (for scripts and tests without an event loop)."""
        self.get()
        t0 = time.monotonic()
        while self.poll() and time.monotonic() - t0 < timeout:
            time.sleep(interval)
        return self.get()
