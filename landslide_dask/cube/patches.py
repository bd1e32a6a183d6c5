"""Benchmark patch datasets (Landslide4Sense ``.h5``, image/mask folders) assembled into one cube.

Why: the field's benchmarks ship as thousands of small labelled patches, while training and
evaluation here read cubes (docs/contracts.md). Writing the patches into ONE zarr mosaic that
follows the cube contract lets ``open_cube``, ``build_index``, ``compute_stats``, ``WindowReader``,
``train`` and ``evaluate`` run unchanged. Reading the files (finding and pairing them, the band
mapping and its presets, how values become DN and masks labels) is :mod:`.patch_files`, whose names
are re-exported here; this module lays the patches out and writes the cube.

Layout (attr ``patch_layout``). ``grid``, when every patch has one square size: patch ``i`` (files
in natural order: ``image_2`` before ``image_10``) sits in slot ``(i // cols, i % cols)`` of a grid
of square slots of ``pitch = size + gap`` px, patch at the slot's top-left. ``packed``, when sizes
are mixed or not square (benchmarks such as Bijie ship 61-1239 px pairs): shelf-packed, tallest
first, at least 16 px apart; ``patch_offsets`` holds each file's ``[row, col, rows, cols]``. Gaps
and empty slots have ``valid=False``, ``label=255``, ``post=0``, ``slope=NaN``, ``hillshade=0``.
Terrain is computed per patch (edges repeat, as ``terrain.hillshade(boundary="nearest")``), so
nothing leaks between neighbouring patches. The grid is a dummy one: EPSG:3857, 10 m pixels,
top-left corner at (0, 0) — NOT a real location; the attrs ``patch_files``/``patch_masks`` (slot
order), ``patch_*`` and ``band_map`` say what is where and how values were encoded, and
``patch_windows(cube)`` gives each patch's window.

Streams. Only ``post`` (+ ``slope``/``hillshade`` from the mapped slope/DEM channels) exists:
Landslide4Sense has a single post-event image and no pre-event one, so train it with
``streams=("post", "terrain")``. A folder dataset may map a ``pre`` stream from the same files.

Values are encoded as :mod:`.patch_files` describes (DN 1..65535, 0 only where the source is not
finite; slope in degrees, DEM in metres; any mask value > 0 is a landslide); the attr
``dn_saturated_fraction`` reports how many valid DN hit 1 or 65535, with a warning above 1 %.

Recommended training / evaluation settings (also stored in the attr ``recommended_index``):
``gap=0`` (the default) with ``--window <size> --stride <size> --block <size>`` gives exactly one
window per patch and a random per-patch train/val/test split (``block = pitch``: one patch per split
block), and ``evaluate(..., tile=<size>)`` then scores each patch on its own. ``build_index`` needs
the stride to divide the window, so with ``gap > 0`` use ``stride = gcd(size, pitch)``,
``block = pitch`` and ``min_usable > 1 - stride/size`` (stored value ``1 - stride/(2*size)``): every
misaligned window then holds at least ``stride`` rows or columns of gap, so only the patch-aligned
one qualifies. Choose a gap that shares a large power of two with the size (e.g. 16 for 128), or the
stride and the index's cell grid get tiny.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from .. import __version__
from ..errors import InputDataError
from .build import write_cube
from .inventory import LABEL_UNKNOWN
from .patch_files import (
    FORMATS,
    IMAGE_DIRS,
    L4S_CHANNELS,
    L4S_MEAN,
    MASK_DIRS,
    PRESETS,
    RASTER_EXTS,
    BandMap,
    PatchFile,
    find_patches,
    image_shape,
    mask_shape,
    parse_band_map,
    read_image,
    read_mask,
    to_dn,
    to_label,
)
from .read import open_cube
from .spec import CHUNK
from .terrain import hillshade, slope_degrees

if TYPE_CHECKING:
    from dask.delayed import Delayed

log = logging.getLogger(__name__)

# The reading names (FORMATS ... to_label) live in .patch_files and are re-exported, so that
# ``from landslide_dask.cube.patches import X`` keeps working for every X it ever offered.
__all__ = [
    "FORMATS",
    "IMAGE_DIRS",
    "MASK_DIRS",
    "RASTER_EXTS",
    "DUMMY_EPSG",
    "L4S_CHANNELS",
    "L4S_MEAN",
    "BandMap",
    "PRESETS",
    "parse_band_map",
    "PatchFile",
    "find_patches",
    "image_shape",
    "read_image",
    "mask_shape",
    "read_mask",
    "to_dn",
    "to_label",
    "patch_terrain",
    "patch_layers",
    "pack_shelves",
    "recommended_index",
    "assemble_patches",
    "assemble_packed",
    "patch_windows",
    "import_patches",
]

DUMMY_EPSG = 3857  # a projected CRS in metres; the mosaic's origin (0, 0) is not a real place


def patch_terrain(dems: list[np.ndarray], res: float = 10.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(slope, hillshade) of each same-sized DEM on its own, edges repeated as with
    ``boundary="nearest"``, in one dask call (a call per patch costs more than the maths): the
    edge-padded DEMs side by side, each pad cut away afterwards, so no patch sees its neighbour."""
    strip = da.from_array(np.concatenate([np.pad(d, 1, mode="edge") for d in dems], axis=1), chunks=-1)
    slope, shade = dask.compute(
        slope_degrees(strip, res, res, boundary="none"),
        hillshade(strip, res, res, boundary="none"),
        scheduler="synchronous",
    )
    w = dems[0].shape[1] + 2
    return [
        (slope[1:-1, i * w + 1 : (i + 1) * w - 1], shade[1:-1, i * w + 1 : (i + 1) * w - 1]) for i in range(len(dems))
    ]


