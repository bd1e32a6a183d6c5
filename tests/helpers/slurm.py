"""A real one-node SLURM cluster for the tests: installed if missing (when CI asks), started directly, stopped after.

How SLURM runs on these machines, as code: Debian's ``slurmctld slurmd slurm-client munge``
(``apt-get install --no-install-recommends``) run without systemd or cgroups. ``munged`` (with its
own key and socket, so a system munged, if any, is untouched), ``slurmctld`` and ``slurmd`` are
started in the foreground as our own child processes, with a one-node ``slurm.conf`` whose state,
spool, logs and ports all live under a temporary directory; stopping them is a ``scancel`` of every
job followed by SIGTERM (then SIGKILL) to the three pids we started, nothing else.

Clients (``sbatch``, ``squeue``, dask-jobqueue) find this cluster through ``SLURM_CONF``, which
:func:`slurm_cluster` sets in ``os.environ`` for its lifetime.

Needs root (the daemons run as root, ``SlurmUser=root``) and, the first time on a machine, the
Debian package registry and ``LANDSLIDE_DASK_INSTALL_SLURM=1`` (``.ci/run`` sets it: a test run
never installs system packages unasked). :func:`ensure_installed` says why it cannot when it cannot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: Set to 1 to let the tests install PACKAGES with apt-get where SLURM is missing (CI does).
INSTALL_ENV = "LANDSLIDE_DASK_INSTALL_SLURM"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
NODE = "lsnode"
PARTITION = "debug"


@dataclass
class SlurmInfo:
    root: Path
    conf: Path
    partition: str
    node: str
    cpus: int
    pids: dict[str, int] = field(default_factory=dict)
    install_s: float = 0.0  # 0 when the packages were already there
    start_s: float = 0.0  # daemons launched -> node idle

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        out = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=False, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def job_ids(self) -> list[str]:
        """Every job this controller knows about that is pending or running."""
        out = self.run("squeue", "-h", "-o", "%i %T", check=False)
        return [ln.split()[0] for ln in out.splitlines() if ln.strip()]

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name} (last lines)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed(timeout: float = 600) -> tuple[bool, str, float]:
    """Install the Debian SLURM packages if a binary is missing: (ok, reason if not, seconds spent)."""
    if not missing_binaries():
        return True, "", 0.0
    if os.environ.get(INSTALL_ENV) != "1":  # installing system packages is for CI to ask, not a test run
        return (
            False,
            (
                f"SLURM is not installed ({', '.join(missing_binaries())} missing); set {INSTALL_ENV}=1 "
                "(as .ci/run does) to let the tests install it with apt-get"
            ),
            0.0,
        )
    if os.geteuid() != 0:
        return (
            False,
            f"SLURM is not installed ({', '.join(missing_binaries())} missing) and installing it needs root",
            0.0,
        )
    if shutil.which("apt-get") is None:
        return False, "SLURM is not installed and there is no apt-get to install it (not Debian/Ubuntu)", 0.0
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        upd = subprocess.run(
            ["apt-get", "update", "-qq"], env=env, capture_output=True, text=True, check=False, timeout=timeout
        )
        inst = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"apt-get did not finish within {timeout:g}s (no network to the Debian registry?)", 0.0
    dt = time.monotonic() - t0
    if inst.returncode != 0 or missing_binaries():
        tail = (inst.stderr or upd.stderr or inst.stdout).strip().splitlines()[-3:]
        return False, f"apt-get install {' '.join(PACKAGES)} failed: {' | '.join(tail)}", dt
    return True, "", dt


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _real_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return max(1024, int(line.split()[1]) // 1024 - 1024)
    return 4096


def write_config(root: Path, cpus: int = 2) -> Path:
    """slurm.conf and cgroup.conf for one node on loopback; everything stateful under ``root``."""
    ctld_port, slurmd_port = _free_ports(2)
    host = socket.gethostname().split(".")[0]
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    os.chmod(root / "munge", 0o755)  # munged refuses a socket directory writable by others
    conf = root / "slurm.conf"
    conf.write_text(f"""\
