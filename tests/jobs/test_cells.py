"""Processing cells: they cover the area exactly, never overlap in a zone, keep their ids."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely
from pyproj import Geod

from landslide_dask.cube.grid import Grid
from landslide_dask.errors import InputDataError
from landslide_dask.jobs.cells import Cell, cells_to_geodataframe, make_cells

GEOD = Geod(ellps="WGS84")


def _wobbly(lon: float, lat: float, rx: float, ry: float, n: int = 4000) -> shapely.Polygon:
    """A star-ish outline with many vertices, like a country boundary."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1 + 0.15 * np.sin(th * 23) + 0.05 * np.cos(th * 211)
    return shapely.Polygon(np.column_stack([lon + rx * r * np.cos(th), lat + ry * r * np.sin(th)]))


def _geodesic_km2(geom) -> float:
    return abs(GEOD.geometry_area_perimeter(geom)[0]) / 1e6


def _assert_covers(cells: list[Cell], area) -> None:
    union = shapely.union_all([c.aoi_4326 for c in cells])
    diff = shapely.symmetric_difference(union, area).area
    assert diff / area.area < 1e-6, diff / area.area


def test_cells_cover_area_in_two_zones():
    area = _wobbly(84.0, 28.2, 0.5, 0.35)  # straddles 84°E: zones 44N and 45N
    cells = make_cells(area, 10)
    zones = {c.epsg for c in cells}
    assert zones == {32644, 32645}
    _assert_covers(cells, area)
    # every cell lies in its own zone's band
    for c in cells:
        minx, _, maxx, _ = c.aoi_4326.bounds
        lon0 = -180 + 6 * (c.epsg - 32601)
        assert lon0 - 1e-9 <= minx and maxx <= lon0 + 6 + 1e-9, c.id
    # the UTM AOIs measure the same area as the geodesic area of the region (~0.1%)
    assert sum(c.area_km2 for c in cells) == pytest.approx(_geodesic_km2(area), rel=2e-3)


def test_no_overlap_and_shared_edges_within_a_zone():
    area = shapely.box(85.1, 27.6, 85.9, 28.3)
    cells = make_cells(area, 20)
    assert {c.epsg for c in cells} == {32645}
    by_pos = {(c.col, c.row): c for c in cells}
    for c in cells:
        # snapped to whole 10 m pixels, inside the cell's square
        assert all(v % 10 == 0 for v in c.bounds), c.bounds
        sq = c.square
        assert sq[0] <= c.bounds[0] < c.bounds[2] <= sq[2] and sq[1] <= c.bounds[1] < c.bounds[3] <= sq[3]
        assert c.aoi_utm.within(shapely.box(*c.square).buffer(1e-6))
        right = by_pos.get((c.col + 1, c.row))
        if right is not None:  # neighbours share their edge exactly, with zero-area overlap
            assert c.bounds[2] == right.bounds[0] == c.square[2]
            assert c.aoi_utm.intersection(right.aoi_utm).area == 0
        up = by_pos.get((c.col, c.row + 1))
        if up is not None:
            assert c.bounds[3] == up.bounds[1]
    total = sum(c.aoi_utm.area for c in cells)
    assert shapely.union_all([c.aoi_utm for c in cells]).area == pytest.approx(total, rel=1e-9)
    _assert_covers(cells, area)


def test_slivers_where_the_area_edge_meets_a_zone_border_are_no_cells():
    # the demo country's north edge meets the 84 E zone border in two 34 m² triangles (1.2 x 55 m):
    # no pixel to map there, so no cell (they were recorded as "empty" cells before)
    cells = make_cells(shapely.box(83.75, 28.0, 84.25, 28.4), 10)
    assert min(c.area_km2 for c in cells) * 1e6 >= 0.5 * 10 * 10
    assert {c.epsg for c in cells} == {32644, 32645} and len(cells) == 36
    total = sum(c.area_km2 for c in cells)
    geod_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(shapely.box(83.75, 28.0, 84.25, 28.4))[0]) / 1e6
    assert abs(total - geod_area) / geod_area < 5e-3  # nothing of substance dropped (UTM scale ~0.1 %)


def test_grid_matches_cube_grid():
    area = _wobbly(84.7, 28.2, 0.2, 0.15, n=800)
    for c in make_cells(area, 10)[:8]:
        g = c.grid()
        assert g.epsg == c.epsg and g.res == 10.0
        assert g.bounds == c.bounds
        assert g == Grid.covering(c.aoi_geodataframe(), res=10.0, epsg=c.epsg)


