"""The worker side of :mod:`landslide_dask.train.ddp`: what runs inside a Dask worker process.

Why a module of its own: everything here is shipped to the workers (by ``client.submit`` or
``client.run``) and must not need the client's machinery, while :mod:`.ddp` only drives it. Here:

* :func:`probe` reports a worker's devices and process and, on rank 0's worker, binds the run's
  rendezvous store to port 0 and holds it open (in ``_STORES``) until rank 0 takes it over, so no
  port is ever probed free, closed and bound again later;
* :func:`rank_main` is the task of each rank: join the group, run ``fn``, always leave the group
  (``finally``), and send any failure back as text (:class:`RankError`), so it always unpickles;
* ``_ACTIVE`` records the ranks executing in this process, which :func:`running_ranks`,
  :func:`active_ranks` and :func:`exit_worker` let the client ask about (in the worker's event
  loop, which answers while the task threads are busy) without relying on Dask's task states.

The fast failures of the other ranks need the failed rank's gloo sockets to close, i.e. its process
group to be freed; see :func:`rank_main` for the torch import that otherwise pins the first group of
a process forever.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "RESTARTED",
    "RankContext",
    "RankError",
    "address_host",
    "probe",
    "drop_store",
    "running_ranks",
    "active_ranks",
    "rank_main",
    "exit_worker",
]

# Error type of a rank re-run by Dask in a new worker process: rank_main raises it, and the client
# reports that rank as died (its first process is gone), not as raised.
RESTARTED = "WorkerRestarted"

# Ranks running in this process, by run id: lets the client ask a worker whether a rank it gave up
# on is still executing (and so must be killed) without relying on Dask's internal task states.
_ACTIVE: dict[str, int] = {}
_ACTIVE_LOCK = threading.Lock()
# Rendezvous stores bound by the probe on rank 0's worker, by run id, until rank 0 takes them over.
_STORES: dict[str, Any] = {}


class RankError(Exception):
    """Raised on a worker for a failing rank; carries text only, so it always unpickles (the client
    turns it into a ``RankFailure``)."""

    def __init__(self, rank: int, worker: str, error_type: str, message: str, tb: str, comm: bool, at: float):
        super().__init__(rank, worker, error_type, message, tb, comm, at)

    def __str__(self) -> str:
        rank, worker, error_type, message = self.args[:4]
        return f"rank {rank} on {worker}: {error_type}: {message}"


@dataclass
class RankContext:
    """Handed to the rank function: who am I, on which device, plus small collective helpers."""

    rank: int
    world_size: int
    device: torch.device
    backend: str
    worker: str
    init_method: str = ""  # tcp://host:port of this run's rendezvous (diagnostics)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl" and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks; returns a new tensor on ``t``'s device (``t`` is untouched)."""
        import torch.distributed as dist

        x = t.detach().to(self.device, copy=True)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x.to(t.device)

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (integers are promoted to float64 so the mean is exact)."""
        x = t if t.is_floating_point() or t.is_complex() else t.to(torch.float64)
        return self.all_reduce_sum(x) / self.world_size

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of ``t`` (same shape on all ranks), indexed by rank, on ``t``'s device."""
        import torch.distributed as dist

        x = t.detach().to(self.device).contiguous()
        out = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(out, x)
        return [o.to(t.device) for o in out]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """A picklable object from rank ``src`` to all ranks (e.g. a decision taken on rank 0)."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self.device if self.backend == "nccl" else None)
        return box[0]


def address_host(address: str) -> str:
    """The host part of a Dask address; in-process (inproc://) workers live on 127.0.0.1.

    Both sides need it: the client binds rank 0's store and names the rendezvous on that host, and
    a gloo rank picks the network interface that holds its own worker's host."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, loc = parse_address(address)
    if scheme == "inproc":
        return "127.0.0.1"
    host, _ = parse_host_port(loc)
    return host


def probe(bind_host: str | None, run_id: str = "", timeout_s: float = 120.0) -> dict:
    """Runs on each worker before the ranks: its devices, process, and (rank 0) the run's
    rendezvous store, bound to a free port that stays bound until rank 0 uses it."""
    info = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "cuda": bool(torch.cuda.is_available()),
        "cuda_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "port": None,
    }
    if bind_host is not None:
        import torch.distributed as dist

        store = dist.TCPStore(bind_host, 0, None, True, datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
        with _ACTIVE_LOCK:
            _STORES[run_id] = store
        info["port"] = store.port
    return info


def drop_store(run_id: str) -> bool:
    """Close a run's rendezvous store if rank 0 never took it (the run failed before it started)."""
    with _ACTIVE_LOCK:
        return _STORES.pop(run_id, None) is not None


def running_ranks() -> dict[str, int]:
    """run id -> rank of every rank executing in this worker process now (run with client.run)."""
    with _ACTIVE_LOCK:
        return dict(_ACTIVE)


def _interface_of(host: str) -> str | None:
    """The network interface that holds ``host``'s IP, so gloo talks where Dask talks.

    Without it gloo binds to whatever the machine's hostname resolves to, which on many hosts is
    an external address even when the cluster was started on 127.0.0.1.
    """
    try:
        import psutil

        ips = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address.split("%")[0] in ips for a in addrs):
                return name
    except Exception:  # best effort: gloo's own choice still works on most machines
        return None
    return None


