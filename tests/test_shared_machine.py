"""Trainings on a shared machine, with real processes: each training is its own process with its own
2-worker LocalCluster (tests/helpers/train_job.py), as a second user's job would be.

* two trainings started at the same moment, beside a country job and a ``predict`` on a third
  cluster, both finish with no restart, and each gives exactly the weights of the same training
  run alone;
* a training on a machine kept busy by CPU-bound processes (ended after at most two minutes)
  finishes without a lost worker and with the same weights.

Determinism is what makes "the same weights" a sharp check: one torch thread per rank, fixed
seeds and gloo's fixed-order two-rank sum. A run that lost a worker and resumed would still give
the weights (it resumes from its checkpoint), so every check also asserts ``restarts == 0``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).resolve().parent / "helpers" / "train_job.py"
TIMEOUT_S = 420


def _launch(out: Path, cubes: list[str]) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "job.log", "w")  # noqa: SIM115 - closed by the child's exit; read in _finish
    return subprocess.Popen([sys.executable, str(JOB), str(out), *cubes], stdout=log, stderr=subprocess.STDOUT)


def _finish(p: subprocess.Popen, out: Path) -> tuple[dict, str]:
    try:
        p.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    log = (out / "job.log").read_text()
    assert p.returncode == 0, f"training in {out} exited {p.returncode}:\n{log[-4000:]}"
    return json.loads((out / "job.json").read_text()), log


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["state_dict"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k].float() - b[k].float()).abs().max())


def _assert_unharmed(res: dict, log: str) -> None:
    assert res["restarts"] == 0, log[-3000:]
    assert "died" not in log and "resuming" not in log and "starting again" not in log, log[-3000:]
    assert [h["epoch"] for h in res["history"]] == [0, 1]


@pytest.fixture(scope="module")
def alone(tmp_path_factory, train_cubes) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("alone")
    res, log = _finish(_launch(out, train_cubes), out)
    _assert_unharmed(res, log)
    return _weights(out)


def test_two_trainings_started_together_beside_a_country_job_and_predict_give_the_weights_of_a_lone_run(
    alone, train_cubes, client, demo_regions, demo_stac, tmp_path
):
    from landslide_dask.jobs.country import run_job
    from landslide_dask.jobs.spec import parse_jobspec
    from landslide_dask.predict import predict

    from .helpers.models import make_checkpoint

    model = make_checkpoint(tmp_path / "tiny.pt")
    r = demo_regions[0]
    spec = parse_jobspec(
        {
            "name": "beside-training",
            "area": {"bbox": r["bbox"]},
            "event": {"date": r["event_date"]},
            "stac": {"url": demo_stac},
            "model": str(model),
            "cell_size_km": 1.0,
            "output": str(tmp_path / "country"),
            "threshold": 0.5,
            "retries": 0,
            "predict": {"window": 128, "overlap": 32},
        },
        base_dir=tmp_path,
    )
    runs = {out: _launch(out, train_cubes) for out in (tmp_path / "a", tmp_path / "b")}  # at the same moment
    job = run_job(spec, client, progress=False, echo=None)  # a country job on a third cluster meanwhile
    assert not job.failed and job.summary.total > 0
    maps = 0
    while any(p.poll() is None for p in runs.values()) or maps == 0:  # and predicting while they train
        predict(
            train_cubes[0], model, tmp_path / f"p{maps}.zarr", client=client, window=128, overlap=32, progress=False
        )
        maps += 1
    for out, p in runs.items():
        res, log = _finish(p, out)
        _assert_unharmed(res, log)
        _assert_same(_weights(out), alone)
    # and the check can fail: one weight off by 1e-6 is caught
    tweaked = dict(alone)
    key = next(k for k, v in alone.items() if v.is_floating_point())
    tweaked[key] = alone[key] + 1e-6
    with pytest.raises(AssertionError):
        _assert_same(tweaked, alone)


def _burn(until: float) -> None:
    x = 0
    while time.time() < until:
        x = (x * 1103515245 + 12345) % 2**31


def test_training_on_a_machine_kept_busy_finishes_without_losing_a_worker(alone, train_cubes, tmp_path):
    ctx = mp.get_context("spawn")
    # one CPU-bound process per core: with the two ranks and the scheduler the cores are oversubscribed
    burners = [
        ctx.Process(target=_burn, args=(time.time() + 120,), daemon=True) for _ in range(max(2, os.cpu_count() or 2))
    ]
    for b in burners:
        b.start()
    try:
        out = tmp_path / "busy"
        res, log = _finish(_launch(out, train_cubes), out)
    finally:
        for b in burners:
            b.terminate()
            b.join(10)
    _assert_unharmed(res, log)
    _assert_same(_weights(out), alone)
