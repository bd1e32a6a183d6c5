"""The cube loader reads what GDAL and stackstac read, whatever the block it reads in."""

from __future__ import annotations

import functools
import shutil
from collections import defaultdict
from datetime import date
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import shapely
import stackstac
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from landslide_dask.cube.build import daily_mosaics, daily_stack, solar_day
from landslide_dask.cube.grid import Grid
from landslide_dask.cube.inventory import read_polygons
from landslide_dask.cube.load import Stack, block_slices, close_files
from landslide_dask.errors import InputDataError
from landslide_dask.stac.local import load_stac_dir

ASSETS = ["blue", "green", "red", "nir", "scl"]


@functools.lru_cache(maxsize=2)
def _all_items(data: Path) -> list[dict]:
    return load_stac_dir(data)[1]


def _region_items(data: Path, region: dict, collection: str = "sentinel-2-l2a") -> tuple[Grid, list[dict]]:
    aoi, _ = read_polygons(data / region["aoi"])
    grid = Grid.covering(aoi, 10.0, None)
    box = shapely.box(*grid.bounds_lonlat())
    items = [
        it
        for it in _all_items(data)
        if it["collection"] == collection and shapely.geometry.shape(it["geometry"]).intersects(box)
    ]
    return grid, items


def _epsg(item: dict) -> int:
    return int(item["properties"].get("proj:epsg") or item["properties"]["proj:code"].split(":")[1])


def _stackstac_mosaics(items: list[dict], grid: Grid, chunk: int) -> np.ndarray:
    """What cube.build did before its own loader: a stackstac stack per solar day, mosaicked."""
    by_day = defaultdict(list)
    for it in items:
        by_day[solar_day(it)].append(it)
    out = []
    for day in sorted(by_day):
        st = stackstac.stack(
            by_day[day],
            assets=ASSETS,
            epsg=grid.epsg,
            resolution=grid.res,
            bounds=grid.bounds,
            snap_bounds=False,
            xy_coords="center",
            chunksize=chunk,
            dtype="uint16",
            fill_value=np.uint16(0),
            rescale=False,
            resampling=Resampling.nearest,
            properties=False,
            band_coords=False,
        )
        out.append(stackstac.mosaic(st, dim="time", nodata=0).values)
    return np.stack(out)


def _gdal_exact(href: str, grid: Grid, resampling: Resampling, window: Window, dtype: str) -> np.ndarray:
    """GDAL's own warp of one file onto the grid, with the exact (not approximate) transformer."""
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    with (
        rasterio.open(href) as src,
        WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            tolerance=1e-6,
        ) as vrt,
    ):
        return vrt.read(1, window=window, out_dtype=dtype, masked=True).filled(fill)


def test_daily_mosaics_equal_stackstacs_where_granules_are_on_the_cube_grid(demo_data, demo_regions):
    with dask.config.set(scheduler="threads", num_workers=2):
        for region in demo_regions:
            grid, items = _region_items(demo_data, region)
            if {_epsg(it) for it in items} != {grid.epsg}:
                continue  # granules in another UTM zone: next test
            ours = daily_mosaics(items, ASSETS, grid, 64)[0].values
            np.testing.assert_array_equal(ours, _stackstac_mosaics(items, grid, 256), err_msg=region["name"])


def test_a_granule_in_another_utm_zone_reads_as_gdals_exact_warp(demo_data, demo_regions):
    region = next(r for r in demo_regions if len({_epsg(it) for it in _region_items(demo_data, r)[1]}) > 1)
    grid, items = _region_items(demo_data, region)
    foreign = [it for it in items if _epsg(it) != grid.epsg]
    assert foreign
    stack, _ = daily_stack(foreign, ["red", "scl"], grid)
    ours = stack.read(slice(0, grid.height), slice(0, grid.width))
    for i, layer in enumerate(stack.layers):
        for j, assets in enumerate(layer):
            ref = np.zeros(grid.shape, np.uint16)
            for a in assets:  # last on top, per band
                warped = _gdal_exact(a.href, grid, Resampling.nearest, Window(0, 0, grid.width, grid.height), "uint16")
                ref = np.where(warped != 0, warped, ref)
            np.testing.assert_array_equal(ours[i, j], ref)
    # and the whole region's mosaics stay within a sliver of stackstac's, whose approximate
    # transformer picks a neighbouring source pixel here and there
    all_ours = daily_mosaics(items, ASSETS, grid, 64)[0].values
    assert (all_ours != _stackstac_mosaics(items, grid, 256)).mean() < 1e-3