# one-node test cluster written by tests/slurm.py
ClusterName=lstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / "munge" / "munge.socket.2"}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
InactiveLimit=0
MinJobAge=2
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={_real_memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    # no cgroup plugin is used (proctrack/linuxproc, task/none); this keeps slurmd from probing
    # for cgroup mounts that a container does not have
    (root / "cgroup.conf").write_text("CgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\n")
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    return conf


def _node_state(info: SlurmInfo) -> str:
    try:
        return info.run("sinfo", "-h", "-N", "-n", info.node, "-o", "%T", check=False, timeout=10).strip()
    except subprocess.TimeoutExpired:
        return ""


def start(root: Path, cpus: int = 2, timeout: float = 60) -> SlurmInfo:
    """munged, slurmctld and slurmd as our own foreground children; returns when the node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    conf = write_config(root, cpus)
    info = SlurmInfo(root=root, conf=conf, partition=PARTITION, node=NODE, cpus=cpus)
    env = info.env()
    sbin = lambda b: shutil.which(b) or f"/usr/sbin/{b}"
    m = root / "munge"
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()
    try:

        def launch(name: str, cmd: list[str]) -> subprocess.Popen:
            with open(root / f"{name}.out", "wb") as log:  # the child keeps its own copy of the descriptor
                p = subprocess.Popen(
                    cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            procs.append(p)
            info.pids[name] = p.pid
            return p

        munged = launch(
            "munged",
            [
                sbin("munged"),
                "-F",
                "-f",
                f"--socket={m / 'munge.socket.2'}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={root / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        deadline = time.monotonic() + 15
        while not (m / "munge.socket.2").exists():
            if munged.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "munged did not start:\n" + (root / "munged.out").read_text(errors="replace") + info.logs()
                )
            time.sleep(0.05)
        launch("slurmctld", [sbin("slurmctld"), "-D", "-i", "-f", str(conf)])
        launch("slurmd", [sbin("slurmd"), "-D", "-N", NODE, "-f", str(conf)])
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            dead = [n for n, p in zip(info.pids, procs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while starting:\n" + info.logs())
            state = _node_state(info)
            if state.startswith("idle"):
                info.start_s = time.monotonic() - t0
                return info
            time.sleep(0.2)
        raise RuntimeError(f"node {NODE} not idle after {timeout:g}s (state {state!r}):\n" + info.logs())
    except BaseException:
        stop(info)
        raise


def _kill(pid: int, timeout: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child any more, or already reaped
            if not _alive(pid):
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
    return True


def stop(info: SlurmInfo, timeout: float = 20) -> list[str]:
    """scancel every job, wait for them to leave the queue, then end our three daemons by pid.

    Returns the job ids that were still known when the daemons were stopped (normally none)."""
    left: list[str] = []
    if info.pids.get("slurmctld") and _alive(info.pids["slurmctld"]):
        with contextlib.suppress(Exception):
            info.run("scancel", "--full", "-u", "root", check=False, timeout=10)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                left = info.job_ids()
                if not left:
                    break
                time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):  # reverse order of start
        pid = info.pids.get(name)
        if pid:
            _kill(pid)
    return left


@contextlib.contextmanager
def slurm_cluster(root: Path, cpus: int = 2) -> Iterator[SlurmInfo]:
    """Start, point ``SLURM_CONF`` at it, yield; always stop and restore the environment."""
    info = start(root, cpus)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(info.conf)
    try:
        yield info
    finally:
        try:
            stop(info)
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


def overrides(info, tmp_path, **options) -> dict:
    """Cluster-definition overrides that put the shipped ``slurm`` example on this one-node cluster
    (the run's TLS certificate for the jobs under ``tmp_path/tls``)."""
    return {
        "workers": 2,
        "timeout": 60,
        "options": {
            "queue": info.partition,
            "cores": 1,
            "memory": "2GB",
            "walltime": "00:10:00",
            "interface": "lo",
            "log_directory": str(tmp_path / "logs"),
            "death_timeout": 30,
            "shared_temp_directory": str(tmp_path / "tls"),
            "scheduler_options": {"dashboard_address": "127.0.0.1:0"},
            **options,
        },
    }
