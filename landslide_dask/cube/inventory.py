"""Landslide inventories and areas of interest: read, repair, reproject, rasterise chunk by chunk."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize

from ..errors import InputDataError
from .grid import Grid

log = logging.getLogger(__name__)

__all__ = ["LABEL_UNKNOWN", "VectorReport", "read_polygons", "rasterize_lazy", "label_raster", "check_overlap"]
# rasterize() burns into an in-memory dataset of its own and warns that *it* has no transform.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\..*")

LABEL_UNKNOWN = 255


@dataclass
class VectorReport:
    """What reading a vector file changed, so the cube can say it (never silently)."""

    path: str
    features: int
    repaired: int
    dropped_empty: int
    source_crs: str


def read_polygons(path: str | Path, what: str = "inventory") -> tuple[gpd.GeoDataFrame, VectorReport]:
    """Read polygons from GeoJSON / GeoPackage / Shapefile (anything pyogrio reads).

    Invalid geometries are repaired with ``make_valid`` (keeping only polygonal parts), empty ones
    dropped, and both counted in the report. Refuses files without a CRS, and files whose
    coordinates cannot be in their declared CRS (the usual cause: metres labelled EPSG:4326).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"The {what} file {path} does not exist.")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputDataError(
            f"Cannot read the {what} file {path}: {exc}. Is it a vector file "
            "(GeoJSON, GeoPackage, Shapefile) and complete?"
        ) from exc
    if gdf.crs is None:
        raise InputDataError(
            f"The {what} file {path} has no CRS. Write it with one "
            "(GeoJSON is EPSG:4326 by definition; for a Shapefile add the .prj)."
        )
    if len(gdf) and gdf.crs.is_geographic:
        minx, miny, maxx, maxy = gdf.total_bounds
        if max(abs(minx), abs(maxx)) > 180.0 or max(abs(miny), abs(maxy)) > 90.0:
            raise InputDataError(
                f"The {what} file {path} declares {gdf.crs.to_string()} but its coordinates "
                f"({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f}) are not degrees: it is probably in a "
                "projected CRS. Re-save it with its true CRS."
            )
    geoms = gdf.geometry.values
    invalid = ~shapely.is_valid(geoms) & ~shapely.is_empty(geoms)
    repaired = int(invalid.sum())
    if repaired:
        fixed = shapely.make_valid(geoms[invalid])
        geoms = geoms.copy()
        geoms[invalid] = [_polygonal_part(g) for g in fixed]
        gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
        log.warning("%s: repaired %d invalid geometries in %s", what, repaired, path)
    keep = ~gdf.geometry.is_empty & gdf.geometry.notna() & gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    dropped = int((~keep).sum())
    gdf = gdf[keep].reset_index(drop=True)
    if not len(gdf):
        raise InputDataError(f"The {what} file {path} holds no polygons.")
    return gdf, VectorReport(str(path), len(gdf), repaired, dropped, gdf.crs.to_string())


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    """Keep the polygons of a GeometryCollection that make_valid may return."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _rasterize_block(
    block_info: dict | None,
    geoms: np.ndarray,
    values: np.ndarray,
    tree: shapely.STRtree,
    grid: Grid,
    fill: int,
    dtype: str,
    default_shape: tuple[int, int],
) -> np.ndarray:
    if block_info is None:  # dask probing with an empty block
        return np.full(default_shape, fill, dtype=dtype)
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    shape = (r1 - r0, c1 - c0)
    tf = grid.window_transform(r0, c0)
    minx, maxy = tf @ (0, 0)
    maxx, miny = tf @ (shape[1], shape[0])
    hits = tree.query(shapely.box(minx, miny, maxx, maxy))
    if not len(hits):
        return np.full(shape, fill, dtype=dtype)
    hits.sort()  # keep file order: later features draw over earlier ones, as in rasterio
    return rasterize(
        zip(geoms[hits], values[hits]), out_shape=shape, transform=tf, fill=fill, dtype=dtype, all_touched=False
    )


def rasterize_lazy(
    gdf: gpd.GeoDataFrame, values: np.ndarray | int, grid: Grid, chunks: int, fill: int = 0, dtype: str = "uint8"
) -> da.Array:
    """Burn polygons into a dask array on ``grid``, one chunk at a time (pixel centres inside).

    The geometries travel through the graph once, as a single delayed object, and each chunk
    burns only those its bounds intersect (STR-tree), so cost and memory follow the chunk.
    """
    gdf = gdf.to_crs(grid.crs)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    vals = np.broadcast_to(np.asarray(values), (len(geoms),)).copy()
    # Named by a hash of the WKB (one vectorised call), not by dask's tokenize, which pickles every
    # geometry one at a time: 0.17 s of a 12 km cube's set-up for its three polygon layers.
    digest = hashlib.sha1(b"".join(shapely.to_wkb(geoms)) + vals.tobytes() + repr((grid, chunks, fill, dtype)).encode())
    payload = dask.delayed((geoms, vals, shapely.STRtree(geoms)), name=f"polygons-{digest.hexdigest()}")
    template = da.zeros(grid.shape, chunks=chunks, dtype=dtype)

    def burn(block_info=None, payload=None):
        g, v, t = payload
        return _rasterize_block(block_info, g, v, t, grid, fill, dtype, (0, 0))

    return da.map_blocks(burn, dtype=dtype, chunks=template.chunks, payload=payload, meta=np.empty((0, 0), dtype=dtype))


def label_raster(inventory: gpd.GeoDataFrame, covered: gpd.GeoDataFrame, grid: Grid, chunks: int) -> da.Array:
    """``label``: 1 inside a landslide polygon, 0 elsewhere inside the mapped area, 255 outside it."""
    inside = rasterize_lazy(covered, 1, grid, chunks, fill=0)
    slides = rasterize_lazy(inventory, 1, grid, chunks, fill=0)
    return da.where(inside == 1, slides, np.uint8(LABEL_UNKNOWN)).astype(np.uint8)


def check_overlap(gdf: gpd.GeoDataFrame, grid: Grid, what: str, path: str) -> int:
    """Count features inside the grid; none at all means a wrong file or CRS, which is an error."""
    box = shapely.box(*grid.bounds)
    n = int(gdf.to_crs(grid.crs).intersects(box).sum())
    if n == 0:
        gb = gdf.to_crs("EPSG:4326").total_bounds
        raise InputDataError(
            f"No polygon of the {what} {path} falls inside the cube area {grid.bounds_lonlat()} "
            f"(lon/lat); the file's extent is {tuple(round(v, 4) for v in gb)}. Check that it is the "
            "right file for this area and that its CRS is declared correctly."
        )
    return n
