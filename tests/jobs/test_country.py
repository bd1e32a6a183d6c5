"""Country jobs end to end on a small synthetic "country": cells in two UTM zones (the gorkha_like
region straddles 84°E), some beyond the imagery (empty), a tiny random model with a fixed threshold
(so polygons exist and cross cell borders), on a real two-worker LocalCluster behind a real STAC API.

Faults: the job process SIGKILLed and rerun (resumes, recomputes no finished cell, same outputs), a
Dask worker killed mid-job (same outputs), a cell whose STAC search times out (retried, then failed
with its reason while the others finish; a rerun completes it), and the same job through a real
one-node SLURM cluster.

Object storage: the same job written to ``s3://`` on a real S3-compatible server on loopback
(moto's server, tests/s3.py) with its checkpoint read from S3 too: stopped after two cells and
rerun (resumes from the manifest on S3, recomputes and re-uploads no finished cell), then
compared with the local job (statuses, polygons, COG pixels, summary; the VRTs opened by GDAL
through /vsis3/); and bad outputs (unknown bucket, read-only or wrong credentials, unreachable
endpoint, backend not installed) refused before any cell runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml
from distributed.diagnostics.plugin import WorkerPlugin

import landslide_dask.cube.build as cube_mod
from landslide_dask.clusters.security import write_credentials
from landslide_dask.common.workers import worker_table
from landslide_dask.errors import StacUnreachableError
from landslide_dask.jobs.cells import make_cells
from landslide_dask.jobs.country import merge_cell_polygons, run_job
from landslide_dask.jobs.spec import load_jobspec

from ..helpers.models import make_checkpoint
from ..helpers.slurm import overrides as _overrides

# the gorkha_like region (2 km, seed 5) spans ~83.985-84.005 E; imagery reaches ~84.011 E
BBOX = [83.984, 28.191, 84.03, 28.209]
CELL_KM = 1.5
PREDICT = {"window": 128, "overlap": 32}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from landslide_dask.demo.synth import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("country") / "data", seed=5, size_km=2.0, n_regions=2)


@pytest.fixture(scope="module")
def stac(data):
    from landslide_dask.stac.server import serve_stac

    with serve_stac(data) as url:
        yield url


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("country-model") / "tiny.pt")


def write_spec(folder: Path, stac: str, ckpt: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    job = {
        "name": "tiny-country",
        "area": {"bbox": BBOX},
        "event": {"date": "2023-04-25"},
        "stac": {"url": stac},
        "model": str(ckpt),
        "cell_size_km": CELL_KM,
        "output": str(folder / "out"),
        "threshold": 0.5,
        "min_area_m2": 200,
        "retries": 1,
        "predict": PREDICT,
    }
    job.update(over)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stac, ckpt, client):
    """A clean, uninterrupted run: the outputs every fault test must reproduce exactly."""
    spec = load_jobspec(write_spec(tmp_path_factory.mktemp("reference"), stac, ckpt))
    t0 = time.perf_counter()
    assert client.scheduler.address.startswith("tls://")  # the job runs over TLS, as every package cluster
    res = run_job(spec, client, progress=False)
    res.wall_s = time.perf_counter() - t0
    print(
        f"\n[country] clean run: {res.summary.total} cells in {res.wall_s:.1f}s; stages {res.seconds}", file=sys.stderr
    )
    return spec, res


def _statuses(out: Path) -> dict[str, str]:
    m = json.loads((out / "manifest.json").read_text())
    return {cid: rec["status"] for cid, rec in m["cells"].items()}


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Same cell statuses, same merged polygons (attributes and exact geometry), same COG pixels."""
    sa, sb = _statuses(a), _statuses(b)
    assert sa == sb
    pa, pb = gpd.read_parquet(a / "landslides.parquet"), gpd.read_parquet(b / "landslides.parquet")
    assert len(pa) == len(pb) > 0
    pd.testing.assert_frame_equal(pd.DataFrame(pa.drop(columns="geometry")), pd.DataFrame(pb.drop(columns="geometry")))
    assert list(pa.geometry.to_wkb()) == list(pb.geometry.to_wkb())
    for cid, status in sa.items():
        if status == "done":
            with (
                rasterio.open(a / "cells" / cid / "probability.tif") as ra,
                rasterio.open(b / "cells" / cid / "probability.tif") as rb,
            ):
                assert ra.transform == rb.transform
                np.testing.assert_array_equal(ra.read(1), rb.read(1))
                np.testing.assert_array_equal(ra.read_masks(1), rb.read_masks(1))