def test_ids_are_stable_and_positional():
    area = _wobbly(84.0, 28.2, 0.4, 0.3, n=1000)
    a = make_cells(area, 10)
    b = make_cells(shapely.Polygon(list(area.exterior.coords)[::-1]), 10)  # same area, reversed ring
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    c = a[0]
    assert c.id == f"{c.epsg}_{c.col:04d}_{c.row:04d}"
    assert c.square[0] == c.col * 10_000 and c.square[1] == c.row * 10_000
    # a larger area keeps the ids of the cells it shares (fully inside both)
    bigger = make_cells(area.buffer(0.2), 10)
    inner = {x.id for x in a if x.aoi_utm.area == pytest.approx(1e8)}
    assert inner and inner <= {x.id for x in bigger}


def test_equator_gives_north_and_south_zones():
    area = shapely.box(36.5, -0.3, 37.2, 0.4)
    cells = make_cells(area, 20)
    assert {c.epsg for c in cells} == {32637, 32737}
    _assert_covers(cells, area)


def test_multipolygon_and_holes():
    hole = shapely.Point(85.5, 28.0).buffer(0.1)
    area = shapely.MultiPolygon([shapely.box(85, 27.5, 86, 28.5).difference(hole), shapely.box(87.0, 27.0, 87.3, 27.2)])
    cells = make_cells(area, 20)
    _assert_covers(cells, area)
    assert not any(c.aoi_4326.contains(shapely.Point(85.5, 28.0)) for c in cells)


def test_geodataframe():
    cells = make_cells(shapely.box(83.8, 28.0, 84.2, 28.3), 10)
    gdf = cells_to_geodataframe(cells)
    assert list(gdf["id"]) == [c.id for c in cells] and gdf.crs.to_epsg() == 4326
    assert set(gdf["epsg"]) == {32644, 32645}
    assert gdf["area_km2"].sum() == pytest.approx(sum(c.area_km2 for c in cells))
    gdf.to_json()  # writable


def test_country_sized_area_is_fast():
    area = _wobbly(84.2, 28.2, 4.0, 1.9, n=20000)  # ~Nepal-sized, 20,000 vertices, zones 44 & 45
    t0 = time.perf_counter()
    cells = make_cells(area, 20)
    dt = time.perf_counter() - t0
    assert dt < 2.0, f"{dt:.2f} s"
    km2 = _geodesic_km2(area)
    assert 100_000 < km2 < 300_000
    assert km2 / 400 < len(cells) < km2 / 400 * 1.6  # squares of 400 km², plus the edge cells
    _assert_covers(cells, area)


@pytest.mark.parametrize(
    "area",
    [
        shapely.box(179.5, -18, 180.5, -17),  # coordinates beyond 180
        shapely.Polygon([(179.5, -18), (-179.5, -18), (-179.5, -17), (179.5, -17)]),  # jumps the line
    ],
)
def test_antimeridian_is_refused_with_a_way_out(area):
    with pytest.raises(InputDataError, match="antimeridian") as ei:
        make_cells(area, 20)
    assert "Split it at 180" in str(ei.value)


def test_antimeridian_split_in_two_is_fine():
    area = shapely.MultiPolygon([shapely.box(179.5, -18, 180, -17), shapely.box(-180, -18, -179.5, -17)])
    cells = make_cells(area, 20)
    assert {c.epsg for c in cells} == {32760, 32701}
    _assert_covers(cells, area)


@pytest.mark.parametrize("area, lat", [(shapely.box(10, 83, 20, 85), "85"), (shapely.box(-60, -81, -50, -79), "-81")])
def test_polar_areas_have_no_utm_zone(area, lat):
    with pytest.raises(InputDataError, match="outside the UTM zones") as ei:
        make_cells(area, 20)
    assert lat in str(ei.value) and "80°S..84°N" in str(ei.value)


def test_bad_areas_and_sizes():
    with pytest.raises(InputDataError, match="empty"):
        make_cells(shapely.Polygon(), 20)
    with pytest.raises(InputDataError, match="not a polygon"):
        make_cells(shapely.LineString([(84, 28), (85, 28)]), 20)
    bowtie = shapely.Polygon([(84, 28), (85, 29), (85, 28), (84, 29)])
    with pytest.raises(InputDataError, match="invalid .*Self-intersection"):
        make_cells(bowtie, 20)
    with pytest.raises(InputDataError, match="10 m pixels"):
        make_cells(shapely.box(84, 28, 85, 29), 20.0005)
    with pytest.raises(InputDataError, match="positive"):
        make_cells(shapely.box(84, 28, 85, 29), 0)
