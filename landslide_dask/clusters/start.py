"""Start Dask clusters from small YAML definitions (local, one GPU node, SLURM, Kubernetes), or join one.

A definition (the shipped examples, ``landslide-dask cluster-example NAME``, document themselves)::

    kind: local | gpu-node | slurm | kubernetes
    workers: 2                      # worker processes to start and wait for ("auto" on gpu-node)
    adapt: {minimum: 0, maximum: 8} # optional, slurm/kubernetes/local: scale with the load instead
    wait_for: 1                     # optional: workers to wait for before work starts (default: workers)
    timeout: 600                    # optional: seconds to wait for them (default per kind)
    tls: true                       # optional: false = plain TCP, no authentication (default: TLS)
    options: {...}                  # keyword arguments of the cluster class, checked by name and type

:func:`~.definitions.load_cluster_def` validates a file (one
:class:`~landslide_dask.errors.ClusterSpecError` names the file and lists every problem, each with
its field and what is expected); :func:`start_cluster` is a context manager that starts the
cluster, scales it, waits for the workers, prints the dashboard link, yields a
:class:`distributed.Client` and always tears the cluster down, also on an exception or Ctrl-C (and
SIGTERM, e.g. ``scancel`` of a driver job, while it runs in the main thread). With
``scheduler="tls://..."`` (or ``tcp://``) it only connects to a running cluster and never tears it
down. :func:`local_cluster` is the one way the package's own code (demo, benchmarks, tests) starts a
cluster on this machine.

Every cluster started here speaks TLS with a certificate made for the run (:mod:`.security`) unless
the definition says ``tls: false``, binds its dashboard to 127.0.0.1 unless the definition names
another address, and has its workers import the task modules before their first task
(:mod:`.preload`).

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..common.logs import quiet_distributed
from ..common.workers import n_workers
from ..errors import ClusterStartError, MissingDependencyError
from .definitions import ClusterDef, load_cluster_def
from .preload import PRELOAD, TaskImports
from .security import TLS, CredentialFiles, needs_credentials, run_security, write_credentials
from .slurm import missing_commands, slurm_job_cls, slurm_jobs, slurm_problem, wait_slurm_gone

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security

__all__ = [
    "CLOSE_TIMEOUT_S",
    "WORKER_CONFIG",
    "close_workers_patiently",
    "local_cluster",
    "start_cluster",
    "use_worker_config",
]

Echo = Callable[[str], None] | None
#: Where a dashboard listens unless a definition names another address: this machine only.
DASHBOARD = "127.0.0.1:8787"

_EXTRA = {
    "gpu-node": ("dask_cuda", "dask-cuda", "gpu"),
    "slurm": ("dask_jobqueue", "dask-jobqueue", "slurm"),
    "kubernetes": ("dask_kubernetes", "dask-kubernetes", "k8s"),
}


def _import(kind: str, source: str) -> type:
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
            extra_hint = (
                " dask-cuda imports only where the CUDA libraries and a GPU driver are present; on a "
                "machine without a GPU use --cluster local."
            )
        raise MissingDependencyError(
            f'{what}; kind {kind} (in {source}) needs it: pip install "landslide-dask[{extra}]".{extra_hint}'
        ) from e
    return cls


def _kwargs(defn: ClusterDef, security: Security | None) -> dict[str, Any]:
    """The cluster class's keyword arguments: the definition's options, the package's defaults
    (loopback, one thread per worker, the dashboard on 127.0.0.1) and TLS when asked."""
    o = dict(defn.options)
    tls = {"security": security, "protocol": TLS} if security is not None else {}
    if defn.kind == "local":
        o.setdefault("processes", True)
        o.setdefault("threads_per_worker", 1)
        o.setdefault("host", "127.0.0.1")
        o.setdefault("dashboard_address", DASHBOARD)
        o["n_workers"] = 0 if defn.adapt else defn.workers
        o.update(tls)
    elif defn.kind == "gpu-node":
        o.setdefault("dashboard_address", DASHBOARD)
        o["n_workers"] = defn.workers
        o.update(tls)
    elif defn.kind == "slurm":
        o["n_workers"] = 0  # scaled after construction, so submission errors can be caught
        o["scheduler_options"] = {"dashboard_address": DASHBOARD, **(o.get("scheduler_options") or {})}
        o.update(tls)  # security: the credential files (see _make_cluster)
    elif defn.kind == "kubernetes":
        o["n_workers"] = 0 if defn.adapt else defn.workers
        if o.get("custom_cluster_spec"):
            o["custom_cluster_spec"] = str(o["custom_cluster_spec"])
        if o.get("create_mode"):
            from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode

            o["create_mode"] = getattr(CreateMode, o["create_mode"])
    return o


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


def local_cluster(n_workers: int, threads_per_worker: int = 1, *, tls: bool = True, **kw: Any) -> Any:
    """A ``LocalCluster`` of single-purpose worker processes on loopback, with :data:`WORKER_CONFIG`,
    TLS with the run's own certificate (``tls=False``: plain TCP), workers that import the task
    modules before they connect (:mod:`.preload`), closed with :data:`CLOSE_TIMEOUT_S` and never
    closed for being lost while their nanny restarts them: the one way this package (demo,
    benchmarks, tests) starts a cluster on this machine. ``Client(cluster)`` takes its credentials."""
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
    kw["preload"] = [*kw.get("preload", []), PRELOAD]
    if tls:
        kw.setdefault("security", run_security())
        kw.setdefault("protocol", TLS)
    return PatientLocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, **kw)


def close_workers_patiently(cluster: Any) -> None:
    """Close a local cluster's worker processes, all at once, each with :data:`CLOSE_TIMEOUT_S`,
    before the cluster's own close (which allows 4 s); anything else is left to that close."""
    import asyncio

    from distributed import LocalCluster

    if not isinstance(cluster, LocalCluster) or cluster.asynchronous or cluster.status.name != "running":
        return

    async def close_all(nannies: list) -> None:
        # together, not one after another: each stop is mostly waiting (a cluster's close took 2x)
        closes = (n.close(timeout=CLOSE_TIMEOUT_S, reason="cluster-close") for n in nannies)
        await asyncio.gather(*closes, return_exceptions=True)

    with contextlib.suppress(Exception):
        cluster.sync(close_all, list(cluster.workers.values()))


