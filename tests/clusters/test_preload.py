"""Workers import what their tasks need before their first task, so the import race of a fresh
worker cannot happen: many fresh workers at once, each running tasks in several threads that import
zarr modules at the same moment (without the preload, such workers fail with zarr's circular
import, or Python's _DeadlockError, in one or more of them nearly every run)."""

from __future__ import annotations

import os
import sys
import threading
import time

import cloudpickle

from landslide_dask.clusters.preload import MODULES, TaskImports, import_task_modules
from landslide_dask.common.workers import worker_table

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# each thread of a worker imports another zarr module, all released at once
RACE = (
    "import zarr",
    "from zarr.core.array import DEFAULT_FILL_VALUE",
    "import xarray.backends.zarr",
    "from zarr.api.synchronous import open_array",
    "import zarr.storage",
    "from zarr.core.group import Group",
    "import numcodecs.zarr3",
    "import zarr.codecs",
)
WORKERS, THREADS = 6, len(RACE)


def _import_at_once(statement: str) -> dict:
    from distributed import get_worker

    w = get_worker()
    barrier = w.__dict__.setdefault("_import_barrier", threading.Barrier(len(RACE)))  # one per worker
    barrier.wait(timeout=120)
    try:
        exec(statement, {})
        error = None
    except Exception as e:  # noqa: BLE001 - the race's ImportError / _DeadlockError is what is looked for
        error = f"{type(e).__name__}: {e}"
    return {"worker": w.address, "pid": os.getpid(), "error": error}


def _done() -> dict | None:
    from landslide_dask.clusters import preload

    return preload.DONE


def _race(client) -> list[dict]:
    """Every worker runs the RACE imports at once, one per thread."""
    futures = [
        client.submit(_import_at_once, s, workers=[a], allow_other_workers=False, pure=False)
        for a in worker_table(client)
        for s in RACE
    ]
    return client.gather(futures)


def test_many_fresh_workers_import_in_many_threads_at_once():
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster

    t0 = time.monotonic()
    with (
        local_cluster(WORKERS, threads_per_worker=THREADS, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(WORKERS, timeout=120)
        before = client.run(os.getpid)
        results = _race(client)
        after = client.run(os.getpid)
        done = client.run(_done)
    took = time.monotonic() - t0
    assert len(results) == WORKERS * len(RACE)
    assert [r for r in results if r["error"]] == []  # no import failed in any thread
    assert after == before and len(before) == WORKERS  # no worker died or was replaced
    assert {r["worker"] for r in results} == set(before)
    for address, d in done.items():  # each imported before its first task
        assert d is not None and d["pid"] == before[address] and d["failed"] == {}, d
    print(
        f"\n[preload] {WORKERS} fresh workers x {THREADS} threads: {took:.1f}s, imports "
        f"{max(d['seconds'] for d in done.values()):.1f}s at most per worker",
        file=sys.stderr,
    )


def test_the_plugin_runs_before_the_first_task_of_a_worker_that_joins_later():
    """A worker that joins (or restarts) after the plugin was registered runs it at registration,
    before it takes a task; registering it again does not run it twice."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=0, threads_per_worker=len(RACE), processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(TaskImports())
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        assert [r["error"] for r in _race(client)] == [None] * len(RACE)
        first = client.run(_done)
        client.register_plugin(TaskImports())  # a second client of the same cluster
        assert client.run(_done) == first and all(d is not None for d in first.values())


def test_import_task_modules_imports_them_once():
    first = import_task_modules()
    assert all(m in sys.modules for m in MODULES if m not in first["failed"])
    assert import_task_modules() is first
