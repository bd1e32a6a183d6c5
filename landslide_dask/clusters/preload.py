"""Workers import what their tasks need once, in one thread, before they take any task.

A fresh worker imports zarr, xarray, torch... the first time a task needs them. When two of its
threads do that at the same moment (two task threads, or a task thread and the event loop
unpickling the next task), zarr's circular imports fail in one of them: "cannot import name
'DEFAULT_FILL_VALUE' from partially initialized module 'zarr.core.array'", or Python's
``_DeadlockError``. It once killed a restarted worker in the country fault test; eight threads of a
fresh process importing zarr modules at once hit it nearly every time.

:func:`import_task_modules` imports :data:`MODULES` once per process, under a lock. It runs:

* as :class:`TaskImports`, a worker plugin: its ``setup`` runs when a worker registers with the
  scheduler, before the worker reads its first task, on the workers there now and on every one
  that joins later (restarts included). :func:`~.start.start_cluster` registers it on every
  cluster it starts or connects to (local, gpu-node, SLURM, Kubernetes, ``scheduler=``);
* as the worker preload :data:`PRELOAD` (:func:`dask_setup`), which
  :func:`~.start.local_cluster` gives its worker processes: they import before they connect.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["DONE", "MODULES", "PRELOAD", "TaskImports", "dask_setup", "import_task_modules"]

logger = logging.getLogger(__name__)

#: What the package's tasks import: data (zarr and its codecs, xarray's zarr backend), rasters and
#: geometry, and torch (training and inference). The zarr modules are the ones seen racing.
MODULES = (
    "numpy",
    "pandas",
    "numcodecs",
    "zarr",
    "zarr.codecs",
    "zarr.storage",
    "xarray",
    "xarray.backends.zarr",
    "rasterio",
    "rasterio.warp",
    "rasterio.features",
    "pyproj",
    "shapely",
    "torch",
)
#: This module as a worker ``--preload`` / ``preload=`` entry.
PRELOAD = __name__

#: Set once :func:`import_task_modules` ran in this process: pid, seconds, modules that failed.
DONE: dict[str, Any] | None = None
_LOCK = threading.Lock()


def import_task_modules() -> dict[str, Any]:
    """Import :data:`MODULES` once per process (later calls return at once); a module that fails is
    logged and recorded, not raised: the task that needs it reports the real error."""
    global DONE
    with _LOCK:
        if DONE is None:
            t0 = time.perf_counter()
            failed = {}
            for name in MODULES:
                try:
                    importlib.import_module(name)
                except Exception as e:  # noqa: BLE001 - one missing optional module must not stop a worker
                    failed[name] = f"{type(e).__name__}: {e}"
            if failed:
                logger.warning("worker %s could not import %s", os.getpid(), ", ".join(failed))
            DONE = {"pid": os.getpid(), "seconds": time.perf_counter() - t0, "failed": failed}
    return DONE


def dask_setup(worker: Any) -> None:
    """distributed's preload hook: runs in the worker process before it connects to the scheduler."""
    import_task_modules()


class TaskImports(WorkerPlugin):
    """Imports the task modules when a worker registers, before it takes tasks."""

    name = "landslide-dask-task-imports"
    idempotent = True  # registered again (a second client of the same cluster): nothing to redo

    def setup(self, worker: Any) -> None:
        import_task_modules()
