"""Reading a source onto the cube grid where its pixels are not the cube's (another CRS, or
bilinear): each cube pixel's centre located in the source, then nearest or bilinear sampling, the
same whatever block a pixel is read in (``BlockPoints``); and the masked window read every read
path shares."""

from __future__ import annotations

import threading

import numpy as np
from pyproj import Transformer
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from ..errors import InputDataError
from .grid import Grid

__all__ = ["BlockPoints", "warped_read", "masked_read"]

_local = threading.local()


class BlockPoints:
    """The block's pixel centres in each source CRS, computed once per CRS and block.

    Exactly transformed at a lattice every ``LATTICE`` pixels anchored to the grid's origin, and
    bilinear in between: over 16 pixels a map projection is linear to far below a millimetre, and
    as the lattice does not move with the block, a pixel's position (so its value) never depends
    on the block it was read in -- unlike GDAL's approximate transformer, which interpolates over
    each request's own window (up to 3.2 m of DEM height between two chunkings of a demo DEM read).
    """

    LATTICE = 16

    def __init__(self, grid: Grid, rows: slice, cols: slice):
        self.grid, self.rows, self.cols = grid, rows, cols
        self._xy: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def xy(self, crs) -> tuple[np.ndarray, np.ndarray]:
        key = crs.to_wkt()
        if key not in self._xy:
            g = self.grid
            if crs == g.crs:
                self._xy[key] = tuple(np.meshgrid(g.xs()[self.cols], g.ys()[self.rows]))
            else:
                self._xy[key] = self._lattice_xy(_transformer(g.crs.to_wkt(), key))
        return self._xy[key]

    def _lattice_xy(self, transformer: Transformer) -> tuple[np.ndarray, np.ndarray]:
        g, k = self.grid, self.LATTICE
        r_idx, c_idx = np.arange(self.rows.start, self.rows.stop), np.arange(self.cols.start, self.cols.stop)
        lr = np.arange((self.rows.start // k) * k, r_idx[-1] + k, k)
        lc = np.arange((self.cols.start // k) * k, c_idx[-1] + k, k)
        lx, ly = transformer.transform(*np.meshgrid(g.x0 + (lc + 0.5) * g.res, g.y0 - (lr + 0.5) * g.res))
        return _bilinear_rows_cols(np.asarray(lx), (r_idx - lr[0]) / k, (c_idx - lc[0]) / k), _bilinear_rows_cols(
            np.asarray(ly), (r_idx - lr[0]) / k, (c_idx - lc[0]) / k
        )


def _bilinear_rows_cols(lattice: np.ndarray, fr: np.ndarray, fc: np.ndarray) -> np.ndarray:
    """Values of a (m, n) lattice at fractional rows ``fr`` x columns ``fc``, separably."""

    def weights(f: np.ndarray, n: int):
        i0 = np.minimum(np.floor(f).astype(np.intp), max(n - 2, 0))
        return i0, np.minimum(i0 + 1, n - 1), f - i0

    c0, c1, wc = weights(fc, lattice.shape[1])
    along = lattice[:, c0] * (1 - wc) + lattice[:, c1] * wc
    r0, r1, wr = weights(fr, lattice.shape[0])
    return along[r0] * (1 - wr)[:, None] + along[r1] * wr[:, None]


def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    """One pyproj Transformer per thread and CRS pair (a Transformer is not shared across threads)."""
    cache = _local.__dict__.setdefault("transformers", {})
    if (src_wkt, dst_wkt) not in cache:
        cache[(src_wkt, dst_wkt)] = Transformer.from_crs(src_wkt, dst_wkt, always_xy=True)
    return cache[(src_wkt, dst_wkt)]


def warped_read(src, points: BlockPoints, dtype: str, resampling: Resampling) -> np.ndarray | None:
    """The block from a source on another grid (another CRS, or bilinear): each output pixel centre
    located in the source (``BlockPoints``), then the source pixel that contains it (nearest) or
    the bilinear mean of the four around it, over those that hold data (as GDAL's bilinear)."""
    if src.crs is None:
        raise InputDataError(
            f"{src.name} has no CRS: it cannot be placed on the cube grid. Fix the file's "
            "georeferencing (gdal_edit.py -a_srs) or leave its item out."
        )
    x, y = points.xy(src.crs)
    inv = ~src.transform  # fractional source pixel coordinates (corner-based)
    col = inv.a * x + inv.b * y + inv.c
    row = inv.d * x + inv.e * y + inv.f
    inside = (col >= 0) & (col < src.width) & (row >= 0) & (row < src.height)
    if not inside.any():
        return None
    bilinear = resampling == Resampling.bilinear
    if not bilinear and resampling != Resampling.nearest:
        raise ValueError(f"resampling {resampling!r} is not supported: nearest or bilinear")
    fill = np.nan if np.issubdtype(np.dtype(dtype), np.floating) else 0
    out = np.full(x.shape, fill, dtype=dtype)
    c_in, r_in = col[inside], row[inside]
    if not bilinear:
        ri, ci = np.floor(r_in).astype(np.intp), np.floor(c_in).astype(np.intp)
        r0, c0 = int(ri.min()), int(ci.min())
        data = masked_read(src, Window(c0, r0, int(ci.max()) - c0 + 1, int(ri.max()) - r0 + 1), dtype)
        out[inside] = data[ri - r0, ci - c0]
        return out
    # Bilinear between the four source pixel centres around each point (clamped at the raster's
    # edge), with weights from absolute source coordinates, so they do not depend on the window read.
    v = np.clip(r_in - 0.5, 0, src.height - 1)
    u = np.clip(c_in - 0.5, 0, src.width - 1)
    i0 = np.minimum(np.floor(v).astype(np.intp), max(src.height - 2, 0))
    j0 = np.minimum(np.floor(u).astype(np.intp), max(src.width - 2, 0))
    fv, fu = v - i0, u - j0
    i1, j1 = np.minimum(i0 + 1, src.height - 1), np.minimum(j0 + 1, src.width - 1)
    r0, c0 = int(i0.min()), int(j0.min())
    data = masked_read(src, Window(c0, r0, int(j1.max()) - c0 + 1, int(i1.max()) - r0 + 1), "float64")
    corners = [
        (data[i - r0, j - c0], wt)
        for i, j, wt in (
            (i0, j0, (1 - fv) * (1 - fu)),
            (i0, j1, (1 - fv) * fu),
            (i1, j0, fv * (1 - fu)),
            (i1, j1, fv * fu),
        )
    ]
    if np.isfinite(data).all():
        out[inside] = sum(val * wt for val, wt in corners)
        return out
    num, den = np.zeros(v.shape), np.zeros(v.shape)
    for val, wt in corners:  # as GDAL's bilinear: the weights of the pixels that hold data, renormalised
        ok = np.isfinite(val)
        num += np.where(ok, val, 0.0) * wt
        den += ok * wt
    with np.errstate(invalid="ignore", divide="ignore"):
        out[inside] = np.where(den > 0, num / den, np.nan)
    return out


def masked_read(src, win: Window, dtype: str) -> np.ndarray:
    """Band 1 of ``win``, with the source's nodata or mask as our fill (0, or NaN for floats).

    A source whose only mask is a nodata value equal to the fill (Sentinel-2's 0), or that has no
    mask at all, is read plainly: its pixels already say what a mask would."""
    fill = np.nan if np.issubdtype(np.dtype(dtype), np.floating) else 0
    flags = src.mask_flags
    if flags == [MaskFlags.all_valid] or (flags == [MaskFlags.nodata] and src.nodata == fill):
        return src.read(1, window=win, out_dtype=dtype)
    return np.ma.filled(src.read(1, window=win, out_dtype=dtype, masked=True), fill)
