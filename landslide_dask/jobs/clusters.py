"""Dask clusters from small YAML definitions: local, one GPU node, SLURM, Kubernetes.

A definition (see ``cluster/*.yaml``; each file documents itself)::

    kind: local | gpu-node | slurm | kubernetes
    workers: 2                      # worker processes to start and wait for ("auto" on gpu-node)
    adapt: {minimum: 0, maximum: 8} # optional, slurm/kubernetes/local: scale with the load instead
    wait_for: 1                     # optional: workers to wait for before work starts (default: workers)
    timeout: 600                    # optional: seconds to wait for them (default per kind)
    options: {...}                  # keyword arguments of the cluster class, checked by name and type

:func:`load_cluster_def` validates a file (:mod:`landslide_dask.jobs.cluster_def`: one
:class:`~landslide_dask.errors.ClusterSpecError` names the file and lists every problem, each with its field
and what is expected); :func:`start_cluster` is a context
manager that starts the cluster, scales it, waits for the workers, prints the dashboard link,
yields a :class:`distributed.Client` and always tears the cluster down, also on an exception or
Ctrl-C (and SIGTERM, e.g. ``scancel`` of a driver job, while it runs in the main thread). With
``scheduler="tcp://..."`` it only connects to a running cluster and never tears it down.

One rank per worker process: :func:`landslide_dask.train.ddp.run_ddp` runs one torch.distributed rank in
each Dask worker process, and a process holds one process group, so every worker must be its own
process (``processes: false`` is refused for ``local``). On SLURM keep ``processes: 1`` per job
(one worker process per job, all the job's cores as its threads) -- with several processes per
GPU job every process would see the job's same GPUs and ranks would collide on ``cuda:0``, which
is refused when a directive asks for GPUs. On a GPU node ``LocalCUDACluster`` already starts one
worker process per GPU, each with its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..common.logs import quiet_distributed
from ..common.workers import n_workers, worker_names
from ..errors import ClusterSpecError, ClusterStartError, MissingDependencyError
from .cluster_def import DEFAULT_TIMEOUT_S, KINDS, ClusterDef, load_cluster_def

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KINDS",
    "ClusterDef",
    "ClusterSpecError",
    "ClusterStartError",
    "MissingDependencyError",
    "load_cluster_def",
    "start_cluster",
    "local_cluster",
    "WORKER_CONFIG",
]

_EXTRA = {"gpu-node": ("dask_cuda", "dask-cuda", "gpu"), "slurm": ("dask_jobqueue", "dask-jobqueue", "slurm"),
          "kubernetes": ("dask_kubernetes", "dask-kubernetes", "k8s")}


def _import(kind: str, source: str):
    """The cluster class of ``kind``, or a MissingDependencyError naming the pip extra."""
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster
    module, package, extra = _EXTRA[kind]
    try:
        if kind == "gpu-node":
            from dask_cuda import LocalCUDACluster as cls
        elif kind == "slurm":
            from dask_jobqueue import SLURMCluster as cls
        else:
            from dask_kubernetes.operator import KubeCluster as cls
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == module
        what = f"{package} is not installed" if missing else f"{module} could not be imported ({type(e).__name__}: {e})"
        extra_hint = ""
        if kind == "gpu-node" and not missing:
            extra_hint = (" dask-cuda imports only where the CUDA libraries and a GPU driver are present; on a "
                          "machine without a GPU use cluster/local.yaml.")
        raise MissingDependencyError(
            f"{what}; kind {kind} (in {source}) needs it: pip install \"landslide-dask[{extra}]\"."
            f"{extra_hint}") from e
    return cls


def _kwargs(defn: ClusterDef) -> dict[str, Any]:
    o = dict(defn.options)
    if defn.kind == "local":
        o.setdefault("processes", True)
        o.setdefault("threads_per_worker", 1)
        o.setdefault("host", "127.0.0.1")
        o.setdefault("dashboard_address", "127.0.0.1:8787")
        o["n_workers"] = 0 if defn.adapt else defn.workers
    elif defn.kind == "gpu-node":
        o["n_workers"] = defn.workers
    elif defn.kind == "slurm":
        o["n_workers"] = 0          # scaled after construction, so submission errors can be caught
    elif defn.kind == "kubernetes":
        o["n_workers"] = 0 if defn.adapt else defn.workers
        if o.get("custom_cluster_spec"):
            o["custom_cluster_spec"] = str(o["custom_cluster_spec"])
        if o.get("create_mode"):
            from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode

            o["create_mode"] = getattr(CreateMode, o["create_mode"])
    return o


def _slurm_job_cls(record: dict):
    """SLURMJob that records a failed ``sbatch`` on the job (dask-jobqueue only logs it, and leaves the
    job in a state its ``close`` asserts on); ``start_cluster`` turns it into one clear error."""
    from dask_jobqueue.slurm import SLURMJob
    from distributed.core import Status

    class RecordingSLURMJob(SLURMJob):
        async def start(self):
            try:
                await super().start()
            except Exception as e:
                # text only: an exception (its traceback) would keep this job object alive
                record.setdefault("errors", []).append((str(self.name), f"{e}"))
                if record.get("starting"):
                    # reported by start_cluster, which then closes the cluster: no log noise
                    self.status = Status.running
                    return
                self.status = Status.failed
                raise

        async def close(self):
            await super().close()
            self.status = Status.closed   # SpecCluster.close asserts on it; SLURMJob leaves it running

    return RecordingSLURMJob


# distributed starts every worker process with MALLOC_TRIM_THRESHOLD_=65536. Setting it turns off
# glibc's dynamic mmap threshold, so every tensor above 128 KiB is mmapped and unmapped again each
# time it is allocated: a training step of the demo model in a worker page-faulted 40x as often
# (1.5 M vs 0.036 M minor faults per 10 steps) and ran 1.4x slower (1161 vs 825 ms per step, medians
# of two runs each; `python benchmarks/worker_env.py`). Workers that train and predict with torch do better on
# glibc's defaults; None unsets the variable (distributed's own way to drop a pre-spawn variable).
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def use_worker_config() -> None:
    """Apply :data:`WORKER_CONFIG` for every nanny this process starts from now on (a nanny reads
    it when created, including those an adaptive cluster adds later, so it is set, not scoped)."""
    import dask

    dask.config.set(WORKER_CONFIG)
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") == "65536":
        # a cluster started earlier in this process with distributed's defaults left its
        # pre-spawn variables in os.environ, where new worker processes would inherit them
        os.environ.pop("MALLOC_TRIM_THRESHOLD_")


# How long a worker gets to stop by itself when a local cluster closes. distributed's nannies give
# 4 s, then kill: on a loaded machine a worker that has imported torch often needs longer, and the
# demo ended with "Worker process still alive after 4.0 seconds, killing" twice.
CLOSE_TIMEOUT_S = 30.0


def local_cluster(n_workers: int, threads_per_worker: int = 1, **kw: Any):
    """A ``LocalCluster`` of single-purpose worker processes on loopback, with :data:`WORKER_CONFIG`,
    whose workers are closed with :data:`CLOSE_TIMEOUT_S` and never closed for being lost while
    their nanny restarts them: the one way this package (demo, benchmarks, tests) starts a cluster
    on this machine."""
    from distributed import LocalCluster
    from distributed.deploy.cluster import Cluster

    class PatientLocalCluster(LocalCluster):
        def close(self, timeout: float | None = None):
            close_workers_patiently(self)
            return super().close(timeout)

        def _update_worker_status(self, op, msg):
            # SpecCluster answers a worker's removal by closing, ``lost-worker-timeout`` later, the
            # nanny of any worker *name* then missing from the scheduler: a nanny restarting that
            # name at that moment (another death, or a slow restart) loses a live worker for good
            # (seen in the DDP fault tests). The nannies here restart their workers themselves, so
            # a removal only updates the cluster's table (distributed's Cluster base does that).
            if op == "remove":
                return Cluster._update_worker_status(self, op, msg)
            return super()._update_worker_status(op, msg)

    use_worker_config()
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("dashboard_address", None)
    return PatientLocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, **kw)


def close_workers_patiently(cluster) -> None:
    """Close a local cluster's worker processes one by one with :data:`CLOSE_TIMEOUT_S` each, before
    the cluster's own close (which allows 4 s); anything else is left to that close."""
    from distributed import LocalCluster

    if not isinstance(cluster, LocalCluster) or cluster.asynchronous or cluster.status.name != "running":
        return
    for nanny in list(cluster.workers.values()):
        with contextlib.suppress(Exception):
            cluster.sync(nanny.close, timeout=CLOSE_TIMEOUT_S, reason="cluster-close")


