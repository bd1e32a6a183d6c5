"""Shared fixtures: one small synthetic demo set per test session, served by a real STAC API; a
real one-node SLURM controller for the cluster and job tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """Four 2x2 km synthetic regions (COGs + STAC), generated once per session."""
    from landslide_dask.demo.synth import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"), seed=7, size_km=2.0)


@pytest.fixture(scope="session")
def demo_regions(demo_data) -> list[dict]:
    return json.loads((demo_data / "regions.json").read_text())


@pytest.fixture(scope="session")
def demo_stac(demo_data):
    """The demo data behind a live `rustac serve` on loopback, for the whole session."""
    from landslide_dask.stac.server import serve_stac

    with serve_stac(demo_data) as url:
        yield url


@pytest.fixture(scope="session")
def train_cubes(tmp_path_factory) -> list[str]:
    """Two 4x4 km synthetic regions as cubes: enough 64 px windows for train/val/test blocks."""
    from datetime import date

    from landslide_dask.cube.build import CubeSpec, build_cube
    from landslide_dask.demo.synth import make_demo_data
    from landslide_dask.stac.server import serve_stac

    root = tmp_path_factory.mktemp("train")
    data = make_demo_data(root / "data", seed=3, size_km=4.0, n_regions=2)
    out = []
    with serve_stac(data) as url:
        for r in json.loads((data / "regions.json").read_text()):
            spec = CubeSpec(
                stac_url=url,
                event_date=date.fromisoformat(r["event_date"]),
                aoi=data / r["aoi"],
                out=root / f"{r['name']}.zarr",
                inventory=data / r["inventory"],
                inventory_area=data / r["inventory_area"],
                chunk=128,
            )
            out.append(str(build_cube(spec, progress=False, quicklook=False)))
    return out


@pytest.fixture(scope="session")
def small_country(tmp_path_factory) -> Path:
    """The small demo country (a ~3 x 3 km country across two UTM zones), generated once per session."""
    from landslide_dask.demo.synth import make_demo_country

    from .helpers import SMALL_COUNTRY_BBOX

    return make_demo_country(
        tmp_path_factory.mktemp("country") / "c", seed=0, bbox=SMALL_COUNTRY_BBOX, workers=2, inventory_block_km=1.0
    )


@pytest.fixture(scope="module")
def client():
    """Two single-threaded Dask worker processes on loopback, over TLS with the run's own certificate
    (as every cluster the package starts). One cluster per test module: tests kill workers on
    purpose, so modules do not share one."""
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM controller on this machine for the tests of a module, stopped after."""
    from .helpers import slurm as slurm_setup

    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed: pip install 'landslide-dask[slurm]'")
    ok, why, install_s = slurm_setup.ensure_installed()
    if not ok:
        pytest.skip(f"cannot run a real SLURM cluster here: {why}")
    with slurm_setup.slurm_cluster(tmp_path_factory.mktemp("slurm")) as info:
        info.install_s = install_s
        print(
            f"\n[slurm] install {install_s:.1f}s (0 = already installed), daemons to idle node {info.start_s:.1f}s",
            file=sys.stderr,
        )
        yield info
    # slurm_cluster stopped the daemons by pid; make sure
    assert not any(_alive(p) for p in info.pids.values()), info.pids
