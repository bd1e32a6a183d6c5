"""Landslide polygons from a probability map: threshold, connected objects, GeoParquet + GeoPackage.

How objects are found, chunk by chunk, with bounded memory
-----------------------------------------------------------
One Dask task per chunk of the probability array thresholds it, labels its connected components
(``scipy.ndimage.label``) and turns every component into one polygon (``rasterio.features.shapes``
on the label image), with its pixel count, probability sum and maximum. All geometry is made in
*pixel* coordinates (integers, exact in floating point) and mapped to the CRS only at the very end,
so polygons from different chunks meet on bit-identical vertices.

- A component that does not touch an inner chunk edge is complete: the task applies the minimum
  area there and returns it as it is.
- A component that touches an inner chunk edge is a *piece*. The task also returns, for each
  inner edge of its chunk, the labels of the foreground pixels on that edge (sparse: positions and
  labels, so a region with few landslides sends back almost nothing).

The driver joins pieces whose pixels face each other directly across a chunk seam (union-find),
unions each group's geometries (``shapely.union_all``; exact, as shared edges are identical) and
sums their statistics; the minimum area is applied after this merge. The result does not depend
on the chunking: the tests compare 32-px chunks against one chunk. Memory: a task holds one chunk;
the driver holds only the output polygons and the seam pixels that are foreground — never a
raster of the region.

Connectivity is **4** (edge neighbours, the GDAL/rasterio and ``scipy.ndimage.label`` default):
every object is one valid ``Polygon`` (holes kept), and two objects that touch only at a pixel
corner stay separate. The evaluation (``report.py``) uses the same rule for reference objects
made from a label raster.

``area_m2`` is the mapped area: pixel count x pixel area, i.e. the exact area of the unsimplified
polygon (holes excluded); simplification changes the outline, not this number.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from affine import Affine
from rasterio import features
from scipy import ndimage
from scipy.cluster.hierarchy import DisjointSet

from ..common.files import atomic_path, atomic_write
from ..errors import InputDataError, UsageError
from .config import MIN_AREA_M2
from .store import open_prediction, transform_of

log = logging.getLogger(__name__)

CONNECTIVITY = 4
_STRUCTURE = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
COLUMNS = ["id", "area_m2", "mean_prob", "max_prob"]


# inputs


def threshold_level(threshold: float) -> int:
    """The uint8 level a probability threshold means: ``probability >= round(t * 255)``.

    Clamped to at least 1, so pixels of probability 0 (which include invalid ones) are never
    foreground. Used by both polygons and the pixel metrics of the evaluation.
    """
    t = float(threshold)
    if not (0.0 < t <= 1.0) or not np.isfinite(t):
        raise UsageError(f"The threshold must be a probability in (0, 1], got {threshold!r}.")
    return max(1, int(round(t * 255)))


def resolve_threshold(ds: xr.Dataset, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    if "threshold" not in ds.attrs:
        raise InputDataError(
            "The prediction carries no 'threshold' attribute (the checkpoint's validation-chosen "
            "threshold): pass one explicitly (--threshold)."
        )
    return float(ds.attrs["threshold"])


def foreground(ds: xr.Dataset, level: int) -> da.Array:
    """Lazy boolean foreground: probability >= level, and valid where a mask exists."""
    prob = ds["probability"].data
    fg = prob >= np.uint8(level)
    if "valid" in ds:
        fg = fg & ds["valid"].data.rechunk(prob.chunks).astype(bool)
    return fg


# per chunk


def _block_components(
    fg: np.ndarray, prob: np.ndarray | None, row0: int, col0: int, inner: tuple[bool, bool, bool, bool], min_pixels: int
) -> dict:
    """Components of one chunk: complete ones (area-filtered) and pieces touching inner edges.

    ``inner`` says which edges (top, bottom, left, right) face another chunk.
    """
    fg = np.asarray(fg, dtype=bool)
    labels, n = ndimage.label(fg, structure=_STRUCTURE)
    empty_edges = {k: (np.empty(0, np.int32), np.empty(0, np.int32)) for k in ("top", "bottom", "left", "right")}
    if n == 0:
        return {"n": 0, "edges": empty_edges, "rows": []}
    idx = np.arange(1, n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if prob is None:
        sums = counts.astype(np.float64) * 255.0
        maxes = np.full(n, 255, dtype=np.int64)
    else:
        p = np.asarray(prob)
        sums = np.asarray(ndimage.sum_labels(p, labels, idx), dtype=np.float64)
        maxes = np.asarray(ndimage.maximum(p, labels, idx)).astype(np.int64)
    top, bottom, left, right = inner
    open_ = np.zeros(n + 1, dtype=bool)
    edges = dict(empty_edges)
    for name, use, line in (
        ("top", top, labels[0, :]),
        ("bottom", bottom, labels[-1, :]),
        ("left", left, labels[:, 0]),
        ("right", right, labels[:, -1]),
    ):
        if use:
            pos = np.flatnonzero(line).astype(np.int32)
            edges[name] = (pos, line[pos].astype(np.int32))
            open_[line[pos]] = True
    open_ = open_[1:]
    keep = open_ | (counts >= min_pixels)
    geoms: dict[int, shapely.Geometry] = {}
    if keep.any():
        lut = np.concatenate([[False], keep])
        kept_labels = np.where(lut[labels], labels, 0).astype(np.int32)
        for geom, value in features.shapes(
            kept_labels, mask=kept_labels > 0, connectivity=CONNECTIVITY, transform=Affine.translation(col0, row0)
        ):
            v = int(value)
            g = shapely.geometry.shape(geom)
            # A 4-connected component is exactly one polygon; union defensively all the same.
            geoms[v] = shapely.union(geoms[v], g) if v in geoms else g
    rows = [
        (
            int(lab),
            bool(open_[lab - 1]),
            int(counts[lab - 1]),
            float(sums[lab - 1]),
            int(maxes[lab - 1]),
            shapely.to_wkb(geoms[lab]),
        )
        for lab in idx[keep]
    ]
    return {"n": int(n), "edges": edges, "rows": rows}


# merge


def _merge(uf: DisjointSet, a, b) -> None:
    uf.add(a)
    uf.add(b)
    uf.merge(a, b)


def _seam_pairs(a_edge, b_edge):
    """Labels facing each other across a seam: positions present on both sides (4-connectivity)."""
    pa, la = a_edge
    pb, lb = b_edge
    common, ia, ib = np.intersect1d(pa, pb, assume_unique=True, return_indices=True)
    if not len(common):
        return []
    pairs = np.unique(np.stack([la[ia], lb[ib]], axis=1), axis=0)
    return [(int(x), int(y)) for x, y in pairs]


def _clean(geom: shapely.Geometry) -> shapely.Geometry:
    """Canonical outline: collinear vertices (left by unions at seams) removed, normalised order."""
    geom = shapely.simplify(geom, 0.0, preserve_topology=True)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return shapely.normalize(geom)


def components(
    fg: da.Array, prob: da.Array | None, transform: Affine, min_area_m2: float = 0.0, client=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected 4-components of a lazy boolean raster, seamless across chunks.

    Returns (geometries in map coordinates, pixel counts, probability sums (uint8 units), maxima),
    sorted by their top-left pixel (raster order), independent of the chunking.
    """
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    min_pixels = int(np.ceil(min_area_m2 / pixel_area - 1e-9)) if min_area_m2 > 0 else 0
    if prob is not None:
        prob = prob.rechunk(fg.chunks)
    ychunks, xchunks = fg.chunks
    yoff = np.concatenate([[0], np.cumsum(ychunks)])
    xoff = np.concatenate([[0], np.cumsum(xchunks)])
    ny, nx = len(ychunks), len(xchunks)
    fg_blocks = fg.to_delayed()
    prob_blocks = prob.to_delayed() if prob is not None else None
    tasks, keys = [], []
    task = dask.delayed(_block_components, pure=True)
    for i in range(ny):
        for j in range(nx):
            inner = (i > 0, i < ny - 1, j > 0, j < nx - 1)
            p = prob_blocks[i, j] if prob_blocks is not None else None
            tasks.append(task(fg_blocks[i, j], p, int(yoff[i]), int(xoff[j]), inner, min_pixels))
            keys.append((i, j))
    if client is not None:
        results = client.gather(client.compute(tasks))
    else:
        results = dask.compute(*tasks)
    by_block = dict(zip(keys, results))

    uf = DisjointSet()  # pieces facing each other across a seam are one object
    for (i, j), res in by_block.items():
        if i < ny - 1:
            for a, b in _seam_pairs(res["edges"]["bottom"], by_block[(i + 1, j)]["edges"]["top"]):
                _merge(uf, (i, j, a), (i + 1, j, b))
        if j < nx - 1:
            for a, b in _seam_pairs(res["edges"]["right"], by_block[(i, j + 1)]["edges"]["left"]):
                _merge(uf, (i, j, a), (i, j + 1, b))

    geoms, counts, sums, maxes = [], [], [], []
    groups: dict = {}
    for (i, j), res in by_block.items():
        for lab, is_open, count, s, mx, wkb in res["rows"]:
            if not is_open:
                if count >= min_pixels:
                    geoms.append(shapely.from_wkb(wkb))
                    counts.append(count)
                    sums.append(s)
                    maxes.append(mx)
                continue
            groups.setdefault(uf[(i, j, lab)] if (i, j, lab) in uf else (i, j, lab), []).append((count, s, mx, wkb))
    for parts in groups.values():
        count = sum(p[0] for p in parts)
        if count < min_pixels:
            continue
        geom = (
            shapely.from_wkb(parts[0][3])
            if len(parts) == 1
            else shapely.union_all(shapely.from_wkb([p[3] for p in parts]))
        )
        geoms.append(geom)
        counts.append(count)
        sums.append(sum(p[1] for p in parts))
        maxes.append(max(p[2] for p in parts))

    geoms_arr = np.array([_clean(g) for g in geoms], dtype=object) if geoms else np.empty(0, dtype=object)
    counts_arr = np.asarray(counts, dtype=np.int64)
    sums_arr = np.asarray(sums, dtype=np.float64)
    maxes_arr = np.asarray(maxes, dtype=np.int64)
    if len(geoms_arr):
        b = shapely.bounds(geoms_arr)  # pixel space: (col0, row0, col1, row1)
        order = np.lexsort((-counts_arr, b[:, 3], b[:, 2], b[:, 0], b[:, 1]))
        geoms_arr, counts_arr, sums_arr, maxes_arr = (
            geoms_arr[order],
            counts_arr[order],
            sums_arr[order],
            maxes_arr[order],
        )
        a, bb, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

        def to_map(xy: np.ndarray) -> np.ndarray:
            col, row = xy[:, 0], xy[:, 1]
            return np.stack([a * col + bb * row + c, d * col + e * row + f], axis=1)

        geoms_arr = shapely.transform(geoms_arr, to_map)
    return geoms_arr, counts_arr, sums_arr, maxes_arr


