"""SLURM workers as batch jobs: the job class that records a refused ``sbatch``, what ``squeue`` and
the job logs say about workers that do not arrive, and waiting for cancelled jobs to leave the queue.
:func:`~.start.start_cluster` uses these for kind ``slurm``."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..common.workers import worker_names
from .definitions import ClusterDef

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["missing_commands", "slurm_job_cls", "slurm_jobs", "slurm_problem", "wait_slurm_gone"]


def missing_commands() -> list[str]:
    """The SLURM commands the cluster needs that are not on PATH."""
    return [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]


def slurm_job_cls(record: dict) -> type:
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
            self.status = Status.closed  # SpecCluster.close asserts on it; SLURMJob leaves it running

    return RecordingSLURMJob


_SLURM_ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
    "SPECIAL_EXIT",
    "REVOKED",
}


def slurm_jobs(cluster: Any) -> dict[str, str]:
    """worker spec name -> SLURM job id, for the jobs that were submitted."""
    return {str(name): str(job.job_id) for name, job in list(cluster.workers.items()) if getattr(job, "job_id", None)}


def _squeue(ids: list[str]) -> dict[str, str]:
    """job id -> 'STATE (reason)' for the given jobs, as squeue shows them (missing = purged)."""
    if not ids:
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T %r"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
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


def slurm_problem(defn: ClusterDef, cluster: Any, client: Client, record: dict, final: bool) -> str | None:
    """Why the SLURM workers are not (all) there, or None while waiting is still reasonable."""
    errors = record.get("errors") or []
    if errors:
        name, e = errors[0]
        text = str(e)
        if "stderr:" in text:
            text = text.split("stderr:", 1)[1].strip()
        return f"sbatch refused the job of worker {name}: {text}"
    jobs = slurm_jobs(cluster)
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


def wait_slurm_gone(ids: list[str], timeout: float = 30.0) -> None:
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
    print(
        f"[dask] warning: SLURM job(s) {', '.join(left)} still in the queue {timeout:g}s after the cluster "
        f"closed; scancel sent again (check with: squeue -j {','.join(left)})",
        file=sys.stderr,
    )
