"""Inventory ingestion and rasterisation: areas, CRSs, repairs and the errors users hit."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely

from landslide_dask.cube.grid import Grid
from landslide_dask.cube.inventory import LABEL_UNKNOWN, check_overlap, label_raster, rasterize_lazy, read_polygons
from landslide_dask.errors import InputDataError

from ..helpers import SHARED_DATA

SHARED = SHARED_DATA
SPAMLAB = SHARED / "spamlab_relict_scars" / "Cicatrizes_nova_area_inteira_CRS32723.geojson"


def _polys(crs=32644, x0=500000.0, y0=3000000.0):
    rng = np.random.default_rng(3)
    geoms = []
    for _ in range(40):
        cx, cy = x0 + rng.uniform(200, 4800), y0 + rng.uniform(200, 4800)
        geoms.append(
            shapely.affinity.rotate(
                shapely.box(
                    cx - rng.uniform(10, 60),
                    cy - rng.uniform(40, 200),
                    cx + rng.uniform(10, 60),
                    cy + rng.uniform(40, 200),
                ),
                rng.uniform(0, 180),
            )
        )
    return gpd.GeoDataFrame(geometry=geoms, crs=crs)


@pytest.mark.skipif(not SPAMLAB.exists(), reason="../shared/data/spamlab_relict_scars is not in this clone")
def test_real_spamlab_scars_rasterise_to_their_area_within_2_percent():
    gdf, report = read_polygons(SPAMLAB)
    assert report.features == 276
    grid = Grid.covering(gdf, 10.0)
    assert grid.epsg == 32723
    burned = rasterize_lazy(gdf, 1, grid, chunks=700).sum().compute() * 100.0
    area = gdf.to_crs(32723).union_all().area
    assert abs(burned - area) / area < 0.02


def test_rasterised_area_matches_polygon_area_and_ignores_chunking():
    gdf = _polys()
    grid = Grid.covering(gdf, 10.0, epsg=32644)
    a = rasterize_lazy(gdf, 1, grid, chunks=1000).compute()
    b = rasterize_lazy(gdf, 1, grid, chunks=77).compute()
    np.testing.assert_array_equal(a, b)
    area = gdf.union_all().area
    assert abs(a.sum() * 100.0 - area) / area < 0.03


def test_inventory_in_another_crs_is_reprojected(tmp_path):
    gdf = _polys()
    grid = Grid.covering(gdf, 10.0, epsg=32644)
    utm = rasterize_lazy(gdf, 1, grid, chunks=256).compute()
    path = tmp_path / "inv_3857.gpkg"
    gdf.to_crs(3857).to_file(path)
    back, report = read_polygons(path)
    assert report.source_crs == "EPSG:3857"
    merc = rasterize_lazy(back, 1, grid, chunks=256).compute()
    # Same polygons through another CRS: only pixels whose centre sits on a reprojected edge differ.
    assert (utm != merc).sum() <= 0.01 * utm.sum()


def test_invalid_geometries_are_repaired_and_counted(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])  # self-intersecting
    gdf = gpd.GeoDataFrame(
        geometry=[shapely.affinity.translate(bowtie, 500000, 3000000), shapely.box(500200, 3000000, 500300, 3000100)],
        crs=32644,
    )
    assert not gdf.is_valid.all()
    path = tmp_path / "bad.gpkg"
    gdf.to_file(path)
    fixed, report = read_polygons(path)
    assert report.repaired == 1 and fixed.is_valid.all()
    grid = Grid.covering(fixed, 10.0, epsg=32644)
    burned = rasterize_lazy(fixed, 1, grid, chunks=64).sum().compute() * 100
    assert abs(burned - (5000 + 10000)) <= 600  # both triangles of the bow-tie, plus the square


def test_label_is_unknown_outside_the_inventory_area():
    gdf = _polys()
    grid = Grid.covering(gdf, 10.0, epsg=32644)
    x0, y0, x1, y1 = grid.bounds
    covered = gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, (x0 + x1) / 2, y1)], crs=32644)
    label = label_raster(gdf, covered, grid, chunks=128).compute()
    assert set(np.unique(label)) <= {0, 1, LABEL_UNKNOWN}
    half = grid.width // 2
    assert (label[:, half + 1 :] == LABEL_UNKNOWN).all()
    assert (label[:, : half - 1] != LABEL_UNKNOWN).all() and (label == 1).any()


def test_metres_labelled_as_degrees_is_an_error_naming_the_file(tmp_path):
    gdf = _polys()
    path = tmp_path / "wrong_crs.geojson"
    fc = json.loads(gdf.to_json())  # UTM metres, but GeoJSON without a "crs" member means EPSG:4326
    fc.pop("crs", None)
    path.write_text(json.dumps(fc))
    with pytest.raises(InputDataError, match="wrong_crs.geojson.*not degrees"):
        read_polygons(path)


def test_inventory_far_from_the_area_is_an_error():
    gdf = _polys()
    far = _polys(x0=700000.0)
    grid = Grid.covering(gdf, 10.0, epsg=32644)
    with pytest.raises(InputDataError, match="No polygon of the inventory"):
        check_overlap(far, grid, "inventory", "far.geojson")


def test_missing_and_unreadable_files_say_so(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_polygons(tmp_path / "nope.geojson")
    junk = tmp_path / "junk.geojson"
    junk.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(InputDataError, match="junk.geojson"):
        read_polygons(junk)