# public


def polygonize(
    prediction,
    out=None,
    threshold: float | None = None,
    min_area_m2: float = MIN_AREA_M2,
    simplify_m: float | None = None,
    client=None,
) -> gpd.GeoDataFrame:
    """Landslide polygons of a finished prediction, written as ``<out>.parquet`` and ``<out>.gpkg``.

    ``prediction``: path of a prediction zarr group (or an opened ``xarray.Dataset``).
    ``out``: path whose stem names both files (any suffix is dropped: ``maps/haiti.gpkg`` writes
    ``maps/haiti.parquet`` and ``maps/haiti.gpkg``); ``None`` writes nothing.
    ``threshold``: probability in (0, 1]; default the prediction's ``threshold`` attribute (the
    checkpoint's validation-chosen one). Compared on the stored uint8 as
    ``probability >= round(threshold * 255)``.
    ``min_area_m2``: objects smaller than this are dropped, after merging across chunks.
    ``simplify_m``: optional Douglas-Peucker tolerance in metres, topology-preserving per polygon
    (each stays valid, holes kept); objects touching at a corner may then overlap very slightly.

    Columns: ``id`` (1.., in raster order of the objects' top-left corners), ``area_m2`` (pixel count
    x pixel area), ``mean_prob`` and ``max_prob`` (0..1), geometry in the prediction's CRS.
    See the module docstring for how chunk borders are handled (4-connectivity).
    """
    ds = open_prediction(prediction, georeferenced=True)
    t = resolve_threshold(ds, threshold)
    level = threshold_level(t)
    transform = transform_of(ds)
    fg = foreground(ds, level)
    geoms, counts, sums, maxes = components(fg, ds["probability"].data, transform, min_area_m2, client)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    if simplify_m and len(geoms):
        geoms = shapely.simplify(geoms, float(simplify_m), preserve_topology=True)
    n = len(geoms)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1) / 255.0, 0.0)
    gdf = gpd.GeoDataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "area_m2": counts.astype(np.float64) * pixel_area,
            "mean_prob": mean.astype(np.float64),
            "max_prob": maxes.astype(np.float64) / 255.0,
        },
        geometry=gpd.GeoSeries(list(geoms), crs=ds.attrs["crs"]) if n else gpd.GeoSeries([], crs=ds.attrs["crs"]),
        crs=ds.attrs["crs"],
    )
    gdf.attrs.update(
        {
            "threshold": t,
            "threshold_level": level,
            "min_area_m2": float(min_area_m2),
            "simplify_m": float(simplify_m) if simplify_m else 0.0,
            "connectivity": CONNECTIVITY,
        }
    )
    log.info("%d polygons at threshold %.3f (level %d/255), min area %.0f m2", n, t, level, min_area_m2)
    if out is not None:
        write_polygons(gdf, out)
    return gdf


