"""Real Sentinel-2 GeoTIFFs (Chattogram, EPSG:4326) through catalog -> STAC API -> cube."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer

from landslide_dask.catalog import catalog_geotiffs
from landslide_dask.cube import CubeSpec, build_cube, open_cube
from landslide_dask.stac_server import serve_stac

from .conftest import SHARED_DATA

TILES = SHARED_DATA / "chattogram_s2_tiles" / "LandslideData" / "images"
pytestmark = pytest.mark.skipif(not TILES.exists(), reason="../shared/data/chattogram_s2_tiles is not in this clone")


def test_real_chattogram_tiles_are_catalogued_and_cubed(tmp_path):
    stac = catalog_geotiffs(TILES, tmp_path / "stac", collection="chattogram",
                            bands=["red", "green", "blue", "nir"], datetime="2024-06-20T04:30:00Z", nodata=0)
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(91.80, 22.40, 91.85, 22.45)], crs=4326).to_file(aoi)
    with serve_stac(stac) as url:
        spec = CubeSpec(stac_url=url, event_date=date(2024, 6, 10), aoi=aoi, out=tmp_path / "c.zarr",
                        collection="chattogram", bands=("red", "green", "blue", "nir"), scl_asset=None,
                        dem_collection=None, post_only=True, chunk=256)
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
