"""One executor for every tile-parallel step: in process, a local Dask cluster, or an existing Dask scheduler.

See :mod:`szviewer.parallel.executor`. Dask is imported only when a Dask backend is asked for.
"""

from szviewer.parallel.executor import (
    DaskExecutor,
    Executor,
    ExecutorSettings,
    InProcessExecutor,
    make_executor,
    task_threads,
)

__all__ = ["DaskExecutor", "Executor", "ExecutorSettings", "InProcessExecutor", "make_executor", "task_threads"]
