"""Polygons from a probability map: areas, holes, minimum area, seamless across chunks, files."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr

from landslide_dask.errors import InputDataError, UsageError
from landslide_dask.predict.polygons import polygonize, threshold_level

from ..helpers.predictions import pixel_box, write_prediction


def test_square_blob_area_and_probabilities(tmp_path):
    prob = np.zeros((100, 100), np.uint8)
    prob[20:40, 30:50] = 230  # p = 0.9
    prob[25, 35] = 250  # the maximum
    gdf = polygonize(write_prediction(tmp_path / "p.zarr", prob), None)
    assert len(gdf) == 1
    row = gdf.iloc[0]
    assert row["id"] == 1
    assert row["area_m2"] == pytest.approx(400 * 100.0)
    assert row["mean_prob"] == pytest.approx((399 * 230 + 250) / 400 / 255)
    assert row["max_prob"] == pytest.approx(250 / 255)
    assert row.geometry.equals(pixel_box(20, 40, 30, 50))
    assert row.geometry.area == pytest.approx(row["area_m2"])
    assert gdf.crs.to_epsg() == 32618


def test_hole_is_kept(tmp_path):
    prob = np.zeros((60, 60), np.uint8)
    prob[10:40, 10:40] = 200
    prob[20:30, 22:28] = 0  # 10 x 6 hole
    gdf = polygonize(write_prediction(tmp_path / "p.zarr", prob), None)
    assert len(gdf) == 1
    geom = gdf.geometry.iloc[0]
    assert geom.geom_type == "Polygon" and len(geom.interiors) == 1
    assert shapely.Polygon(geom.interiors[0]).equals(pixel_box(20, 30, 22, 28))
    assert gdf["area_m2"].iloc[0] == pytest.approx((900 - 60) * 100.0)
    assert geom.area == pytest.approx((900 - 60) * 100.0)


def test_minimum_area_applies_after_merge(tmp_path):
    prob = np.zeros((64, 64), np.uint8)
    prob[5:8, 5:6] = 255  # 3 px = 300 m2: dropped
    prob[20:22, 20:22] = 255  # 4 px = 400 m2: kept (the limit is inclusive)
    prob[31:33, 40] = 255  # 2 + 2 px across the chunk seam at row 32: only 400 m2 once merged
    prob[31:33, 41] = 255
    path = write_prediction(tmp_path / "p.zarr", prob, chunk=32)
    gdf = polygonize(path, None)
    assert sorted(gdf["area_m2"]) == [400.0, 400.0]
    assert len(polygonize(path, None, min_area_m2=0)) == 3
    assert len(polygonize(path, None, min_area_m2=401)) == 0


def _tricky(h: int = 160, w: int = 160) -> np.ndarray:
    """Shapes crossing 32-px seams (a ring around a 4-chunk corner, a snake, a T), and corner contacts."""
    rng = np.random.default_rng(3)
    prob = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 64, xx - 64)
    prob[(r < 20) & (r >= 7)] = 180 + (rng.random(((r < 20) & (r >= 7)).sum()) * 70).astype(np.uint8)
    prob[100:104, 5:150] = 220  # crosses four vertical seams
    prob[104:140, 146:150] = 220  # ... and turns down across a horizontal seam
    prob[20:31, 90:96] = 200  # ends on row 30 ...
    prob[31, 96] = 0
    prob[32:40, 96:100] = 200  # ... starts on row 32 diagonally: never joined (4-connectivity)
    prob[28:32, 120:132] = 140
    prob[32:36, 124:128] = 140  # T across the row-32 seam
    prob[140:145, 10:15] = 210
    prob[145:150, 15:20] = 210  # corner contact inside one chunk: two objects too
    return prob


def test_object_crossing_chunk_borders_is_one_polygon_as_with_one_chunk(tmp_path):
    prob = _tricky()
    small = polygonize(write_prediction(tmp_path / "small.zarr", prob, chunk=32), None, min_area_m2=0)
    odd = polygonize(write_prediction(tmp_path / "odd.zarr", prob, chunk=45), None, min_area_m2=0)
    big = polygonize(write_prediction(tmp_path / "big.zarr", prob, chunk=512), None, min_area_m2=0)
    assert len(big) == 7  # ring, snake, T, and two pairs touching only at a corner
    for other in (small, odd):
        assert len(other) == len(big)
        np.testing.assert_array_equal(other["area_m2"], big["area_m2"])
        np.testing.assert_allclose(other["mean_prob"], big["mean_prob"], rtol=1e-12)
        np.testing.assert_array_equal(other["max_prob"], big["max_prob"])
        for a, b in zip(other.geometry, big.geometry):
            assert a.geom_type == "Polygon" and a.is_valid
            assert a.equals_exact(b, 1e-6)  # same vertices, same order: no seam vertices left
    ring = big.loc[big.geometry.map(lambda g: len(g.interiors)).idxmax()]
    assert len(ring.geometry.interiors) == 1  # the hole around the 4-chunk corner survives the merge


def test_threshold_default_from_attrs_and_override(tmp_path):
    prob = np.zeros((64, 64), np.uint8)
    prob[5:15, 5:15] = 140  # p = 0.55
    prob[30:40, 30:40] = 100  # p = 0.39
    assert len(polygonize(write_prediction(tmp_path / "a.zarr", prob, threshold=0.5), None)) == 1
    assert len(polygonize(write_prediction(tmp_path / "b.zarr", prob, threshold=0.6), None)) == 0
    gdf = polygonize(str(tmp_path / "b.zarr"), None, threshold=0.3)
    assert len(gdf) == 2 and gdf.attrs["threshold"] == 0.3
    # the comparison is on the stored uint8: p >= round(t * 255)
    assert threshold_level(140 / 255) == 140
    assert len(polygonize(str(tmp_path / "b.zarr"), None, threshold=140 / 255)) == 1
    assert len(polygonize(str(tmp_path / "b.zarr"), None, threshold=141 / 255)) == 0


def test_invalid_pixels_are_never_foreground(tmp_path):
    prob = np.full((40, 40), 255, np.uint8)
    valid = np.zeros((40, 40), bool)
    valid[10:20, 10:20] = True
    gdf = polygonize(write_prediction(tmp_path / "p.zarr", prob, valid=valid), None)
    assert len(gdf) == 1 and gdf["area_m2"].iloc[0] == 100 * 100.0


def test_unfinished_or_missing_prediction_is_refused(tmp_path):
    prob = np.zeros((32, 32), np.uint8)
    path = write_prediction(tmp_path / "p.zarr", prob, complete=False)
    with pytest.raises(InputDataError, match=r"(?s)finished prediction.*rerun `landslide-dask predict`"):
        polygonize(path, tmp_path / "out")
    assert not list(tmp_path.glob("out*"))
    with pytest.raises(InputDataError, match="No prediction at"):
        polygonize(tmp_path / "nothing.zarr", None)
    no_threshold = write_prediction(tmp_path / "q.zarr", prob)
    ds = xr.open_zarr(no_threshold, consolidated=False)
    del ds.attrs["threshold"]
    with pytest.raises(InputDataError, match="--threshold"):
        polygonize(ds, None)
    with pytest.raises(UsageError, match="threshold"):
        polygonize(no_threshold, None, threshold=1.5)


def test_geoparquet_and_geopackage_readable_in_prediction_crs(tmp_path):
    prob = np.zeros((80, 80), np.uint8)
    prob[10:30, 10:30] = 230
    prob[50:60, 40:70] = 200
    gdf = polygonize(write_prediction(tmp_path / "p.zarr", prob), tmp_path / "maps" / "region.gpkg")
    pq, gp = tmp_path / "maps" / "region.parquet", tmp_path / "maps" / "region.gpkg"
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["region.gpkg", "region.parquet"]  # no tmp left
    for read in (gpd.read_parquet(pq), gpd.read_file(gp)):
        assert read.crs.to_epsg() == 32618
        assert list(read.columns) == ["id", "area_m2", "mean_prob", "max_prob", "geometry"]
        assert len(read) == 2
        np.testing.assert_allclose(read["area_m2"], gdf["area_m2"])
        assert all(a.equals(b) for a, b in zip(read.geometry, gdf.geometry))
    # nothing above the threshold: both files still written, empty, with their schema and CRS
    polygonize(write_prediction(tmp_path / "z.zarr", np.zeros((32, 32), np.uint8)), tmp_path / "empty")
    for read in (gpd.read_parquet(tmp_path / "empty.parquet"), gpd.read_file(tmp_path / "empty.gpkg")):
        assert len(read) == 0 and read.crs.to_epsg() == 32618 and "area_m2" in read.columns


def test_simplification_keeps_areas_and_validity(tmp_path):
    prob = np.zeros((100, 100), np.uint8)
    yy, xx = np.mgrid[:100, :100]
    prob[np.hypot(yy - 50, xx - 50) < 30] = 220
    prob[np.hypot(yy - 50, xx - 50) < 8] = 0
    path = write_prediction(tmp_path / "p.zarr", prob, chunk=32)
    raw = polygonize(path, None)
    simple = polygonize(path, None, simplify_m=15.0)
    assert len(raw) == len(simple) == 1
    g, s = raw.geometry.iloc[0], simple.geometry.iloc[0]
    assert s.is_valid and len(s.interiors) == 1
    assert shapely.get_num_coordinates(s) < shapely.get_num_coordinates(g) / 2
    assert simple["area_m2"].iloc[0] == raw["area_m2"].iloc[0]
    assert abs(s.area - g.area) / g.area < 0.05


def test_runs_on_a_distributed_client(tmp_path):
    distributed = pytest.importorskip("distributed")
    prob = _tricky()
    path = write_prediction(tmp_path / "p.zarr", prob, chunk=32)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        on_client = polygonize(path, None, min_area_m2=0, client=client)
    local = polygonize(path, None, min_area_m2=0)
    assert len(on_client) == len(local) == 7
    assert all(a.equals_exact(b, 1e-6) for a, b in zip(on_client.geometry, local.geometry))
