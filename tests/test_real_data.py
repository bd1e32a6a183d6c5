"""Real Sentinel-2 GeoTIFFs (Chattogram, EPSG:4326) through catalog -> STAC API -> cube."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer

from landslide_dask.cube.build import CubeSpec, build_cube
from landslide_dask.cube.read import open_cube
from landslide_dask.stac.catalog import catalog_geotiffs
from landslide_dask.stac.server import serve_stac

from .helpers import SHARED_DATA

TILES = SHARED_DATA / "chattogram_s2_tiles" / "LandslideData" / "images"
pytestmark = pytest.mark.skipif(not TILES.exists(), reason="../shared/data/chattogram_s2_tiles is not in this clone")


def test_real_chattogram_tiles_are_catalogued_and_cubed(tmp_path):
    stac = catalog_geotiffs(
        TILES,
        tmp_path / "stac",
        collection="chattogram",
        bands=["red", "green", "blue", "nir"],
        datetime="2024-06-20T04:30:00Z",
        nodata=0,
    )
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(91.80, 22.40, 91.85, 22.45)], crs=4326).to_file(aoi)
    with serve_stac(stac) as url:
        spec = CubeSpec(
            stac_url=url,
            event_date=date(2024, 6, 10),
            aoi=aoi,
            out=tmp_path / "c.zarr",
            collection="chattogram",
            bands=("red", "green", "blue", "nir"),
            scl_asset=None,
            dem_collection=None,
            post_only=True,
            chunk=256,
        )
        ds = open_cube(build_cube(spec, progress=False))
    assert ds.attrs["epsg"] == 32646  # UTM 46N for lon 91.8
    assert "pre" not in ds and "slope" not in ds and ds.attrs["cloud_mask"] == "none"
    valid = ds["valid"].values
    assert 0.2 < valid.mean() < 1.0  # the tiles' 0 = outside-the-area pixels are not valid
    # Each cube pixel holds the DN of the source pixel under its centre (nearest resampling).
    to_ll = Transformer.from_crs(32646, 4326, always_xy=True)
    rows, cols = np.nonzero(valid)
    pick = np.random.default_rng(1).choice(len(rows), 60, replace=False)
    tiles = [rasterio.open(p) for p in sorted(TILES.glob("*.tif"))]
    same = total = 0
    try:
        for k in pick:
            r, c = rows[k], cols[k]
            lon, lat = to_ll.transform(float(ds.x[c]), float(ds.y[r]))
            for t in tiles:
                tr, tc = t.index(lon, lat)
                if 0 <= tr < t.height and 0 <= tc < t.width:
                    v = t.read(1, window=((tr, tr + 1), (tc, tc + 1)))[0, 0]
                    if v > 0:
                        total += 1
                        same += int(ds["post"].sel(band="red")[r, c]) == int(v)
                        break
    finally:
        for t in tiles:
            t.close()
    assert total >= 50 and same / total > 0.9


L4S = SHARED_DATA / "landslide4sense_images"


@pytest.mark.skipif(not L4S.exists(), reason="../shared/data/landslide4sense_images is not in this clone")
def test_real_landslide4sense_images_read_as_sentinel2_dn_degrees_and_metres(tmp_path):
    # 14 real competition test patches (no masks). The l4s preset undoes the dataset's per-channel
    # division by its means: blue/red/NIR come back as Sentinel-2 DN of a vegetated mountain scene.
    from landslide_dask.cube.patches import import_patches, patch_windows

    cube = import_patches(L4S, tmp_path / "l4s.zarr", require_masks=False, progress=False)
    ds = open_cube(cube)
    assert ds.attrs["patch_count"] == 14 and ds.attrs["patch_size"] == 128 and ds.attrs["patch_unlabelled"] == 14
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"]
    assert len(patch_windows(cube)) == 14
    valid = ds["valid"].values
    assert valid.sum() == 14 * 128 * 128  # every real pixel is finite and valid; empty slots are not
    assert (ds["label"].values == 255).all()  # unlabelled test data: unknown, never "no landslide"
    post = ds["post"].values[:, valid]
    p5, p95 = np.percentile(post, [5, 95], axis=1)
    # measured on these files (see the issue): blue 591-1179, red 276-1058, NIR 1022-2993 DN
    for band, lo, hi in (("blue", 591, 1179), ("red", 276, 1058), ("nir", 1022, 2993)):
        i = list(ds["band"].values).index(band)
        assert p5[i] == pytest.approx(lo, rel=0.02) and p95[i] == pytest.approx(hi, rel=0.02), (band, p5[i], p95[i])
    assert p95[list(ds["band"].values).index("nir")] > p95[list(ds["band"].values).index("red")]  # vegetation
    slope = ds["slope"].values[valid]
    assert 0.0 <= np.nanmin(slope) and np.nanmax(slope) <= 90.0 and 5.0 < np.nanmedian(slope) < 60.0
    assert 0 < ds["hillshade"].values[valid].mean() < 255


IBURI = SHARED_DATA / "iburi_2018"


@pytest.mark.skipif(not IBURI.exists(), reason="../shared/data/iburi_2018 is not in this clone")
def test_real_iburi_event_per_band_files_per_date_catalogue_and_cube_with_its_inventory(tmp_path):
    # The event as shipped: one GeoTIFF per band in pre-event/ and post-event/, dates not recorded
    # (given here as a user would: the mosaics are before / after 6 September 2018), a DSM with no
    # date, a traced inventory and the traced area in another CRS (EPSG:4612).
    import json

    stac = tmp_path / "stac"
    catalog_geotiffs(
        IBURI / "pre-event",
        stac,
        collection="iburi-s2",
        group="folder",
        dates={"pre-event": "2018-08-20"},
        dn_scale=1e-4,
        dn_offset=0.0,
    )
    catalog_geotiffs(
        IBURI / "post-event",
        stac,
        collection="iburi-s2",
        group="folder",
        dates={"post-event": "2018-10-01"},
        dn_scale=1e-4,
        dn_offset=0.0,
    )  # added, not replacing
    catalog_geotiffs(IBURI / "dem", stac, collection="iburi-dem", bands=["data"], static=True)
    items = json.loads((stac / "stac" / "items" / "iburi-s2.json").read_text())["features"]
    assert sorted(i["id"] for i in items) == ["post-event", "pre-event"]
    for it in items:
        assert sorted(it["assets"]) == ["blue", "green", "red"]  # B02, B03, B04 by their band codes
        rb = it["assets"]["red"]["raster:bands"][0]
        assert rb["scale"] == 1e-4 and rb["offset"] == 0.0 and rb["nodata"] == 0
        assert 100 < rb["statistics"]["mean"] < 3000  # rio-stac's statistics of the band
    assert {i["id"]: i["properties"]["datetime"] for i in items} == {
        "pre-event": "2018-08-20T00:00:00Z",
        "post-event": "2018-10-01T00:00:00Z",
    }
    dem = json.loads((stac / "stac" / "items" / "iburi-dem.json").read_text())["features"][0]
    assert dem["properties"]["datetime"] is None and dem["properties"]["start_datetime"]

    aoi = "141.90,42.70,141.95,42.75"  # W,S,E,N: inside both the imagery and the traced area
    box = shapely.box(141.90, 42.70, 141.95, 42.75)
    inv, area = (
        IBURI / "inventory" / "iburi_hillslope_failures_west.gpkg",
        IBURI / "inventory" / "iburi_traced_area_west.gpkg",
    )
    with serve_stac(stac) as url:
        spec = CubeSpec(
            stac_url=url,
            event_date=date(2018, 9, 6),
            aoi=aoi,
            out=tmp_path / "iburi.zarr",
            inventory=inv,
            inventory_area=area,
            collection="iburi-s2",
            bands=("blue", "green", "red"),
            scl_asset=None,
            dem_collection="iburi-dem",
            chunk=256,
        )
        ds = open_cube(build_cube(spec, progress=False, quicklook=False))
    assert list(ds["band"].values) == ["blue", "green", "red"] and "slope" in ds and "pre" in ds
    assert ds.attrs["dn_scale_offset"] == [1e-4, 0.0]
    label = ds["label"].values
    known = label != 255
    share = float((label == 1).sum() / known.sum())
    # the polygons' area share of the traced area inside the box, in the cube's metric CRS
    crs = f"EPSG:{ds.attrs['epsg']}"
    traced = gpd.read_file(area).to_crs(4326).union_all().intersection(box)
    slides = gpd.read_file(inv).to_crs(4326).union_all().intersection(traced)
    traced_m = gpd.GeoSeries([traced], crs=4326).to_crs(crs).area[0]
    slides_m = gpd.GeoSeries([slides], crs=4326).to_crs(crs).area[0]
    assert 0.01 < share < 0.5
    assert share == pytest.approx(slides_m / traced_m, rel=0.02), (share, slides_m / traced_m)
    assert known.mean() == pytest.approx(traced_m / gpd.GeoSeries([box], crs=4326).to_crs(crs).area[0], rel=0.02)
