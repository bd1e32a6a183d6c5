"""The demo country (``make-demo-data --country``): big enough, in two UTM zones, clustered events,
written like the regions (granules that agree where they overlap, an inventory for the whole area).

The full country (~2,180 km²) takes minutes to render, so the spec is checked whole and the code
path is run on a scaled-down country of ~9 km² across the same 84 E zone boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from rasterio.windows import from_bounds

from landslide_dask.demo.run import country_object_scores
from landslide_dask.demo.synth import (
    CountryWorld,
    country_area_km2,
    country_spec,
    utm_epsg,
)
from landslide_dask.demo.synth import zone_reach as _zone_reach
from landslide_dask.jobs.cells import make_cells

from ..helpers import REPO

ROOT = REPO
from ..helpers import SMALL_COUNTRY_BBOX as SMALL_BBOX  # noqa: E402


@pytest.fixture(scope="module")
def small(small_country) -> Path:
    return small_country


@pytest.fixture(scope="module")
def entry(small) -> dict:
    regions = json.loads((small / "regions.json").read_text())
    assert len(regions) == 1
    return regions[0]


@pytest.fixture(scope="module")
def s2_items(small) -> list[dict]:
    return json.loads((small / "stac" / "items" / "sentinel-2-l2a.json").read_text())["features"]


def test_the_demo_country_is_the_demo_country_job_area_in_two_zones():
    spec = country_spec(0)
    job = yaml.safe_load((ROOT / "cluster" / "jobs" / "demo-country.yaml").read_text())
    assert list(spec.bbox) == job["area"]["bbox"]
    assert spec.event_date.isoformat() == str(job["event"]["date"])
    assert 2000.0 <= country_area_km2(spec) <= 2400.0
    world = CountryWorld(spec)
    assert {epsg for epsg, _ in _zone_reach(world)} == {32644, 32645}
    assert {c.epsg for c in make_cells(shapely.box(*spec.bbox), job["cell_size_km"])} == {32644, 32645}
    # Several event clusters, each with its own decay and weight, in both zones.
    assert len(spec.events) >= 3
    assert len({e[2] for e in spec.events}) == len(spec.events)
    assert len({e[3] for e in spec.events}) == len(spec.events)
    assert {utm_epsg(lon, lat) for lon, lat, _, _ in spec.events} == {32644, 32645}
    # The world covers the whole bbox, plus a margin.
    x0, y0, x1, y1 = world.world_box
    assert shapely.box(x0, y0, x1, y1).contains(world.aoi_home)


def test_event_clusters_make_busy_and_quiet_places():
    spec = country_spec(0)
    world = CountryWorld(spec)
    ep = np.array([e[:2] for e in world.epicentres])
    assert world.slope_intensity(ep[:, 0], ep[:, 1]).min() >= 0.6
    # Between the clusters and far from them the event barely reached.
    mids = (ep[:, None, :] + ep[None, :, :]) / 2.0
    iu = np.triu_indices(len(ep), 1)
    between = world.slope_intensity(mids[..., 0][iu], mids[..., 1][iu])
    assert np.median(between) < 0.3
    _, _, x1, y1 = world.aoi_box
    assert world.slope_intensity(np.array([x1 - 1000.0]), np.array([y1 - 1000.0]))[0] < 0.02
    # So a square km at a (secondary) epicentre has many landslides, one in the far corner few.
    ex, ey = world.epicentres[1][:2]
    busy = world.features("slide", (ex - 500, ey - 500, ex + 500, ey + 500))
    quiet = CountryWorld(spec).features("slide", (x1 - 1500, y1 - 1500, x1 - 500, y1 - 500))
    assert len(busy) >= 12, len(busy)
    assert len(quiet) <= 6, len(quiet)


def test_small_country_layout_and_both_zones(small, entry, s2_items):
    assert entry["kind"] == "country"
    assert entry["imagery_epsg"] == [32644, 32645]
    assert entry["bbox"] == list(SMALL_BBOX)
    assert len(entry["epicentres"]) == 4
    for key in ("aoi", "inventory", "inventory_area"):
        assert (small / entry[key]).is_file()
    for name in ("sentinel-2-l2a", "cop-dem-glo-30"):
        assert (small / "stac" / "collections" / f"{name}.json").is_file()
    zones = {int(it["properties"]["proj:code"].split(":")[1]) for it in s2_items}
    assert zones == {32644, 32645}
    assert len({it["id"] for it in s2_items}) == len(s2_items) == entry["granules"] * 8
    for it in s2_items[:8]:
        for a in it["assets"].values():
            assert (small / "stac" / "items" / a["href"]).resolve().is_file()
    # Items of both zones cover the area: each zone's footprints reach its side of 84 E.
    for epsg, side in (
        (32644, shapely.box(SMALL_BBOX[0], SMALL_BBOX[1], 84.0, SMALL_BBOX[3])),
        (32645, shapely.box(84.0, SMALL_BBOX[1], SMALL_BBOX[2], SMALL_BBOX[3])),
    ):
        foot = shapely.union_all(
            [
                shapely.geometry.shape(it["geometry"])
                for it in s2_items
                if it["properties"]["proj:code"] == f"EPSG:{epsg}"
            ]
        )
        assert foot.buffer(1e-4).contains(side)


def test_overlapping_granules_of_a_zone_agree_pixel_for_pixel(small, s2_items):
    by_key: dict[tuple, list[dict]] = {}
    for it in s2_items:
        by_key.setdefault((it["properties"]["proj:code"], it["properties"]["datetime"][:10]), []).append(it)
    compared = 0
    for items in by_key.values():
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                ba, bb = shapely.box(*a["properties"]["proj:bbox"]), shapely.box(*b["properties"]["proj:bbox"])
                ov = ba.intersection(bb)
                if ov.area <= 0:
                    continue
                for band in ("red", "nir", "scl"):
                    arrs = []
                    for it in (a, b):
                        with rasterio.open((small / "stac" / "items" / it["assets"][band]["href"]).resolve()) as src:
                            arrs.append(src.read(1, window=from_bounds(*ov.bounds, transform=src.transform)))
                    assert arrs[0].shape == arrs[1].shape and arrs[0].size > 0
                    np.testing.assert_array_equal(arrs[0], arrs[1])
                    compared += int((arrs[0] > 0).sum())
    assert compared > 10_000


def test_inventory_collected_by_strips_is_the_whole_inventory(small, entry):
    fc = json.loads((small / entry["inventory"]).read_text())
    feats = fc["features"]
    assert len(feats) == entry["landslides"] > 20
    assert [f["properties"]["id"] for f in feats] == list(range(1, len(feats) + 1))
    # The same landslides, computed in one call over the whole area (1 km strips were written).
    spec = country_spec(0, SMALL_BBOX)
    world = CountryWorld(spec)
    whole = [f for f in world.features("slide", world.aoi_home.bounds) if f.poly.intersects(world.aoi_home)]
    assert len(whole) == len(feats)
    np.testing.assert_allclose(
        sorted(f["properties"]["area_m2"] for f in feats), sorted(round(f.poly.area, 1) for f in whole)
    )
    inv = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in feats])
    assert shapely.box(*SMALL_BBOX).buffer(0.01).contains(inv)
    assert inv.intersects(shapely.box(SMALL_BBOX[0], SMALL_BBOX[1], 84.0, SMALL_BBOX[3]))
    assert inv.intersects(shapely.box(84.0, SMALL_BBOX[1], SMALL_BBOX[2], SMALL_BBOX[3]))


def test_country_object_scores(small, entry, tmp_path):
    inv = small / entry["inventory"]
    ref = gpd.read_file(inv)
    same = tmp_path / "same.parquet"
    ref.to_parquet(same)
    s = country_object_scores(same, inv, entry["bbox"], entry["epsg"])
    assert s["precision"] == 1.0 and s["recall"] == 1.0 and 0.8 * len(ref) < s["n_reference"] <= len(ref)
    # Half the landslides plus 30 squares of 20 m away from every landslide: exact scores.
    box = shapely.box(*entry["bbox"])
    inside = shapely.within(shapely.point_on_surface(ref.geometry.values), box)
    assert inside.sum() > 0.8 * len(ref)
    half = ref[inside].iloc[::2]  # counted predictions: their point on surface is in the bbox
    utm = ref.to_crs(entry["epsg"])
    x0, y0, x1, y1 = gpd.GeoSeries([box], crs=4326).to_crs(entry["epsg"]).buffer(-100.0).total_bounds
    rng = np.random.default_rng(0)
    pts = shapely.points(rng.uniform(x0, x1, 400), rng.uniform(y0, y1, 400))
    free = pts[~shapely.intersects(pts, shapely.union_all(utm.geometry.values).buffer(60.0))][:30]
    assert len(free) == 30
    squares = gpd.GeoSeries(shapely.buffer(free, 10.0, cap_style="square"), crs=entry["epsg"]).to_crs(4326)
    pred = gpd.GeoDataFrame(geometry=list(half.geometry) + list(squares), crs=4326)
    pred.to_parquet(tmp_path / "half.parquet")
    s = country_object_scores(tmp_path / "half.parquet", inv, entry["bbox"], entry["epsg"])
    assert s["n_reference"] == inside.sum() and s["n_predicted"] == len(half) + 30
    assert s["recall"] == pytest.approx(len(half) / inside.sum())
    assert s["precision"] == pytest.approx(len(half) / (len(half) + 30))


def test_cli_refuses_a_bad_country_bbox(tmp_path, capsys):
    from landslide_dask.cli import main

    # bad arguments, a wrong count or a reversed box alike: exit 2, after the usage line
    assert main(["make-demo-data", str(tmp_path / "x"), "--country", "--bbox", "84,28"]) == 2
    assert main(["make-demo-data", str(tmp_path / "x"), "--country", "--bbox", "84.2,28,84.1,28.1"]) == 2
    assert "bbox" in capsys.readouterr().err
