"""Processing cells: a country split into square cells, each in the UTM zone that contains it.

For every UTM zone (and hemisphere) the area touches, the part of the area inside the zone's
6° longitude band is projected to that zone and covered by a regular grid of ``cell_size_km``
squares anchored at the zone's origin (edges at multiples of the cell size in metres). Squares
that do not meet the area are dropped. So:

- every cell lies inside its zone's band: it is processed in the UTM zone that contains it;
- a cell's id is ``EPSG_COL_ROW`` (e.g. ``32645_0012_0034``: zone 45N, the square whose lower
  left corner is at easting 12 x size, northing 34 x size), fixed by the zone, the cell size
  and the position alone, so a rerun (or a slightly different boundary) yields the same ids;
- cells of one zone share edges exactly and never overlap (intersections with disjoint squares);
  cells of neighbouring zones meet along the zone boundary meridian;
- ``aoi_4326`` (cell square intersected with the area, in degrees) is what the STAC search
  needs; ``aoi_utm`` (the same in the zone's CRS) is what the cube's valid mask needs;
- ``bounds`` are the AOI's bounds snapped outward to the 10 m pixel grid, clipped to the square:
  ``Cell.grid()`` is the cell's cube grid, aligned with every other cell of its zone.

Regular UTM zones are used everywhere (as ``grid.utm_epsg``: no Norway/Svalbard exceptions).
Refused with a clear message: an empty or non-polygonal area, an invalid geometry, an area that
crosses the antimeridian, and an area reaching beyond the UTM latitudes (80°S..84°N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from ..cube.grid import Grid
from ..errors import InputDataError

__all__ = ["RESOLUTION", "UTM_MAX_LAT", "UTM_MIN_LAT", "Cell", "cells_to_geodataframe", "make_cells"]

RESOLUTION = 10.0
UTM_MIN_LAT, UTM_MAX_LAT = -80.0, 84.0
_DENSIFY_DEG = 0.01  # densify degree-space edges before projecting (~1 km)
_DENSIFY_M = 1000.0  # densify metre-space edges before unprojecting
_SLIVER_PX = 0.5  # a cell of less than half a pixel's area (a sliver where the area's edge meets a
# zone or cell border) has no pixel to map: no cell, not an "empty" one
_EPS = 1e-6  # metres: tolerance when snapping to the pixel grid


@dataclass(frozen=True)
class Cell:
    """One processing cell. Coordinates in metres are in ``EPSG:epsg`` (its UTM zone)."""

    id: str
    epsg: int
    col: int
    row: int
    size_m: float
    bounds: tuple[float, float, float, float]  # AOI bounds snapped outward to RESOLUTION
    aoi_utm: BaseGeometry
    aoi_4326: BaseGeometry

    @property
    def square(self) -> tuple[float, float, float, float]:
        """The full cell square (minx, miny, maxx, maxy) in metres."""
        s = self.size_m
        return (self.col * s, self.row * s, (self.col + 1) * s, (self.row + 1) * s)

    @property
    def area_km2(self) -> float:
        return float(self.aoi_utm.area) / 1e6

    @property
    def bbox_4326(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the AOI in degrees, for a STAC search."""
        return tuple(float(v) for v in self.aoi_4326.bounds)

    def grid(self, res: float = RESOLUTION) -> Grid:
        """The cell's cube grid (north-up, ``res`` m pixels, aligned across the zone)."""
        minx, miny, maxx, maxy = self.bounds
        if res != RESOLUTION:
            minx, miny = math.floor(minx / res + _EPS) * res, math.floor(miny / res + _EPS) * res
            maxx, maxy = math.ceil(maxx / res - _EPS) * res, math.ceil(maxy / res - _EPS) * res
        return Grid(
            epsg=self.epsg,
            res=float(res),
            x0=minx,
            y0=maxy,
            width=int(round((maxx - minx) / res)),
            height=int(round((maxy - miny) / res)),
        )

    def aoi_geodataframe(self, crs: str = "utm"):
        """The AOI as a one-row GeoDataFrame, in the cell's UTM CRS (default) or ``"EPSG:4326"``."""
        import geopandas as gpd

        if crs == "utm":
            return gpd.GeoDataFrame({"cell": [self.id]}, geometry=[self.aoi_utm], crs=f"EPSG:{self.epsg}")
        return gpd.GeoDataFrame({"cell": [self.id]}, geometry=[self.aoi_4326], crs="EPSG:4326").to_crs(crs)


