"""The benchmarks this change added, in their small modes, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_liveness_benchmark_small_mode():
    out = _run("liveness.py", "--seconds", "3", "--burners", "1", "--info-interval", "5ms")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "scheduler_info" in rows and "worker_table" in rows
    assert rows["worker_table"].rstrip().endswith("| 0 |")  # the scheduler's own answer never misses a worker
    assert "longest a busy worker went unheard" in out


def test_worker_env_benchmark_small_mode():
    out = _run("worker_env.py", "--steps", "1", "--repeat", "1", "--window", "64", "--batch-size", "2")
    assert "| distributed's default | 65536 |" in out and "| landslide_dask (WORKER_CONFIG) | unset |" in out
