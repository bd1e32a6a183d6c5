"""Cluster definitions (the shipped examples) and start_cluster: validation, missing extras, a real
local cluster over TLS, and a real one-node SLURM cluster (installed and started by
tests/helpers/slurm.py) whose jobs get the run's certificate, compute and run DDP ranks."""

from __future__ import annotations

import os
import re
import stat
import sys
import time

import cloudpickle
import psutil
import pydantic
import pytest
import torch
import yaml

from landslide_dask.clusters.definitions import ClusterDef, load_cluster_def
from landslide_dask.clusters.shipped import EXAMPLES as CLUSTER
from landslide_dask.clusters.start import start_cluster
from landslide_dask.common.workers import n_workers
from landslide_dask.errors import ClusterStartError, InputDataError, MissingDependencyError

from ..helpers.slurm import overrides as _overrides

NAMES = ("local", "gpu-node", "slurm", "kubernetes")
# functions of this module run on the workers (SLURM jobs included): ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _pids() -> tuple[int, int, str | None]:
    return os.getpid(), os.getppid(), os.environ.get("SLURM_JOB_ID")


def _sum(client) -> int:
    import dask.array as da

    return int(client.compute(da.arange(10_000, chunks=1_000).sum()).result())


# --------------------------------------------------------------------------- definitions


@pytest.mark.parametrize("name", NAMES)
def test_shipped_definitions_are_valid(name):
    d = load_cluster_def(CLUSTER / f"{name}.yaml")
    assert d.kind == name and d.source.endswith(f"{name}.yaml")
    assert d.tls is (name != "kubernetes")  # TLS unless the file asks for plain TCP (and says why)
    if name == "slurm":
        assert d.options["processes"] == 1 and d.workers == 4
    if name == "gpu-node":
        assert d.workers is None  # auto: one worker per GPU


@pytest.mark.parametrize("name", NAMES)
def test_a_bare_name_is_the_shipped_example_and_a_path_is_a_path(tmp_path, monkeypatch, name):
    assert load_cluster_def(name).source == str(CLUSTER / f"{name}.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{name}.yaml").write_text("kind: local\nworkers: 3\n")
    assert load_cluster_def(f"{name}.yaml").workers == 3  # a file name (with its suffix) is a file
    with pytest.raises(InputDataError, match="not found"):
        load_cluster_def(f"./{name}")  # a path to a missing file is not an example


