"""Cluster definitions, validated: the YAML file as pydantic models, one per ``kind`` (a
discriminated union), and the :class:`ClusterDef` that :func:`~.start.start_cluster` starts. Every
problem is reported at once as a :class:`~landslide_dask.errors.ClusterSpecError` naming the file,
the field (``options.walltime``) and what is expected.

The package ships one documented example per kind (:mod:`.shipped`): a bare name (``local``,
``slurm``, ...) wherever a definition file is expected means that example, and ``landslide-dask
cluster-example NAME`` prints one to start from.

``tls`` (default true) makes the cluster speak TLS with a key and certificate made for the run
(:mod:`.security`); ``tls: false`` asks for plain TCP, which kind ``kubernetes`` needs for now.

``options`` are the keyword arguments of the cluster class, checked by name and type per kind
(``LocalCluster``, dask-cuda's ``LocalCUDACluster``, dask-jobqueue's ``SLURMCluster``,
dask-kubernetes' ``KubeCluster``); only the options given are passed on.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..common.validation import Strict, fail, fail_all, problems_of, read_yaml, show, unknown
from ..errors import ClusterSpecError
from .shipped import EXAMPLES, example_names, resolve_cluster

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EXAMPLES",
    "KINDS",
    "ClusterDef",
    "example_names",
    "load_cluster_def",
    "resolve_cluster",
]

KINDS = ("local", "gpu-node", "slurm", "kubernetes")
DEFAULT_TIMEOUT_S = {"local": 60.0, "gpu-node": 120.0, "slurm": 600.0, "kubernetes": 600.0}
_SIZE = 'a size such as "4GB" or "16GiB"'


def _text(v: str) -> str:
    if not v.strip():
        raise ValueError(f"got {show(v)}; expected a non-empty string")
    return v


def _size(v: Any, allow: tuple = ()) -> Any:
    from dask.utils import parse_bytes

    if v in allow and not isinstance(v, bool):
        return v
    try:
        n = parse_bytes(v) if isinstance(v, str) else (int(v) if isinstance(v, (int, float)) else -1)
    except (ValueError, TypeError):
        n = -1
    if isinstance(v, bool) or n <= 0:
        raise ValueError(f"got {show(v)}; expected {_SIZE}")
    return v


def _device_memory(v: Any) -> Any:
    if isinstance(v, float) and 0 < v <= 1:  # a share of the GPU's memory
        return v
    return _size(v, allow=("auto", "default", 0))


def _devices(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return str(v)
    if isinstance(v, str) and all(p.strip() for p in v.split(",")):
        return v
    if (
        isinstance(v, list)
        and v
        and all(
            (isinstance(x, int) and not isinstance(x, bool) and x >= 0) or (isinstance(x, str) and x.strip()) for x in v
        )
    ):
        return v
    raise ValueError(f'got {show(v)}; expected GPU ids such as "0,1" or [0, 1] (or null for all GPUs)')


def _walltime(v: Any) -> Any:
    if not isinstance(v, str) or not re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}|\d+-\d+", v.strip()):
        raise ValueError(
            f'got {show(v)}; expected a SLURM time limit such as "02:00:00" (HH:MM:SS) or '
            '"1-00:00:00" (days-HH:MM:SS), quoted'
        )
    return v


def _env(v: Any) -> Any:
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: str(x) for k, x in v.items()}
    if isinstance(v, list) and all(isinstance(x, dict) and "name" in x for x in v):
        return v
    raise ValueError(f"got {show(v)}; expected a mapping NAME: value (or a list of {{name, value}})")


def _command(v: Any) -> Any:
    if (isinstance(v, str) and v.strip()) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        return v
    raise ValueError(f"got {show(v)}; expected a command (text) or a list of strings")


Text = Annotated[str, AfterValidator(_text)]
Count0 = Annotated[int, Field(ge=0)]
Count1 = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]
Size = Annotated[Any, AfterValidator(_size)]
WorkerMemory = Annotated[Any, AfterValidator(lambda v: _size(v, allow=("auto", 0)))]
DeviceMemory = Annotated[Any, AfterValidator(_device_memory)]


class _Options(Strict):
    """Keyword arguments of one kind's cluster class; unset ones keep the class's defaults."""

    KIND: ClassVar[str] = ""
    HINTS: ClassVar[dict[str, str]] = {
        k: "the number of workers is the top-level field workers:" for k in ("n_workers", "workers", "replicas")
    }

    @classmethod
    def unknown_key(cls, key: str, where: str) -> str:
        hint = f" ({cls.HINTS[key]})" if key in cls.HINTS else ""
        return unknown(key, sorted(cls.model_fields), "option", of=f" for kind {cls.KIND}{hint}")

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class _MachineOptions(_Options):
    threads_per_worker: Count1 = None
    memory_limit: WorkerMemory | None = None
    host: Text = None
    dashboard_address: Text | None = None
    interface: Text | None = None
    local_directory: Text | None = None
    scheduler_port: Count0 = None


class LocalOptions(_MachineOptions):
    KIND: ClassVar[str] = "local"
    processes: bool = None
    protocol: Literal["tcp", "tcp://", "tls", "tls://"] = None

    @field_validator("processes")
    @classmethod
    def _one_process_per_worker(cls, v: bool) -> bool:
        if v is False:
            raise ValueError(
                "got false; expected true: torch.distributed (run_ddp) runs one rank per worker "
                "process, so workers cannot share one process"
            )
        return v


class GpuNodeOptions(_MachineOptions):
    KIND: ClassVar[str] = "gpu-node"
    CUDA_VISIBLE_DEVICES: Annotated[Any, AfterValidator(_devices)] | None = None
    protocol: Literal["tls", "tls://", "tcp", "ucx"] = None
    device_memory_limit: DeviceMemory | None = None
    rmm_pool_size: Size | None = None
    rmm_maximum_pool_size: Size | None = None
    rmm_managed_memory: bool = None
    rmm_async: bool = None
    enable_tcp_over_ucx: bool | None = None
    enable_nvlink: bool | None = None
    enable_infiniband: bool | None = None
    enable_rdmacm: bool | None = None
    jit_unspill: bool | None = None
    pre_import: list[str] | None = None

    def n_devices(self) -> int | None:
        devs = self.CUDA_VISIBLE_DEVICES
        if devs is None:
            return None
        return len(devs.split(",")) if isinstance(devs, str) else len(devs)


class SlurmOptions(_Options):
    KIND: ClassVar[str] = "slurm"
    HINTS: ClassVar[dict[str, str]] = {**_Options.HINTS, "partition": "the SLURM partition is the option queue"}
    queue: Text | None = None
    account: Text | None = None
    cores: Count1 = Field(description="the CPU cores of each SLURM job (required)", examples=[8])
    memory: Size = Field(description="the memory of each SLURM job (required)", examples=["32GB"])
    processes: Count1 = 1
    walltime: Annotated[Any, AfterValidator(_walltime)] = None
    job_extra_directives: list[str] = None
    job_script_prologue: list[str] = None
    job_directives_skip: list[str] = None
    interface: Text | None = None
    protocol: Literal["tcp", "tcp://", "tls", "tls://", "ucx", "ucx://"] | None = None
    local_directory: Text | None = None
    log_directory: Text | None = None
    python: Text | None = None
    worker_extra_args: list[str] = None
    scheduler_options: dict[str, Any] = None
    job_name: Text | None = None
    job_cpu: Count1 | None = None
    job_mem: Text | None = None
    death_timeout: Seconds | None = None
    shebang: Text | None = None
    nanny: bool = None
    shared_temp_directory: Text | None = None
    name: Text | None = None

    @model_validator(mode="after")
    def _processes(self) -> SlurmOptions:
        problems = []
        if self.processes > self.cores:
            problems.append(
                f"got {self.processes}; expected at most options.cores ({self.cores}): each process needs a core"
            )
        gpu = [d for d in self.job_extra_directives or [] if "gpu" in d.lower()]
        if gpu and self.processes != 1:
            problems.append(
                f"got {self.processes} with {gpu[0]!r}; expected 1: every worker process of a job sees "
                "the job's same GPUs, so DDP ranks would collide on cuda:0 -- ask for one GPU per job "
                "instead"
            )
        if problems:
            fail_all([(("processes",), p) for p in problems], expect=False)
        return self

    def kwargs(self) -> dict[str, Any]:
        return {**super().kwargs(), "processes": self.processes}  # one process per job unless told


class K8sResources(Strict):
    requests: dict[str, Any] = None
    limits: dict[str, Any] = None

    @classmethod
    def unknown_key(cls, key: str, where: str) -> str:
        return unknown(key, ["requests", "limits"], expected="requests and/or limits")


class KubernetesOptions(_Options):
    KIND: ClassVar[str] = "kubernetes"
    name: Text = None
    namespace: Text | None = None
    image: Text = Field(
        description="a container image with landslide-dask installed (required)",
        examples=["ghcr.io/your-org/landslide-dask:0.1.0"],
    )
    resources: K8sResources = None
    env: Annotated[Any, AfterValidator(_env)] = None
    worker_command: Annotated[Any, AfterValidator(_command)] = None
    port_forward_cluster_ip: bool | None = None
    create_mode: Literal["CREATE_OR_CONNECT", "CREATE_ONLY", "CONNECT_ONLY"] | None = None
    shutdown_on_close: bool | None = None
    idle_timeout: Count0 | None = None
    resource_timeout: Count1 | None = None
    scheduler_service_type: Text | None = None
    custom_cluster_spec: Text | None = None


class Adapt(Strict):
    minimum: Count0 = Field(0, description="the fewest workers, a whole number >= 0", examples=[0])
    maximum: Count1 = Field(description="the largest number of workers, a whole number >= 1", examples=[8])

    @model_validator(mode="after")
    def _range(self) -> Adapt:
        if self.maximum < self.minimum:
            fail(f"got {self.maximum}; expected >= adapt.minimum ({self.minimum})", "maximum", expect=False)
        return self


_TOP_LEVEL = ("kind", "workers", "adapt", "wait_for", "timeout", "tls", "options", "description")
_WORKERS = {
    "examples": [2],
    "description": "a whole number >= 1 of worker processes to start and wait for (auto "
    "on gpu-node: one per GPU), or an adapt: range instead",
}


class _ClusterFile(Strict):
    """What a cluster definition file says (one subclass per kind)."""

    workers: Count1 | None = Field(None, **_WORKERS)
    adapt: Adapt | None = Field(
        None, description="a mapping {minimum, maximum}: scale with the load", examples=["{minimum: 0, maximum: 8}"]
    )
    wait_for: Count0 | None = Field(
        None, description="the workers to wait for before work starts, a whole number", examples=[1]
    )
    timeout: Seconds | None = Field(None, description="seconds to wait for the workers, a number > 0", examples=[600])
    tls: bool = Field(
        True,
        description="true (TLS with the run's own certificate) or false (plain TCP, no authentication)",
        examples=["true"],
    )
    description: Text | None = None

    @classmethod
    def unknown_key(cls, key: str, where: str) -> str:
        return unknown(key, _TOP_LEVEL, "field") + " (keyword arguments of the cluster class go under options:)"

    @field_validator("options", mode="before", check_fields=False)
    @classmethod
    def _no_options(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("wait_for")
    @classmethod
    def _at_most_started(cls, v: int | None, info: ValidationInfo) -> int | None:
        workers, adapt = info.data.get("workers"), info.data.get("adapt")
        top = adapt.maximum if workers is None and adapt is not None else workers
        if v is not None and isinstance(top, int) and v > top:
            raise ValueError(f"got {v}; expected at most {top}, the workers that will be started")
        return v

    @model_validator(mode="after")
    def _workers(self) -> _ClusterFile:
        if self.workers is None and self.adapt is None:
            fail("missing", "workers")
        if self.workers is not None and self.adapt is not None:
            fail("set either workers (a fixed number) or adapt (a range), not both", "workers", expect=False)
        problems = self.workers_problems()
        if problems:
            fail_all([(("workers",), p) for p in problems])
        self._protocol_matches_tls()
        return self

    def _protocol_matches_tls(self) -> None:
        """``options.protocol`` says the same as ``tls``: plain TCP (or UCX) is never chosen by accident."""
        proto = getattr(self.options, "protocol", None)
        if proto is None:
            return
        secure = proto.startswith("tls")
        if self.tls and not secure:
            fail(
                f"got {proto}, which carries no authentication: anyone on the network who finds the scheduler "
                "could run code as you. Leave protocol out (TLS, the default), or set tls: false to ask for it",
                "options",
                "protocol",
                expect=False,
            )
        if not self.tls and secure:
            fail(
                f"got {proto} with tls: false; remove one of them (tls: true, the default, is TLS)",
                "options",
                "protocol",
                expect=False,
            )

    def workers_problems(self) -> list[str]:
        """What this kind's options say against ``workers``."""
        return []

    def to_def(self, source: str, raw: dict) -> ClusterDef:
        timeout = self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S[self.kind]
        workers = None if self.workers == "auto" else self.workers
        adapt = (self.adapt.minimum, self.adapt.maximum) if self.adapt is not None else None
        return ClusterDef(
            kind=self.kind,
            workers=workers,
            options=self.options.kwargs(),
            adapt=adapt,
            wait_for=self.wait_for,
            timeout_s=float(timeout),
            tls=self.tls,
            source=source,
            raw=copy.deepcopy(raw),
        )