def _make_cluster(defn: ClusterDef, record: dict):
    cls = _import(defn.kind, defn.source)
    kw = _kwargs(defn)
    if defn.kind in ("local", "gpu-node"):
        use_worker_config()
    if defn.kind == "slurm":
        missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
        if missing:
            raise ClusterStartError(
                f"cannot start the SLURM cluster of {defn.source}: {', '.join(missing)} not found on PATH. "
                "Run this on a SLURM login node (or load the site's slurm module, e.g. `module load slurm`), "
                "and check that `sinfo` lists your partition.")
        kw["job_cls"] = _slurm_job_cls(record)
    try:
        return cls(**kw)
    except Exception as e:
        raise ClusterStartError(f"cannot start the {defn.kind} cluster of {defn.source}: {type(e).__name__}: {e}"
                                f"{_hints(defn)}") from e


def _hints(defn: ClusterDef) -> str:
    if defn.kind == "slurm":
        q = defn.options.get("queue")
        return ("\nCheck: `sinfo` (is partition " + (repr(q) if q else "<the default>") + " there and up?), "
                "`squeue -u $USER` (are the jobs pending, and why: the REASON column), the account and the "
                "limits of the partition (cores, memory, walltime), and the jobs' log files"
                + (f" in {defn.options['log_directory']}" if defn.options.get("log_directory") else
                   " (slurm-JOBID.out in the submission directory)") + ".")
    if defn.kind == "kubernetes":
        return ("\nCheck: `kubectl get daskclusters,pods -n NAMESPACE`, `kubectl describe pod` of a worker (image "
                "pull errors, unschedulable resources or GPUs), that the Dask operator is installed "
                "(helm install dask-kubernetes-operator) and that your kubeconfig points at the cluster.")
    if defn.kind == "gpu-node":
        return ("\nCheck: `nvidia-smi` lists the GPUs of CUDA_VISIBLE_DEVICES, and that dask-cuda matches your "
                "dask version.")
    return "\nCheck: free memory and ports on this machine (and that no firewall blocks 127.0.0.1)."


_SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT", "REVOKED"}


def _slurm_jobs(cluster) -> dict[str, str]:
    """worker spec name -> SLURM job id, for the jobs that were submitted."""
    return {str(name): str(job.job_id) for name, job in list(cluster.workers.items())
            if getattr(job, "job_id", None)}


def _squeue(ids: list[str]) -> dict[str, str]:
    """job id -> 'STATE (reason)' for the given jobs, as squeue shows them (missing = purged)."""
    if not ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T %r"],
                             capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            states[parts[0]] = f"{parts[1]} ({parts[2]})" if len(parts) > 2 and parts[2] != "None" else parts[1]
    return states


def _slurm_log_files(defn: ClusterDef, job_id: str) -> list[Path]:
    d = defn.options.get("log_directory")
    name = defn.options.get("job_name") or "dask-worker"
    if d:
        return [Path(d) / f"{name}-{job_id}.err", Path(d) / f"{name}-{job_id}.out"]
    return [Path.cwd() / f"slurm-{job_id}.out"]


def _tail(p: Path, n: int = 8) -> str:
    try:
        lines = p.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n      ".join(lines[-n:])


def _slurm_problem(defn: ClusterDef, cluster, client: Client, record: dict, final: bool) -> str | None:
    """Why the SLURM workers are not (all) there, or None while waiting is still reasonable."""
    errors = record.get("errors") or []
    if errors:
        name, e = errors[0]
        text = str(e)
        if "stderr:" in text:
            text = text.split("stderr:", 1)[1].strip()
        return f"sbatch refused the job of worker {name}: {text}"
    jobs = _slurm_jobs(cluster)
    if not jobs:
        return "no SLURM job was submitted" if final else None
    connected = worker_names(client)
    waiting = {n: j for n, j in jobs.items() if not any(c == n or c.startswith(f"{n}-") for c in connected)}
    if not waiting:
        return None
    # ask squeue after 1, 2, 4, 8, then every 10 s (busy sites frown on tight squeue loops)
    now = time.monotonic()
    if not final and now < record.get("squeue_at", 0.0):
        return None
    step = record.get("squeue_step", 1.0)
    record["squeue_at"], record["squeue_step"] = now + step, min(step * 2, 10.0)
    states = _squeue(list(waiting.values()))
    ended = {n: j for n, j in waiting.items() if j not in states or states[j].split()[0] in _SLURM_ENDED}
    if not ended and not final:
        return None
    lines = []
    if ended:
        lines.append("SLURM job(s) ended before their Dask worker connected to the scheduler:")
    else:
        lines.append(f"SLURM worker job(s) did not connect within {defn.timeout_s:g}s:")
    for n, j in (ended or waiting).items():
        lines.append(f"  job {j} (worker {n}): {states.get(j, 'gone from squeue')}")
        for p in _slurm_log_files(defn, j):
            t = _tail(p)
            lines.append(f"    log {p}" + (f":\n      {t}" if t else " (empty or missing)"))
    return "\n".join(lines)


