"""Fixtures of the job tests: a real one-node SLURM controller on this machine."""

from __future__ import annotations

import sys

import psutil
import pytest

from ..helpers import slurm as slurm_setup


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM controller on this machine for the tests of a module, stopped after."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed: pip install 'landslide-dask[slurm]'")
    ok, why, install_s = slurm_setup.ensure_installed()
    if not ok:
        pytest.skip(f"cannot run a real SLURM cluster here: {why}")
    with slurm_setup.slurm_cluster(tmp_path_factory.mktemp("slurm")) as info:
        info.install_s = install_s
        print(f"\n[slurm] install {install_s:.1f}s (0 = already installed), daemons to idle node {info.start_s:.1f}s",
              file=sys.stderr)
        yield info
    # slurm_cluster stopped the daemons by pid; make sure
    assert not any(_alive(p) for p in info.pids.values()), info.pids