class LocalFile(_ClusterFile):
    kind: Literal["local"]
    options: LocalOptions = Field(default_factory=dict, validate_default=True)


def _gpu_workers(v: Any) -> Any:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise ValueError(f"got {show(v)}, not a whole number >= 1 or auto")


class GpuNodeFile(_ClusterFile):
    kind: Literal["gpu-node"]
    workers: Annotated[Any, AfterValidator(_gpu_workers)] | None = Field(None, **_WORKERS)
    options: GpuNodeOptions = Field(default_factory=dict, validate_default=True)

    @field_validator("adapt")
    @classmethod
    def _no_adapt(cls, v: Adapt | None) -> None:
        if v is not None:
            fail(
                "not supported for kind gpu-node (it runs one worker per GPU); remove adapt and set workers",
                expect=False,
            )
        return v

    def workers_problems(self) -> list[str]:
        n = self.options.n_devices()
        if isinstance(self.workers, int) and n is not None and self.workers > n:
            return [
                f"got {self.workers}; expected at most {n}, one worker per GPU of options.CUDA_VISIBLE_DEVICES "
                f"({self.options.CUDA_VISIBLE_DEVICES})"
            ]
        return []


class SlurmFile(_ClusterFile):
    kind: Literal["slurm"]
    options: SlurmOptions = Field(default_factory=dict, validate_default=True)

    def workers_problems(self) -> list[str]:
        procs = self.options.processes
        if isinstance(self.workers, int) and self.workers % procs:
            return [
                f"got {self.workers}; expected a multiple of options.processes ({procs}): each SLURM job runs "
                "that many worker processes"
            ]
        return []


