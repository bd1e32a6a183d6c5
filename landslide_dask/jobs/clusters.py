"""Dask clusters from small YAML definitions: local, one GPU node, SLURM, Kubernetes.

A definition (see ``cluster/*.yaml``; each file documents itself)::

    kind: local | gpu-node | slurm | kubernetes
    workers: 2                      # worker processes to start and wait for ("auto" on gpu-node)
    adapt: {minimum: 0, maximum: 8} # optional, slurm/kubernetes/local: scale with the load instead
    wait_for: 1                     # optional: workers to wait for before work starts (default: workers)
    timeout: 600                    # optional: seconds to wait for them (default per kind)
    options: {...}                  # keyword arguments of the cluster class, checked by name and type

:func:`load_cluster_def` validates a file (every problem names the file, the field and what is
expected, as :class:`~landslide_dask.errors.InputDataError`); :func:`start_cluster` is a context
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
import copy
import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClusterStartError, InputDataError, MissingDependencyError
from ..common.logs import quiet_distributed
from ..common.workers import n_workers, worker_names

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "KINDS",
    "ClusterDef",
    "ClusterStartError",
    "MissingDependencyError",
    "load_cluster_def",
    "start_cluster",
]

KINDS = ("local", "gpu-node", "slurm", "kubernetes")
DEFAULT_TIMEOUT_S = {"local": 60.0, "gpu-node": 120.0, "slurm": 600.0, "kubernetes": 600.0}
_EXTRA = {"gpu-node": ("dask_cuda", "dask-cuda", "gpu"), "slurm": ("dask_jobqueue", "dask-jobqueue", "slurm"),
          "kubernetes": ("dask_kubernetes", "dask-kubernetes", "k8s")}
_TOP_LEVEL = ("kind", "workers", "adapt", "wait_for", "timeout", "options", "description")


# --------------------------------------------------------------------------- validation


class _Invalid(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.field, self.message = field, message


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})" if not isinstance(v, str) else repr(v)


def _int(minimum: int = 0) -> Callable[[str, Any], int]:
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise _Invalid(name, f"got {_describe(v)}; expected a whole number >= {minimum}")
        return v
    return check


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _Invalid(name, f"got {_describe(v)}; expected a number of seconds > 0")
    return float(v)


def _str(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Invalid(name, f"got {_describe(v)}; expected a non-empty string")
    return v


def _opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def f(name: str, v: Any) -> Any:
        return None if v is None else check(name, v)
    return f


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(name, f"got {_describe(v)}; expected true or false")
    return v


def _memory(name: str, v: Any, allow: tuple = ()) -> Any:
    from dask.utils import parse_bytes

    if v in allow:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _Invalid(name, f"got {_describe(v)}; expected a size such as \"4GB\" or \"16GiB\"")
    try:
        n = parse_bytes(v) if isinstance(v, str) else int(v)
    except (ValueError, TypeError):
        n = -1
    if n <= 0:
        raise _Invalid(name, f"got {_describe(v)}; expected a size such as \"4GB\" or \"16GiB\"")
    return v


def _worker_memory(name: str, v: Any) -> Any:
    return _memory(name, v, allow=("auto", 0, None))


def _device_memory(name: str, v: Any) -> Any:
    if isinstance(v, float) and 0 < v <= 1:   # a fraction of the GPU's memory
        return v
    return _memory(name, v, allow=("auto", "default", 0, None))


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(name: str, v: Any) -> str:
        if v not in options:
            raise _Invalid(name, f"got {_describe(v)}; expected one of {', '.join(options)}")
        return v
    return check


def _str_list(name: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid(name, f"got {_describe(v)}; expected a list of strings")
    return v


def _mapping(name: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _Invalid(name, f"got {_describe(v)}; expected a mapping (key: value lines)")
    return v


def _walltime(name: str, v: Any) -> str:
    import re

    if not isinstance(v, str) or not re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}|\d+-\d+", v.strip()):
        raise _Invalid(name, f"got {_describe(v)}; expected a SLURM time limit such as \"02:00:00\" "
                             "(HH:MM:SS) or \"1-00:00:00\" (days-HH:MM:SS), quoted")
    return v


def _devices(name: str, v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return str(v)
    if isinstance(v, str) and all(p.strip() for p in v.split(",")):
        return v
    if isinstance(v, list) and v and all((isinstance(x, int) and not isinstance(x, bool) and x >= 0)
                                         or (isinstance(x, str) and x.strip()) for x in v):
        return v
    raise _Invalid(name, f"got {_describe(v)}; expected GPU ids such as \"0,1\" or [0, 1] (or null for all GPUs)")


def _env(name: str, v: Any) -> Any:
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: str(x) for k, x in v.items()}
    if isinstance(v, list) and all(isinstance(x, dict) and "name" in x for x in v):
        return v
    raise _Invalid(name, f"got {_describe(v)}; expected a mapping NAME: value (or a list of {{name, value}})")


def _k8s_resources(name: str, v: Any) -> dict:
    _mapping(name, v)
    for k, sub in v.items():
        if k not in ("requests", "limits"):
            raise _Invalid(f"{name}.{k}", "unknown key; expected requests and/or limits")
        _mapping(f"{name}.{k}", sub)
    return v


def _str_or_list(name: str, v: Any) -> Any:
    if isinstance(v, str) and v.strip():
        return v
    return _str_list(name, v)


_COMMON = {
    "threads_per_worker": _int(1), "memory_limit": _worker_memory, "host": _str, "dashboard_address": _opt(_str),
    "interface": _opt(_str), "local_directory": _opt(_str), "scheduler_port": _int(0),
}
# option name -> checker, per kind (the keyword arguments of the cluster class that are supported)
_OPTIONS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "local": {**_COMMON, "processes": _bool, "protocol": _choice("tcp", "tcp://", "tls", "tls://")},
    "gpu-node": {**_COMMON, "CUDA_VISIBLE_DEVICES": _opt(_devices), "protocol": _choice("tcp", "ucx"),
                 "device_memory_limit": _device_memory, "rmm_pool_size": _opt(_memory),
                 "rmm_maximum_pool_size": _opt(_memory), "rmm_managed_memory": _bool, "rmm_async": _bool,
                 "enable_tcp_over_ucx": _opt(_bool), "enable_nvlink": _opt(_bool),
                 "enable_infiniband": _opt(_bool), "enable_rdmacm": _opt(_bool), "jit_unspill": _opt(_bool),
                 "pre_import": _opt(_str_list)},
    "slurm": {"queue": _opt(_str), "account": _opt(_str), "cores": _int(1), "memory": _memory,
              "processes": _int(1), "walltime": _walltime, "job_extra_directives": _str_list,
              "job_script_prologue": _str_list, "job_directives_skip": _str_list, "interface": _opt(_str),
              "protocol": _opt(_choice("tcp", "tcp://", "tls", "tls://", "ucx", "ucx://")),
              "local_directory": _opt(_str), "log_directory": _opt(_str), "python": _opt(_str),
              "worker_extra_args": _str_list, "scheduler_options": _mapping, "job_name": _opt(_str),
              "job_cpu": _opt(_int(1)), "job_mem": _opt(_str), "death_timeout": _opt(_number),
              "shebang": _opt(_str), "nanny": _bool, "shared_temp_directory": _opt(_str), "name": _opt(_str)},
    "kubernetes": {"name": _str, "namespace": _opt(_str), "image": _str, "resources": _k8s_resources,
                   "env": _env, "worker_command": _str_or_list, "port_forward_cluster_ip": _opt(_bool),
                   "create_mode": _opt(_choice("CREATE_OR_CONNECT", "CREATE_ONLY", "CONNECT_ONLY")),
                   "shutdown_on_close": _opt(_bool), "idle_timeout": _opt(_int(0)),
                   "resource_timeout": _opt(_int(1)), "scheduler_service_type": _opt(_str),
                   "custom_cluster_spec": _opt(_str)},
}
_REQUIRED = {"slurm": ("cores", "memory"), "kubernetes": ("image",)}


@dataclass(frozen=True)
class ClusterDef:
    """A validated cluster definition. ``workers`` is None for gpu-node's ``auto`` (one per GPU)."""

    kind: str
    workers: int | None
    options: dict[str, Any] = field(default_factory=dict)
    adapt: tuple[int, int] | None = None
    wait_for: int | None = None
    timeout_s: float = 60.0
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source != "<dict>" else self.kind

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> ClusterDef:
        try:
            return cls._parse(data, source)
        except _Invalid as e:
            raise InputDataError(f"cluster definition {source}: field '{e.field}': {e.message}") from None

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ClusterDef:
        """A copy with ``overrides`` deep-merged into the definition (mappings merge, values replace)."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise InputDataError(f"overrides for {self.source} must be a mapping like "
                                 f"{{'workers': 2, 'options': {{'cores': 1}}}}, not {type(overrides).__name__}")
        source = self.source if self.source.endswith("(with overrides)") else f"{self.source} (with overrides)"
        return ClusterDef.from_dict(_merge(self.raw, dict(overrides)), source)

    @classmethod
    def _parse(cls, data: Any, source: str) -> ClusterDef:
        if not isinstance(data, dict):
            raise _Invalid("<top level>", f"got {_describe(data)}; expected a mapping with kind, workers, options")
        for k in data:
            if k not in _TOP_LEVEL:
                raise _Invalid(str(k), f"unknown field; expected one of {', '.join(_TOP_LEVEL)} "
                                       "(keyword arguments of the cluster class go under options:)")
        if "kind" not in data:
            raise _Invalid("kind", f"missing; expected one of {', '.join(KINDS)}")
        kind = data["kind"]
        if kind not in KINDS:
            raise _Invalid("kind", f"got {_describe(kind)}; expected one of {', '.join(KINDS)}")
        options = dict(_mapping("options", data.get("options") or {}))
        schema = _OPTIONS[kind]
        for k, v in options.items():
            if k not in schema:
                hint = ""
                if k in ("n_workers", "workers", "replicas"):
                    hint = " (the number of workers is the top-level field workers:)"
                raise _Invalid(f"options.{k}", f"unknown option for kind {kind}{hint}; expected one of "
                                               f"{', '.join(sorted(schema))}")
            options[k] = schema[k](f"options.{k}", v)
        for k in _REQUIRED.get(kind, ()):
            if options.get(k) is None:
                raise _Invalid(f"options.{k}", f"missing; kind {kind} needs it")

        adapt = None
        if data.get("adapt") is not None:
            if kind == "gpu-node":
                raise _Invalid("adapt", "not supported for kind gpu-node (it runs one worker per GPU); "
                                        "remove adapt and set workers")
            a = _mapping("adapt", data["adapt"])
            unknown = set(a) - {"minimum", "maximum"}
            if unknown:
                raise _Invalid(f"adapt.{min(unknown)}", "unknown key; expected minimum and maximum")
            lo = _int(0)("adapt.minimum", a.get("minimum", 0))
            if "maximum" not in a:
                raise _Invalid("adapt.maximum", "missing; expected the largest number of workers")
            hi = _int(1)("adapt.maximum", a["maximum"])
            if hi < lo:
                raise _Invalid("adapt.maximum", f"got {hi}; expected >= adapt.minimum ({lo})")
            adapt = (lo, hi)

        workers = data.get("workers")
        if workers is None:
            if adapt is None:
                raise _Invalid("workers", "missing; expected the number of worker processes"
                                          + (" or auto (one per GPU)" if kind == "gpu-node" else "")
                                          + " (or an adapt: {minimum, maximum} range)")
        elif kind == "gpu-node" and workers == "auto":
            workers = None
        else:
            workers = _int(1)("workers", workers)
            if adapt is not None:
                raise _Invalid("workers", "set either workers (a fixed number) or adapt (a range), not both")

        if kind == "local" and options.get("processes") is False:
            raise _Invalid("options.processes", "got false; expected true: torch.distributed (run_ddp) runs one "
                                                "rank per worker process, so workers cannot share one process")
        if kind == "gpu-node" and workers is not None and options.get("CUDA_VISIBLE_DEVICES") is not None:
            devs = options["CUDA_VISIBLE_DEVICES"]
            n = len(devs.split(",")) if isinstance(devs, str) else len(devs)
            if workers > n:
                raise _Invalid("workers", f"got {workers}; expected at most {n}, one worker per GPU of "
                                          f"options.CUDA_VISIBLE_DEVICES ({devs})")
        if kind == "slurm":
            procs = options.get("processes")
            if procs is None:
                options["processes"] = procs = 1
            if procs > options["cores"]:
                raise _Invalid("options.processes", f"got {procs}; expected at most options.cores "
                                                    f"({options['cores']}): each process needs a core")
            gpu = [d for d in options.get("job_extra_directives", []) if "gpu" in d.lower()]
            if gpu and procs != 1:
                raise _Invalid("options.processes", f"got {procs} with {gpu[0]!r}; expected 1: every worker "
                                                    "process of a job sees the job's same GPUs, so DDP ranks would "
                                                    "collide on cuda:0 -- ask for one GPU per job instead")
            if isinstance(workers, int) and workers % procs:
                raise _Invalid("workers", f"got {workers}; expected a multiple of options.processes ({procs}): "
                                          "each SLURM job runs that many worker processes")
        wait_for = data.get("wait_for")
        if wait_for is not None:
            wait_for = _int(0)("wait_for", wait_for)
            top = workers if workers is not None else (adapt[1] if adapt else None)
            if top is not None and wait_for > top:
                raise _Invalid("wait_for", f"got {wait_for}; expected at most {top}, the workers that will be started")
        timeout = _number("timeout", data["timeout"]) if data.get("timeout") is not None else DEFAULT_TIMEOUT_S[kind]
        if data.get("description") is not None:
            _str("description", data["description"])
        return cls(kind=kind, workers=workers, options=options, adapt=adapt, wait_for=wait_for, timeout_s=timeout,
                   source=source, raw=copy.deepcopy(data))


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_cluster_def(path: str | os.PathLike) -> ClusterDef:
    """Read and validate a cluster definition YAML file (errors name the file, the field, what is expected)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"cluster definition {p} not found: pick one of the files in cluster/ "
                             "(local.yaml, gpu-node.yaml, slurm.yaml, kubernetes.yaml) or write your own")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputDataError(f"cluster definition {p} is not valid YAML{where}: "
                             f"{getattr(e, 'problem', None) or e}") from None
    return ClusterDef.from_dict(data, str(p))


# --------------------------------------------------------------------------- starting


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
    whose workers are closed with :data:`CLOSE_TIMEOUT_S`: the one way this package (demo,
    benchmarks, tests) starts a cluster on this machine."""
    from distributed import LocalCluster

    class PatientLocalCluster(LocalCluster):
        def close(self, timeout: float | None = None):
            close_workers_patiently(self)
            return super().close(timeout)

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
        defn = dataclasses.replace(defn, timeout_s=float(timeout))

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