def patch_layers(
    img: np.ndarray,
    mask: np.ndarray | None,
    bmap: BandMap,
    res: float = 10.0,
    ignore_value: float | None = None,
    terrain: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One patch's cube layers (post, pre, slope, hillshade, valid, label) from its (C, H, W) image;
    ``terrain`` is its precomputed ``patch_terrain`` result (computed here when None)."""
    hw = img.shape[1:]
    out: dict[str, np.ndarray] = {}
    valid = np.ones(hw, bool)
    for stream in ("post", "pre"):
        chans = getattr(bmap, stream)
        if chans:
            out[stream] = np.stack([to_dn(img[c], bmap.channel_scale(c), bmap.offset) for c in chans.values()])
            valid &= (out[stream] > 0).all(axis=0)
    if bmap.dem is not None:
        slope, shade = terrain if terrain is not None else patch_terrain([img[bmap.dem] * bmap.dem_scale], res)[0]
        if bmap.slope is not None:
            slope = img[bmap.slope] * bmap.slope_scale
        out["slope"], out["hillshade"] = slope.astype(np.float32), shade
        valid &= np.isfinite(img[bmap.dem]) & np.isfinite(out["slope"])
    out["valid"] = valid
    out["label"] = to_label(mask, hw, ignore_value)
    return out


def _fill(var: str, shape: tuple[int, ...]) -> np.ndarray:
    """A layer's value outside patches: nodata / invalid / unknown."""
    if var == "slope":
        return np.full(shape, np.nan, np.float32)
    if var == "label":
        return np.full(shape, LABEL_UNKNOWN, np.uint8)
    return np.zeros(shape, {"post": np.uint16, "pre": np.uint16, "hillshade": np.uint8, "valid": bool}[var])


def _load_group(
    slots: list[tuple[int, int, PatchFile]],
    h: int,
    w: int,
    layers: dict[str, int],
    fmt: str,
    bmap: BandMap,
    res: float,
    ignore_value: float | None,
) -> dict[str, np.ndarray]:
    """One zarr chunk of the mosaic: the patches whose slots it holds, at their (row, col) offsets."""
    out = {v: _fill(v, (nb, h, w) if nb else (h, w)) for v, nb in layers.items()}
    if not slots:
        return out
    imgs = [read_image(pf.image, fmt) for _, _, pf in slots]
    terrain = (
        patch_terrain([im[bmap.dem] * bmap.dem_scale for im in imgs], res)
        if bmap.dem is not None
        else [None] * len(imgs)
    )
    for (r, c, pf), img, ter in zip(slots, imgs, terrain):
        mask = read_mask(pf.mask, fmt) if pf.mask is not None else None
        for v, arr in patch_layers(img, mask, bmap, res, ignore_value, ter).items():
            out[v][..., r : r + arr.shape[-2], c : c + arr.shape[-1]] = arr
    return out


def _check(
    patches: list[PatchFile], fmt: str, bmap_spec: str | dict | BandMap | None
) -> tuple[list[tuple[int, int]], BandMap]:
    """Every file's (rows, cols), checked with the mapping and its mask before any writing."""
    c0 = image_shape(patches[0].image, fmt)[0]
    bmap = parse_band_map(bmap_spec, fmt, c0)
    top = max(bmap.channels_used())
    for ch in [*bmap.post.values(), *(bmap.pre or {}).values()]:
        bmap.channel_scale(ch)  # a per-channel scale list must cover every imagery channel used
    sizes = []
    for pf in patches:
        c, h, w = image_shape(pf.image, fmt)
        if top >= c:
            raise InputDataError(
                f"{pf.image} has {c} channels but the band mapping uses channel {top} (0-based): "
                "fix --bands for this dataset"
            )
        if pf.mask is not None and mask_shape(pf.mask, fmt) != (h, w):
            raise InputDataError(
                f"mask {pf.mask} is {mask_shape(pf.mask, fmt)} (rows, cols) but image {pf.image} "
                f"is {(h, w)}: they do not belong together"
            )
        sizes.append((h, w))
    return sizes, bmap


def pack_shelves(sizes: list[tuple[int, int]], gap: int) -> tuple[list[tuple[int, int]], int, int]:
    """Top-left (row, col) of each (rows, cols) patch in a mosaic, and the mosaic's (rows, cols).

    Shelf packing, tallest first: patches go left to right along a shelf as tall as its first one,
    ``gap`` px apart and from the mosaic's right and bottom edges, a new shelf when the next patch
    would pass the width, which is the larger of the widest patch and the side of a square holding
    every patch with its gap. Why not a library packer: this is exact, deterministic, a few lines,
    and wastes little when sizes vary smoothly (as benchmark datasets' do)."""
    area = sum((h + gap) * (w + gap) for h, w in sizes)
    width = max(max(w for _, w in sizes) + gap, math.ceil(math.sqrt(area)))
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0], -sizes[i][1], i))
    offsets: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    row = col = shelf = 0
    for i in order:
        h, w = sizes[i]
        if col and col + w + gap > width:
            row, col, shelf = row + shelf, 0, 0
        offsets[i] = (row, col)
        col += w + gap
        shelf = max(shelf, h + gap)
    return offsets, row + shelf, width