def test_the_examples_are_installed_with_the_package():
    """The wheel carries what package-data names: every shipped example must match it."""
    import fnmatch

    import tomllib

    from landslide_dask.clusters.shipped import example_names

    root = CLUSTER.parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["landslide_dask.clusters"]
    files = [p.relative_to(CLUSTER.parent).as_posix() for p in CLUSTER.glob("*.yaml")]
    assert sorted(example_names()) == sorted(NAMES)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_cluster_example_command_prints_and_lists(capsys):
    from landslide_dask.cli import main

    assert main(["cluster-example", "slurm"]) == 0
    assert capsys.readouterr().out == (CLUSTER / "slurm.yaml").read_text()
    assert main(["cluster-example"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{n}\s+\S", out, re.M) for n in NAMES) and "--cluster NAME" in out
    with pytest.raises(SystemExit) as e:
        main(["cluster-example", "docker"])
    assert e.value.code == 2 and "invalid choice: 'docker'" in capsys.readouterr().err


def test_dashboards_listen_on_loopback_unless_asked():
    from landslide_dask.clusters.start import _kwargs

    slurm = ClusterDef.from_dict({"kind": "slurm", "workers": 1, "options": {"cores": 1, "memory": "1GB"}})
    assert _kwargs(slurm, None)["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787"}
    asked = slurm.with_overrides({"options": {"scheduler_options": {"dashboard_address": ":9999"}}})
    assert _kwargs(asked, None)["scheduler_options"] == {"dashboard_address": ":9999"}
    for kind in ("local", "gpu-node"):
        d = ClusterDef.from_dict({"kind": kind, "workers": 1})
        assert _kwargs(d, None)["dashboard_address"] == "127.0.0.1:8787"
        assert "security" not in _kwargs(d, None)  # no credentials: plain TCP (tls: false)


@pytest.mark.parametrize("name", ["slurm", "kubernetes"])
def test_commented_gpu_examples_are_valid(name):
    """The commented GPU example at the end of the file, uncommented, is a valid definition."""
    text = (CLUSTER / f"{name}.yaml").read_text()
    block = text.split("# GPU ", 1)[1].split("\n", 1)[1]
    body = "\n".join(ln[2:] for ln in block.splitlines() if ln.startswith("# ") or ln == "#")
    d = ClusterDef.from_dict(yaml.safe_load(body), f"{name}.yaml GPU example")
    if name == "slurm":
        assert "--gres=gpu:1" in d.options["job_extra_directives"] and d.options["processes"] == 1
    else:
        assert d.options["resources"]["limits"]["nvidia.com/gpu"] == 1


BAD = [
    ("kind: docker\nworkers: 2\n", ["- kind: ", "local, gpu-node, slurm, kubernetes"]),
    ("workers: 2\n", ["- kind: ", "missing"]),
    ("kind: local\nworkers: two\n", ["- workers: ", "'two'", "whole number >= 1"]),
    ("kind: local\nworker: 2\n", ["- worker: ", "unknown field", "options:"]),
    ("kind: local\nworkers: 2\noptions: {n_workers: 3}\n", ["options.n_workers", "top-level field workers"]),
    ("kind: local\nworkers: 2\noptions: {processes: false}\n", ["options.processes", "one rank per worker process"]),
    ("kind: local\nworkers: 2\noptions: {memory_limit: lots}\n", ["options.memory_limit", "4GB"]),
    ("kind: local\nworkers: 2\ntimeout: -1\n", ["- timeout: ", "> 0"]),
    ("kind: local\nadapt: {minimum: 3, maximum: 1}\n", ["adapt.maximum", ">= adapt.minimum"]),
    ("kind: local\nworkers: 2\nadapt: {maximum: 4}\n", ["- workers: ", "not both"]),
    ("kind: slurm\nworkers: 2\noptions: {memory: 4GB}\n", ["options.cores", "missing"]),
    (
        "kind: slurm\nworkers: 2\noptions: {cores: 2, memory: 4GB, partition: gpu}\n",
        ["options.partition", "unknown option", "queue"],
    ),
    ("kind: slurm\nworkers: 2\noptions: {cores: 2, memory: 4GB, walltime: 3600}\n", ["options.walltime", "HH:MM:SS"]),
    (
        "kind: slurm\nworkers: 2\n"
        "options: {cores: 4, memory: 8GB, processes: 2, job_extra_directives: ['--gres=gpu:2']}\n",
        ["options.processes", "expected 1", "cuda:0"],
    ),
    ("kind: slurm\nworkers: 3\noptions: {cores: 4, memory: 8GB, processes: 2}\n", ["- workers: ", "multiple"]),
    ("kind: slurm\nworkers: 2\noptions: {cores: 1, memory: 4GB, processes: 2}\n", ["options.processes", "at most"]),
    ("kind: gpu-node\nworkers: 4\noptions: {CUDA_VISIBLE_DEVICES: '0,1'}\n", ["- workers: ", "at most 2"]),
    ("kind: gpu-node\nadapt: {minimum: 1, maximum: 2}\n", ["- adapt: ", "gpu-node"]),
    ("kind: gpu-node\nworkers: auto\noptions: {protocol: udp}\n", ["options.protocol", "tcp, ucx"]),
    ("kind: kubernetes\nworkers: 2\ntls: false\noptions: {name: x}\n", ["options.image", "missing"]),
    (
        "kind: kubernetes\nworkers: 2\ntls: false\noptions: {image: x, resources: {request: {cpu: 1}}}\n",
        ["options.resources.request", "requests and/or limits"],
    ),
    ("- kind: local\n", ["a cluster definition is a YAML mapping", "got a list"]),
    # plain TCP is asked for, never chosen by accident
    ("kind: local\nworkers: 2\noptions: {protocol: tcp}\n", ["options.protocol", "no authentication", "tls: false"]),
    ("kind: local\nworkers: 2\ntls: false\noptions: {protocol: tls}\n", ["options.protocol", "tls: false"]),
    (
        "kind: slurm\nworkers: 2\noptions: {cores: 2, memory: 4GB, protocol: tcp://}\n",
        ["options.protocol", "tls: false"],
    ),
    ("kind: gpu-node\nworkers: auto\noptions: {protocol: ucx}\n", ["options.protocol", "tls: false"]),
    ("kind: local\nworkers: 2\ntls: 'no'\n", ["- tls: ", "true or false"]),
    ("kind: kubernetes\nworkers: 2\noptions: {image: x}\n", ["- tls: ", "KubeCluster", "tls: false"]),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_definitions_name_file_and_field(tmp_path, text, expected):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    with pytest.raises(InputDataError) as e:
        load_cluster_def(p)
    msg = str(e.value)
    assert str(p) in msg
    for s in expected:
        assert s in msg, f"{s!r} not in {msg!r}"


def test_every_problem_of_a_definition_at_once(tmp_path):
    from landslide_dask.errors import ClusterSpecError

    p = tmp_path / "mine.yaml"
    p.write_text(
        "kind: slurm\nworker: 4\ntimeout: -5\nadapt: {minimum: 3, maximum: 1}\n"
        "options: {partition: gpu, cores: two, memory: lots, walltime: 3600, memroy: 4GB}\n"
    )
    with pytest.raises(ClusterSpecError) as e:
        load_cluster_def(p)
    problems = dict(e.value.problems)
    assert set(problems) == {
        "worker",
        "timeout",
        "adapt.maximum",
        "options.partition",
        "options.cores",
        "options.memory",
        "options.walltime",
        "options.memroy",
    }, str(e.value)
    assert str(e.value).startswith(f"cluster definition {p} has 8 problems:\n  - ")
    assert "did you mean 'workers'?" in problems["worker"]
    assert "did you mean 'memory'?" in problems["options.memroy"]
    assert "'two' (str), not a whole number" in problems["options.cores"]
    assert "e.g. `cores: 8`" in problems["options.cores"]
    assert isinstance(e.value, InputDataError)


def test_definitions_are_frozen_and_only_given_options_are_passed():
    d = load_cluster_def(CLUSTER / "local.yaml")
    assert d.options == yaml.safe_load((CLUSTER / "local.yaml").read_text())["options"]
    with pytest.raises(pydantic.ValidationError):
        d.workers = 3
    slurm = ClusterDef.from_dict({"kind": "slurm", "workers": 2, "options": {"cores": 2, "memory": "4GB"}})
    assert slurm.options == {"cores": 2, "memory": "4GB", "processes": 1} and slurm.timeout_s == 600.0
    gpu = ClusterDef.from_dict({"kind": "gpu-node", "workers": "auto", "options": {"CUDA_VISIBLE_DEVICES": 0}})
    assert gpu.workers is None and gpu.options == {"CUDA_VISIBLE_DEVICES": "0"}


def test_unreadable_definitions(tmp_path):
    with pytest.raises(InputDataError, match="not found.*shipped example.*local, slurm.*cluster-example"):
        load_cluster_def(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("kind: local\nworkers: [2\n")
    with pytest.raises(InputDataError, match=r"broken.yaml has 1 problem:\n  - not valid YAML at line \d+"):
        load_cluster_def(p)


def test_overrides_are_merged_and_validated():
    d = load_cluster_def(CLUSTER / "slurm.yaml")
    o = d.with_overrides({"workers": 2, "options": {"cores": 1, "scheduler_options": {"port": 0}}})
    assert (o.workers, o.options["cores"], o.options["memory"]) == (2, 1, d.options["memory"])
    assert o.options["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787", "port": 0}
    assert d.options["cores"] == 8  # the original is untouched
    with pytest.raises(InputDataError, match=r"slurm.yaml \(with overrides\) has 1 problem:\n  - options.cores: "):
        d.with_overrides({"options": {"cores": "x"}})


# --------------------------------------------------------------------------- missing extras


@pytest.mark.parametrize(
    "name,module,extra",
    [("gpu-node", "dask_cuda", "gpu"), ("slurm", "dask_jobqueue", "slurm"), ("kubernetes", "dask_kubernetes", "k8s")],
)
def test_missing_dependency_names_the_pip_extra(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed, even where it is
    with pytest.raises(MissingDependencyError) as e, start_cluster(CLUSTER / f"{name}.yaml", echo=None):
        pass
    assert f'pip install "landslide-dask[{extra}]"' in str(e.value)
    assert f"{name}.yaml" in str(e.value)
    assert isinstance(e.value, ImportError)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and dask-cuda) for LocalCUDACluster")
def test_gpu_node_one_worker_per_gpu_runs_nccl():
    pytest.importorskip("dask_cuda")
    from landslide_dask.train.ddp import run_ddp

    with start_cluster(CLUSTER / "gpu-node.yaml", overrides={"options": {"dashboard_address": "127.0.0.1:0"}}) as c:
        n = torch.cuda.device_count()
        assert n_workers(c) == n
        visible = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0])
        assert len(set(visible.values())) == n
        out = run_ddp(c, _rank_sum, timeout_s=60)
        assert out["backend"] == "nccl" and out["sum"] == n * (n + 1) / 2


# --------------------------------------------------------------------------- local


LOCAL = {"options": {"dashboard_address": "127.0.0.1:0", "memory_limit": "2GB"}}


def _plugins(dask_scheduler) -> list[str]:
    return sorted(dask_scheduler.worker_plugins)


def test_local_starts_computes_and_tears_down(capsys):
    from landslide_dask.clusters.preload import TaskImports

    with start_cluster(CLUSTER / "local.yaml", overrides=LOCAL) as client:
        assert n_workers(client) == 2
        assert _sum(client) == sum(range(10_000))
        pids = [p for p, _, _ in client.run(_pids).values()]
        assert len(set(pids)) == 2 and os.getpid() not in pids  # one process per worker (one DDP rank each)
        # TLS by default, scheduler and workers; the workers imported the task modules first
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        assert all(a.startswith("tls://127.0.0.1:") for a in client.run(_pids))
        assert TaskImports.name in client.run_on_scheduler(_plugins)
        done = client.run(_imported)
        assert all(d is not None and d["pid"] in pids and not d["failed"] for d in done.values()), done
    out = capsys.readouterr().out
    assert re.search(r"\[dask\] local cluster local: 2 workers after .*dashboard http://127\.0\.0\.1:\d+/status", out)
    assert "shut down" in out
    assert _wait_gone(pids) == []


def _imported():
    from landslide_dask.clusters import preload

    return preload.DONE


def test_insecure_asks_for_plain_tcp():
    """--insecure (the CLI) and tls: false (a definition) start the same cluster on plain TCP."""
    from landslide_dask.cli import build_parser
    from landslide_dask.cli.options import client_for

    args = build_parser().parse_args(
        ["predict", "--model", "m.pt", "--cube", "c.zarr", "--out", "o.zarr", "--workers", "1", "--insecure"]
    )
    with client_for(args) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert _sum(client) == sum(range(10_000))


def test_local_torn_down_on_ctrl_c():
    with (
        pytest.raises(KeyboardInterrupt),
        start_cluster(CLUSTER / "local.yaml", overrides={**LOCAL, "workers": 1}, echo=None) as client,
    ):
        pids = [p for p, _, _ in client.run(_pids).values()]
        raise KeyboardInterrupt
    assert pids and _wait_gone(pids) == []


def test_scheduler_address_connects_but_never_tears_down():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as theirs:
        with start_cluster(scheduler=theirs.scheduler_address, echo=None) as client:
            assert _sum(client) == sum(range(10_000))
        with Client(theirs) as c2:  # still there, with its worker
            assert n_workers(c2) == 1
    with (
        pytest.raises(ClusterStartError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"),
        start_cluster(scheduler="tcp://127.0.0.1:9", timeout=1, echo=None),
    ):
        pass


def test_slurm_without_sbatch_says_what_to_check(monkeypatch, tmp_path):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(ClusterStartError, match=r"sbatch, squeue, scancel not found on PATH.*login node"),
        start_cluster(CLUSTER / "slurm.yaml", echo=None),
    ):
        pass


# --------------------------------------------------------------------------- real SLURM


def _rank_sum(ctx) -> dict:
    return {
        "sum": float(ctx.all_reduce_sum(torch.tensor([ctx.rank + 1.0]))[0]),
        "backend": ctx.backend,
        "world": ctx.world_size,
    }


def _ddp_step(ctx) -> dict:
    """One DDP forward/backward of a tiny model on rank-specific data: gradients are averaged."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    ddp = DDP(model)
    x = torch.full((3, 4), float(ctx.rank + 1))
    ddp(x).pow(2).mean().backward()
    return {
        "grad": model.weight.grad.clone(),
        "world": ctx.world_size,
        "job": os.environ.get("SLURM_JOB_ID"),
        "sum": _rank_sum(ctx)["sum"],
    }


def _reference_grad(world: int) -> torch.Tensor:
    grads = []
    for r in range(world):
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 1)
        m(torch.full((3, 4), float(r + 1))).pow(2).mean().backward()
        grads.append(m.weight.grad.clone())
    return torch.stack(grads).mean(0)


def test_slurm_cluster_computes_and_trains_with_ddp(slurm, tmp_path, capsys):
    from landslide_dask.train.ddp import run_ddp

    t0 = time.monotonic()
    # Ctrl-C at the end: the jobs must still be cancelled
    with (
        pytest.raises(KeyboardInterrupt),
        start_cluster(CLUSTER / "slurm.yaml", overrides=_overrides(slurm, tmp_path)) as client,
    ):
        t_up = time.monotonic() - t0
        queue = slurm.run("squeue", "-h", "-o", "%i %T %P")
        jobs = {ln.split()[0]: ln.split()[1:] for ln in queue.splitlines()}
        assert len(jobs) == 2 and all(s == ["RUNNING", slurm.partition] for s in jobs.values()), queue
        assert _sum(client) == sum(range(10_000))
        where = list(client.run(_pids).values())
        assert sorted(j for _, _, j in where) == sorted(jobs)  # each worker runs in its own job
        # the jobs joined over TLS with the run's certificate, read from a private folder
        assert all(a.startswith("tls://") for a in [client.scheduler.address, *client.run(_pids)])
        (creds,) = (tmp_path / "tls").iterdir()
        assert stat.S_IMODE(creds.stat().st_mode) == 0o700 and sorted(f.name for f in creds.iterdir()) == [
            "ca.pem",
            "cert.pem",
            "key.pem",
        ]
        script = client.cluster.job_script()
        assert f"--tls-key {creds / 'key.pem'}" in script and "BEGIN" not in script  # paths, never the key
        out = run_ddp(client, _ddp_step, timeout_s=60)
        assert out["world"] == 2 and out["sum"] == 3.0 and out["job"] in jobs
        torch.testing.assert_close(out["grad"], _reference_grad(2))  # DDP averaged the two ranks' gradients
        with capsys.disabled():
            print(
                f"\n[slurm] 2 workers up in {t_up:.1f}s; compute + DDP step {time.monotonic() - t0 - t_up:.1f}s",
                file=sys.stderr,
            )
        raise KeyboardInterrupt
    assert slurm.job_ids() == []  # cancelled, and gone from the queue
    assert _wait_gone([p for pids in where for p in pids[:2]]) == []  # worker and nanny processes
    assert list((tmp_path / "tls").iterdir()) == []  # the certificate files went with the cluster
    assert "dashboard http://127.0.0.1:" in capsys.readouterr().out


def test_slurm_bad_partition_is_reported_and_cleaned_up(slurm, tmp_path):
    with (
        pytest.raises(ClusterStartError) as e,
        start_cluster(CLUSTER / "slurm.yaml", overrides=_overrides(slurm, tmp_path, queue="nope"), echo=None),
    ):
        pass
    msg = str(e.value)
    assert "sbatch refused" in msg and "invalid partition" in msg.lower() and "sinfo" in msg and "'nope'" in msg
    assert slurm.job_ids() == []


def test_slurm_pending_jobs_time_out_with_their_state(slurm, tmp_path):
    """Workers that never arrive (jobs held in the queue): the error shows squeue's reason and the logs."""
    ov = _overrides(slurm, tmp_path, job_extra_directives=["--begin=now+3600"])
    ov["timeout"] = 3
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError) as e, start_cluster(CLUSTER / "slurm.yaml", overrides=ov, echo=None):
        pass
    msg = str(e.value)
    assert "did not connect within 3s" in msg and "PENDING (BeginTime)" in msg and "squeue" in msg
    assert str(tmp_path / "logs") in msg
    assert time.monotonic() - t0 < 30
    assert slurm.job_ids() == []


def test_slurm_job_that_fails_reports_its_log(slurm, tmp_path):
    ov = _overrides(slurm, tmp_path, python="/nonexistent/python")
    with pytest.raises(ClusterStartError) as e, start_cluster(CLUSTER / "slurm.yaml", overrides=ov, echo=None):
        pass
    msg = str(e.value)
    assert "ended before their Dask worker connected" in msg and "FAILED" in msg
    assert "/nonexistent/python: No such file or directory" in msg
    assert slurm.job_ids() == []


async def _die() -> None:
    os._exit(1)


def test_a_restarting_worker_is_never_closed_as_lost():
    """distributed's SpecCluster closes the nanny of any worker name missing from the scheduler
    ``lost-worker-timeout`` after a removal of that name, judged at that moment: a nanny that is
    restarting the worker just then (after another death) lost a live worker for good. Here the
    timeout is shorter than a restart, which made that certain; the nannies of our local clusters
    restart their workers, and the cluster must keep them."""
    import dask
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster
    from landslide_dask.common.workers import wait_for_workers, worker_table

    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "0.2s"}),
        local_cluster(2) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        first = sorted(worker_table(client))[0]
        client.run(_die, workers=[first], wait=False)
        new = wait_for_workers(client, 2, timeout_s=60, exclude={first})
        time.sleep(2.0)  # well past the lost-worker timer of the removal
        assert len(worker_table(client)) == 2 and len(cluster.workers) == 2, (new, cluster.workers)