def test_dem_bilinear_matches_gdals_exact_warp_and_not_the_block(demo_data, demo_regions):
    region = demo_regions[0]
    grid, dem_items = _region_items(demo_data, region, "cop-dem-glo-30")
    wide = grid.padded(1)
    dem = Stack.of_days([date.min], {date.min: dem_items}, ["data"], wide, "float32", np.nan, Resampling.bilinear)
    whole = dem.read(slice(0, wide.height), slice(0, wide.width))[0, 0]
    assert np.isfinite(whole).mean() > 0.99
    for block in (37, 64):
        tiled = np.concatenate(
            [
                np.concatenate([dem.read(r, c)[0, 0] for c in block_slices(wide.width, block)], axis=1)
                for r in block_slices(wide.height, block)
            ]
        )
        np.testing.assert_array_equal(tiled, whole)  # the block a pixel is read in never changes it
    ref = np.full(wide.shape, np.nan, np.float32)
    for it in dem_items:
        warped = _gdal_exact(
            it["assets"]["data"]["href"], wide, Resampling.bilinear, Window(0, 0, wide.width, wide.height), "float32"
        )
        ref = np.where(np.isfinite(warped), warped, ref)
    assert np.nanmax(np.abs(whole - ref)) < 1e-3  # metres: float32 rounding, not a resampling difference


def test_a_20m_asset_is_upsampled_by_nearest_as_gdal_does(demo_data, demo_regions):
    grid, items = _region_items(demo_data, demo_regions[0])
    item = next(it for it in items if _epsg(it) == grid.epsg)
    with rasterio.open(item["assets"]["scl"]["href"]) as src:
        assert src.res == (20.0, 20.0)  # the demo writes SCL at 20 m, as Sentinel-2 L2A has it
    stack = Stack.of_days([date.min], {date.min: [item]}, ["scl"], grid, "uint16", 0)
    win = Window(13, 7, 150, 120)
    ours = stack.read(slice(7, 127), slice(13, 163))[0, 0]
    np.testing.assert_array_equal(
        ours, _gdal_exact(item["assets"]["scl"]["href"], grid, Resampling.nearest, win, "uint16")
    )


def test_a_file_replaced_on_disk_is_read_afresh(demo_data, demo_regions, tmp_path):
    grid, items = _region_items(demo_data, demo_regions[0])
    item = next(it for it in items if _epsg(it) == grid.epsg)
    copy = tmp_path / "red.tif"
    shutil.copy(item["assets"]["red"]["href"], copy)
    item = {**item, "assets": {"red": {**item["assets"]["red"], "href": str(copy)}}}
    stack = Stack.of_days([date.min], {date.min: [item]}, ["red"], grid, "uint16", 0)
    rows, cols = slice(0, grid.height), slice(0, grid.width)
    before = stack.read(rows, cols)
    assert before.any()
    with rasterio.open(copy) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(copy, "w", **profile) as dst:  # a new file at the same path: kept handles must not serve it
        dst.write(np.where(data > 0, data + 1, 0).astype(data.dtype))
    after = stack.read(rows, cols)
    np.testing.assert_array_equal(after[before > 0], before[before > 0] + 1)
    close_files()


def test_a_multiband_asset_is_refused_with_what_to_do(demo_data, demo_regions, tmp_path):
    grid, items = _region_items(demo_data, demo_regions[0])
    item = next(it for it in items if _epsg(it) == grid.epsg)
    with rasterio.open(item["assets"]["red"]["href"]) as src:
        profile, data = src.profile, src.read(1)
    profile.update(count=2)
    with rasterio.open(tmp_path / "two.tif", "w", **profile) as dst:
        dst.write(np.stack([data, data]))
    item = {**item, "assets": {"red": {**item["assets"]["red"], "href": str(tmp_path / "two.tif")}}}
    stack = Stack.of_days([date.min], {date.min: [item]}, ["red"], grid, "uint16", 0)
    with pytest.raises(InputDataError, match="2 bands.*landslide-dask catalog"):
        stack.read(slice(0, grid.height), slice(0, grid.width))