class KubernetesFile(_ClusterFile):
    kind: Literal["kubernetes"]
    options: KubernetesOptions = Field(default_factory=dict, validate_default=True)

    @model_validator(mode="after")
    def _plain_tcp_asked(self) -> KubernetesFile:
        if self.tls:
            fail(
                "got true (the default), which kind kubernetes cannot do yet: the Dask operator's KubeCluster "
                "reaches its scheduler over plain TCP and has no TLS settings. Set tls: false to run on plain TCP "
                "inside the cluster network (keep the namespace, and kubectl port-forward, to yourself)",
                "tls",
                expect=False,
            )
        return self


ClusterFile = Annotated[LocalFile | GpuNodeFile | SlurmFile | KubernetesFile, Field(discriminator="kind")]
_CLUSTER_FILE = TypeAdapter(ClusterFile)


class ClusterDef(BaseModel):
    """A validated cluster definition. ``workers`` is None for gpu-node's ``auto`` (one per GPU);
    ``options`` holds only the keyword arguments given (and slurm's ``processes``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    workers: int | None
    options: dict[str, Any] = Field(default_factory=dict)
    adapt: tuple[int, int] | None = None
    wait_for: int | None = None
    timeout_s: float = 60.0
    tls: bool = True
    source: str = "<dict>"
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source != "<dict>" else self.kind

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> ClusterDef:
        """Validate a definition already read from YAML; ClusterSpecError lists every problem."""
        if not isinstance(data, dict):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            raise ClusterSpecError(
                source,
                [
                    (
                        "",
                        f"a cluster definition is a YAML mapping (key: value lines) with "
                        f"kind, workers, options; got {got}. See `landslide-dask "
                        "cluster-example`",
                    )
                ],
            )
        try:
            parsed = _CLUSTER_FILE.validate_python(data)
        except ValidationError as exc:
            raise ClusterSpecError(source, problems_of(exc, ClusterFile)) from None
        return parsed.to_def(source, data)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ClusterDef:
        """A copy with ``overrides`` deep-merged into the definition (mappings merge, values replace)."""
        if not overrides:
            return self
        source = self.source if self.source.endswith("(with overrides)") else f"{self.source} (with overrides)"
        if not isinstance(overrides, Mapping):
            raise ClusterSpecError(
                source,
                [
                    (
                        "",
                        f"overrides must be a mapping like {{'workers': 2, 'options': "
                        f"{{'cores': 1}}}}, not {type(overrides).__name__}",
                    )
                ],
            )
        return ClusterDef.from_dict(_merge(self.raw, dict(overrides)), source)


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_cluster_def(path: str | os.PathLike) -> ClusterDef:
    """Read and validate a cluster definition YAML file, or a shipped example by name (errors name the
    file, the field, what is expected)."""
    p = resolve_cluster(path)
    data = read_yaml(
        p,
        ClusterSpecError,
        f"{p} not found: give a definition file, or the name of a shipped "
        f"example ({', '.join(example_names())}; `landslide-dask cluster-example NAME` prints one "
        "to start from)",
    )
    return ClusterDef.from_dict(data, str(p))