def _make_cluster(defn: ClusterDef, record: dict) -> Any:
    """The started cluster of ``defn``; SLURM credential files are left in ``record["tls_files"]``."""
    cls = _import(defn.kind, defn.source)
    security = run_security() if defn.tls else None
    if defn.kind in ("local", "gpu-node"):
        use_worker_config()
    if defn.kind == "slurm":
        missing = missing_commands()
        if missing:
            raise ClusterStartError(
                f"cannot start the SLURM cluster of {defn.source}: {', '.join(missing)} not found on PATH. "
                "Run this on a SLURM login node (or load the site's slurm module, e.g. `module load slurm`), "
                "and check that `sinfo` lists your partition."
            )
        if security is not None:
            # the worker jobs read the run's certificate from files on a file system the nodes share
            files = write_credentials(security, defn.options.get("shared_temp_directory") or os.getcwd())
            record["tls_files"] = files
            security = files.security()
    kw = _kwargs(defn, security)
    if defn.kind == "slurm":
        kw["job_cls"] = slurm_job_cls(record)
    try:
        return cls(**kw)
    except Exception as e:
        raise ClusterStartError(
            f"cannot start the {defn.kind} cluster of {defn.source}: {type(e).__name__}: {e}{_hints(defn)}"
        ) from e


def _hints(defn: ClusterDef) -> str:
    if defn.kind == "slurm":
        q = defn.options.get("queue")
        return (
            "\nCheck: `sinfo` (is partition " + (repr(q) if q else "<the default>") + " there and up?), "
            "`squeue -u $USER` (are the jobs pending, and why: the REASON column), the account and the "
            "limits of the partition (cores, memory, walltime), and the jobs' log files"
            + (
                f" in {defn.options['log_directory']}"
                if defn.options.get("log_directory")
                else " (slurm-JOBID.out in the submission directory)"
            )
            + "."
        )
    if defn.kind == "kubernetes":
        return (
            "\nCheck: `kubectl get daskclusters,pods -n NAMESPACE`, `kubectl describe pod` of a worker (image "
            "pull errors, unschedulable resources or GPUs), that the Dask operator is installed "
            "(helm install dask-kubernetes-operator) and that your kubeconfig points at the cluster."
        )
    if defn.kind == "gpu-node":
        return (
            "\nCheck: `nvidia-smi` lists the GPUs of CUDA_VISIBLE_DEVICES, and that dask-cuda matches your "
            "dask version."
        )
    return "\nCheck: free memory and ports on this machine (and that no firewall blocks 127.0.0.1)."


def _wait(defn: ClusterDef, cluster: Any, client: Client, n: int, record: dict, echo: Echo) -> None:
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
        problem = slurm_problem(defn, cluster, client, record, final) if defn.kind == "slurm" else None
        if problem is None and final:
            problem = f"only {have} of {n} workers arrived within {defn.timeout_s:g}s"
        if problem is not None:
            raise ClusterStartError(f"the {defn.kind} cluster of {defn.source} did not start: {problem}{_hints(defn)}")
        if now >= next_note and echo:
            echo(f"[dask] waiting for workers: {have} of {n} after {now - t0:.0f}s (timeout {defn.timeout_s:g}s)")
            next_note = now + 30
        time.sleep(0.25)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (scancel of a driver job, kill, a container stop) raises KeyboardInterrupt, so the
    ``finally`` that tears the cluster down runs. Only in the main thread, only over the default handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _close(client: Client | None, cluster: Any, timeout: float = 60.0) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
    if cluster is not None:
        close_workers_patiently(cluster)
        try:
            cluster.close(timeout=timeout)
        except Exception as e:  # noqa: BLE001 - teardown must not hide the original error
            print(f"[dask] warning: closing the cluster failed ({type(e).__name__}: {e})", file=sys.stderr)