def _grid_coords(ny: int, nx: int, res: float) -> tuple[dict, list[float]]:
    """Coordinates of an ny x nx px mosaic on the dummy grid, and its transform."""
    t = (res, 0.0, 0.0, 0.0, -res, 0.0)
    crs = CRS.from_epsg(DUMMY_EPSG)
    ref = xr.DataArray(
        0,
        attrs={
            "crs_wkt": crs.to_wkt(),
            "spatial_ref": crs.to_wkt(),
            "GeoTransform": " ".join(str(v) for v in (t[2], t[0], t[1], t[5], t[3], t[4])),
        },
    )
    return {"y": -(np.arange(ny) + 0.5) * res, "x": (np.arange(nx) + 0.5) * res, "spatial_ref": ref}, list(t)


def _layers(bmap: BandMap) -> dict[str, int]:
    """The mosaic's variables and their band counts (0: a 2-D layer)."""
    nb = len(bmap.post)
    return {
        "post": nb,
        **({"pre": nb} if bmap.pre else {}),
        **({"slope": 0, "hillshade": 0} if bmap.dem is not None else {}),
        "valid": 0,
        "label": 0,
    }


def _chunked_mosaic(
    ny: int,
    nx: int,
    step: int,
    layers: dict[str, int],
    bmap: BandMap,
    res: float,
    chunk_layers: Callable[[int, int, int, int], Delayed],
) -> tuple[xr.Dataset, list[float]]:
    """The lazy ``ny`` x ``nx`` px mosaic and its transform, one dask task per ``step`` x ``step`` px
    zarr chunk (cut at the right and bottom edges): ``chunk_layers(y0, x0, h, w)`` is the delayed
    dict of the layers of the chunk at rows y0..y0+h, cols x0..x0+w. Both layouts share this loop;
    they differ only in which patches a chunk holds and how it reads them."""
    blocks: dict[str, list[list[da.Array]]] = {v: [] for v in layers}
    for y0 in range(0, ny, step):
        for v in layers:
            blocks[v].append([])
        for x0 in range(0, nx, step):
            h, w = min(step, ny - y0), min(step, nx - x0)
            group = chunk_layers(y0, x0, h, w)
            for v, k in layers.items():
                blocks[v][-1].append(da.from_delayed(group[v], (k, h, w) if k else (h, w), dtype=_fill(v, (1,)).dtype))
    coords, transform = _grid_coords(ny, nx, res)
    data = {
        v: xr.DataArray(da.block(blocks[v]), dims=("band", "y", "x") if layers[v] else ("y", "x")) for v in layers
    }  # da.block joins the last two axes: (band,) y, x
    return xr.Dataset(data, coords={**coords, "band": np.array(bmap.bands, dtype=object)}), transform


