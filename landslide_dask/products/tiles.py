"""Web Mercator tiles of a map, for the offline web page: XYZ PNG pyramids a browser reads from disk.

Two steps, so that a country tiles as easily as one region:

1. :func:`warp_to_web` puts one layer of a map (probability, status, imagery) on the Web Mercator
   pixel grid of zoom ``zmax`` (origins on whole pixels of that grid), as a tiled GeoTIFF. Every
   cell of a country job does this for its own piece; pieces of all UTM zones then share one grid,
   so a plain VRT mosaics them.
2. :func:`tile_layer` walks the quadtree depth first from the tiles at ``zmin`` that cover the
   raster: a tile at ``zmax`` is a 256 px window of the raster, a parent is its four children
   reduced 2x2 (max for probability and status, so a landslide or a blind area never vanishes at
   country zoom; mean for imagery). Memory: one tile per level. Fully transparent tiles are not
   written; the page learns which exist from the returned keys.

The grid is Web Mercator (EPSG:3857) as every web map library expects; ``morecantile`` names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TILE",
    "WebGrid",
    "zoom_for",
    "web_grid",
    "warp_to_web",
    "tile_layer",
    "probability_rgba",
    "status_rgba",
    "imagery_rgba",
    "RAMP",
]

TILE = 256
_HALF = 20037508.342789244  # half the Web Mercator world width, metres
MAX_ZOOM = 18

#: The probability colour ramp (p -> RGB), shared by tiles, legend and QGIS style: light yellow to
#: dark red, the ramp of hazard maps; alpha rises from 0 at p = 0.1 so the imagery stays readable.
RAMP: list[tuple[float, tuple[int, int, int]]] = [
    (0.0, (255, 255, 178)),
    (0.25, (254, 204, 92)),
    (0.5, (253, 141, 60)),
    (0.75, (240, 59, 32)),
    (1.0, (189, 0, 38)),
]
ALPHA_FROM, ALPHA_FULL = 0.1, 0.5


def zoom_for(res_m: float, lat: float) -> int:
    """The smallest zoom whose pixels on the ground are no larger than ``res_m`` at latitude ``lat``."""
    size = 2 * _HALF * math.cos(math.radians(lat)) / (TILE * res_m)
    return int(min(MAX_ZOOM, max(0, math.ceil(math.log2(size) - 1e-9))))


@dataclass(frozen=True)
class WebGrid:
    """A window of the Web Mercator pixel grid at ``zoom``: global pixel ``(col0, row0)`` top-left."""

    zoom: int
    col0: int
    row0: int
    width: int
    height: int

    @property
    def res(self) -> float:
        return 2 * _HALF / (TILE * 2**self.zoom)

    @property
    def transform(self):
        from rasterio.transform import Affine

        return Affine(self.res, 0.0, -_HALF + self.col0 * self.res, 0.0, -self.res, _HALF - self.row0 * self.res)

    def tiles(self, z: int) -> tuple[range, range]:
        """Tile columns and rows at zoom ``z`` <= ``zoom`` that the grid touches."""
        f = TILE * 2 ** (self.zoom - z)
        return (
            range(self.col0 // f, (self.col0 + self.width - 1) // f + 1),
            range(self.row0 // f, (self.row0 + self.height - 1) // f + 1),
        )


def web_grid(bounds_3857: tuple[float, float, float, float], zoom: int) -> WebGrid:
    """The grid at ``zoom`` covering ``(left, bottom, right, top)`` in EPSG:3857 metres."""
    res = 2 * _HALF / (TILE * 2**zoom)
    left, bottom, right, top = bounds_3857
    c0, c1 = math.floor((left + _HALF) / res), math.ceil((right + _HALF) / res)
    r0, r1 = math.floor((_HALF - top) / res), math.ceil((_HALF - bottom) / res)
    return WebGrid(zoom, c0, r0, max(1, c1 - c0), max(1, r1 - r0))


BlockReader = Callable[[slice, slice], np.ndarray]


def warp_to_web(
    read: BlockReader,
    count: int,
    src_shape: tuple[int, int],
    src_crs,
    src_transform,
    zoom: int,
    out: str | Path,
    *,
    resampling: str = "nearest",
    nodata: int | None = 0,
    mask: bool = False,
    strip: int = 1024,
) -> Path:
    """Warp a source raster (``read(rows, cols) -> (count, h, w)`` uint8, on ``src_crs`` /
    ``src_transform``) onto the Web Mercator grid of ``zoom`` covering it; a tiled GeoTIFF.
    ``mask``: ``read`` returns one band more, 255 where valid, written as the file's internal mask
    (so a VRT of many such files composes them by their masks).

    Strip by strip of the destination: each strip reads only the source window it needs (plus a
    margin for the resampling kernel), so memory follows the strip, not the region.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    h, w = src_shape
    left, top = src_transform * (0, 0)
    right, bottom = src_transform * (w, h)
    grid = web_grid(
        transform_bounds(
            src_crs, "EPSG:3857", min(left, right), min(top, bottom), max(left, right), max(top, bottom), densify_pts=21
        ),
        zoom,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".partial")
    n_read = count + (1 if mask else 0)
    profile = dict(
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=count,
        dtype="uint8",
        crs="EPSG:3857",
        transform=grid.transform,
        tiled=True,
        blockxsize=TILE,
        blockysize=TILE,
        compress="DEFLATE",
        BIGTIFF="IF_SAFER",
        nodata=nodata,
    )
    how = Resampling[resampling]
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(part, "w", **profile) as dst:
            for r0 in range(0, grid.height, strip):
                r1 = min(r0 + strip, grid.height)
                win = Window(0, r0, grid.width, r1 - r0)
                dt = dst.window_transform(win)
                b = rasterio.windows.bounds(win, grid.transform)
                sb = transform_bounds("EPSG:3857", src_crs, *b, densify_pts=21)
                sw = from_bounds(*sb, transform=src_transform)
                ys0, xs0 = max(0, math.floor(sw.row_off) - 2), max(0, math.floor(sw.col_off) - 2)
                ys1 = min(h, math.ceil(sw.row_off + sw.height) + 2)
                xs1 = min(w, math.ceil(sw.col_off + sw.width) + 2)
                dest = np.zeros((n_read, r1 - r0, grid.width), np.uint8)
                if ys1 > ys0 and xs1 > xs0:
                    src = np.ascontiguousarray(read(slice(ys0, ys1), slice(xs0, xs1)), dtype=np.uint8)
                    st = src_transform * src_transform.translation(xs0, ys0)
                    reproject(
                        src,
                        dest,
                        src_transform=st,
                        src_crs=src_crs,
                        dst_transform=dt,
                        dst_crs="EPSG:3857",
                        resampling=how,
                        src_nodata=nodata,
                        dst_nodata=nodata if nodata is not None else 0,
                    )
                dst.write(dest[:count], window=win)
                if mask:
                    dst.write_mask(dest[count], window=win)
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out