def make_cells(area: BaseGeometry, cell_size_km: float, res: float = RESOLUTION) -> list[Cell]:
    """Split ``area`` (a (Multi)Polygon in EPSG:4326) into cells; ordered by (EPSG, row, col)."""
    size = _cell_size_m(cell_size_km, res)
    area = _check_area(area)
    cells: list[Cell] = []
    minx, miny, maxx, maxy = area.bounds
    for zone in range(_zone(minx), _zone(maxx) + 1):
        lon0 = -180.0 + 6.0 * (zone - 1)
        for south, lat0, lat1 in ((False, 0.0, UTM_MAX_LAT), (True, UTM_MIN_LAT, 0.0)):
            if maxy <= lat0 or miny >= lat1:
                continue
            band = shapely.box(lon0, lat0, lon0 + 6.0, lat1)
            part = _polygonal(shapely.intersection(area, band))
            if part is None:
                continue
            epsg = (32700 if south else 32600) + zone
            cells.extend(_zone_cells(part, epsg, size, res))
    if not cells:
        raise InputDataError("The area yields no processing cell: is it empty or degenerate?")
    cells.sort(key=lambda c: (c.epsg, c.row, c.col))
    return cells


def cells_to_geodataframe(cells: list[Cell], crs: str = "EPSG:4326"):
    """One row per cell (id, epsg, col, row, area_km2, UTM bounds), geometry = AOI in ``crs``."""
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        {
            "id": [c.id for c in cells],
            "epsg": np.array([c.epsg for c in cells], dtype="int32"),
            "col": np.array([c.col for c in cells], dtype="int32"),
            "row": np.array([c.row for c in cells], dtype="int32"),
            "area_km2": np.array([c.area_km2 for c in cells], dtype="float64"),
            "minx": [c.bounds[0] for c in cells],
            "miny": [c.bounds[1] for c in cells],
            "maxx": [c.bounds[2] for c in cells],
            "maxy": [c.bounds[3] for c in cells],
        },
        geometry=[c.aoi_4326 for c in cells],
        crs="EPSG:4326",
    )
    return gdf if crs in ("EPSG:4326", "epsg:4326") else gdf.to_crs(crs)


def _cell_size_m(cell_size_km: float, res: float) -> float:
    if isinstance(cell_size_km, bool) or not isinstance(cell_size_km, (int, float)) or not cell_size_km > 0:
        raise InputDataError(f"cell_size_km must be a positive number, got {cell_size_km!r}.")
    size = float(cell_size_km) * 1000.0
    n = round(size / res)
    if n < 1 or abs(size / res - n) > 1e-6:
        raise InputDataError(f"cell_size_km = {cell_size_km} is not a whole number of {res:g} m pixels.")
    return n * res