def _wait_slurm_gone(ids: list[str], timeout: float = 30.0) -> None:
    """After close: wait until the cancelled jobs have left the queue (scancel is asynchronous)."""
    deadline = time.monotonic() + timeout
    left = ids
    while time.monotonic() < deadline:
        states = _squeue(left)
        left = [j for j in left if j in states and states[j].split()[0] not in _SLURM_ENDED]
        if not left:
            return
        time.sleep(0.25)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["scancel", *left], capture_output=True, check=False, timeout=20)
    print(f"[dask] warning: SLURM job(s) {', '.join(left)} still in the queue {timeout:g}s after the cluster "
          f"closed; scancel sent again (check with: squeue -j {','.join(left)})", file=sys.stderr)


def _wait(defn: ClusterDef, cluster, client: Client, n: int, record: dict, echo) -> None:
    """Wait for ``n`` workers, failing early when the cluster says they will never come."""
    t0 = time.monotonic()
    deadline = t0 + defn.timeout_s
    next_note = t0 + 15
    while True:
        have = n_workers(client)
        if have >= n:
            return
        now = time.monotonic()
        final = now >= deadline
        problem = _slurm_problem(defn, cluster, client, record, final) if defn.kind == "slurm" else None
        if problem is None and final:
            problem = f"only {have} of {n} workers arrived within {defn.timeout_s:g}s"
        if problem is not None:
            raise ClusterStartError(f"the {defn.kind} cluster of {defn.source} did not start: {problem}"
                                    f"{_hints(defn)}")
        if now >= next_note and echo:
            echo(f"[dask] waiting for workers: {have} of {n} after {now - t0:.0f}s "
                 f"(timeout {defn.timeout_s:g}s)")
            next_note = now + 30
        time.sleep(0.25)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (scancel of a driver job, kill, a container stop) raises KeyboardInterrupt, so the
    ``finally`` that tears the cluster down runs. Only in the main thread, only over the default handler."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _close(client, cluster, timeout: float = 60.0) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
    if cluster is not None:
        close_workers_patiently(cluster)
        try:
            cluster.close(timeout=timeout)
        except Exception as e:  # noqa: BLE001 - teardown must not hide the original error
            print(f"[dask] warning: closing the cluster failed ({type(e).__name__}: {e})", file=sys.stderr)