def _lerp_ramp(p: np.ndarray) -> np.ndarray:
    stops = np.array([s for s, _ in RAMP])
    cols = np.array([c for _, c in RAMP], float)
    return np.stack([np.interp(p, stops, cols[:, i]) for i in range(3)], -1)


def probability_rgba(tile: np.ndarray) -> np.ndarray:
    """(1, h, w) probability x 255 -> (h, w, 4) RGBA on the ramp :data:`RAMP`."""
    p = tile[0].astype(np.float32) / 255.0
    rgba = np.zeros(p.shape + (4,), np.uint8)
    rgba[..., :3] = _lerp_ramp(p).round().astype(np.uint8)
    rgba[..., 3] = (np.clip((p - ALPHA_FROM) / (ALPHA_FULL - ALPHA_FROM), 0, 1) * 230).round().astype(np.uint8)
    rgba[rgba[..., 3] == 0] = 0  # invisible pixels all alike: PNG then stores them in almost nothing
    return rgba


def status_rgba(tile: np.ndarray) -> np.ndarray:
    """(1, h, w) status codes -> RGBA with the status colours (mapped pixels transparent)."""
    from .cog import STATUS_COLOURS

    lut = np.zeros((256, 4), np.uint8)
    for code, rgba in STATUS_COLOURS.items():
        lut[code] = rgba if rgba[3] else (0, 0, 0, 0)
    return lut[tile[0]]