def output_paths(out) -> tuple[Path, Path]:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".parquet", ".gpkg", ".geoparquet") else out
    return stem.with_name(stem.name + ".parquet"), stem.with_name(stem.name + ".gpkg")


def write_polygons(gdf: gpd.GeoDataFrame, out) -> tuple[Path, Path]:
    """GeoParquet and GeoPackage beside each other, each written to a temporary name then renamed."""
    parquet, gpkg = output_paths(out)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    layer = gpkg.stem
    atomic_write(parquet, lambda tmp: gdf.to_parquet(tmp, index=False))
    with atomic_path(gpkg) as tmp:
        try:
            if len(gdf):
                gdf.to_file(tmp, driver="GPKG", layer=layer, index=False)
            else:  # an empty layer still needs its geometry type and fields
                gdf.to_file(tmp, driver="GPKG", layer=layer, index=False, geometry_type="Polygon")
        finally:  # SQLite's side files of the temporary name
            for side in ("-wal", "-shm", "-journal"):
                tmp.with_name(tmp.name + side).unlink(missing_ok=True)
    return parquet, gpkg


def read_polygons_file(path, crs=None) -> gpd.GeoDataFrame:
    """Read a polygons file written by :func:`polygonize` (GeoParquet or GeoPackage)."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"No polygons file at {path}: run `landslide-dask polygons` first.")
    try:
        gdf = gpd.read_parquet(path) if path.suffix.lower() in (".parquet", ".geoparquet") else gpd.read_file(path)
    except Exception as exc:
        raise InputDataError(f"Cannot read the polygons file {path}: {exc}") from exc
    if gdf.crs is None:
        raise InputDataError(f"The polygons file {path} has no CRS.")
    return gdf.to_crs(crs) if crs is not None else gdf


__all__ = [
    "polygonize",
    "write_polygons",
    "components",
    "threshold_level",
    "read_polygons_file",
    "CONNECTIVITY",
    "COLUMNS",
]
