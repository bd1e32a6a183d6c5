"""STAC assets onto the cube grid: one task per block reads every date and band that block needs.

Why our own loader rather than stackstac or odc-stac (both measured beside it in
``benchmarks/cube.py``): stackstac makes one task per asset and chunk and then mosaics and
concatenates them, so its graph grows with items x bands x chunks (15,000 tasks for the 12 km
benchmark region against 32 here), and both read every asset through a warp even where its pixels
are the cube's pixels. Here a block task opens only the assets whose footprint meets the block
and reads, per asset, the cheapest way that gives the same pixels:

- a plain window where the asset is on the cube grid (a Sentinel-2 granule in the cube's UTM zone
  at 10 m: most reads);
- two 1-D index look-ups where it is north-up in the cube's CRS at another pixel size (20 m SCL);
- otherwise (another UTM zone, the DEM in degrees) each cube pixel's centre located in the source,
  then nearest or bilinear sampling: GDAL's exact warp to float rounding, and, unlike GDAL's
  default approximate transformer, the same whatever block a pixel is read in (``BlockPoints``).

Each asset's pixels are converted to the cube's radiometric convention as they are read, before
any mosaic (``Asset.gain``/``bias``, from ``cube.radiometry``), so granules of different processing
baselines never meet in different units. Granules of one day are mosaicked per band with the last
item on top, as ``stackstac.mosaic`` does. Files stay open between blocks (``_OpenFiles``), so a
granule that several blocks share is opened once and its decoded tiles reused.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import dask.array as da
import numpy as np
import rasterio
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import InputDataError
from .grid import Grid
from .radiometry import harmonise
from .read_errors import error_text, explain_read_failure, without_query
from .warp import BlockPoints, masked_read, warped_read

__all__ = [
    "Asset",
    "Stack",
    "asset_footprint",
    "block_slices",
    "lazy_blocks",
    "close_files",
    "release_memory",
    "GDAL_READ_ENV",
]

# What stackstac sets too: no directory listing on open (no probing for sidecar files, which also
# makes a local open 0.7 -> 0.4 ms), cached headers for remote COGs. And a bounded cache of decoded
# tiles: GDAL's default (5 % of RAM) fills with every tile read, so peak memory grew with the region
# (1.6x for 4x the area); 64 MB still holds the tiles that two neighbouring blocks share.
GDAL_READ_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": True,
    "GDAL_CACHEMAX": 64 * 2**20,
}


@dataclass(frozen=True)
class Asset:
    """One single-band raster of one STAC item, and where it lies in the cube's CRS."""

    href: str
    item_id: str
    key: str
    bounds: tuple[float, float, float, float] | None  # footprint in the grid's CRS; None: unknown
    gain: float = 1.0  # DN x gain + bias: the cube's convention (cube.radiometry); 1, 0 for SCL and DEM
    bias: float = 0.0


def _item_epsg(props: dict) -> int | None:
    epsg = props.get("proj:epsg")
    if epsg:
        return int(epsg)
    code = str(props.get("proj:code") or "")
    return int(code.split(":")[1]) if code.upper().startswith("EPSG:") else None


def asset_footprint(
    item: dict, key: str, grid: Grid, margin_px: float = 2.0
) -> tuple[float, float, float, float] | None:
    """The asset's bounds in the grid's CRS (from its projection metadata, else the item's lon/lat
    bbox), grown by ``margin_px`` output pixels, so that a block it cannot touch is never opened."""
    props = item.get("properties", {})
    asset = item["assets"][key]
    epsg = _item_epsg(asset) or _item_epsg(props)
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    if epsg and transform and shape:
        a, b, c, d, e, f = transform[:6]
        xs = [c, c + a * shape[1], c + b * shape[0], c + a * shape[1] + b * shape[0]]
        ys = [f, f + d * shape[1], f + e * shape[0], f + d * shape[1] + e * shape[0]]
        src, crs = (min(xs), min(ys), max(xs), max(ys)), f"EPSG:{epsg}"
    elif epsg and props.get("proj:bbox"):
        src, crs = tuple(props["proj:bbox"][:4]), f"EPSG:{epsg}"
    elif item.get("bbox"):
        b = item["bbox"]
        src, crs = ((b[0], b[1], b[3], b[4]) if len(b) == 6 else tuple(b[:4])), "EPSG:4326"
    else:
        return None
    try:
        minx, miny, maxx, maxy = transform_bounds(crs, grid.crs, *src, densify_pts=21)
    except Exception:  # a footprint that does not project: read it and let the warp decide
        return None
    if not all(map(math.isfinite, (minx, miny, maxx, maxy))):
        return None
    m = margin_px * grid.res
    return (minx - m, miny - m, maxx + m, maxy + m)