def imagery_rgba(tile: np.ndarray) -> np.ndarray:
    """(4, h, w) stretched RGB + alpha band -> (h, w, 4)."""
    return np.moveaxis(tile, 0, -1).copy()


def _reduce(block: np.ndarray, how: str) -> np.ndarray:
    """(c, 2h, 2w) -> (c, h, w): ``max`` or ``mean`` (alpha-weighted for imagery: the last band)."""
    c, hh, ww = block.shape
    q = block.reshape(c, hh // 2, 2, ww // 2, 2)
    if how == "max":
        return q.max(axis=(2, 4))
    a = q[-1].astype(np.float32)
    wsum = a.sum(axis=(1, 3))
    rgb = (q[:-1] * a[None]).sum(axis=(2, 4)) / np.maximum(wsum, 1)[None]
    alpha = q[-1].max(axis=(1, 3))
    return np.concatenate([rgb.round().astype(np.uint8), alpha[None]], 0)


def tile_layer(
    src: str | Path,
    out_dir: str | Path,
    zmin: int,
    *,
    render: Callable[[np.ndarray], np.ndarray],
    reduce: str = "max",
    opener=None,
) -> list[str]:
    """Write the XYZ PNG pyramid ``out_dir/{z}/{x}/{y}.png`` of a raster on the Web Mercator grid
    (its zoom is ``zmax``) for zooms ``zmin..zmax``; returns the keys ``"z/x/y"`` written."""
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    out_dir = Path(out_dir)
    written: list[str] = []
    with rasterio.open(src, opener=opener) as ds:
        res = ds.transform.a
        zmax = round(math.log2(2 * _HALF / (TILE * res)))
        col0 = round((ds.transform.c + _HALF) / res)
        row0 = round((_HALF - ds.transform.f) / res)
        grid = WebGrid(zmax, col0, row0, ds.width, ds.height)

        def leaf(x: int, y: int) -> np.ndarray | None:
            c0, r0 = x * TILE - col0, y * TILE - row0
            cc0, rr0 = max(c0, 0), max(r0, 0)
            cc1, rr1 = min(c0 + TILE, ds.width), min(r0 + TILE, ds.height)
            if cc1 <= cc0 or rr1 <= rr0:
                return None
            data = ds.read(window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
            if not data[-1].any():
                return None
            out = np.zeros((ds.count, TILE, TILE), np.uint8)
            out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = data
            return out

        def visit(z: int, x: int, y: int) -> np.ndarray | None:
            xs, ys = grid.tiles(z)
            if x not in xs or y not in ys:
                return None
            if z == zmax:
                arr = leaf(x, y)
            else:
                kids = [[visit(z + 1, 2 * x + dx, 2 * y + dy) for dx in (0, 1)] for dy in (0, 1)]
                if all(k is None for row in kids for k in row):
                    return None
                big = np.zeros((ds.count, 2 * TILE, 2 * TILE), np.uint8)
                for dy in (0, 1):
                    for dx in (0, 1):
                        if kids[dy][dx] is not None:
                            big[:, dy * TILE : (dy + 1) * TILE, dx * TILE : (dx + 1) * TILE] = kids[dy][dx]
                arr = _reduce(big, reduce)
            if arr is None:
                return None
            rgba = render(arr)
            if rgba[..., 3].any():
                path = out_dir / str(z) / str(x) / f"{y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgba, "RGBA").save(path, compress_level=6)
                written.append(f"{z}/{x}/{y}")
            return arr

        xs, ys = grid.tiles(zmin)
        for y in ys:
            for x in xs:
                visit(zmin, x, y)
    return written