# --------------------------------------------------------------------------- the clean job


def test_job_maps_done_and_empty_cells_and_writes_country_outputs(reference):
    spec, res = reference
    out = spec.output_path
    s = res.summary
    assert res.ok and not res.failed
    assert s.n_failed == 0 and s.unfinished == 0 and s.done >= 5 and s.n_empty >= 1, str(s)
    assert all(r.startswith("no imagery") for r in s.empty.values()), s.empty
    cells = make_cells(spec.area.geometry(), spec.cell_size_km)
    assert {c.epsg for c in cells} == {32644, 32645}  # the job spans two UTM zones
    assert {c.epsg for c in cells if _statuses(out)[c.id] == "done"} == {32644, 32645}
    for c in cells:  # each cube is on its cell's grid: the zone's 10 m pixel grid, so neighbours align
        if _statuses(out)[c.id] == "done":
            with rasterio.open(out / "cells" / c.id / "probability.tif") as cog:
                g = c.grid()
                assert cog.crs.to_epsg() == c.epsg and (cog.height, cog.width) == g.shape
                assert tuple(cog.transform)[:6] == tuple(g.transform)[:6]

    # merged polygons: GeoParquet + GeoPackage in EPSG:4326
    merged = gpd.read_parquet(out / "landslides.parquet")
    gpkg = gpd.read_file(out / "landslides.gpkg")
    assert merged.crs.to_epsg() == 4326 and gpkg.crs.to_epsg() == 4326
    assert len(merged) == len(gpkg) == res.n_polygons > 0
    assert {"id", "cells", "epsg", "area_m2", "mean_prob", "max_prob"} <= set(merged.columns)
    assert merged.geometry.is_valid.all()
    assert ((merged.mean_prob >= 0.5 - 1e-9) & (merged.mean_prob <= merged.max_prob + 1e-12)).all()

    # every landslide cut by a cell border is one polygon again ...
    per_cell = [
        gpd.read_parquet(out / "cells" / c.id / "landslides.parquet") for c in cells if _statuses(out)[c.id] == "done"
    ]
    n_parts = sum(len(g) for g in per_cell)
    joined = merged[merged.cells.str.contains(",")]
    assert len(joined) >= 1 and len(merged) < n_parts
    assert merged.area_m2.sum() == pytest.approx(sum(g.area_m2.sum() for g in per_cell), rel=1e-12)
    # ... so no two output polygons share a border segment (within a cell they never do: 4-connectivity)
    for z in (32644, 32645):
        g = merged[merged.epsg == z].to_crs(z).geometry.values
        a, b = shapely.STRtree(g).query(g, predicate="intersects")
        shared = [shapely.intersection(g[i].boundary, g[j].boundary).length for i, j in zip(a, b) if i < j]
        assert max(shared, default=0.0) < 1e-3, max(shared)
    # a same-zone joined polygon's area is its UTM area (pixel areas summed)
    same = joined[joined.cells.map(lambda t: len({c.split("_")[0] for c in t.split(",")}) == 1)]
    for _, row in same.iterrows():
        assert gpd.GeoSeries([row.geometry], crs=4326).to_crs(row.epsg).area.iloc[0] == pytest.approx(
            row.area_m2, rel=1e-6
        )

    # mosaic index: one VRT per zone over the per-cell COGs, opened by rasterio (GDAL)
    index = json.loads((out / "mosaic" / "index.json").read_text())
    assert set(index["vrts"]) == {"EPSG:32644", "EPSG:32645"}
    for z in (32644, 32645):
        with rasterio.open(out / "mosaic" / f"probability_EPSG{z}.vrt") as src:
            assert src.crs.to_epsg() == z and src.count == 1 and src.dtypes[0] == "uint8"
            mosaic = src.read(1)
            mask = src.read_masks(1)
            assert (mask > 0).sum() > 1000
            for c in cells:
                if c.epsg == z and _statuses(out)[c.id] == "done":
                    with rasterio.open(out / "cells" / c.id / "probability.tif") as cog:
                        win = rasterio.windows.from_bounds(*cog.bounds, transform=src.transform)
                        r0, c0 = round(win.row_off), round(win.col_off)
                        np.testing.assert_array_equal(mosaic[r0 : r0 + cog.height, c0 : c0 + cog.width], cog.read(1))

    # summary table and overview map
    table = pd.read_csv(out / "summary.csv")
    assert sorted(table.cell) == sorted(c.id for c in cells)
    assert {
        "status",
        "reason",
        "landslides",
        "landslide_area_m2",
        "search_s",
        "cube_s",
        "predict_s",
        "polygons_s",
    } <= set(table.columns)
    done = table[table.status == "done"]
    assert done.landslides.sum() == n_parts and (done.cube_s > 0).all()
    assert (table[table.status == "empty"].reason.str.startswith("no imagery")).all()
    png = (out / "overview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the manifest has per-stage timings of every finished cell
    m = json.loads((out / "manifest.json").read_text())
    assert all(
        set(r["timings"]) >= {"search", "cube", "predict", "polygons"}
        for r in m["cells"].values()
        if r["status"] == "done"
    )


def test_country_products_one_mosaic_a_web_map_and_a_stac_item(reference):
    """One probability and one not-mapped COG for the whole job (both UTM zones, on the web map's
    Web Mercator grid), an offline web map drawing every merged polygon, a validated STAC item."""
    import pystac
    from rio_cogeo.cogeo import cog_validate

    from tests.helpers.browser import chromium, open_page, save_screenshot

    spec, res = reference
    out = spec.output_path
    merged = gpd.read_parquet(out / "landslides.parquet")
    prob_cog, status_cog = out / "mosaic" / "probability_EPSG3857.tif", out / "mosaic" / "not-mapped_EPSG3857.tif"
    for cog in (prob_cog, status_cog):
        assert cog_validate(str(cog), quiet=True)[0]
        assert cog.with_suffix(".qml").exists()
    with rasterio.open(prob_cog) as src, rasterio.open(status_cog) as st:
        assert src.crs.to_epsg() == 3857 and src.transform == st.transform
        assert src.scales[0] == pytest.approx(1 / 255)
        status = st.read(1)
        prob = src.read(1)
        mask = src.read_masks(1) > 0
        assert set(np.unique(status)) <= {0, 1, 2, 3, 4} and (status == 1).sum() > 1000
        assert (mask == np.isin(status, (1, 2))).mean() > 0.999  # mapped pixels, and only those, carry data
        # every merged landslide lies on high probability in the mosaic
        pts = merged.to_crs(3857).geometry.representative_point()
        rows, cols = rasterio.transform.rowcol(src.transform, pts.x.to_numpy(), pts.y.to_numpy())
        assert (prob[rows, cols] >= 0.5 * 255 - 1).mean() > 0.9
    assert {"web_map", "item", "country_probability", "country_not_mapped"} <= set(res.outputs)
    item = pystac.Item.from_dict(json.loads((out / "item.json").read_text()))
    item.validate()
    assert item.properties["landslide:landslides"] == len(merged)
    if chromium() is not None:
        page = open_page(
            (out / "web" / "index.html").as_uri(), ready=f"document.body.dataset.polygons === '{len(merged)}'"
        )
        save_screenshot(page, Path(__file__).resolve().parents[2] / "test-artefacts" / "country-web-map.png")
        assert page.errors == []
        assert [u for u in page.requested if not u.startswith(("file:", "data:"))] == []


def test_rerun_of_a_finished_job_recomputes_nothing(reference, client):
    spec, _ = reference
    out = spec.output_path
    before = _files(out / "cells")
    res = run_job(spec, client, progress=False, echo=None)
    assert res.ok and res.computed == []
    assert _files(out / "cells") == before


# --------------------------------------------------------------------------- merging (unit)


def _parts_gdf(geoms, epsg, areas=None, means=None, maxes=None):
    n = len(geoms)
    areas = [g.area for g in geoms] if areas is None else areas
    return gpd.GeoDataFrame(
        {"id": np.arange(1, n + 1), "area_m2": areas, "mean_prob": means or [0.6] * n, "max_prob": maxes or [0.8] * n},
        geometry=list(geoms),
        crs=f"EPSG:{epsg}",
    )


def test_merge_joins_a_polygon_cut_by_a_cell_border():
    cells = make_cells(shapely.box(83.90, 28.1, 83.95, 28.15), 1.0)  # zone 44N only
    by = {(c.col, c.row): c for c in cells}
    (col, row) = sorted(by)[len(by) // 2]
    left, right, up = by[(col, row)], by[(col + 1, row)], by[(col, row + 1)]
    x = right.square[0]  # the shared edge of left and right
    y0 = left.square[1] + 300.0
    # a landslide cut by the left|right border: two parts sharing an edge exactly
    a = shapely.box(x - 50, y0, x, y0 + 80)
    b = shapely.box(x, y0 + 20, x + 30, y0 + 120)
    # touching across the border only at a corner: stays separate (4-connectivity)
    c1 = shapely.box(x - 20, y0 + 500, x, y0 + 520)
    c2 = shapely.box(x, y0 + 520, x + 20, y0 + 540)
    # far from any border
    d = shapely.box(left.square[0] + 400, y0, left.square[0] + 450, y0 + 50)
    # cut by the left/up border (horizontal edge)
    ytop = left.square[3]
    e1 = shapely.box(left.square[0] + 600, ytop - 40, left.square[0] + 640, ytop)
    e2 = shapely.box(left.square[0] + 610, ytop, left.square[0] + 650, ytop + 70)
    parts = [
        (left, _parts_gdf([a, c1, d, e1], left.epsg, means=[0.6, 0.6, 0.7, 0.5], maxes=[0.7, 0.7, 0.9, 0.6])),
        (right, _parts_gdf([b, c2], right.epsg, means=[0.9, 0.6], maxes=[0.95, 0.7])),
        (up, _parts_gdf([e2], up.epsg, means=[0.7], maxes=[0.8])),
    ]
    merged = merge_cell_polygons(parts)
    assert merged.crs.to_epsg() == 4326
    assert len(merged) == 5  # a+b, c1, c2, d, e1+e2
    utm = merged.to_crs(left.epsg)
    joined = merged[merged.cells.str.contains(",")]
    assert len(joined) == 2
    ab = utm[merged.cells == f"{left.id},{right.id}"]
    assert len(ab) == 1
    row_ab = ab.iloc[0]
    assert row_ab.geometry.geom_type == "Polygon"
    assert row_ab.geometry.area == pytest.approx(a.area + b.area, rel=1e-6)
    assert row_ab.area_m2 == pytest.approx(a.area + b.area)
    assert row_ab.mean_prob == pytest.approx((0.6 * a.area + 0.9 * b.area) / (a.area + b.area))
    assert row_ab.max_prob == pytest.approx(0.95)
    # the union itself, up to the EPSG:4326 round trip of the vertices (< 1 mm)
    assert shapely.symmetric_difference(row_ab.geometry, shapely.union_all([a, b])).area < 1e-3
    e = utm[merged.cells == ",".join(sorted([left.id, up.id]))].iloc[0]
    assert e.geometry.area == pytest.approx(e1.area + e2.area, rel=1e-6)
    # the corner-touching pair and the isolated one are left alone
    singles = utm[~merged.cells.str.contains(",")]
    assert sorted(singles.cells) == sorted([left.id, left.id, right.id])
    assert sorted(round(g.area) for g in singles.geometry) == sorted(round(g.area) for g in (c1, c2, d))


def test_merge_joins_across_the_utm_zone_meridian():
    cells = make_cells(shapely.box(83.98, 28.19, 84.02, 28.21), 1.0)
    west = next(c for c in cells if c.epsg == 32644 and c.aoi_4326.bounds[2] >= 84.0 - 1e-9 and c.area_km2 > 0.3)
    east = next(
        c
        for c in cells
        if c.epsg == 32645
        and c.aoi_4326.bounds[0] <= 84.0 + 1e-9
        and c.area_km2 > 0.3
        and c.aoi_4326.intersects(shapely.box(83.9, west.aoi_4326.bounds[1], 84.1, west.aoi_4326.bounds[3]))
    )
    y = (
        max(west.aoi_4326.bounds[1], east.aoi_4326.bounds[1]) + min(west.aoi_4326.bounds[3], east.aoi_4326.bounds[3])
    ) / 2
    # a landslide 60 m wide across the meridian, each zone's part ending ~4 m short of it (pixel grids differ)
    d = 4.0 / 98_000.0
    w_part = gpd.GeoSeries([shapely.box(84.0 - 0.0006, y, 84.0 - d, y + 0.0004)], crs=4326).to_crs(west.epsg)
    e_part = gpd.GeoSeries([shapely.box(84.0 + d, y, 84.0 + 0.0006, y + 0.0004)], crs=4326).to_crs(east.epsg)
    far = gpd.GeoSeries([shapely.box(84.0 + 0.002, y, 84.0 + 0.0025, y + 0.0004)], crs=4326).to_crs(east.epsg)
    merged = merge_cell_polygons(
        [(west, _parts_gdf(list(w_part), west.epsg)), (east, _parts_gdf([e_part.iloc[0], far.iloc[0]], east.epsg))]
    )
    assert len(merged) == 2
    j = merged[merged.cells.str.contains(",")].iloc[0]
    assert j.cells == f"{west.id},{east.id}" and j.geometry.geom_type == "Polygon"
    assert j.area_m2 == pytest.approx(w_part.area.iloc[0] + e_part.area.iloc[0])


def test_merge_of_nothing_is_an_empty_layer():
    merged = merge_cell_polygons([])
    assert len(merged) == 0 and merged.crs.to_epsg() == 4326


# --------------------------------------------------------------------------- faults

_DRIVER = textwrap.dedent("""
    import sys
    from distributed import Client
    from landslide_dask.clusters.security import credentials_from_files
    from landslide_dask.jobs.country import run_job
    from landslide_dask.jobs.spec import load_jobspec

    spec = load_jobspec(sys.argv[1])
    with Client(sys.argv[2], security=credentials_from_files(*sys.argv[3:6])) as client:
        run_job(spec, client, progress=False)
""")


def test_killed_job_process_resumes_without_recomputing_finished_cells(reference, stac, ckpt, client, tmp_path):
    ref_spec, _ref = reference
    spec_path = write_spec(tmp_path, stac, ckpt)
    spec = load_jobspec(spec_path)
    out = spec.output_path
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    # the driver is another process of the cluster's owner: it joins with the run's certificate
    creds = write_credentials(client.cluster.security, tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(driver),
            str(spec_path),
            client.scheduler.address,
            str(creds.ca),
            str(creds.cert),
            str(creds.key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                st = _statuses(out)
            except (FileNotFoundError, json.JSONDecodeError):
                st = {}
            if sum(s == "done" for s in st.values()) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    st = _statuses(out)
    finished = [c for c, s in st.items() if s in ("done", "empty")]
    assert 1 <= len(finished) < len(st), st  # killed in the middle of the job
    assert not (out / "landslides.parquet").exists()
    before = {c: _files(out / "cells" / c) for c in finished}

    res = run_job(spec, client, progress=False, echo=None)
    assert res.ok
    assert not set(res.computed) & set(finished)  # no finished cell recomputed ...
    assert set(res.computed) == set(st) - set(finished)
    for c in finished:  # ... nor any of its files touched
        assert _files(out / "cells" / c) == before[c]
    m = json.loads((out / "manifest.json").read_text())
    assert m["runs"] == 2
    assert_same_outputs(out, ref_spec.output_path)


def test_worker_killed_mid_job_still_finishes_with_the_same_outputs(reference, stac, ckpt, client, tmp_path):
    ref_spec, _ = reference
    spec = load_jobspec(write_spec(tmp_path, stac, ckpt))
    armed, fired = tmp_path / "armed", tmp_path / "fired"

    class KillOnTaskStart(WorkerPlugin):
        """Once armed, the first worker to start a task SIGKILLs its own process as the task begins.

        Killing from inside the worker, on its own task transition, is what makes the fault land
        mid-task: cells are fast enough now that a kill timed from the client often finds every
        worker idle between cells. The ``fired`` file makes it happen once (the nanny's restarted
        worker receives the plugin again)."""

        def setup(self, worker):
            self.address = worker.address

        def transition(self, key, start, finish, **kwargs):
            if finish != "executing" or not armed.exists():
                return
            try:
                fd = os.open(fired, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, json.dumps({"worker": self.address, "key": str(key)}).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    def arm(cell_id, status):
        """After the first finished cell, the next task to start on any worker is killed with it."""
        armed.touch()

    client.register_plugin(KillOnTaskStart(), name="kill-on-task-start")
    try:
        res = run_job(spec, client, progress=False, on_cell=arm, echo=None)
    finally:
        client.unregister_worker_plugin("kill-on-task-start")
    assert fired.exists(), "no task started after the first cell finished: nothing was killed"
    victim = json.loads(fired.read_text())  # it was starting a task when killed
    assert res.ok, str(res.summary)
    assert_same_outputs(spec.output_path, ref_spec.output_path)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert victim["worker"] not in worker_table(client)


def test_a_failing_cell_is_retried_then_recorded_while_the_others_finish(
    reference, stac, ckpt, client, tmp_path, monkeypatch
):
    ref_spec, _ = reference
    spec = load_jobspec(write_spec(tmp_path, stac, ckpt, retries=1))
    out = spec.output_path
    bad = sorted(c for c, s in _statuses(ref_spec.output_path).items() if s == "done")[1]
    calls: dict[str, int] = {}
    real = cube_mod.assemble

    def flaky(cspec):
        cid = Path(cspec.out).parent.name
        calls[cid] = calls.get(cid, 0) + 1
        if cid == bad:
            raise StacUnreachableError(f"STAC API {cspec.stac_url} did not answer: read timed out (30 s)")
        return real(cspec)

    monkeypatch.setattr(cube_mod, "assemble", flaky)
    res = run_job(spec, client, progress=False, echo=None)
    assert res.failed and not res.ok
    s = res.summary
    assert s.n_failed == 1 and list(s.failed) == [bad] and "timed out" in s.failed[bad]
    assert calls[bad] == 2  # 1 + retries attempts
    assert s.done + s.n_empty == s.total - 1  # the others finished
    assert f"FAILED {bad}" in str(s)
    table = pd.read_csv(out / "summary.csv").set_index("cell")
    assert table.loc[bad, "status"] == "failed" and "timed out" in table.loc[bad, "reason"]
    assert (out / "landslides.parquet").exists()  # outputs of the finished cells

    # the STAC API answers again: a rerun computes only the failed cell and completes the job
    monkeypatch.setattr(cube_mod, "assemble", real)
    res2 = run_job(spec, client, progress=False, echo=None)
    assert res2.ok and res2.computed == [bad]
    assert_same_outputs(out, ref_spec.output_path)


def test_a_fully_clouded_cell_is_empty_not_failed(stac, ckpt, client, tmp_path, monkeypatch):
    from landslide_dask.jobs.country import NO_VALID_PIXEL

    spec = load_jobspec(write_spec(tmp_path, stac, ckpt, area={"bbox": [83.986, 28.193, 83.996, 28.199]}))
    cells = make_cells(spec.area.geometry(), spec.cell_size_km)
    assert len(cells) == 2
    clouded = cells[0].id
    real = cube_mod.assemble

    def clouds(cspec):  # every pixel of one cell masked, as under a complete cloud cover
        ds = real(cspec)
        if Path(cspec.out).parent.name == clouded:
            ds["valid"] = ds["valid"] & False
        return ds

    monkeypatch.setattr(cube_mod, "assemble", clouds)
    res = run_job(spec, client, progress=False, echo=None)
    assert res.ok and res.summary.done == 1 and res.summary.empty == {clouded: NO_VALID_PIXEL}
    assert not (spec.output_path / "cells" / clouded / "probability.zarr").exists()  # no prediction made
    assert pd.read_csv(spec.output_path / "summary.csv").set_index("cell").loc[clouded, "status"] == "empty"


# --------------------------------------------------------------------------- output on object storage


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server (moto, its own process) on loopback; IAM authentication is
    enforced inside ``with s3.authenticated():`` (see tests/s3.py)."""
    from ..helpers.s3 import MotoS3

    with MotoS3() as server:
        yield server


class _StopDriver(Exception):
    """Raised from on_cell: the driver stops between cells, as a killed job would."""


def _objects(fs, prefix: str) -> dict[str, tuple]:
    """key -> (ETag, LastModified) of every object under prefix (a rewritten object changes both)."""
    fs.invalidate_cache()
    return {k: (v["ETag"], v["LastModified"]) for k, v in fs.find(prefix, detail=True).items()}


def test_job_to_s3_resumes_and_gives_the_same_outputs_as_a_local_run(reference, s3, stac, ckpt, client, tmp_path):
    ref_spec, ref = reference
    fs = s3.fs()
    root = f"{s3.bucket}/tiny-country"
    fs.put_file(str(ckpt), f"{s3.bucket}/models/tiny.pt")  # the checkpoint, by URL too
    scratch = tmp_path / "scratch"
    spec = load_jobspec(
        write_spec(
            tmp_path,
            stac,
            ckpt,
            output=f"s3://{root}",
            model=f"s3://{s3.bucket}/models/tiny.pt",
            storage_options=s3.storage_options(),
            scratch=str(scratch),
        )
    )
    assert not spec.output_is_local and spec.scratch_dir() == scratch

    # first run: the driver stops after 2 finished cells (one cell in flight at a time, so none is left half done)
    finished: list[str] = []

    def stop_after_two(cell_id, status):
        finished.append(cell_id)
        if len(finished) == 2:
            raise _StopDriver

    with pytest.raises(_StopDriver):
        run_job(spec, client, progress=False, concurrency=1, on_cell=stop_after_two, echo=None)
    m = json.loads(fs.cat_file(f"{root}/manifest.json"))  # the manifest is on S3, up to date
    st = {cid: rec["status"] for cid, rec in m["cells"].items()}
    assert sorted(c for c, x in st.items() if x in ("done", "empty")) == sorted(finished)
    assert {x for c, x in st.items() if c not in finished} == {"pending"}
    assert not fs.exists(f"{root}/landslides.parquet")
    before = _objects(fs, f"{root}/cells")
    assert {k.split("/")[3] for k in before} == set(finished)  # only finished cells were uploaded
    assert not any((scratch / "cells" / c).exists() for c in finished)  # ... and freed in scratch
    (cached,) = list((scratch / "models").glob("*/tiny.pt"))  # the checkpoint, fetched once
    cached_mtime = cached.stat().st_mtime_ns

    # rerun: resumes from the S3 manifest, computes only the rest, leaves the finished cells' objects alone
    res = run_job(spec, client, progress=False, echo=None)
    assert res.ok and sorted(res.computed) == sorted(set(st) - set(finished))
    after = _objects(fs, f"{root}/cells")
    assert {k: v for k, v in after.items() if k in before} == before
    assert cached.stat().st_mtime_ns == cached_mtime and len(list((scratch / "models").glob("*/*"))) == 1
    assert all(v.startswith(f"s3://{root}/") for v in res.outputs.values()), res.outputs
    assert res.n_polygons == ref.n_polygons and "upload" in res.seconds
    m = json.loads(fs.cat_file(f"{root}/manifest.json"))
    ref_m = json.loads((ref_spec.output_path / "manifest.json").read_text())
    assert m["runs"] == 2 and m["fingerprint"] == ref_m["fingerprint"]  # same job: the checkpoint's bytes count
    assert s3.rw[1] not in json.dumps(m) and m["meta"]["storage_options"]["secret"] == "***"
    assert all(
        r["outputs"]["cog"].startswith(f"s3://{root}/cells/") for r in m["cells"].values() if r["status"] == "done"
    )
    assert not (scratch / "country").exists() and not (scratch / "cells").exists()  # scratch freed

    # the same polygons, statuses and COG pixels as the local job; the same summary
    local = tmp_path / "downloaded"
    fs.get(root + "/", str(local), recursive=True)
    assert_same_outputs(local, ref_spec.output_path)
    ta, tb = pd.read_csv(local / "summary.csv"), pd.read_csv(ref_spec.output_path / "summary.csv")
    keep = [c for c in tb.columns if not c.endswith("_s")]
    pd.testing.assert_frame_equal(ta[keep], tb[keep])
    assert gpd.read_file(local / "landslides.gpkg").shape[0] == ref.n_polygons
    assert (local / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the country mosaic and the web map (its whole folder) are published too, the same as the local job's
    assert res.outputs["web_map"] == f"s3://{root}/web/index.html"
    assert (local / "web" / "data.js").exists() and list((local / "web" / "tiles" / "probability").rglob("*.png"))
    with (
        rasterio.open(local / "mosaic" / "probability_EPSG3857.tif") as a,
        rasterio.open(ref_spec.output_path / "mosaic" / "probability_EPSG3857.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(1), b.read(1))

    # the VRTs on S3 open in GDAL through /vsis3/ and mosaic exactly what the local VRTs do
    index = json.loads((local / "mosaic" / "index.json").read_text())
    assert set(index["vrts"]) == {"EPSG:32644", "EPSG:32645"} and index["gdal_root"] == f"/vsis3/{root}"
    for z in (32644, 32645):
        assert f"/vsis3/{root}/cells/" in (local / "mosaic" / f"probability_EPSG{z}.vrt").read_text()
        with rasterio.open(ref_spec.output_path / "mosaic" / f"probability_EPSG{z}.vrt") as src:
            want, want_mask, want_t = src.read(1), src.read_masks(1), src.transform
        with s3.gdal_env(), rasterio.open(f"/vsis3/{root}/mosaic/probability_EPSG{z}.vrt") as src:
            assert src.transform == want_t
            np.testing.assert_array_equal(src.read(1), want)
            np.testing.assert_array_equal(src.read_masks(1), want_mask)

    # a third run of the finished job recomputes nothing and uploads no cell again
    res3 = run_job(spec, client, progress=False, echo=None)
    assert res3.ok and res3.computed == [] and _objects(fs, f"{root}/cells") == after


@pytest.mark.parametrize("case", ["no-bucket", "read-only", "wrong-secret", "unreachable"])
def test_a_bad_s3_output_fails_before_any_cell_runs(case, s3, stac, ckpt, client, tmp_path):
    from landslide_dask.jobs.spec import JobSpecError

    bucket, keys, endpoint, extra = s3.bucket, s3.rw, None, {}
    if case == "no-bucket":
        bucket = "no-such-bucket"
    elif case == "read-only":
        keys = s3.ro
    elif case == "wrong-secret":
        keys = (s3.rw[0], "not-the-secret")
    else:  # nothing listens there; one attempt per request, so the test is quick (defaults retry ~6 s)
        from ..helpers.s3 import free_port

        endpoint = f"http://127.0.0.1:{free_port()}"
        extra = {"config_kwargs": {"retries": {"total_max_attempts": 1}, "connect_timeout": 2}}
    words = {
        "no-bucket": ["no-such-bucket", "does not exist", "bucket"],
        "read-only": ["Access Denied", "credentials"],
        "wrong-secret": ["signature", "credentials"],
        "unreachable": ["cannot be reached", "endpoint_url"],
    }[case]
    scratch = tmp_path / "scratch"
    spec = load_jobspec(
        write_spec(
            tmp_path,
            stac,
            ckpt,
            output=f"s3://{bucket}/job",
            scratch=str(scratch),
            storage_options=s3.storage_options(keys, endpoint=endpoint, **extra),
        )
    )
    calls = []
    t0 = time.perf_counter()
    with s3.authenticated(), pytest.raises(JobSpecError) as ei:
        run_job(spec, client, progress=False, echo=None, on_cell=lambda *a: calls.append(a))
    assert time.perf_counter() - t0 < 20
    assert ei.value.fields() == ["output"]
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert calls == [] and not scratch.exists()  # nothing ran, nothing was written
    assert not s3.fs().exists(f"{s3.bucket}/job")


def test_submit_refuses_a_bad_s3_output_before_starting_a_cluster(s3, stac, ckpt, tmp_path, capsys):
    from landslide_dask.cli import main

    job = write_spec(tmp_path, stac, ckpt, output="s3://no-such-bucket/job", storage_options=s3.storage_options())
    # the scheduler address is never contacted: the output check comes first
    rc = main(["submit", str(job), "--scheduler", "tcp://127.0.0.1:9", "--scratch", str(tmp_path / "scratch")])
    err = capsys.readouterr().err
    assert rc == 1 and "submit: error" in err and "no-such-bucket" in err and "does not exist" in err, err
    assert not (tmp_path / "scratch").exists()


def test_a_missing_fsspec_backend_names_the_pip_package(stac, ckpt, tmp_path):
    from landslide_dask.jobs.spec import JobSpecError

    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    spec = load_jobspec(write_spec(tmp_path, stac, ckpt, output="gs://some-bucket/job"))
    with pytest.raises(JobSpecError, match="pip install gcsfs") as ei:
        spec.check_paths()
    assert ei.value.fields() == ["output"]


# --------------------------------------------------------------------------- a real SLURM cluster


def test_the_job_through_a_real_slurm_cluster_gives_the_same_outputs(reference, slurm, stac, ckpt, tmp_path):  # noqa: F811
    from landslide_dask.clusters.start import start_cluster

    ref_spec, ref = reference
    spec = load_jobspec(write_spec(tmp_path, stac, ckpt, cluster="slurm"))  # the shipped example, by name
    t0 = time.perf_counter()
    with start_cluster(spec.cluster, overrides=_overrides(slurm, tmp_path), echo=None) as slurm_client:
        t_up = time.perf_counter() - t0
        jobs = slurm.job_ids()
        assert len(jobs) == 2  # one SLURM job per Dask worker
        assert all(a.startswith("tls://") for a in [slurm_client.scheduler.address, *worker_table(slurm_client)])
        res = run_job(spec, slurm_client, progress=False, echo=None)
        where = slurm_client.run(lambda: os.environ.get("SLURM_JOB_ID"))
    assert sorted(where.values()) == sorted(jobs)  # the work ran inside the SLURM jobs
    assert slurm.job_ids() == []  # and they were cancelled after
    assert res.ok
    assert_same_outputs(spec.output_path, ref_spec.output_path)
    print(
        f"\n[country] SLURM: 2 workers up in {t_up:.1f}s, job {time.perf_counter() - t0 - t_up:.1f}s "
        f"(LocalCluster: {ref.wall_s:.1f}s)",
        file=sys.stderr,
    )
