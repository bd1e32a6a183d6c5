"""Which Dask workers are connected, asked of the scheduler itself at each call.

Every count or list of workers in this package comes from here, never from
``Client.scheduler_info()``: in distributed 2026.8 that method refreshes the client's cached
identity and then returns the *cache*, which the client's own periodic callback overwrites every
couple of seconds with an identity fetched with ``n_workers=0`` (its ``"workers"`` is empty). On a
loaded machine the caller's thread is often descheduled between the two steps and reads the empty
copy: a live cluster then looks as if every worker were gone (see ``benchmarks/liveness.py``,
which counts such replies under load). ``Scheduler.identity`` answered over RPC is the scheduler's
own table at that moment: it cannot be stale, and it cannot be partial.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "worker_table",
    "worker_addresses",
    "n_workers",
    "total_threads",
    "worker_names",
    "wait_for_workers",
    "gone",
    "cores",
]

RPC_TIMEOUT_S = 60.0  # a scheduler on a busy machine can take seconds to answer; minutes means it is lost


def worker_table(client: Client, timeout_s: float = RPC_TIMEOUT_S) -> dict[str, dict]:
    """address -> the scheduler's record of each worker connected now (a fresh RPC each call)."""
    info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=timeout_s)
    return dict(info.get("workers", {}))


def worker_addresses(client: Client) -> list[str]:
    """Addresses of the connected workers, sorted."""
    return sorted(worker_table(client))


def n_workers(client: Client) -> int:
    return len(worker_table(client))


def total_threads(client: Client) -> int:
    """Dask threads of all connected workers."""
    return sum(int(w.get("nthreads", 1)) for w in worker_table(client).values())


def cores() -> int:
    """CPU cores this process may run on (its affinity: a SLURM or cgroup share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_names(client: Client) -> set[str]:
    return {str(w.get("name")) for w in worker_table(client).values()}


def wait_for_workers(
    client: Client, n: int, timeout_s: float, exclude: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Wait until ``n`` running workers not in ``exclude`` are connected; their addresses, sorted.

    ``exclude``: addresses that must not count (a worker whose earlier rank may still be running).
    Raises ``TimeoutError`` saying how many arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready = sorted(
            a for a, w in worker_table(client).items() if a not in exclude and w.get("status", "running") == "running"
        )
        if len(ready) >= n:
            return ready
        if time.monotonic() >= deadline:
            raise TimeoutError(f"only {len(ready)} of {n} workers connected within {timeout_s:g}s")
        time.sleep(0.25)


def gone(client: Client, addresses: list[str], confirm_s: float = 1.0) -> set[str]:
    """The ``addresses`` that the scheduler no longer lists, in two fresh replies ``confirm_s`` apart.

    A worker missing from one authoritative reply has been removed by the scheduler; the second
    reply only guards the decision that follows (stopping a run) against a scheduler that is
    restarting workers under our feet. An error asking the scheduler is raised, never read as a death."""
    missing = {a for a in addresses if a not in worker_table(client)}
    if not missing:
        return set()
    time.sleep(confirm_s)
    return {a for a in missing if a not in worker_table(client)}
