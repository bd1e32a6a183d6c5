"""Cube assembly end to end: live STAC API -> per-block reads -> composites, terrain, labels -> zarr."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from landslide_dask.cli import main as cli_main
from landslide_dask.cube.build import CubeSpec, build_cube, solar_day
from landslide_dask.cube.composite import SCL_NOT_CLEAR
from landslide_dask.cube.read import open_cube
from landslide_dask.errors import EmptySearchError, InputDataError, UsageError
from landslide_dask.stac.local import load_stac_dir
from landslide_dask.stac.server import serve_stac


def _spec(data: Path, region: dict, url: str, out: Path, **kw) -> CubeSpec:
    return CubeSpec(
        stac_url=url,
        event_date=date.fromisoformat(region["event_date"]),
        aoi=data / region["aoi"],
        out=out,
        inventory=data / region["inventory"],
        inventory_area=data / region["inventory_area"],
        **kw,
    )


def _items(data: Path) -> list[dict]:
    return [it for it in load_stac_dir(data)[1] if it["collection"] == "sentinel-2-l2a"]


def _epsg(item: dict) -> int:
    return int(item["properties"].get("proj:epsg") or item["properties"]["proj:code"].split(":")[1])


def _straddling(data: Path, regions: list[dict]) -> dict:
    """The region whose imagery comes from granules in two UTM zones."""
    items = _items(data)
    for r in regions:
        aoi = gpd.read_file(data / r["aoi"]).union_all()
        zones = {_epsg(it) for it in items if shapely.geometry.shape(it["geometry"]).intersects(aoi)}
        if len(zones) > 1:
            return r
    raise AssertionError("no demo region straddles a UTM zone boundary")


def _single_zone(data: Path, regions: list[dict]) -> dict:
    s = _straddling(data, regions)
    return next(r for r in regions if r["name"] != s["name"])


@pytest.fixture(scope="module")
def cube_a(demo_data, demo_regions, demo_stac, tmp_path_factory) -> tuple[dict, Path]:
    region = _single_zone(demo_data, demo_regions)
    out = tmp_path_factory.mktemp("cubes") / "a.zarr"
    build_cube(_spec(demo_data, region, demo_stac, out, chunk=96), progress=False)
    return region, out


def test_cube_follows_the_contract(cube_a):
    region, path = cube_a
    ds = open_cube(path)
    assert ds["pre"].dims == ("band", "y", "x") and ds["pre"].dtype == np.uint16
    assert ds["post"].dtype == np.uint16 and ds["slope"].dtype == np.float32
    assert ds["hillshade"].dtype == np.uint8 and ds["valid"].dtype == bool and ds["label"].dtype == np.uint8
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"]
    assert ds.attrs["epsg"] == region["epsg"] and ds.attrs["crs"] == f"EPSG:{region['epsg']}"
    assert ds.attrs["pre_dates"] and ds.attrs["post_dates"] and ds.attrs["stac_items"]
    assert ds.attrs["event_date"] == region["event_date"]
    t = ds.attrs["transform"]
    assert t[0] == 10.0 and t[4] == -10.0 and t[2] % 10 == 0 and t[5] % 10 == 0
    assert np.allclose(np.diff(ds["x"].values), 10.0) and ds["x"].values[0] == t[2] + 5
    assert ds["post"].chunks[1][0] == 96  # chunk-aligned zarr
    valid = ds["valid"].values
    assert 0.5 < valid.mean() <= 1.0
    post = ds["post"].values
    assert (post[:, valid] > 0).all()  # valid means every band has data
    assert set(np.unique(ds["label"].values)) <= {0, 1, 255} and (ds["label"] == 1).any()
    slope = ds["slope"].values
    assert np.isfinite(slope[valid]).all() and 0 <= np.nanmin(slope) and np.nanmax(slope) < 90
    assert Path(path).with_suffix(".png").stat().st_size > 10_000


def test_composite_equals_numpy_median_of_clear_pixels(cube_a, demo_data):
    region, path = cube_a
    ds = open_cube(path)
    event = date.fromisoformat(region["event_date"])
    items = [
        it
        for it in _items(demo_data)
        if _epsg(it) == region["epsg"] and solar_day(it) != event and abs((solar_day(it) - event).days) <= 90
    ]
    rng = np.random.default_rng(0)
    rows = rng.integers(0, ds.sizes["y"], 40)
    cols = rng.integers(0, ds.sizes["x"], 40)
    checked = 0
    for r, c in zip(rows, cols):
        x, y = float(ds["x"][c]), float(ds["y"][r])
        obs = {"pre": [], "post": []}
        ambiguous = False
        for day in sorted({solar_day(it) for it in items}):
            covering = []
            for it in (i for i in items if solar_day(i) == day):
                with rasterio.open(it["assets"]["red"]["href"]) as src:
                    rr, cc = src.index(x, y)
                    if 0 <= rr < src.height and 0 <= cc < src.width:
                        v = src.read(1, window=((rr, rr + 1), (cc, cc + 1)))[0, 0]
                        if v:
                            with rasterio.open(it["assets"]["scl"]["href"]) as s2:
                                sr, sc = s2.index(x, y)
                                scl = s2.read(1, window=((sr, sr + 1), (sc, sc + 1)))[0, 0]
                            # the cube holds reflectance x 10,000: the DN less the item's offset (the
                            # demo's +1000 of processing baseline >= 04.00), a valid pixel stays >= 1
                            offset = it["assets"]["red"]["raster:bands"][0]["offset"]
                            covering.append((max(int(v) + round(offset * 1e4), 1), int(scl)))
            if len({v for v in covering}) > 1:
                ambiguous = True  # overlapping granules disagree: the mosaic order decides
            if covering and covering[-1][1] not in SCL_NOT_CLEAR:
                obs["pre" if day < event else "post"].append(covering[-1][0])
        if ambiguous:
            continue
        band = list(ds["band"].values).index("red")
        for when in ("pre", "post"):
            expected = np.rint(np.median(obs[when])) if obs[when] else 0
            assert int(ds[when][band, r, c]) == expected, (when, r, c, obs[when])
        checked += 1
    assert checked >= 20


def test_label_area_matches_the_inventory_within_pixel_tolerance(cube_a, demo_data):
    region, path = cube_a
    ds = open_cube(path)
    crs = ds.attrs["crs"]
    inv = gpd.read_file(demo_data / region["inventory"]).to_crs(crs).union_all()
    covered = gpd.read_file(demo_data / region["inventory_area"]).to_crs(crs).union_all()
    box = shapely.box(float(ds.x[0]) - 5, float(ds.y[-1]) - 5, float(ds.x[-1]) + 5, float(ds.y[0]) + 5)
    expected = inv.intersection(covered).intersection(box).area
    burned = float((ds["label"] == 1).sum()) * 100.0
    assert expected > 0
    # Edge pixels go either way: tolerance is half a pixel along every polygon boundary.
    tolerance = 0.5 * 10 * inv.intersection(box).length
    assert abs(burned - expected) < tolerance


def test_chunking_does_not_change_the_cube(cube_a, demo_data, demo_stac, tmp_path):
    region, path = cube_a
    other = build_cube(
        _spec(demo_data, region, demo_stac, tmp_path / "b.zarr", chunk=1024), progress=False, quicklook=False
    )
    a, b = open_cube(path), open_cube(other)
    for name in ("pre", "post", "slope", "hillshade", "valid", "label"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_region_across_a_utm_zone_boundary_is_mosaicked_without_a_seam(demo_data, demo_regions, demo_stac, tmp_path):
    region = _straddling(demo_data, demo_regions)
    ds = open_cube(
        build_cube(_spec(demo_data, region, demo_stac, tmp_path / "s.zarr", chunk=128), progress=False, quicklook=False)
    )
    assert ds.attrs["epsg"] == region["epsg"]
    # No column of missing data where the two zones' granules meet: every column has data.
    post_ok = (ds["post"] > 0).all("band").values
    inside = ds["valid"].values | post_ok
    col_frac = post_ok.mean(axis=0)
    assert col_frac.min() > 0.3, "a column without imagery: the zone boundary left a seam"
    assert inside.mean() > 0.6


def test_region_outside_all_imagery_is_an_empty_search(demo_data, demo_regions, demo_stac, tmp_path):
    region = demo_regions[0]
    aoi = tmp_path / "ocean.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(-30.0, -40.0, -29.98, -39.98)], crs=4326).to_file(aoi)
    spec = _spec(demo_data, region, demo_stac, tmp_path / "x.zarr")
    spec.aoi, spec.inventory, spec.inventory_area = aoi, None, None
    with pytest.raises(EmptySearchError) as err:
        build_cube(spec, progress=False)
    assert "sentinel-2-l2a" in str(err.value)
    assert not (tmp_path / "x.zarr").exists()


def _copy_with(demo_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(demo_data, dst)
    return dst


def _post_item_over(data: Path, region: dict) -> dict:
    event = date.fromisoformat(region["event_date"])
    aoi = gpd.read_file(data / region["aoi"]).union_all()
    return next(
        it for it in _items(data) if solar_day(it) > event and shapely.geometry.shape(it["geometry"]).intersects(aoi)
    )


def test_truncated_cog_is_an_error_naming_the_file_and_leaves_no_cube(demo_data, demo_regions, tmp_path):
    data = _copy_with(demo_data, tmp_path)
    region = _single_zone(data, demo_regions)
    item = _post_item_over(data, region)
    href = Path(item["assets"]["red"]["href"])
    href.write_bytes(href.read_bytes()[: href.stat().st_size // 3])
    out = tmp_path / "t.zarr"
    with serve_stac(data) as url, pytest.raises(InputDataError) as err:
        build_cube(_spec(data, region, url, out), progress=False)
    assert href.name in str(err.value) and "exclude-item" in str(err.value)
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_missing_asset_is_an_error_naming_the_item(demo_data, demo_regions, tmp_path):
    data = _copy_with(demo_data, tmp_path)
    region = _single_zone(data, demo_regions)
    item = _post_item_over(data, region)
    items_file = data / "stac" / "items" / "sentinel-2-l2a.json"
    fc = json.loads(items_file.read_text())
    for f in fc["features"]:
        if f["id"] == item["id"]:
            del f["assets"]["nir"]
    items_file.write_text(json.dumps(fc))
    with serve_stac(data) as url, pytest.raises(InputDataError, match=f"{item['id']}.*'nir'"):
        build_cube(_spec(data, region, url, tmp_path / "m.zarr"), progress=False)


def test_cli_reports_bad_input_clearly(demo_data, demo_regions, demo_stac, tmp_path, capsys):
    region = demo_regions[0]
    code = cli_main(
        [
            "cube",
            "--stac",
            demo_stac,
            "--event-date",
            region["event_date"],
            "--aoi",
            str(tmp_path / "missing.geojson"),
            "--out",
            str(tmp_path / "c.zarr"),
        ]
    )
    assert code == 2  # an --aoi naming no file is a bad argument: exit 2, the file named, what to pass
    err = capsys.readouterr().err
    assert "missing.geojson does not exist" in err and "W,S,E,N" in err


def test_open_cube_refuses_an_unfinished_write(tmp_path):
    (tmp_path / "r.zarr.partial").mkdir()
    with pytest.raises(InputDataError, match="did not finish"):
        open_cube(tmp_path / "r.zarr")


def test_an_aoi_can_be_a_bbox_in_degrees():
    from landslide_dask.cube.build import read_aoi

    gdf, rep = read_aoi("141.89,42.68, 142.03,42.77")
    assert gdf.crs.to_epsg() == 4326 and tuple(gdf.total_bounds) == (141.89, 42.68, 142.03, 42.77)
    assert rep.features == 1 and rep.repaired == 0
    with pytest.raises(UsageError, match="W < E"):
        read_aoi("142.03,42.68,141.89,42.77")
