"""One small executor for every tile-parallel step (issue 16): in process, a local Dask cluster, an existing scheduler.

A job hands its per-tile work to :meth:`Executor.map_tiles`::

    with make_executor(ExecutorSettings(workers=2)) as ex:
        results = ex.map_tiles(tile_task, tile_indices, common=(root, settings), progress=bar, what="mf tiles")

``tile_task(item, *common)`` must be a module-level function (it is pickled to the workers) that returns a small,
picklable result; a task that writes files writes them itself, atomically (:mod:`szviewer.atomic`), and the driver
alone updates the workspace manifest when it commits. Results come back in the order of ``items`` whatever the
backend, so the driver combines them exactly as the in-process loop did and the products' data are bit for bit the
same (maps, catalogues, scores byte for byte; a tile's HDF5 file has the same datasets and attributes, though HDF5
now and then lays out its metadata differently in a worker).

Backends (:class:`ExecutorSettings`):

- in process (``workers=0``, the default, what tests and tiny skies use): a plain loop; ``cancelled`` is also
  handed to the task (``pass_cancel=True``), so a long tile stops at its next check;
- a local cluster (``workers=N``): a ``distributed.LocalCluster`` of N worker processes with one thread each, and
  numpy/BLAS/OpenMP and the tasks' FFTs (:func:`task_threads`) at one thread per worker, so N workers use N cores;
- an existing scheduler (``scheduler="tcp://host:8786"`` or a scheduler JSON file, e.g. from dask-jobqueue).

Faults and cancel: a worker that dies mid-task (killed, out of memory) loses only the tasks it held; the scheduler
runs them again on another worker (``distributed.scheduler.allowed-failures``, default 3 deaths per task, then
:class:`~szviewer.errors.SzviewerError`). An exception raised by a task is re-raised in the driver as itself (an
:class:`~szviewer.errors.InputError` stays one line). Ctrl-C, SIGTERM or ``cancelled()`` cancel every pending task;
a local cluster is then shut down at once, so no task outlives the cancel (tasks on an existing scheduler that
already run finish their tile; they only ever write complete files under their final names).

Progress: the driver calls ``progress(done, total, message)`` as tiles finish on any worker: one bar for all.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from szviewer.errors import Cancelled, SzviewerError
from szviewer.progress import CancelFn, ProgressFn, check_cancel

#: Environment of every local worker process: one thread for numpy's BLAS, OpenMP and our FFTs.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "SZVIEWER_TASK_THREADS": "1"}
#: How often the driver wakes to check for a cancel while it waits for tiles [s].
POLL_S = 0.02


def task_threads(default: int) -> int:
    """The FFT threads a tile task may use: ``default`` in process; inside a Dask worker its thread budget
    (``SZVIEWER_TASK_THREADS``, set to 1 on local workers; 1 on any other worker)."""
    env = os.environ.get("SZVIEWER_TASK_THREADS")
    if env:
        return max(1, int(env))
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            get_worker()
        except ValueError:
            return default
        return 1
    return default


@dataclass(frozen=True)
class ExecutorSettings:
    """Where tile tasks run. ``workers`` 0: in process; N >= 1: a local Dask cluster of N processes (one thread
    each); ``scheduler``: the address (``tcp://host:8786``) or scheduler file of an existing Dask cluster."""

    workers: int = 0
    scheduler: str | None = None
    threads_per_worker: int = 1
    #: times a task that *raised* is tried again (a lost worker's tasks are always re-run by the scheduler)
    retries: int = 0
    #: per local worker, as Dask takes it ("auto": the machine's memory shared evenly)
    memory_limit: str = "auto"
    connect_timeout_s: float = 30.0

    def __post_init__(self):
        if self.workers < 0:
            raise SzviewerError(f"--workers {self.workers}: must be 0 (in process) or a positive number of workers")
        if self.workers and self.scheduler:
            raise SzviewerError("give --workers N (a local cluster) or --scheduler ADDRESS (an existing one), "
                                "not both")

    @property
    def distributed(self) -> bool:
        return bool(self.workers or self.scheduler)


class Executor:
    """The interface (and the in-process backend): run ``fn(item, *common)`` for every item."""

    kind = "in process"

    @property
    def nworkers(self) -> int:
        return 1

    def describe(self) -> str:
        return "in process"

    def map_tiles(self, fn: Callable[..., Any], items: Sequence, *, common: tuple = (),
                  progress: ProgressFn | None = None, cancelled: CancelFn | None = None, what: str = "tiles",
                  total: int | None = None, done: int = 0, label: Callable[[Any, Any], str] | None = None,
                  pass_cancel: bool = False) -> list:
        """``[fn(item, *common) for item in items]``, in the order of ``items``.

        ``progress(done + finished, total, message)`` after each item (``total`` defaults to ``done + len(items)``:
        a resumed run counts the tiles it skipped); ``label(item, result)`` makes the message. ``pass_cancel``: the
        in-process backend also calls ``fn(..., cancelled=check)`` so a long task can stop at its next check
        (remote tasks get ``cancelled=None``; the driver cancels them)."""
        items = list(items)
        total = done + len(items) if total is None else total
        out = []
        for k, item in enumerate(items):
            check_cancel(cancelled, what)
            res = fn(item, *common, cancelled=cancelled) if pass_cancel else fn(item, *common)
            out.append(res)
            if progress is not None:
                progress(done + k + 1, total, label(item, res) if label else what)
        return out

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcessExecutor(Executor):
    """The default backend: a plain loop in this process (tests, tiny skies)."""


def bokeh_installed() -> bool:
    return importlib.util.find_spec("bokeh") is not None


class DaskExecutor(Executor):
    """Tile tasks on a Dask cluster: a local one started here (``settings.workers``) or an existing scheduler."""

    kind = "dask"

    def __init__(self, settings: ExecutorSettings):
        import logging

        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency
            raise SzviewerError("--workers/--scheduler need Dask: pip install dask distributed") from None
        self.settings = settings
        self.cluster = None
        self._closed = False
        if settings.scheduler:
            addr = settings.scheduler
            try:
                if os.path.isfile(addr):
                    self.client = Client(scheduler_file=addr, timeout=settings.connect_timeout_s)
                else:
                    self.client = Client(addr, timeout=settings.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                raise SzviewerError(f"--scheduler {addr}: cannot reach a Dask scheduler there ({exc})") from None
        else:
            self.cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                                        processes=True, env=dict(THREAD_ENV), memory_limit=settings.memory_limit,
                                        dashboard_address=":0",  # any free port (the scheduler's HTTP server)
                                        silence_logs=logging.CRITICAL)  # a cancel's shutdown is not an error
            self.client = Client(self.cluster)

    @property
    def nworkers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    @property
    def scheduler_address(self) -> str:
        return str(self.client.scheduler.address)

    def describe(self) -> str:
        """One line for the user: the cluster, the scheduler's address and the dashboard's (or how to get one)."""
        if self.cluster is not None:
            what = (f"Dask LocalCluster: {self.settings.workers} worker process(es) x "
                    f"{self.settings.threads_per_worker} thread")
        else:
            what = f"Dask scheduler {self.settings.scheduler}: {self.nworkers} worker(s)"
        link = self.client.dashboard_link if bokeh_installed() else None
        dash = (f"dashboard {link}" if link else
                "no dashboard (`pip install bokeh` in this environment, then it is served by the scheduler)")
        return f"{what}; scheduler {self.scheduler_address}; {dash}"

    def map_tiles(self, fn, items, *, common=(), progress=None, cancelled=None, what="tiles", total=None, done=0,
                  label=None, pass_cancel=False) -> list:
        from distributed import as_completed

        if self._closed:
            raise SzviewerError("this Dask cluster was shut down by a cancel; start a new run")
        items = list(items)
        total = done + len(items) if total is None else total
        if not items:
            return []
        check_cancel(cancelled, what)
        shared = self.client.scatter(list(common), broadcast=True, hash=False) if common else []
        tag = uuid.uuid4().hex[:8]
        name = "".join(c if c.isalnum() else "_" for c in what)
        index = {}
        for k, item in enumerate(items):
            f = self.client.submit(fn, item, *shared, key=f"{name}-{k:05d}-{tag}", pure=False,
                                   retries=self.settings.retries)
            index[f] = k
        out: list = [None] * len(items)
        pending = set(index)
        finished = 0
        done_queue = as_completed(list(index))  # completion callbacks: no per-poll cost for the scheduler
        try:
            while pending:
                check_cancel(cancelled, what)
                ready = done_queue.next_batch(block=False)
                if not ready:
                    time.sleep(POLL_S)  # the main thread: a signal lands here at once
                    continue
                for f in sorted(ready, key=index.__getitem__):
                    pending.discard(f)
                    k = index[f]
                    out[k] = self._result(f, items[k], what)
                    f.release()
                    finished += 1
                    if progress is not None:
                        progress(done + finished, total, label(items[k], out[k]) if label else what)
        except (Cancelled, KeyboardInterrupt):
            self._abort(list(pending), shutdown=True)
            raise
        except BaseException:
            self._abort(list(pending), shutdown=False)
            raise
        finally:
            for f in shared:
                f.release()
        return out

    def _result(self, f, item, what: str):
        try:
            from distributed.scheduler import KilledWorker
        except ImportError:  # pragma: no cover
            KilledWorker = RuntimeError  # noqa: N806
        try:
            return f.result()
        except KilledWorker as exc:
            raise SzviewerError(f"{what} {item}: the Dask workers running it died again and again ({exc}); "
                                "out of memory? give each worker more (fewer workers) or smaller tiles") from None

    def _abort(self, pending: list, shutdown: bool) -> None:
        """Cancel what is still queued; on a cancel a local cluster is shut down, so no task outlives it (after a
        task's error the others' complete results may still land; the cluster stays up)."""
        try:
            if pending:
                self.client.cancel(pending, force=True)
        except Exception:  # noqa: BLE001 - best effort while a cancel or an error propagates
            pass
        if shutdown and self.cluster is not None:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        t0 = time.perf_counter()
        try:
            self.client.close(timeout=10)
        except Exception:  # noqa: BLE001 - shutting down
            pass
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=max(1.0, 10 - (time.perf_counter() - t0)))
            except Exception:  # noqa: BLE001 - shutting down
                pass


def make_executor(settings: ExecutorSettings | None = None) -> Executor:
    """The backend ``settings`` ask for (in process when None)."""
    if settings is None or not settings.distributed:
        return InProcessExecutor()
    return DaskExecutor(settings)


__all__ = ["THREAD_ENV", "DaskExecutor", "Executor", "ExecutorSettings", "InProcessExecutor",
           "make_executor", "task_threads"]