def _zone(lon: float) -> int:
    return min(int((lon + 180.0) // 6.0) + 1, 60)


def _check_area(area: BaseGeometry) -> BaseGeometry:
    if area is None or not isinstance(area, BaseGeometry):
        raise InputDataError(f"The area must be a shapely geometry, got {type(area).__name__}.")
    if area.is_empty:
        raise InputDataError("The area is empty: check the area file (or bbox) of the job.")
    if area.geom_type not in ("Polygon", "MultiPolygon"):
        poly = _polygonal(area) if area.geom_type == "GeometryCollection" else None
        if poly is None:
            raise InputDataError(
                f"The area is a {area.geom_type}, not a polygon: give the area as "
                "polygon(s) (points and lines have no area to map)."
            )
        area = poly
    if not area.is_valid:
        raise InputDataError(
            f"The area geometry is invalid ({shapely.is_valid_reason(area)}): repair it "
            "(e.g. shapely.make_valid, or QGIS 'Fix geometries'); area files read "
            "through the job spec are repaired automatically."
        )
    if area.area == 0:
        raise InputDataError("The area has zero area: check the area file (or bbox) of the job.")
    minx, miny, maxx, maxy = area.bounds
    split_hint = (
        "Split it at 180° into two polygons, one each side (GeoJSON RFC 7946 §3.1.9: "
        "e.g. a part up to 180 and a part from -180), or run one job per side."
    )
    if minx < -180.0 or maxx > 180.0:
        raise InputDataError(
            f"The area reaches longitude {minx if minx < -180 else maxx:.4f}°, beyond "
            f"±180°: it crosses the antimeridian. {split_hint}"
        )
    for poly in getattr(area, "geoms", [area]):
        pminx, _, pmaxx, _ = poly.bounds
        if pmaxx - pminx > 180.0:
            raise InputDataError(
                f"A polygon of the area spans {pmaxx - pminx:.1f}° of longitude ({pminx:.2f} to "
                f"{pmaxx:.2f}): it most likely crosses the antimeridian with coordinates jumping "
                f"from +180 to -180. {split_hint} If it really is that wide, split it into parts."
            )
    if miny < UTM_MIN_LAT or maxy > UTM_MAX_LAT:
        bad = maxy if maxy > UTM_MAX_LAT else miny
        raise InputDataError(
            f"The area reaches latitude {bad:.4f}°, outside the UTM zones (80°S to 84°N): polar areas "
            "have no UTM zone. Clip the area to 80°S..84°N (polar regions need a polar stereographic "
            "grid, which processing cells do not support)."
        )
    return area


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of ``geom`` (None if it has no area)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom if geom.area > 0 else None
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        if not polys:
            return None
        out = shapely.union_all(polys)
        return out if out.area > 0 else None
    return None


@lru_cache(maxsize=128)
def _transformers(epsg: int) -> tuple[Transformer, Transformer]:
    utm = CRS.from_epsg(epsg)
    return (
        Transformer.from_crs("EPSG:4326", utm, always_xy=True),
        Transformer.from_crs(utm, "EPSG:4326", always_xy=True),
    )


def _apply(tr: Transformer, geom, unwrap_around: float | None = None):
    """Transform ``geom``; with ``unwrap_around`` (a central meridian) longitudes are kept within
    ±180° of it, so a square of zone 60 that reaches past 180° does not wrap to -180."""

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        if unwrap_around is not None:
            x = unwrap_around + (np.asarray(x) - unwrap_around + 180.0) % 360.0 - 180.0
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def _zone_cells(part: BaseGeometry, epsg: int, size: float, res: float) -> list[Cell]:
    fwd, inv = _transformers(epsg)
    part_utm = _apply(fwd, shapely.segmentize(part, _DENSIFY_DEG))
    if not part_utm.is_valid:
        part_utm = _polygonal(shapely.make_valid(part_utm))
        if part_utm is None:
            return []
    minx, miny, maxx, maxy = part_utm.bounds
    c0, c1 = math.floor(minx / size), math.ceil(maxx / size)
    r0, r1 = math.floor(miny / size), math.ceil(maxy / size)
    cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
    cols, rows = cols.ravel(), rows.ravel()
    boxes = shapely.box(cols * size, rows * size, (cols + 1) * size, (rows + 1) * size)
    shapely.prepare(part_utm)
    hit = shapely.intersects(part_utm, boxes)
    cols, rows, boxes = cols[hit], rows[hit], boxes[hit]
    inside = shapely.contains_properly(part_utm, boxes)
    aoi_utm = boxes.copy()
    edge = ~inside
    if edge.any():
        aoi_utm[edge] = shapely.intersection(part_utm, boxes[edge])
    # back to degrees: whole squares are unprojected (densified); at the area's edge the square is
    # unprojected and intersected with the area in degrees, so the area's own edges stay exact.
    central = -183.0 + 6.0 * (epsg % 100)
    sq_4326 = _apply(inv, shapely.segmentize(boxes, _DENSIFY_M), unwrap_around=central)
    aoi_4326 = sq_4326.copy()
    if edge.any():
        shapely.prepare(part)
        aoi_4326[edge] = shapely.intersection(part, sq_4326[edge])
    out = []
    for col, row, a_utm, a_deg in zip(cols.tolist(), rows.tolist(), aoi_utm, aoi_4326):
        a_utm = _polygonal(a_utm)
        a_deg = _polygonal(a_deg)
        if a_utm is None or a_utm.area < _SLIVER_PX * res * res or a_deg is None:
            continue
        sq = (col * size, row * size, (col + 1) * size, (row + 1) * size)
        bx0, by0, bx1, by1 = a_utm.bounds
        bounds = (
            max(sq[0], math.floor(bx0 / res + _EPS) * res),
            max(sq[1], math.floor(by0 / res + _EPS) * res),
            min(sq[2], math.ceil(bx1 / res - _EPS) * res),
            min(sq[3], math.ceil(by1 / res - _EPS) * res),
        )
        if bounds[2] <= bounds[0] or bounds[3] <= bounds[1]:
            continue
        out.append(
            Cell(
                id=f"{epsg}_{col:04d}_{row:04d}",
                epsg=epsg,
                col=col,
                row=row,
                size_m=size,
                bounds=tuple(float(b) for b in bounds),
                aoi_utm=a_utm,
                aoi_4326=a_deg,
            )
        )
    return out
