"""Shared fixtures: one small synthetic demo set per test session, served by a real STAC API."""

from __future__ import annotations

import json
from pathlib import Path

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
    from landslide_dask.stac.server import serve_stac
    from landslide_dask.demo.synth import make_demo_data

    root = tmp_path_factory.mktemp("train")
    data = make_demo_data(root / "data", seed=3, size_km=4.0, n_regions=2)
    out = []
    with serve_stac(data) as url:
        for r in json.loads((data / "regions.json").read_text()):
            spec = CubeSpec(stac_url=url, event_date=date.fromisoformat(r["event_date"]), aoi=data / r["aoi"],
                            out=root / f"{r['name']}.zarr", inventory=data / r["inventory"],
                            inventory_area=data / r["inventory_area"], chunk=128)
            out.append(str(build_cube(spec, progress=False, quicklook=False)))
    return out


@pytest.fixture(scope="session")
def small_country(tmp_path_factory) -> Path:
    """The small demo country (a ~3 x 3 km country across two UTM zones), generated once per session."""
    from landslide_dask.demo.synth import make_demo_country

    from .helpers import SMALL_COUNTRY_BBOX

    return make_demo_country(tmp_path_factory.mktemp("country") / "c", seed=0, bbox=SMALL_COUNTRY_BBOX, workers=2,
                             inventory_block_km=1.0)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded Dask worker processes on loopback. One cluster per test module: tests
    kill workers on purpose, so modules do not share one."""
    from distributed import Client

    from landslide_dask.jobs.clusters import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c