@dataclass(frozen=True)
class Stack:
    """A (layer, band, y, x) stack on ``grid``: ``layers[i][j]`` are the assets mosaicked, last on
    top, into layer i (a day, for imagery), band j. ``fill`` is the value of "no data"."""

    grid: Grid
    layers: tuple[tuple[tuple[Asset, ...], ...], ...]
    dtype: str
    fill: float
    resampling: Resampling = Resampling.nearest

    @classmethod
    def of_days(
        cls,
        days: list[date],
        items_by_day: dict[date, list[dict]],
        keys: list[str],
        grid: Grid,
        dtype: str,
        fill: float,
        resampling: Resampling = Resampling.nearest,
        radiometry: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    ) -> Stack:
        """``radiometry``: (item id, asset key) -> (gain, bias) applied to that asset's pixels as
        they are read; assets it does not name are read as they are."""
        conv = radiometry or {}
        layers = tuple(
            tuple(
                tuple(
                    Asset(
                        it["assets"][k]["href"],
                        it["id"],
                        k,
                        asset_footprint(it, k, grid),
                        *conv.get((it["id"], k), (1.0, 0.0)),
                    )
                    for it in items_by_day[day]
                )
                for k in keys
            )
            for day in days
        )
        return cls(grid, layers, dtype, fill, resampling)

    def __dask_tokenize__(self) -> str:
        """A hash of the fields' repr: dask's own walk through every Asset costs ~0.1 s per cube."""
        if "_token" not in self.__dict__:
            self.__dict__["_token"] = hashlib.sha1(repr(self).encode()).hexdigest()
        return self.__dict__["_token"]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.layers), len(self.layers[0]) if self.layers else 0, *self.grid.shape)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Read the block ``rows`` x ``cols`` of every layer and band: each asset opened once."""
        h, w = rows.stop - rows.start, cols.stop - cols.start
        out = np.full((*self.shape[:2], h, w), self.fill, dtype=self.dtype)
        g = self.grid
        box = (g.x0 + cols.start * g.res, g.y0 - rows.stop * g.res, g.x0 + cols.stop * g.res, g.y0 - rows.start * g.res)
        points = BlockPoints(g, rows, cols)
        with rasterio.Env(**GDAL_READ_ENV):
            for i, layer in enumerate(self.layers):
                for j, assets in enumerate(layer):
                    for asset in assets:
                        if asset.bounds is None or _overlaps(asset.bounds, box):
                            keep = asset.bounds is None or _needed_later(asset.bounds, box, rows, cols, g)
                            self._mosaic_into(out[i, j], asset, rows, cols, points, keep)
        return out

    def _mosaic_into(
        self, plane: np.ndarray, asset: Asset, rows: slice, cols: slice, points: BlockPoints, keep: bool
    ) -> None:
        try:
            with _files.checkout(asset.href, keep) as src:
                if src.count != 1:
                    raise InputDataError(
                        f"Asset {asset.key!r} of STAC item {asset.item_id} ({asset.href}) has {src.count} bands; a "
                        "cube reads one band per asset. Catalogue the files with `landslide-dask catalog`, which "
                        "writes one VRT per band."
                    )
                offset = _pixel_offset(src, self.grid)
                if offset is not None:
                    data, (r0, c0) = _direct_read(src, offset, rows, cols, self.dtype)
                elif self.resampling == Resampling.nearest and _axis_aligned(src, self.grid):
                    data, (r0, c0) = _scaled_read(src, self.grid, rows, cols, self.dtype)
                else:
                    data, (r0, c0) = warped_read(src, points, self.dtype, self.resampling), (0, 0)
                target = plane[r0 : r0 + data.shape[0], c0 : c0 + data.shape[1]] if data is not None else None
        except rasterio.errors.RasterioError as exc:
            text = error_text(exc)
            raise InputDataError(
                f"Reading {asset.key!r} of STAC item {asset.item_id} from {without_query(asset.href)} failed: "
                f"{text}. {explain_read_failure(text, asset.href, asset.item_id)}"
            ) from exc
        if data is None:
            return
        if asset.gain != 1.0 or asset.bias != 0.0:
            data = harmonise(data, asset.gain, asset.bias)
        if self.fill == 0 and data.dtype.kind in "ui":  # last on top, in two SIMD passes (np.copyto's
            target *= data == 0  # where= is ~50x slower on these planes)
            target += data
        else:
            missing = np.isnan(data) if np.isnan(self.fill) else data == self.fill
            np.copyto(target, data, where=~missing)


class _OpenFiles:
    """Datasets kept open between blocks, checked out by one thread at a time (a GDAL dataset must
    not be used by two threads at once; a second thread needing a file already in use opens its
    own handle). Blocks after the first reuse a file's parsed header and GDAL's cache of its
    decoded tiles. Keyed by size and modification time too, so a file replaced on disk is opened
    afresh; at most ``cap`` idle handles, the least recently used closed first."""

    def __init__(self, cap: int):
        self.cap = cap
        self._idle: OrderedDict[tuple, list] = OrderedDict()
        self._n = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(href: str) -> tuple:
        try:
            st = os.stat(href)
            return (href, st.st_size, st.st_mtime_ns)
        except (OSError, ValueError):  # a URL or a GDAL virtual path
            return (href, None, None)

    @contextmanager
    def checkout(self, href: str, keep: bool = True):
        """An open dataset for ``href``; returned to the pool afterwards if ``keep``, else closed."""
        key = self._key(href)
        src = None
        with self._lock:
            handles = self._idle.get(key)
            if handles:
                src = handles.pop()
                self._n -= 1
                if not handles:
                    del self._idle[key]
        if src is None:
            src = _open_dataset(href, key[1] is not None)
        try:
            yield src
        except BaseException:
            src.close()  # a handle that failed mid-read is not handed out again
            raise
        if not keep:
            src.close()
            return
        surplus = []
        with self._lock:
            self._idle.setdefault(key, []).append(src)
            self._idle.move_to_end(key)
            self._n += 1
            while self._n > self.cap:
                old_key, old = next(iter(self._idle.items()))
                surplus.append(old.pop(0))
                self._n -= 1
                if not old:
                    del self._idle[old_key]
        for ds in surplus:
            ds.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._n = self._idle, OrderedDict(), 0
        for handles in idle.values():
            for ds in handles:
                ds.close()


class _Source:
    """An open dataset and the facts every block asks of it, read once: rasterio builds ``crs``,
    ``transform`` and the mask flags anew on each access (the grid check cost ~84 us a read when it
    asked the dataset each time)."""

    __slots__ = ("ds", "name", "crs", "epsg", "transform", "width", "height", "count", "nodata", "mask_flags")

    def __init__(self, ds):
        self.ds, self.name, self.crs = ds, ds.name, ds.crs
        self.epsg = ds.crs.to_epsg() if ds.crs else None
        self.transform, self.width, self.height, self.count = ds.transform, ds.width, ds.height, ds.count
        self.nodata, self.mask_flags = ds.nodata, ds.mask_flag_enums[0]

    def read(self, *args, **kwargs) -> np.ndarray:
        return self.ds.read(*args, **kwargs)

    def close(self) -> None:
        self.ds.close()


def _open_dataset(href: str, local: bool) -> _Source:
    """A local file opens as a ``DatasetReader`` directly (0.35 against 0.43 ms for rasterio.open,
    whose credential wrapper only remote paths need; opens hold the GIL, so this is serial time)."""
    return _Source(DatasetReader(href) if local else rasterio.open(href))


def _open_file_cap() -> int:
    """Idle handles to keep: 128 (an open GeoTIFF that has been read holds ~0.5 MB, so more would
    make memory follow the number of files in the region), or fewer under a low file limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 64
    return max(8, min(128, soft // 8)) if soft > 0 else 128


_files = _OpenFiles(_open_file_cap())


def _load_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_malloc_trim = _load_trim()


def release_memory() -> None:
    """Hand the heap a block task freed back to the OS (glibc keeps it otherwise, so a process's
    peak memory grew with the number of blocks it had run, not with the block)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def close_files() -> None:
    """Close every dataset the loader holds open (call when no read is running)."""
    _files.close()


def _needed_later(
    bounds: tuple[float, float, float, float],
    box: tuple[float, float, float, float],
    rows: slice,
    cols: slice,
    grid: Grid,
) -> bool:
    """Whether a block after this one in row-major order needs the asset too (it reaches past the
    block's right or bottom edge, inside the grid): if not, its file is closed after this read, so
    open files follow the width of the region, not its area, when blocks run in that order."""
    return (bounds[2] > box[2] and cols.stop < grid.width) or (bounds[1] < box[1] and rows.stop < grid.height)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pixel_offset(src, grid: Grid) -> tuple[int, int] | None:
    """(row, col) of the source's first pixel on the grid, where its pixels are the grid's pixels."""
    t = src.transform
    if src.epsg != grid.epsg or t.b or t.d:
        return None
    if not (math.isclose(t.a, grid.res) and math.isclose(-t.e, grid.res)):
        return None
    col, row = (t.c - grid.x0) / grid.res, (grid.y0 - t.f) / grid.res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _axis_aligned(src, grid: Grid) -> bool:
    """The source is north-up in the grid's CRS (another pixel size or origin: 20 m SCL, say)."""
    t = src.transform
    return src.epsg == grid.epsg and not t.b and not t.d and t.a > 0 and t.e < 0


def _scaled_read(src, grid: Grid, rows: slice, cols: slice, dtype: str):
    """Nearest resampling from a north-up source in the grid's CRS: the source row of an output
    pixel depends on its row only, and the column on its column, so two 1-D look-ups suffice."""
    t = src.transform
    ci = np.floor((grid.xs()[cols] - t.c) / t.a).astype(np.intp)
    ri = np.floor((grid.ys()[rows] - t.f) / t.e).astype(np.intp)
    okc = np.flatnonzero((ci >= 0) & (ci < src.width))
    okr = np.flatnonzero((ri >= 0) & (ri < src.height))
    if not len(okc) or not len(okr):
        return None, (0, 0)
    ci, ri = ci[okc[0] : okc[-1] + 1], ri[okr[0] : okr[-1] + 1]
    c0, r0 = int(ci.min()), int(ri.min())
    data = masked_read(src, Window(c0, r0, int(ci.max()) - c0 + 1, int(ri.max()) - r0 + 1), dtype)
    return data[(ri - r0)[:, None], (ci - c0)[None, :]], (int(okr[0]), int(okc[0]))


def _direct_read(src, offset: tuple[int, int], rows: slice, cols: slice, dtype: str):
    """The part of the block the source covers, read as a plain window: (data, (row, col) in the block)."""
    r0, c0 = max(rows.start, offset[0]), max(cols.start, offset[1])
    r1, c1 = min(rows.stop, offset[0] + src.height), min(cols.stop, offset[1] + src.width)
    if r0 >= r1 or c0 >= c1:
        return None, (0, 0)
    win = Window(c0 - offset[1], r0 - offset[0], c1 - c0, r1 - r0)
    return masked_read(src, win, dtype), (r0 - rows.start, c0 - cols.start)


def block_slices(n: int, block: int) -> list[slice]:
    return [slice(s, min(s + block, n)) for s in range(0, n, block)]


def lazy_blocks(fn, shape: tuple[int, int], block: int, lead: tuple[int, ...], dtype, name: str, *args) -> da.Array:
    """A dask array of ``lead + shape`` whose block (i, j) is ``fn(*args, rows_i, cols_j)``: one task
    per block and no other tasks, which is what keeps the graph small."""
    rows, cols = block_slices(shape[0], block), block_slices(shape[1], block)
    key = f"{name}-{tokenize(fn, shape, block, lead, dtype, *args)}"
    zeros = (0,) * len(lead)
    dsk = {(key, *zeros, i, j): (fn, *args, r, c) for i, r in enumerate(rows) for j, c in enumerate(cols)}
    chunks = (*((n,) for n in lead), tuple(s.stop - s.start for s in rows), tuple(s.stop - s.start for s in cols))
    return da.Array(HighLevelGraph.from_collections(key, dsk, dependencies=()), key, chunks, dtype=dtype)