def _is_comm_error(exc: BaseException) -> bool:
    """True for errors that are a consequence of another rank failing (collective broke/timed out)."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(
        s in text
        for s in (
            "gloo",
            "NCCL",
            "Connection closed by peer",
            "Connection reset by peer",
            "Timed out waiting",
            "Socket Timeout",
            "timed out",
        )
    )


def _to_cpu(obj: Any) -> Any:
    """Results travel to the client, which may have no GPU: move tensors to CPU on the way out."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        try:  # keep OrderedDict (state dicts) and its _metadata, which load_state_dict reads
            out = type(obj)((k, _to_cpu(v)) for k, v in obj.items())
        except TypeError:
            out = {k: _to_cpu(v) for k, v in obj.items()}
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def active_ranks(run_id: str) -> int | None:
    """Which rank of ``run_id`` is still executing in this worker process (None if none): asked by
    the client (``client.run``) to tell a rank still running after a failure from one that ended."""
    with _ACTIVE_LOCK:
        return _ACTIVE.get(run_id)


def rank_main(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    init_method: str,
    backend: str,
    timeout_s: float,
    worker: str,
    pid: int,
    run_id: str,
    args: tuple,
    kwargs: dict,
) -> Any:
    """The task each worker runs: join the group, run ``fn``, always leave the group (the client
    submits it once per rank)."""
    import torch.distributed as dist

    # torch.distributed.nn.functional binds `group=group.WORLD` as a default argument when it is
    # first imported, which DDP does lazily on its first construction: imported while a group
    # exists, it keeps that group (and its gloo sockets) alive forever, and after a failure the
    # other ranks then wait for their timeout instead of failing at once. Import it group-less.
    try:
        import torch.distributed.nn.functional  # noqa: F401
    except Exception:  # pragma: no cover - optional part of torch
        pass
    if os.getpid() != pid:
        # the probed process died and Dask re-ran this rank in its replacement (a worker that
        # restarts on the same address): joining now could only hang until the timeout
        raise RankError(
            rank,
            worker,
            RESTARTED,
            f"worker process {pid} was replaced by {os.getpid()}; rank {rank} is not re-run alone",
            "",
            True,
            time.time(),
        )
    with _ACTIVE_LOCK:
        _ACTIVE[run_id] = rank
        store = _STORES.pop(run_id, None) if rank == 0 else None
    env_set: list[str] = []
    failure: tuple | None = None
    result: Any = None
    try:
        if dist.is_initialized():
            raise RuntimeError(
                "this worker process already has a torch.distributed process group "
                "(another run_ddp still running on it, or fn left one behind)"
            )
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
            iface = _interface_of(address_host(worker))
            if iface:
                os.environ["GLOO_SOCKET_IFNAME"] = iface
                env_set.append("GLOO_SOCKET_IFNAME")
        if backend == "nccl":
            # dask-cuda gives each worker its own CUDA_VISIBLE_DEVICES, so its GPU is cuda:0
            device = torch.device("cuda", 0)
            torch.cuda.set_device(device)
            extra = {"device_id": device}
        else:
            device = torch.device("cpu")
            extra = {}
        timeout = datetime.timedelta(seconds=timeout_s)
        if rank == 0 and store is None:
            raise RuntimeError(f"the rendezvous store of run {run_id} is not in this worker process")
        if store is None:
            host, port = init_method.removeprefix("tcp://").rsplit(":", 1)
            store = dist.TCPStore(host.strip("[]"), int(port), world_size, False, timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout, **extra)
        ctx = RankContext(
            rank=rank, world_size=world_size, device=device, backend=backend, worker=worker, init_method=init_method
        )
        result = fn(ctx, *args, **kwargs)
        result = _to_cpu(result) if rank == 0 else None
    except BaseException as e:  # noqa: BLE001 - every failure must reach the client as text
        failure = (type(e).__name__, str(e), traceback.format_exc(), _is_comm_error(e), time.time())
        # Keep nothing of fn's frames: they hold the DDP model, which holds the process group,
        # whose sockets must close now so that the other ranks fail at once instead of at timeout.
        e.__traceback__ = None
    finally:
        _leave_group(dist, failure is not None)
        store = None  # noqa: F841 - rank 0's store closes its port once the group is gone
        for k in env_set:
            os.environ.pop(k, None)
        with _ACTIVE_LOCK:
            _ACTIVE.pop(run_id, None)
    if failure is not None:
        raise RankError(rank, worker, *failure)
    return result


def _leave_group(dist, failed: bool) -> None:
    """Destroy the default group; after a failure also collect the objects (a DDP model) that
    still reference it, so gloo closes its connections and the peers' collectives fail now."""
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        if failed:
            gc.collect()


async def exit_worker(run_id: str) -> None:
    """Runs in a worker's event loop (a coroutine, as client.run(wait=False) requires): end this
    process now (its nanny, if any, starts a new one).

    A rank blocked in user code or a collective cannot be interrupted from another thread, and a
    graceful close waits for it; ``os._exit`` is what frees the worker and its GPU."""
    if active_ranks(run_id) is None:
        return
    os._exit(70)  # the client has said why, in one line