@contextlib.contextmanager
def start_cluster(defn: ClusterDef | str | os.PathLike | None = None, *, scheduler: str | None = None,
                  overrides: Mapping[str, Any] | None = None, timeout: float | None = None,
                  echo: Callable[[str], None] | None = print) -> Iterator[Client]:
    """Start the cluster of ``defn`` (a :class:`ClusterDef` or a YAML path), yield a connected Client.

    ``overrides`` are deep-merged into the definition first (e.g. ``{"workers": 2, "options":
    {"cores": 1}}``); ``timeout`` replaces the definition's wait for workers. On exit -- normal, an
    exception, Ctrl-C -- the client and the cluster are closed (SLURM jobs cancelled, pods deleted,
    local processes ended). With ``scheduler`` (``tcp://host:port``) it connects to that running
    cluster instead, waits for one worker, and on exit only disconnects: the cluster is someone else's.
    ``echo`` receives the progress lines (the dashboard link); None silences them.
    """
    from distributed import Client

    if scheduler is not None:
        wait_s = timeout or 60.0
        try:
            client = Client(scheduler, timeout=wait_s)
        except Exception as e:
            raise ClusterStartError(f"cannot connect to the Dask scheduler at {scheduler}: {type(e).__name__}: {e}. "
                                    "Check the address (tcp://HOST:PORT, as the scheduler printed it) and that "
                                    "this machine can reach it") from e
        try:
            try:
                client.wait_for_workers(1, timeout=wait_s)
            except TimeoutError:
                raise ClusterStartError(f"the Dask scheduler at {scheduler} has no workers after {wait_s:g}s: "
                                        "start some (dask worker " + scheduler + ")") from None
            quiet_distributed()  # this process only: the workers are someone else's
            if echo:
                echo(f"[dask] connected to {scheduler}: {n_workers(client)} workers, dashboard {client.dashboard_link}")
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        return

    if defn is None:
        raise ValueError("start_cluster needs a cluster definition (a ClusterDef or a YAML path) or scheduler=")
    if not isinstance(defn, ClusterDef):
        defn = load_cluster_def(defn)
    defn = defn.with_overrides(overrides)
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        defn = defn.model_copy(update={"timeout_s": float(timeout)})

    record: dict[str, Any] = {"starting": True}
    cluster = client = None
    t0 = time.monotonic()
    with _sigterm_as_interrupt():
        try:
            cluster = _make_cluster(defn, record)
            if defn.adapt is not None:
                cluster.adapt(minimum=defn.adapt[0], maximum=defn.adapt[1])
            elif defn.kind == "slurm":
                cluster.scale(defn.workers)
            client = Client(cluster)
            if defn.wait_for is not None:
                n = defn.wait_for
            elif defn.adapt is not None:
                n = defn.adapt[0]
            elif defn.workers is None:   # gpu-node auto: one per GPU that LocalCUDACluster found
                n = len(cluster.worker_spec)
            else:
                n = defn.workers
            quiet_distributed(client)
            _wait(defn, cluster, client, n, record, echo)
            record["starting"] = False
            if echo:
                echo(f"[dask] {defn.kind} cluster {defn.name}: {n_workers(client)} workers after "
                     f"{time.monotonic() - t0:.1f}s, dashboard {client.dashboard_link}")
            yield client
        finally:
            record["starting"] = False
            jobs = list(_slurm_jobs(cluster).values()) if defn.kind == "slurm" and cluster is not None else []
            _close(client, cluster)
            if jobs:
                _wait_slurm_gone(jobs)
            if echo and cluster is not None:
                echo(f"[dask] {defn.kind} cluster {defn.name} shut down")