def _imports_first(client: Client, where: str) -> None:
    """Register :class:`~.preload.TaskImports` before any task: every worker, now and later, imports
    the task modules in one thread before it takes its first task."""
    try:
        client.register_plugin(TaskImports())
    except Exception as e:
        raise ClusterStartError(
            f"the workers of {where} could not set up ({type(e).__name__}: {e}); they need "
            "landslide-dask installed, the same version as here"
        ) from e


@contextlib.contextmanager
def _connect(scheduler: str, security: Security | None, wait_s: float, echo: Echo) -> Iterator[Client]:
    """A client of someone else's running cluster; on exit it only disconnects."""
    from distributed import Client

    why = needs_credentials(scheduler, security)
    if why:
        raise ClusterStartError(f"cannot connect to the Dask scheduler at {scheduler}: {why}")
    try:
        client = Client(scheduler, timeout=wait_s, security=security)
    except Exception as e:
        raise ClusterStartError(
            f"cannot connect to the Dask scheduler at {scheduler}: {type(e).__name__}: {e}. "
            "Check the address (tls://HOST:PORT or tcp://HOST:PORT, as the scheduler printed "
            "it), that this machine can reach it, and for tls:// that the certificate files "
            "are the cluster's"
        ) from e
    try:
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise ClusterStartError(
                f"the Dask scheduler at {scheduler} has no workers after {wait_s:g}s: "
                "start some (dask worker " + scheduler + ")"
            ) from None
        _imports_first(client, scheduler)
        quiet_distributed()  # this process only: the workers are someone else's
        if echo:
            echo(f"[dask] connected to {scheduler}: {n_workers(client)} workers, dashboard {client.dashboard_link}")
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)


def _workers_to_wait_for(defn: ClusterDef, cluster: Any) -> int:
    if defn.wait_for is not None:
        return defn.wait_for
    if defn.adapt is not None:
        return defn.adapt[0]
    if defn.workers is None:  # gpu-node auto: one per GPU that LocalCUDACluster found
        return len(cluster.worker_spec)
    return defn.workers


@contextlib.contextmanager
def _start(defn: ClusterDef, echo: Echo) -> Iterator[Client]:
    """Start ``defn``'s cluster, wait for its workers, yield its client; always tear it all down."""
    from distributed import Client

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
            _imports_first(client, f"the {defn.kind} cluster of {defn.source}")
            quiet_distributed(client)
            _wait(defn, cluster, client, _workers_to_wait_for(defn, cluster), record, echo)
            record["starting"] = False
            if echo:
                echo(
                    f"[dask] {defn.kind} cluster {defn.name}: {n_workers(client)} workers after "
                    f"{time.monotonic() - t0:.1f}s, dashboard {client.dashboard_link}"
                    + ("" if defn.tls else " (plain TCP: tls: false)")
                )
            yield client
        finally:
            record["starting"] = False
            jobs = list(slurm_jobs(cluster).values()) if defn.kind == "slurm" and cluster is not None else []
            _close(client, cluster)
            if jobs:
                wait_slurm_gone(jobs)
            files: CredentialFiles | None = record.get("tls_files")
            if files is not None:
                files.remove()
            if echo and cluster is not None:
                echo(f"[dask] {defn.kind} cluster {defn.name} shut down")


def start_cluster(
    defn: ClusterDef | str | os.PathLike | None = None,
    *,
    scheduler: str | None = None,
    security: Security | None = None,
    overrides: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    echo: Echo = print,
) -> contextlib.AbstractContextManager[Client]:
    """Start the cluster of ``defn`` (a :class:`ClusterDef`, a YAML path or a shipped example's name),
    as a context manager yielding a connected Client.

    ``overrides`` are deep-merged into the definition first (e.g. ``{"workers": 2, "options":
    {"cores": 1}}``, ``{"tls": False}``); ``timeout`` replaces the definition's wait for workers. On
    exit -- normal, an exception, Ctrl-C -- the client and the cluster are closed (SLURM jobs
    cancelled, pods deleted, local processes ended, credential files removed). With ``scheduler``
    (``tls://host:port`` or ``tcp://host:port``) it connects to that running cluster instead, with
    ``security`` (:func:`~.security.credentials_from_files`; None: distributed's configuration),
    waits for one worker, and on exit only disconnects: the cluster is someone else's.
    ``echo`` receives the progress lines (the dashboard link); None silences them.
    """
    if scheduler is not None:
        return _connect(scheduler, security, timeout or 60.0, echo)
    if defn is None:
        raise ValueError("start_cluster needs a cluster definition (a ClusterDef or a YAML path) or scheduler=")
    if not isinstance(defn, ClusterDef):
        defn = load_cluster_def(defn)
    defn = defn.with_overrides(overrides)
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        defn = defn.model_copy(update={"timeout_s": float(timeout)})
    return _start(defn, echo)
