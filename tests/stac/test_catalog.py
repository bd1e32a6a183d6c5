"""Cataloguing real and hand-made GeoTIFFs, then finding them through the real STAC API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, shape

from landslide_dask.errors import InputDataError, UsageError
from landslide_dask.stac.catalog import CatalogWarning, catalog_geotiffs
from landslide_dask.stac.local import load_stac_dir
from landslide_dask.stac.search import search_items
from landslide_dask.stac.server import serve_stac

from ..helpers import SHARED_DATA

DATA = SHARED_DATA
IMAGES = DATA / "chattogram_s2_tiles" / "LandslideData" / "images"
BANDS = ["red", "green", "blue", "nir"]


@pytest.fixture(scope="module")
def images() -> Path:
    if not IMAGES.is_dir():
        pytest.skip(f"real Chattogram Sentinel-2 tiles not found at {IMAGES} (shared data folder absent)")
    return IMAGES


@pytest.fixture(scope="module")
def chattogram(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chattogram_cat")
    return catalog_geotiffs(images, out, collection="chattogram", bands=BANDS, datetime="2019-06-20", nodata=0)


def _items(out: Path, collection: str) -> list[dict]:
    return json.loads((out / "stac" / "items" / f"{collection}.json").read_text())["features"]


def test_real_tiles_one_item_per_file_with_band_assets(chattogram, images):
    _, items = load_stac_dir(chattogram)  # absolute hrefs, as served
    sources = sorted(images.glob("*.tif"))
    assert len(sources) == 100 and len(items) == 100
    assert {it["id"] for it in items} == {p.stem for p in sources}
    for it in items:
        src_path = images / f"{it['id']}.tif"
        assert sorted(it["assets"]) == sorted(BANDS)
        assert it["properties"]["datetime"] == "2019-06-20T00:00:00Z"
        assert "eo:cloud_cover" not in it["properties"]  # unknown, not invented
        assert it["properties"]["proj:epsg"] == 4326 and it["properties"]["proj:code"] == "EPSG:4326"
        with rasterio.open(src_path) as src:
            assert it["properties"]["proj:shape"] == [src.height, src.width]
            assert it["properties"]["proj:transform"] == pytest.approx(list(src.transform)[:6])
            assert it["bbox"] == pytest.approx(list(src.bounds))
            src_data = src.read()
            for b, name in enumerate(BANDS):
                href = it["assets"][name]["href"]
                assert href.endswith(".vrt") and Path(href).is_relative_to(chattogram / "assets")
                with rasterio.open(href) as band:
                    assert band.count == 1 and band.nodata == 0
                    assert band.crs == src.crs and band.transform == src.transform
                    np.testing.assert_array_equal(band.read(1), src_data[b])


def test_search_by_bbox_returns_exactly_intersecting_tiles(chattogram, images):
    bounds = {}
    for p in images.glob("*.tif"):
        with rasterio.open(p) as src:
            bounds[p.stem] = box(*src.bounds)
    w = min(b.bounds[0] for b in bounds.values())
    s = min(b.bounds[1] for b in bounds.values())
    e = max(b.bounds[2] for b in bounds.values())
    n = max(b.bounds[3] for b in bounds.values())
    # an off-grid window in the south-west part of the mosaic
    q = (w + 0.137 * (e - w), s + 0.211 * (n - s), w + 0.563 * (e - w), s + 0.477 * (n - s))
    expected = {k for k, b in bounds.items() if b.intersects(box(*q))}
    assert 0 < len(expected) < 100
    with serve_stac(chattogram) as url:
        got = search_items(url, ["chattogram"], q)
        assert {it["id"] for it in got} == expected
        assert all(shape(it["geometry"]).intersects(box(*q)) for it in got)
        # no cloud filter needed for items without eo:cloud_cover; a date outside finds nothing
        with pytest.raises(Exception, match="no STAC items"):
            search_items(url, ["chattogram"], q, datetime=("2020-01-01", "2020-12-31"))


def test_corrupt_and_non_raster_files_are_skipped(images, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = sorted(images.glob("*.tif"))[:3]
    for p in good:
        shutil.copy(p, src / p.name)
    data = good[0].read_bytes()
    (src / "truncated.tif").write_bytes(data[: len(data) // 2])
    (src / "notes.tif").write_text("this is not a raster")
    with pytest.warns(CatalogWarning) as rec:
        catalog_geotiffs(src, tmp_path / "out", bands=BANDS, datetime="2019-06-20")
    msg = " ".join(str(w.message) for w in rec)
    assert "truncated.tif" in msg and "notes.tif" in msg
    assert not any(g.name in msg for g in good)
    assert {it["id"] for it in _items(tmp_path / "out", "local-geotiffs")} == {p.stem for p in good}

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "notes.tif").write_text("nope")
    with pytest.warns(CatalogWarning), pytest.raises(InputDataError, match="readable"):
        catalog_geotiffs(only_bad, tmp_path / "out2", datetime="2019-06-20")


def test_band_count_mismatch_and_missing_date(images, tmp_path):
    one = sorted(images.glob("*.tif"))[0]
    with pytest.raises(InputDataError, match=r"has 4 band\(s\) but 3 band name\(s\)"):
        catalog_geotiffs(one, tmp_path / "o1", bands=["r", "g", "b"], datetime="2019-06-20")
    with pytest.raises(InputDataError, match="--datetime"):
        catalog_geotiffs(one, tmp_path / "o2")
    with pytest.raises(InputDataError, match="ISO 8601"):
        catalog_geotiffs(one, tmp_path / "o3", datetime="20th of June")


def _write(path: Path, crs: str, transform, arr: np.ndarray, nodata=None, tags=None, descriptions=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**tags)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)


def test_several_crs_dates_from_tags_and_band_names(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    utm = rng.integers(1, 1000, (1, 20, 30)).astype("uint16")
    _write(
        src / "a" / "scene.tif",
        "EPSG:32646",
        from_origin(400000, 2480000, 10, 10),
        utm,
        tags={"TIFFTAG_DATETIME": "2021:03:04 05:06:07"},
    )
    geo = rng.random((2, 10, 12)).astype("float32")
    _write(
        src / "b" / "scene.tif",
        "EPSG:4326",
        from_origin(91.0, 22.5, 0.001, 0.001),
        geo,
        nodata=-9999.0,
        tags={"TIFFTAG_DATETIME": "2021:03:05 00:00:00"},
        descriptions=["swir16", "swir22"],
    )
    (src / "readme.txt").write_text("not matched by the pattern")

    out = catalog_geotiffs(src, tmp_path / "out", collection="mixed")
    items = {it["id"]: it for it in load_stac_dir(out)[1]}
    assert set(items) == {"scene", "scene-2"}  # same stem in two folders -> unique ids
    by_crs = {it["properties"]["proj:epsg"]: it for it in items.values()}
    u, g = by_crs[32646], by_crs[4326]

    assert u["properties"]["datetime"] == "2021-03-04T05:06:07Z"
    assert g["properties"]["datetime"] == "2021-03-05T00:00:00Z"
    # single-band file referenced directly, named b1; lon/lat bbox of a UTM 46N tile near 91.9E
    assert list(u["assets"]) == ["b1"] and u["assets"]["b1"]["href"] == str(src / "a" / "scene.tif")
    w, s, e, n = u["bbox"]
    assert 90 < w < e < 93 and 22 < s < n < 23
    assert shape(u["geometry"]).area == pytest.approx((e - w) * (n - s), rel=0.02)
    # multi-band: names from band descriptions, source nodata carried
    assert list(g["assets"]) == ["swir16", "swir22"]
    for i, name in enumerate(["swir16", "swir22"]):
        with rasterio.open(g["assets"][name]["href"]) as band:
            assert band.nodata == -9999.0 and band.crs.to_epsg() == 4326
            np.testing.assert_array_equal(band.read(1), geo[i])

    # forcing a nodata value wraps even a single-band file in a VRT, and UTM grids survive it
    out2 = catalog_geotiffs(src / "a", tmp_path / "out2", nodata=0, bands=["red"])
    (it,) = load_stac_dir(out2)[1]
    href = it["assets"]["red"]["href"]
    assert href.endswith(".vrt")
    with rasterio.open(href) as band, rasterio.open(src / "a" / "scene.tif") as orig:
        assert band.nodata == 0 and band.crs == orig.crs and band.transform == orig.transform
        np.testing.assert_array_equal(band.read(1), utm[0])


def test_output_is_relocatable_and_sources_untouched(images, tmp_path):
    one = sorted(images.glob("*.tif"))[:2]
    src = tmp_path / "src"
    src.mkdir()
    for p in one:
        shutil.copy(p, src / p.name)
    os.chmod(src, 0o555)  # read-only source folder
    try:
        out = catalog_geotiffs(src, tmp_path / "out", bands=BANDS, datetime="2019-06-20", nodata=0)
    finally:
        os.chmod(src, 0o755)
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in one)
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    (it, _) = load_stac_dir(moved)[1]
    with rasterio.open(it["assets"]["nir"]["href"]) as band:
        assert band.read(1).shape == (256, 256)


def _band_tif(path: Path, res: float, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(200 / res)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=n,
        height=n,
        count=1,
        dtype="uint16",
        crs="EPSG:32645",
        transform=from_origin(500000, 3100000, res, res),
    ) as dst:
        dst.write(np.full((1, n, n), value, np.uint16))


def test_per_band_scenes_by_regex_with_dates_from_names_and_sidecars(tmp_path):
    # a flat download folder: two scenes of per-band files at 10 and 20 m, the date in one scene's
    # names and in an Earth Engine sidecar for the other
    src = tmp_path / "dl"
    for b, res in (("B02", 10), ("B04", 10), ("B11", 20)):
        _band_tif(src / f"T45RUL_20230420_{b}.tif", res, 100)
        _band_tif(src / f"S2_scene7_{b}.tif", res, 200)
        (src / f"S2_scene7_{b}.json").write_text(json.dumps({"properties": {"system:time_start": 1682899200000}}))
    out = catalog_geotiffs(
        src, tmp_path / "cat", collection="dl", group=r"(?P<item>.+)_B\d\d", date_pattern=r"_(?P<date>\d{8})_"
    )
    items = {i["id"]: i for i in _items(out, "dl")}
    assert sorted(items) == ["S2_scene7", "T45RUL_20230420"]
    for it in items.values():
        assert sorted(it["assets"]) == ["blue", "red", "swir16"]  # named by their band codes
        assert it["assets"]["swir16"]["proj:shape"] == [10, 10] and it["assets"]["blue"]["proj:shape"] == [20, 20]
    assert items["T45RUL_20230420"]["properties"]["datetime"] == "2023-04-20T00:00:00Z"  # from the names
    assert items["S2_scene7"]["properties"]["datetime"] == "2023-05-01T00:00:00Z"  # from the sidecars
    with pytest.raises(UsageError, match=r"\(\?P<item>"):
        catalog_geotiffs(src, tmp_path / "bad", collection="x", group=r"nomatch", datetime="2023-01-01")
    with pytest.raises(InputDataError, match="--date ITEM=YYYY-MM-DD"):
        catalog_geotiffs(src / "T45RUL_20230420_B02.tif", tmp_path / "nodate", collection="x")