def recommended_index(size: int, pitch: int) -> dict:
    """build_index settings that give exactly one window per patch (see the module docstring)."""
    stride = math.gcd(size, pitch)
    return {"window": size, "stride": stride, "block": pitch, "min_usable": 1 - stride / (2 * size)}


def assemble_patches(
    patches: list[PatchFile],
    fmt: str,
    bmap: BandMap,
    size: int,
    gap: int = 0,
    res: float = 10.0,
    chunk: int = CHUNK,
    ignore_value: float | None = None,
    source: str = "",
) -> xr.Dataset:
    """The lazy patch-mosaic cube: one dask task per zarr chunk reads that chunk's patches."""
    n, pitch = len(patches), size + gap
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    g = max(1, chunk // pitch)  # slots per chunk side: chunks hold whole patch groups
    layers = _layers(bmap)
    slots = [(i // cols * pitch, i % cols * pitch, pf) for i, pf in enumerate(patches)]  # slot top-left, px

    def chunk_layers(y0: int, x0: int, h: int, w: int) -> Delayed:
        mine = [(r - y0, c - x0, pf) for r, c, pf in slots if y0 <= r < y0 + h and x0 <= c < x0 + w]
        return dask.delayed(_load_group, pure=True)(mine, h, w, layers, fmt, bmap, res, ignore_value)

    ds, transform = _chunked_mosaic(rows * pitch, cols * pitch, g * pitch, layers, bmap, res, chunk_layers)
    _patch_attrs(ds, patches, fmt, bmap, gap, source, transform)
    ds.attrs.update(
        {
            "patch_layout": "grid",
            "patch_size": size,
            "patch_pitch": pitch,
            "patch_rows": rows,
            "patch_cols": cols,
            "recommended_index": recommended_index(size, pitch),
        }
    )
    return ds


def _patch_attrs(
    ds: xr.Dataset, patches: list[PatchFile], fmt: str, bmap: BandMap, gap: int, source: str, transform: list[float]
) -> None:
    """The attributes every patch mosaic carries, whatever its layout."""
    for name in ds.data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    if "slope" in ds:
        ds["slope"].attrs["units"] = "degree"
    for name in ("pre", "post"):
        if name in ds:
            ds[name].attrs.update(units="DN", nodata=0, long_name=f"{name}-event patches (see band_map)")
    ds.attrs.update(
        {
            "crs": f"EPSG:{DUMMY_EPSG}",
            "epsg": DUMMY_EPSG,
            "transform": transform,
            "resolution": transform[0],
            "grid_note": "dummy grid (EPSG:3857, origin 0,0): a patch mosaic, not a real location",
            "event_date": "unknown",
            "pre_window": [],
            "post_window": [],
            "pre_dates": [],
            "post_dates": [],
            "stac_items": [],
            "dem_items": [],
            "bands": bmap.bands,
            "mosaic": "patches",
            "patch_format": fmt,
            "patch_source": source,
            "patch_count": len(patches),
            "patch_gap": gap,
            "patch_files": [pf.name for pf in patches],
            "patch_masks": [pf.mask.name if pf.mask is not None else "" for pf in patches],
            "patch_unlabelled": sum(pf.mask is None for pf in patches),
            "band_map": bmap.to_dict(),
            "dn_encoding": "DN = clip(round(source * scale[channel] + offset), 1, 65535); 0 where the source is not "
            "finite; slope = source * slope_scale; dem = source * dem_scale (band_map)",
            "inventory": f"{fmt}:{Path(source).name}",
            "inventory_source": source,
            "landslide_dask_version": __version__,
        }
    )


def _load_window(
    items: list[tuple[int, int, PatchFile]],
    y0: int,
    x0: int,
    h: int,
    w: int,
    layers: dict[str, int],
    fmt: str,
    bmap: BandMap,
    res: float,
    ignore_value: float | None,
) -> dict[str, np.ndarray]:
    """One zarr chunk of a packed mosaic: the part of every patch (at mosaic offset row, col) inside
    rows y0..y0+h, cols x0..x0+w. A patch spanning several chunks is read once per chunk."""
    out = {v: _fill(v, (nb, h, w) if nb else (h, w)) for v, nb in layers.items()}
    for r, c, pf in items:
        img = read_image(pf.image, fmt)
        mask = read_mask(pf.mask, fmt) if pf.mask is not None else None
        ph, pw = img.shape[1:]
        r0, r1, c0, c1 = max(r, y0), min(r + ph, y0 + h), max(c, x0), min(c + pw, x0 + w)
        for v, arr in patch_layers(img, mask, bmap, res, ignore_value).items():
            out[v][..., r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] = arr[..., r0 - r : r1 - r, c0 - c : c1 - c]
    return out


def assemble_packed(
    patches: list[PatchFile],
    sizes: list[tuple[int, int]],
    fmt: str,
    bmap: BandMap,
    gap: int,
    res: float = 10.0,
    chunk: int = CHUNK,
    ignore_value: float | None = None,
    source: str = "",
) -> xr.Dataset:
    """The lazy mosaic of patches of mixed, non-square sizes (``pack_shelves``), with ``gap`` px of
    invalid, unknown pixels between them: one dask task per ``chunk`` x ``chunk`` px zarr chunk."""
    offsets, rows, cols = pack_shelves(sizes, gap)
    layers = _layers(bmap)

    def chunk_layers(y0: int, x0: int, h: int, w: int) -> Delayed:
        items = [
            (r, c, pf)
            for (r, c), (ph, pw), pf in zip(offsets, sizes, patches)
            if r < y0 + h and r + ph > y0 and c < x0 + w and c + pw > x0
        ]
        return dask.delayed(_load_window, pure=True)(items, y0, x0, h, w, layers, fmt, bmap, res, ignore_value)

    ds, transform = _chunked_mosaic(rows, cols, chunk, layers, bmap, res, chunk_layers)
    _patch_attrs(ds, patches, fmt, bmap, gap, source, transform)
    side = min(min(sz) for sz in sizes)
    win = max(32, min(128, side // 32 * 32))  # a window a typical patch fills; stride half of it
    ds.attrs.update(
        {
            "patch_layout": "packed",
            "patch_size": 0,
            "patch_pitch": 0,
            "patch_rows": 0,
            "patch_cols": 0,
            "patch_offsets": [[r, c, h, w] for (r, c), (h, w) in zip(offsets, sizes)],
            "recommended_index": {"window": win, "stride": win // 2, "block": 4 * win, "min_usable": 0.5},
        }
    )
    return ds


def patch_windows(cube: str | Path) -> pd.DataFrame:
    """Each patch's window (name, cube=0, row, col) in slot order, e.g. to score a patch cube patch by
    patch with ``train.predict_windows`` or to map predictions back to files."""
    a = open_cube(cube).attrs
    if a.get("mosaic") != "patches":
        raise InputDataError(f"{cube} is not a patch mosaic (made by import_patches)")
    if a.get("patch_layout") == "packed":  # mixed sizes: each patch's own window (rows h, cols w)
        off = np.asarray(a["patch_offsets"], dtype=int).reshape(-1, 4)
        return pd.DataFrame(
            {"name": a["patch_files"], "cube": 0, "row": off[:, 0], "col": off[:, 1], "h": off[:, 2], "w": off[:, 3]}
        )
    i = np.arange(a["patch_count"])
    df = pd.DataFrame(
        {
            "name": a["patch_files"],
            "cube": 0,
            "row": i // a["patch_cols"] * a["patch_pitch"],
            "col": i % a["patch_cols"] * a["patch_pitch"],
        }
    )
    df.attrs["window"] = a["patch_size"]
    return df


def _saturation(out: Path) -> float:
    ds = open_cube(out)
    post, valid = ds["post"].data, ds["valid"].data
    hit = ((post == 1) | (post == 65535)).any(axis=0) & valid
    n_hit, n = dask.compute(hit.sum(), valid.sum())
    return float(n_hit) / max(int(n), 1)


def import_patches(
    source: str | Path,
    out: str | Path,
    fmt: str = "l4s",
    bands: str | dict | BandMap | None = None,
    masks: str | Path | None = None,
    require_masks: bool = True,
    ignore_value: float | None = None,
    gap: int = 0,
    res: float = 10.0,
    chunk: int = CHUNK,
    progress: bool = True,
    quicklook: bool = False,
) -> Path:
    """Read a patch dataset (``fmt`` ``"l4s"`` or ``"folder"``) and write it as one cube at ``out``.

    ``bands``: a preset name (``"l4s"``), JSON text/file or dict (see ``BandMap``); ``require_masks``
    False labels patches without a mask 255 (test data); ``ignore_value``: mask value meaning unknown.
    Every file is checked before anything is written; the write is atomic (``write_cube``).
    """
    if gap < 0:
        raise InputDataError(f"gap must be >= 0, not {gap}")
    patches = find_patches(source, fmt, masks, require_masks)
    sizes, bmap = _check(patches, fmt, bands)
    if len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1]:  # one square size: a grid, one window per patch
        size = sizes[0][0]
        rec = recommended_index(size, size + gap)
        if rec["stride"] < 8:
            log.warning(
                "gap %d with %d px patches needs a %d px index stride (slow index): prefer a gap like 16",
                gap,
                size,
                rec["stride"],
            )
        ds = assemble_patches(patches, fmt, bmap, size, gap, res, chunk, ignore_value, str(source))
    else:  # mixed or non-square sizes, as e.g. the Bijie dataset ships them: packed, gap >= 1 between them
        ds = assemble_packed(patches, sizes, fmt, bmap, max(gap, 16), res, chunk, ignore_value, str(source))
    out = write_cube(ds, Path(out), progress)
    frac = _saturation(out)
    import zarr

    zarr.open_group(out, mode="r+").attrs["dn_saturated_fraction"] = frac
    if frac > 0.01:
        log.warning(
            "%.1f%% of valid pixels have a DN clipped to 1 or 65535: check the band mapping's scale and "
            "offset (negative source values need an offset)",
            100 * frac,
        )
    if quicklook:
        from .quicklook import cube_quicklook

        cube_quicklook(out, out.with_suffix(".png"))
    return out
