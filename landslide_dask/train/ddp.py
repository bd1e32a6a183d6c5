"""One torch.distributed rank per Dask worker, with timeouts and one clear error on failure.

Why not dask-pytorch-ddp: it hard-codes port 23456, defaults to nccl, has no timeout, and one dead
worker leaves every other rank blocked in a collective forever. Here:

* the rendezvous store of each run is bound to port 0 by a tiny probe task on rank 0's worker and
  held open there until rank 0 takes it over, so two runs, or two users, never collide on a port
  (no port is probed free, closed and bound again later: nothing can take it in between);
* the backend follows the workers' devices (nccl with CUDA, gloo without; mixed is an error);
* ``init_process_group(timeout=...)`` bounds the rendezvous and every collective;
* the client watches all rank futures *and* the scheduler's worker table (asked by RPC each
  time, see :mod:`landslide_dask.common.workers`; never the client's cached identity, which goes
  worker-less under load): a rank that raises, or a worker that the scheduler has removed in two
  replies a second apart (its future would otherwise wait forever, pinned to a worker that is
  gone), stops the run; the surviving ranks get ``timeout_s`` to fail on their collectives, and the
  worker process of any rank still running after that is ended (its nanny starts a fresh one), so
  nothing is left blocked in a collective. Only a worker the scheduler itself no longer lists is
  ever called dead;
* a worker on which a rank of another run is still executing is never given a new rank;
* the process group is destroyed in a ``finally`` on every rank, so the next run on the same
  workers starts clean.

Measured on this machine (gloo, loopback, 2 worker processes): a peer killed mid-training makes the
other rank's next collective fail in ~10 ms ("Connection reset by peer"); a peer that raised and
destroyed its group, in ~20 ms ("Connection closed by peer"); a peer that just stops calling
collectives is detected by gloo's own timeout, exactly ``timeout_s`` after the collective began.
The fast failures need the failed rank's gloo sockets to close, i.e. its process group to be freed;
see :func:`.ranks.rank_main` for the torch import that otherwise pins the first group of a process
forever.

This module is the client side (``run_ddp`` and what it needs); what runs inside the worker
processes (the probe, the rank task, the registry of running ranks) is :mod:`.ranks`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..common.workers import gone, worker_table
from ..errors import DistributedTrainingError
from .ranks import (
    RESTARTED,
    RankContext,
    RankError,
    active_ranks,
    address_host,
    drop_store,
    exit_worker,
    probe,
    rank_main,
    running_ranks,
)

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")

# RankContext (what fn receives) and running_ranks (asked of workers, e.g. by tests) live in .ranks
# and are re-exported so that callers need only this module.
__all__ = ["DistributedTrainingError", "RankContext", "RankFailure", "run_ddp", "running_ranks"]

_POLL_S = 0.1  # how often the client looks at the rank futures
_WORKER_POLL_S = 0.5  # how often it asks the scheduler which workers are alive
_CONFIRM_S = 1.0  # a worker missing from the scheduler's table is looked for again after this
_RESTART_TIMEOUT_S = 60.0


@dataclass
class RankFailure:
    """What happened to one rank.

    ``kind``: raised (fn raised), died (worker process gone), hung (still running long after
    another rank failed: its worker process was ended), queued (never started), comm (a collective
    or the rendezvous failed or timed out: usually a consequence of another rank's failure).
    """

    rank: int
    worker: str
    kind: str
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    at: float = field(default_factory=time.time)

    def describe(self) -> str:
        where = f"rank {self.rank} on worker {self.worker}"
        if self.kind == "died":
            return f"{where} died (its worker process exited or was killed)"
        if self.kind == "hung":
            return f"{where} was still running {self.message}; its worker process was ended (a nanny restarts it)"
        if self.kind == "queued":
            return f"{where} never started (its worker was busy with other tasks)"
        return f"{where} raised {self.error_type}: {self.message}"


def _resolve_workers(client: Client, workers: list[str] | None) -> list[str]:
    """Worker addresses in rank order (``workers`` may hold addresses or worker names)."""
    table = worker_table(client)
    if not table:
        raise DistributedTrainingError(
            "the Dask cluster has no workers: start some (or wait with client.wait_for_workers(n)) before training"
        )
    if workers is None:
        chosen = sorted(table)
    else:
        by_name = {str(info.get("name")): addr for addr, info in table.items()}
        chosen = []
        for w in workers:
            addr = w if w in table else by_name.get(str(w))
            if addr is None:
                raise DistributedTrainingError(
                    f"worker {w!r} is not connected to the scheduler; known workers: {sorted(table)}"
                )
            chosen.append(addr)
        if len(set(chosen)) != len(chosen):
            raise DistributedTrainingError(f"a worker was given twice in {workers}: one rank per worker")
        if not chosen:
            raise DistributedTrainingError("workers=[] leaves no rank to run")
    return chosen


def _submit_kw(addr: str, key: str) -> dict:
    # pinned to one worker, never re-run elsewhere: a rank restarted alone would only hang
    return {"workers": [addr], "allow_other_workers": False, "retries": 0, "pure": False, "key": key}


def _check_idle(client: Client, addrs: list[str]) -> None:
    """Refuse workers on which a rank of an earlier run still executes (a run that was given up on
    while its rank was stuck, or another user's run on a shared cluster): asked in the workers'
    event loops, which answer even while their task threads are busy."""
    ok, busy = _run_with_timeout(lambda: client.run(running_ranks, workers=addrs, on_error="return"), 60.0)
    if not ok or not isinstance(busy, dict):
        return  # no answer is not evidence of a running rank; the probe's own timeout still applies
    held = {a: r for a, r in busy.items() if isinstance(r, dict) and r}
    if held:
        desc = "; ".join(f"{a} runs rank {rank} of run {run}" for a, r in held.items() for run, rank in r.items())
        raise DistributedTrainingError(
            f"worker(s) still execute a rank of another run: {desc}. Wait for that "
            "run to end, or give this run other workers (one run at a time per worker)"
        )


def _probe_all(client: Client, addrs: list[str], timeout_s: float, run_id: str) -> list[dict]:
    # polled rather than distributed.wait(), which would use the *default* client, not ``client``
    futs = [
        client.submit(
            probe, address_host(a) if r == 0 else None, run_id, timeout_s, **_submit_kw(a, f"ddp-probe-{run_id}-{r}")
        )
        for r, a in enumerate(addrs)
    ]
    deadline = time.monotonic() + timeout_s
    while any(f.status == "pending" for f in futs) and time.monotonic() < deadline:
        time.sleep(_POLL_S / 2)
    slow = [a for a, f in zip(addrs, futs) if f.status == "pending"]
    if slow:
        client.cancel(futs, force=True)
        _release_store(client, addrs[0], run_id)
        raise DistributedTrainingError(
            f"worker(s) {slow} did not run a tiny probe task within {timeout_s:g}s: "
            "they are busy with other tasks, overloaded or gone"
        )
    infos = []
    for r, f in enumerate(futs):
        try:
            infos.append(f.result())
        except Exception as e:
            client.cancel(futs, force=True)
            _release_store(client, addrs[0], run_id)
            raise DistributedTrainingError(
                f"probe of worker {addrs[r]} (rank {r}) failed: {type(e).__name__}: {e}"
            ) from e
    client.cancel(futs)
    return infos


def _release_store(client: Client, addr: str, run_id: str) -> None:
    """Best effort: free the rendezvous port of a run whose rank 0 will never start."""
    _run_with_timeout(lambda: client.run(drop_store, run_id, workers=[addr], on_error="ignore"), 15.0)


def _choose_backend(backend: str | None, addrs: list[str], infos: list[dict]) -> str:
    cuda = [i["cuda"] for i in infos]
    if backend is None:
        if all(cuda):
            backend = "nccl"
        elif not any(cuda):
            backend = "gloo"
        else:
            with_gpu = [a for a, c in zip(addrs, cuda) if c]
            without = [a for a, c in zip(addrs, cuda) if not c]
            raise DistributedTrainingError(
                f"workers disagree on the device: {with_gpu} have CUDA but {without} do not. All ranks "
                "must use the same backend: pass workers= to pick one kind, or backend='gloo' to train on CPU"
            )
    if backend not in ("nccl", "gloo"):
        raise DistributedTrainingError(f"backend must be 'nccl', 'gloo' or None (auto), not {backend!r}")
    if backend == "nccl":
        missing = [a for a, c in zip(addrs, cuda) if not c]
        if missing:
            raise DistributedTrainingError(f"backend='nccl' needs CUDA on every worker; {missing} have none")
        seen: dict[tuple, str] = {}
        for a, i in zip(addrs, infos):
            first = (i["visible"] or "").split(",")[0] if i["visible"] else "<all GPUs visible>"
            k = (i["hostname"], first)
            if k in seen:
                raise DistributedTrainingError(
                    f"workers {seen[k]} and {a} would both use GPU {first} of host {i['hostname']} (each rank "
                    "uses cuda:0 of its CUDA_VISIBLE_DEVICES): use dask_cuda.LocalCUDACluster, one worker per GPU"
                )
            seen[k] = a
    return backend


def _check_processes(addrs: list[str], infos: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for a, i in zip(addrs, infos):
        k = (i["hostname"], i["pid"])
        if k in seen:
            raise DistributedTrainingError(
                f"workers {seen[k]} and {a} share one process (LocalCluster(processes=False)?): torch.distributed "
                "needs one process per rank"
            )
        seen[k] = a


def _run_with_timeout(f: Callable[[], Any], timeout_s: float) -> tuple[bool, Any]:
    """(finished, value) of ``f()`` run in a daemon thread, so a stuck RPC cannot hang cleanup."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = f()
        except BaseException as e:  # noqa: BLE001
            box["v"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    return (not t.is_alive()), box.get("v")


def _stop_ranks(
    client: Client, futures: list, addrs: list[str], ranks: list[int], alive: set[str], run_id: str
) -> list[int]:
    """Cancel the given ranks and end the worker processes in which one still executes.

    Returns the ranks that were still executing. Ending the process (``os._exit`` via
    ``client.run``) is quicker and surer than ``client.restart_workers``, which waits 4 s for a
    graceful close that a blocked task never allows, then up to its timeout for the worker to
    return (and, seen here, once closed the nanny instead of restarting it). The nanny restarts
    the worker; ``restart_workers`` remains the fallback if the process does not go away.
    """
    if not ranks:
        return []
    client.cancel([futures[r] for r in ranks], force=True, reason="run_ddp: another rank failed")
    targets = [addrs[r] for r in ranks if addrs[r] in alive]
    if not targets:
        return []
    ok, running = _run_with_timeout(lambda: client.run(active_ranks, run_id, workers=targets, on_error="return"), 15.0)
    if not ok or not isinstance(running, dict):
        stuck = targets
    else:
        stuck = [
            a for a in targets if a not in running or isinstance(running[a], BaseException) or running[a] is not None
        ]
    if not stuck:
        return []
    print(
        f"[ddp] rank(s) {', '.join(str(r) for r in ranks if addrs[r] in stuck)} still running after the run "
        f"failed: ending worker process(es) {', '.join(stuck)} so that nothing stays blocked in a collective "
        "(their nannies start fresh ones)",
        file=sys.stderr,
        flush=True,
    )
    _run_with_timeout(lambda: client.run(exit_worker, run_id, workers=stuck, wait=False, on_error="ignore"), 15.0)
    deadline = time.monotonic() + 15.0
    remaining = list(stuck)
    while remaining and time.monotonic() < deadline:
        time.sleep(_WORKER_POLL_S)
        ok, table = _run_with_timeout(lambda: worker_table(client, 15.0), 16.0)
        if ok and isinstance(table, dict):
            remaining = [a for a in remaining if a in table]
    if remaining:
        _run_with_timeout(
            lambda: client.restart_workers(remaining, timeout=_RESTART_TIMEOUT_S, raise_for_error=False),
            _RESTART_TIMEOUT_S + 5,
        )
    return [r for r in ranks if addrs[r] in stuck]


_KIND_ORDER = {"raised": 0, "died": 1, "hung": 2, "queued": 3, "comm": 4}


def _failure_of(rank: int, addr: str, future) -> RankFailure:
    exc = future.exception()
    if isinstance(exc, RankError):
        _, worker, etype, msg, tb, comm, at = exc.args
        if etype == RESTARTED:
            return RankFailure(rank, worker, "died", etype, msg, "", at)
        return RankFailure(rank, worker, "comm" if comm else "raised", etype, msg, tb, at)
    # KilledWorker (the scheduler gave up on a task whose workers kept dying), a cancellation, ...
    name = type(exc).__name__
    return RankFailure(rank, addr, "died" if name == "KilledWorker" else "raised", name, str(exc))


def _raise_failure(failures: list[RankFailure], world: int, backend: str, elapsed: float) -> None:
    failures = sorted(failures, key=lambda f: (_KIND_ORDER.get(f.kind, 9), f.at, f.rank))
    first = failures[0]
    lines = [f"distributed training failed ({world} ranks, {backend}, after {elapsed:.1f}s): {first.describe()}"]
    if first.traceback:
        lines.append(f"traceback of rank {first.rank}:\n{first.traceback.rstrip()}")
    rest = failures[1:]
    if rest:
        lines.append("other ranks: " + "; ".join(f.describe() for f in rest))
    raise DistributedTrainingError("\n".join(lines), failures)


class _Watch:
    """The client's view of a run's ranks: which have settled (finished, or failed and how), which
    workers the scheduler still lists, and when the first failure was seen."""

    def __init__(self, client: Client, futures: list, addrs: list[str], timeout_s: float) -> None:
        self.client, self.futures, self.addrs, self.timeout_s = client, futures, addrs, timeout_s
        self.world = len(addrs)
        self.settled: dict[int, RankFailure | None] = {}  # rank -> None (finished) or its failure
        self.alive = set(addrs)
        self.first_failure_at: float | None = None
        self._next_worker_check = 0.0
        self._last_answer = time.monotonic()

    def _read_futures(self) -> None:
        for r, f in enumerate(self.futures):
            if r in self.settled:
                continue
            if f.status == "finished":
                self.settled[r] = None
            elif f.status in ("error", "cancelled", "lost"):
                self.settled[r] = _failure_of(r, self.addrs[r], f)

    def _ask_scheduler(self, now: float) -> None:
        """Ranks whose workers the scheduler no longer lists (twice, a second apart) died."""
        self._next_worker_check = now + _WORKER_POLL_S
        waiting = [a for r, a in enumerate(self.addrs) if r not in self.settled and self.futures[r].status == "pending"]
        try:
            lost = gone(self.client, waiting, _CONFIRM_S) if waiting else set()
            self._last_answer = now
        except (OSError, TimeoutError) as e:
            # a scheduler slow to answer is not a dead worker; one silent for the whole
            # timeout has lost track of the ranks
            if now - self._last_answer > self.timeout_s:
                raise OSError(f"the scheduler did not answer for {now - self._last_answer:.0f}s: {e}") from e
            lost = set()
        self.alive -= lost
        for r, a in enumerate(self.addrs):
            if r not in self.settled and a in lost and self.futures[r].status == "pending":
                self.settled[r] = RankFailure(r, a, "died")

    def poll(self) -> bool:
        """Look once; whether watching is over (every rank settled, or ``timeout_s`` since a failure)."""
        self._read_futures()
        now = time.monotonic()
        if now >= self._next_worker_check and len(self.settled) < self.world:
            self._ask_scheduler(now)
        if self.first_failure_at is None and any(x is not None for x in self.settled.values()):
            self.first_failure_at = now
        if len(self.settled) == self.world:
            return True
        return self.first_failure_at is not None and now - self.first_failure_at > self.timeout_s

    def pending(self) -> list[int]:
        return [r for r in range(self.world) if r not in self.settled]


def _watch(watch: _Watch, run_id: str) -> None:
    """Poll until every rank settled or the survivors' grace ran out; on Ctrl-C or a lost scheduler
    connection, stop the ranks still running (best effort) and raise."""
    try:
        while not watch.poll():
            time.sleep(_POLL_S)
    except BaseException as e:
        with contextlib.suppress(Exception):
            _stop_ranks(watch.client, watch.futures, watch.addrs, watch.pending(), watch.alive, run_id)
        if isinstance(e, Exception):
            raise DistributedTrainingError(
                f"lost track of the {watch.world} ranks ({type(e).__name__}: {e}); the ranks still running were stopped"
            ) from e
        raise


def _fail(watch: _Watch, run_id: str, backend: str, started: float) -> None:
    """Stop the ranks still running (ending stuck worker processes), name each rank's fate and raise."""
    client, addrs = watch.client, watch.addrs
    failures = [x for x in watch.settled.values() if x is not None]
    pending = watch.pending()
    grace = time.monotonic() - (watch.first_failure_at or time.monotonic())
    killed = _stop_ranks(client, watch.futures, addrs, pending, watch.alive, run_id)
    if addrs[0] in watch.alive and addrs[0] not in {addrs[r] for r in killed}:
        _release_store(client, addrs[0], run_id)  # rank 0 may never have started
    for r in pending:
        if r in killed:
            failures.append(RankFailure(r, addrs[r], "hung", message=f"{grace:.0f}s after the first failure"))
        elif addrs[r] not in watch.alive:
            failures.append(RankFailure(r, addrs[r], "died"))
        else:
            failures.append(RankFailure(r, addrs[r], "queued"))
    client.cancel(watch.futures)
    _raise_failure(failures, watch.world, backend, time.monotonic() - started)


def _prepare_run(
    client: Client, workers: list[str] | None, backend: str | None, timeout_s: float, run_id: str
) -> tuple[list[str], list[dict], str, str]:
    """The ranks' workers (checked idle and probed), their probe answers, the backend and the
    rendezvous address (rank 0's store)."""
    addrs = _resolve_workers(client, workers)
    _check_idle(client, addrs)
    infos = _probe_all(client, addrs, timeout_s, run_id)
    try:
        _check_processes(addrs, infos)
        backend = _choose_backend(backend, addrs, infos)
    except DistributedTrainingError:
        _release_store(client, addrs[0], run_id)
        raise
    host = address_host(addrs[0])
    init_method = f"tcp://[{host}]:{infos[0]['port']}" if ":" in host else f"tcp://{host}:{infos[0]['port']}"
    return addrs, infos, backend, init_method


def run_ddp(
    client: Client,
    fn: Callable[..., T],
    *args: Any,
    workers: list[str] | None = None,
    backend: str | None = None,
    timeout_s: float = 120.0,
    **kwargs: Any,
) -> T:
    """Run ``fn(ctx, *args, **kwargs)`` on every chosen worker as one rank each; return rank 0's result.

    ``workers`` (addresses or names) default to all workers of ``client``, sorted, rank 0 first.
    ``backend`` defaults to nccl when every worker has CUDA and gloo when none has. ``timeout_s``
    bounds the rendezvous and each collective, and how long the surviving ranks get to stop after
    one failed. Tensors in rank 0's result come back on CPU; other ranks' results are dropped.
    On any failure raises :class:`DistributedTrainingError` naming the rank and worker at fault.
    One run at a time per worker: a process has only one default process group.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    t0 = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    addrs, infos, backend, init_method = _prepare_run(client, workers, backend, timeout_s, run_id)
    world = len(addrs)
    futures = [
        client.submit(
            rank_main,
            fn,
            r,
            world,
            init_method,
            backend,
            timeout_s,
            a,
            infos[r]["pid"],
            run_id,
            args,
            kwargs,
            **_submit_kw(a, f"ddp-rank-{run_id}-{r}"),
        )
        for r, a in enumerate(addrs)
    ]
    watch = _Watch(client, futures, addrs, timeout_s)
    _watch(watch, run_id)
    if not any(x is not None for x in watch.settled.values()):
        try:
            return futures[0].result()
        finally:
            client.cancel(futures)
    _fail(watch, run_id, backend, t0)
    raise AssertionError("unreachable")
