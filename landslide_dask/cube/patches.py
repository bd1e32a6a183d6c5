"""Benchmark patch datasets (Landslide4Sense ``.h5``, image/mask folders) as one cube.

Why: the field's benchmarks ship as thousands of small labelled patches, while training and
evaluation here read cubes (docs/contracts.md). Writing the patches into ONE zarr mosaic that
follows the cube contract lets ``open_cube``, ``build_index``, ``compute_stats``, ``WindowReader``,
``train`` and ``evaluate`` run unchanged.

Layout (attr ``patch_layout``). ``grid``, when every patch has one square size: patch ``i`` (files
in natural order: ``image_2`` before ``image_10``) sits in slot ``(i // cols, i % cols)`` of a grid
of square slots of ``pitch = size + gap`` px, patch at the slot's top-left. ``packed``, when sizes
are mixed or not square (benchmarks such as Bijie ship 61-1239 px pairs): shelf-packed, tallest
first, at least 16 px apart; ``patch_offsets`` holds each file's ``[row, col, rows, cols]``. Gaps
and empty slots have ``valid=False``, ``label=255``, ``post=0``, ``slope=NaN``, ``hillshade=0``.
Masks: any value > 0 is a landslide (0/1 and 0/255 masks alike), ``ignore_value`` is unknown. Terrain is computed per patch (edges repeat, as
``terrain.hillshade(boundary="nearest")``), so nothing leaks between neighbouring patches. The grid
is a dummy one: EPSG:3857, 10 m pixels, top-left corner at (0, 0) — NOT a real location; the
attrs ``patch_files``/``patch_masks`` (slot order), ``patch_*`` and ``band_map`` say what is where
and how values were encoded, and ``patch_windows(cube)`` gives each patch's window.

Streams. Only ``post`` (+ ``slope``/``hillshade`` from the mapped slope/DEM channels) exists:
Landslide4Sense has a single post-event image and no pre-event one, so train it with
``streams=("post", "terrain")``. A folder dataset may map a ``pre`` stream from the same files.

Values. Imagery DN = clip(round(source * scale[channel] + offset), 1, 65535), 0 only where the
source is not finite (nodata), so real zeros stay valid data; slope = source * slope_scale
(degrees), DEM = source * dem_scale (metres). The ``l4s`` preset undoes the dataset's own scaling:
its maintainers divided every channel by a per-channel mean (iarai/Landslide4Sense-2022 issue #4),
so the preset multiplies by those means, giving Sentinel-2-like DN, degrees and metres. Negative
source values clip to DN 1; ``dn_saturated_fraction`` (attr) reports how many valid DN hit 1 or
65535, with a warning above 1 %.

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

import json
import logging
import math
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from .. import __version__
from .build import open_cube, write_cube
from .inventory import LABEL_UNKNOWN
from ..errors import InputDataError, UsageError
from .terrain import hillshade, slope_degrees

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "IMAGE_DIRS", "MASK_DIRS", "RASTER_EXTS", "DUMMY_EPSG", "L4S_CHANNELS", "L4S_MEAN",
           "BandMap", "PRESETS", "parse_band_map", "PatchFile", "find_patches", "image_shape", "read_image",
           "mask_shape", "read_mask", "to_dn", "to_label", "patch_terrain", "patch_layers", "pack_shelves",
           "recommended_index", "assemble_patches", "assemble_packed", "patch_windows", "import_patches"]

FORMATS = ("l4s", "folder")
IMAGE_DIRS = ("img", "image", "images")
MASK_DIRS = ("mask", "masks", "label", "labels")
RASTER_EXTS = (".tif", ".tiff", ".png")
DUMMY_EPSG = 3857  # a projected CRS in metres; the mosaic's origin (0, 0) is not a real place
L4S_CHANNELS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem")
# The divisors the Landslide4Sense maintainers applied to the 14 channels (GitHub issue #4).
L4S_MEAN = (1111.81236406, 824.63171476, 663.41636217, 445.17289745, 645.8582926, 1547.73508126,
            1960.44401001, 1941.32229668, 674.07572865, 9.04787384, 1113.98338755, 519.90397929,
            20.29228266, 772.83144788)


@dataclass(frozen=True)
class BandMap:
    """Which 0-based source channel feeds which band of each stream, and how values are scaled.

    ``scale`` is one factor for every imagery channel or a sequence indexed by source channel.
    """

    post: dict[str, int]
    pre: dict[str, int] | None = None
    slope: int | None = None
    dem: int | None = None
    scale: float | tuple[float, ...] = 1.0
    offset: float = 0.0
    slope_scale: float = 1.0
    dem_scale: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> "BandMap":
        """Validated mapping from a JSON-like dict, e.g. ``{"post": {"red": 3}, "dem": 13}``."""
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise UsageError(f"band mapping has unknown keys {sorted(unknown)}: use post, pre, slope, dem, "
                                 "scale, offset, slope_scale, dem_scale")
        if not isinstance(d.get("post"), dict) or not d["post"]:
            raise UsageError('band mapping needs "post": {band name: channel index, ...}')
        pre = d.get("pre")
        if pre is not None and (not isinstance(pre, dict) or list(pre) != list(d["post"])):
            raise UsageError(f"band mapping: pre bands {list(pre or {})} must be the post bands "
                                 f"{list(d['post'])}, in the same order (the cube has one band list)")
        for name, ch in [*d["post"].items(), *(pre or {}).items(), ("slope", d.get("slope")), ("dem", d.get("dem"))]:
            if ch is not None and (not isinstance(ch, int) or isinstance(ch, bool) or ch < 0):
                raise UsageError(f"band mapping: channel of {name!r} must be a 0-based integer, not {ch!r}")
        if d.get("slope") is not None and d.get("dem") is None:
            raise UsageError("band mapping has slope but no dem: the hillshade needs the DEM channel "
                                 "(map dem too, or leave slope out to train without terrain)")
        scale = d.get("scale", 1.0)
        try:
            return cls(post=dict(d["post"]), pre=dict(pre) if pre else None, slope=d.get("slope"), dem=d.get("dem"),
                       scale=tuple(float(s) for s in scale) if isinstance(scale, (list, tuple)) else float(scale),
                       offset=float(d.get("offset", 0.0)), slope_scale=float(d.get("slope_scale", 1.0)),
                       dem_scale=float(d.get("dem_scale", 1.0)))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"band mapping: scale, offset, slope_scale and dem_scale must be numbers "
                                 f"(scale may be a list per channel): {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"] = list(self.scale) if isinstance(self.scale, tuple) else self.scale
        return d

    @property
    def bands(self) -> list[str]:
        return list(self.post)

    def channels_used(self) -> list[int]:
        extra = [c for c in (self.slope, self.dem) if c is not None]
        return [*self.post.values(), *(self.pre or {}).values(), *extra]

    def channel_scale(self, ch: int) -> float:
        if isinstance(self.scale, tuple):
            if ch >= len(self.scale):
                raise UsageError(f"band mapping: scale has {len(self.scale)} entries but channel {ch} is used")
            return self.scale[ch]
        return self.scale


PRESETS: dict[str, BandMap] = {
    "l4s": BandMap(post={"blue": 1, "green": 2, "red": 3, "nir": 7}, slope=12, dem=13, scale=L4S_MEAN,
                   slope_scale=L4S_MEAN[12], dem_scale=L4S_MEAN[13]),
}


def parse_band_map(spec: str | dict | BandMap | None, fmt: str = "l4s", channels: int | None = None) -> BandMap:
    """A BandMap from a preset name, JSON text, a JSON file path or a dict (what the CLI passes).

    None means the format's default: the ``l4s`` preset, or every channel of a folder dataset as
    ``post`` bands ``b1..bN`` (needs ``channels``).
    """
    if isinstance(spec, BandMap):
        return spec
    if spec is None:
        if fmt == "l4s":
            return PRESETS["l4s"]
        if channels is None:
            raise UsageError("a folder dataset without --bands needs its channel count")
        return BandMap(post={f"b{i + 1}": i for i in range(channels)})
    if isinstance(spec, dict):
        return BandMap.from_dict(spec)
    text = spec.strip()
    if text in PRESETS:
        return PRESETS[text]
    if not text.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"--bands {text!r} is neither a preset ({', '.join(PRESETS)}), JSON text, nor a "
                                 "JSON file")
        text = path.read_text()
    try:
        return BandMap.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        example = '{"post": {"blue": 1, "green": 2, "red": 3, "nir": 7}, "slope": 12, "dem": 13}'
        raise UsageError(f"band mapping is not valid JSON ({exc}): e.g. '{example}'") from None


@dataclass(frozen=True)
class PatchFile:
    """One patch: its image, its mask (None: unlabelled) and its name relative to the source."""

    name: str
    image: Path
    mask: Path | None


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _subdir(source: Path, names: tuple[str, ...]) -> Path | None:
    return next((source / n for n in names if (source / n).is_dir()), None)


def _mask_for(image: Path, mask_dir: Path, fmt: str) -> Path | None:
    if fmt == "l4s":
        stems = [image.stem.replace("image", "mask", 1), image.stem]
        exts: tuple[str, ...] = (".h5",)
    else:
        stems, exts = [image.stem], (*RASTER_EXTS, *(e.upper() for e in RASTER_EXTS))
    return next((mask_dir / f"{s}{e}" for s in stems for e in exts if (mask_dir / f"{s}{e}").is_file()), None)


def find_patches(source: str | Path, fmt: str = "l4s", masks: str | Path | None = None,
                 require_masks: bool = True) -> list[PatchFile]:
    """Images under ``source`` (or its ``img``/``images`` folder) paired with masks from ``masks``
    (default: a sibling ``mask``/``masks`` folder, or the same folder for ``mask_N.h5``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown patch format {fmt!r}: use one of {', '.join(FORMATS)}")
    source = Path(source)
    if not source.is_dir():
        raise InputDataError(f"{source} is not a folder: point at the folder holding the patches (e.g. TrainData)")
    image_dir = _subdir(source, IMAGE_DIRS) or source
    if fmt == "l4s":
        images = [p for p in image_dir.glob("*.h5") if not p.name.startswith("mask")]
    else:
        images = [p for p in image_dir.iterdir() if p.suffix.lower() in RASTER_EXTS]
    if not images:
        want = "*.h5 images (image_N.h5)" if fmt == "l4s" else f"images ({', '.join(RASTER_EXTS)})"
        raise InputDataError(f"no {want} in {image_dir}: point at the dataset folder that holds img/ and mask/ "
                             "(e.g. TrainData) or at the image folder itself")
    mask_dir = Path(masks) if masks is not None else _subdir(source, MASK_DIRS)
    if mask_dir is None and fmt == "l4s" and any(source.glob("mask*.h5")):
        mask_dir = source
    if mask_dir is not None and not mask_dir.is_dir():
        raise InputDataError(f"mask folder {mask_dir} does not exist")
    if mask_dir is None and require_masks:
        raise InputDataError(f"no mask folder ({'/'.join(MASK_DIRS)}) in {source}: pass the mask folder "
                             "(--masks), or import unlabelled test data with --no-masks (labels 255)")
    out = []
    for img in sorted(images, key=_natural):
        mask = _mask_for(img, mask_dir, fmt) if mask_dir is not None else None
        if mask is None and require_masks:
            raise InputDataError(f"no mask for {img} in {mask_dir} (expected "
                                 f"{img.stem.replace('image', 'mask', 1) if fmt == 'l4s' else img.stem}.*): add it, "
                                 "remove the image, or import without labels (--no-masks)")
        out.append(PatchFile(str(img.relative_to(source)), img, mask))
    return out


def _h5(path: Path, key: str, data: bool):
    """A dataset's array (or just its shape), with corrupt files and missing keys explained."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise InputDataError(f"{path} has no dataset {key!r} (it has {sorted(f.keys())}): Landslide4Sense "
                                     f"{'images' if key == 'img' else 'masks'} keep it under {key!r}; is this the "
                                     "right file or folder?")
            return f[key][()] if data else f[key].shape
    except InputDataError:
        raise
    except (OSError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise InputDataError(f"{path} is not a readable HDF5 file ({exc}): it is probably truncated or corrupt; "
                             "download it again or remove it") from None


def _raster(path: Path, data: bool):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read() if data else (src.count, src.height, src.width)
    except RasterioIOError as exc:
        raise InputDataError(f"{path} is not a readable image ({exc}): re-export or remove it") from None


def _as_chw(shape: tuple[int, ...], path: Path) -> tuple[bool, tuple[int, int, int]]:
    """Whether an h5 image is channel-last (Landslide4Sense is (H, W, C)) and its (C, H, W)."""
    if len(shape) != 3:
        raise InputDataError(f"img in {path} has shape {tuple(shape)}; expected (height, width, channels)")
    if shape[0] == shape[1] and shape[2] != shape[0]:
        return True, (shape[2], shape[0], shape[1])
    if shape[1] == shape[2]:
        return False, tuple(shape)  # type: ignore[return-value]
    return True, (shape[2], shape[0], shape[1])


def image_shape(path: Path, fmt: str) -> tuple[int, int, int]:
    """(channels, height, width) from metadata only (a cheap check of every file before writing)."""
    return _as_chw(_h5(path, "img", False), path)[1] if fmt == "l4s" else _raster(path, False)


def read_image(path: Path, fmt: str) -> np.ndarray:
    """(channels, height, width) float64."""
    if fmt == "l4s":
        arr = np.asarray(_h5(path, "img", True))
        last, _ = _as_chw(arr.shape, path)
        arr = np.moveaxis(arr, -1, 0) if last else arr
    else:
        arr = _raster(path, True)
    return arr.astype(np.float64)


def _mask_hw(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    s = [n for n in shape if n != 1] if len(shape) > 2 else list(shape)
    if len(s) != 2:
        raise InputDataError(f"mask {path} has shape {tuple(shape)}; expected (height, width)")
    return s[0], s[1]


def mask_shape(path: Path, fmt: str) -> tuple[int, int]:
    return _mask_hw(_h5(path, "mask", False), path) if fmt == "l4s" else _raster(path, False)[1:]


def read_mask(path: Path, fmt: str) -> np.ndarray:
    """(height, width); a multi-band raster mask uses its first band."""
    if fmt == "l4s":
        arr = np.asarray(_h5(path, "mask", True))
        return arr.reshape(_mask_hw(arr.shape, path))
    return _raster(path, True)[0]


def to_dn(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """uint16 DN: clip(round(values * scale + offset), 1, 65535), 0 where values are not finite."""
    dn = np.rint(np.where(np.isfinite(values), values, 0.0) * scale + offset)
    return np.where(np.isfinite(values), np.clip(dn, 1, 65535), 0).astype(np.uint16)


def to_label(mask: np.ndarray | None, shape: tuple[int, int], ignore_value: float | None) -> np.ndarray:
    """0/1 from mask > 0, 255 where the mask equals ``ignore_value`` or there is no mask."""
    if mask is None:
        return np.full(shape, LABEL_UNKNOWN, np.uint8)
    label = (mask > 0).astype(np.uint8)
    if ignore_value is not None:
        label[mask == ignore_value] = LABEL_UNKNOWN
    return label


def patch_terrain(dems: list[np.ndarray], res: float = 10.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(slope, hillshade) of each same-sized DEM on its own, edges repeated as with
    ``boundary="nearest"``, in one dask call (a call per patch costs more than the maths): the
    edge-padded DEMs side by side, each pad cut away afterwards, so no patch sees its neighbour."""
    strip = da.from_array(np.concatenate([np.pad(d, 1, mode="edge") for d in dems], axis=1), chunks=-1)
    slope, shade = dask.compute(slope_degrees(strip, res, res, boundary="none"),
                                hillshade(strip, res, res, boundary="none"), scheduler="synchronous")
    w = dems[0].shape[1] + 2
    return [(slope[1:-1, i * w + 1:(i + 1) * w - 1], shade[1:-1, i * w + 1:(i + 1) * w - 1])
            for i in range(len(dems))]


def patch_layers(img: np.ndarray, mask: np.ndarray | None, bmap: BandMap, res: float = 10.0,
                 ignore_value: float | None = None,
                 terrain: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
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


def _load_group(slots: list[tuple[int, int, PatchFile]], h: int, w: int, layers: dict[str, int], fmt: str,
                bmap: BandMap, res: float, ignore_value: float | None) -> dict[str, np.ndarray]:
    """One zarr chunk of the mosaic: the patches whose slots it holds, at their (row, col) offsets."""
    out = {v: _fill(v, (nb, h, w) if nb else (h, w)) for v, nb in layers.items()}
    if not slots:
        return out
    imgs = [read_image(pf.image, fmt) for _, _, pf in slots]
    terrain = (patch_terrain([im[bmap.dem] * bmap.dem_scale for im in imgs], res) if bmap.dem is not None
               else [None] * len(imgs))
    for (r, c, pf), img, ter in zip(slots, imgs, terrain):
        mask = read_mask(pf.mask, fmt) if pf.mask is not None else None
        for v, arr in patch_layers(img, mask, bmap, res, ignore_value, ter).items():
            out[v][..., r:r + arr.shape[-2], c:c + arr.shape[-1]] = arr
    return out


def _check(patches: list[PatchFile], fmt: str, bmap_spec: str | dict | BandMap | None
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
            raise InputDataError(f"{pf.image} has {c} channels but the band mapping uses channel {top} (0-based): "
                                 "fix --bands for this dataset")
        if pf.mask is not None and mask_shape(pf.mask, fmt) != (h, w):
            raise InputDataError(f"mask {pf.mask} is {mask_shape(pf.mask, fmt)} (rows, cols) but image {pf.image} "
                                 f"is {(h, w)}: they do not belong together")
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
    ref = xr.DataArray(0, attrs={"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt(),
                                 "GeoTransform": " ".join(str(v) for v in (t[2], t[0], t[1], t[5], t[3], t[4]))})
    return {"y": -(np.arange(ny) + 0.5) * res, "x": (np.arange(nx) + 0.5) * res, "spatial_ref": ref}, list(t)


def _layers(bmap: BandMap) -> dict[str, int]:
    """The mosaic's variables and their band counts (0: a 2-D layer)."""
    nb = len(bmap.post)
    return {"post": nb, **({"pre": nb} if bmap.pre else {}),
            **({"slope": 0, "hillshade": 0} if bmap.dem is not None else {}), "valid": 0, "label": 0}


def _add_block(blocks: dict[str, list[list[da.Array]]], layers: dict[str, int], group, h: int, w: int) -> None:
    """Append one chunk task's layers (a delayed dict) to the current row of blocks."""
    for v, k in layers.items():
        blocks[v][-1].append(da.from_delayed(group[v], (k, h, w) if k else (h, w), dtype=_fill(v, (1,)).dtype))


def _mosaic(blocks: dict[str, list[list[da.Array]]], layers: dict[str, int], coords: dict, bmap: BandMap) -> xr.Dataset:
    data = {v: xr.DataArray(da.block(blocks[v]), dims=("band", "y", "x") if layers[v] else ("y", "x"))
            for v in layers}  # da.block joins the last two axes: (band,) y, x
    return xr.Dataset(data, coords={**coords, "band": np.array(bmap.bands, dtype=object)})


def recommended_index(size: int, pitch: int) -> dict:
    """build_index settings that give exactly one window per patch (see the module docstring)."""
    stride = math.gcd(size, pitch)
    return {"size": size, "stride": stride, "block": pitch, "min_usable": 1 - stride / (2 * size)}


def assemble_patches(patches: list[PatchFile], fmt: str, bmap: BandMap, size: int, gap: int = 0,
                     res: float = 10.0, chunk: int = 1024, ignore_value: float | None = None,
                     source: str = "") -> xr.Dataset:
    """The lazy patch-mosaic cube: one dask task per zarr chunk reads that chunk's patches."""
    n, pitch = len(patches), size + gap
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    g = max(1, chunk // pitch)  # slots per chunk side: chunks hold whole patch groups
    layers = _layers(bmap)
    blocks: dict[str, list[list[da.Array]]] = {v: [] for v in layers}
    for gy in range(0, rows, g):
        for v in layers:
            blocks[v].append([])
        for gx in range(0, cols, g):
            h, w = (min(g, rows - gy) * pitch), (min(g, cols - gx) * pitch)
            slots = [((i // cols - gy) * pitch, (i % cols - gx) * pitch, pf) for i, pf in enumerate(patches)
                     if gy <= i // cols < gy + g and gx <= i % cols < gx + g]
            group = dask.delayed(_load_group, pure=True)(slots, h, w, layers, fmt, bmap, res, ignore_value)
            _add_block(blocks, layers, group, h, w)
    coords, transform = _grid_coords(rows * pitch, cols * pitch, res)
    ds = _mosaic(blocks, layers, coords, bmap)
    _patch_attrs(ds, patches, fmt, bmap, gap, source, transform)
    ds.attrs.update({"patch_layout": "grid", "patch_size": size, "patch_pitch": pitch, "patch_rows": rows,
                     "patch_cols": cols, "recommended_index": recommended_index(size, pitch)})
    return ds


def _patch_attrs(ds: xr.Dataset, patches: list[PatchFile], fmt: str, bmap: BandMap, gap: int, source: str,
                 transform: list[float]) -> None:
    """The attributes every patch mosaic carries, whatever its layout."""
    for name in ds.data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    if "slope" in ds:
        ds["slope"].attrs["units"] = "degree"
    for name in ("pre", "post"):
        if name in ds:
            ds[name].attrs.update(units="DN", nodata=0, long_name=f"{name}-event patches (see band_map)")
    ds.attrs.update({
        "crs": f"EPSG:{DUMMY_EPSG}", "epsg": DUMMY_EPSG, "transform": transform, "resolution": transform[0],
        "grid_note": "dummy grid (EPSG:3857, origin 0,0): a patch mosaic, not a real location",
        "event_date": "unknown", "pre_window": [], "post_window": [], "pre_dates": [], "post_dates": [],
        "stac_items": [], "dem_items": [], "bands": bmap.bands, "mosaic": "patches",
        "patch_format": fmt, "patch_source": source, "patch_count": len(patches), "patch_gap": gap,
        "patch_files": [pf.name for pf in patches],
        "patch_masks": [pf.mask.name if pf.mask is not None else "" for pf in patches],
        "patch_unlabelled": sum(pf.mask is None for pf in patches),
        "band_map": bmap.to_dict(),
        "dn_encoding": "DN = clip(round(source * scale[channel] + offset), 1, 65535); 0 where the source is not "
                       "finite; slope = source * slope_scale; dem = source * dem_scale (band_map)",
        "inventory": f"{fmt}:{Path(source).name}", "inventory_source": source,
        "landslide_dask_version": __version__,
    })


def _load_window(items: list[tuple[int, int, PatchFile]], y0: int, x0: int, h: int, w: int, layers: dict[str, int],
                 fmt: str, bmap: BandMap, res: float, ignore_value: float | None) -> dict[str, np.ndarray]:
    """One zarr chunk of a packed mosaic: the part of every patch (at mosaic offset row, col) inside
    rows y0..y0+h, cols x0..x0+w. A patch spanning several chunks is read once per chunk."""
    out = {v: _fill(v, (nb, h, w) if nb else (h, w)) for v, nb in layers.items()}
    for r, c, pf in items:
        img = read_image(pf.image, fmt)
        mask = read_mask(pf.mask, fmt) if pf.mask is not None else None
        ph, pw = img.shape[1:]
        r0, r1, c0, c1 = max(r, y0), min(r + ph, y0 + h), max(c, x0), min(c + pw, x0 + w)
        for v, arr in patch_layers(img, mask, bmap, res, ignore_value).items():
            out[v][..., r0 - y0:r1 - y0, c0 - x0:c1 - x0] = arr[..., r0 - r:r1 - r, c0 - c:c1 - c]
    return out


def assemble_packed(patches: list[PatchFile], sizes: list[tuple[int, int]], fmt: str, bmap: BandMap, gap: int,
                    res: float = 10.0, chunk: int = 1024, ignore_value: float | None = None,
                    source: str = "") -> xr.Dataset:
    """The lazy mosaic of patches of mixed, non-square sizes (``pack_shelves``), with ``gap`` px of
    invalid, unknown pixels between them: one dask task per ``chunk`` x ``chunk`` px zarr chunk."""
    offsets, rows, cols = pack_shelves(sizes, gap)
    layers = _layers(bmap)
    blocks: dict[str, list[list[da.Array]]] = {v: [] for v in layers}
    for y0 in range(0, rows, chunk):
        for v in layers:
            blocks[v].append([])
        for x0 in range(0, cols, chunk):
            h, w = min(chunk, rows - y0), min(chunk, cols - x0)
            items = [(r, c, pf) for (r, c), (ph, pw), pf in zip(offsets, sizes, patches)
                     if r < y0 + h and r + ph > y0 and c < x0 + w and c + pw > x0]
            group = dask.delayed(_load_window, pure=True)(items, y0, x0, h, w, layers, fmt, bmap, res, ignore_value)
            _add_block(blocks, layers, group, h, w)
    coords, transform = _grid_coords(rows, cols, res)
    ds = _mosaic(blocks, layers, coords, bmap)
    _patch_attrs(ds, patches, fmt, bmap, gap, source, transform)
    side = min(min(sz) for sz in sizes)
    win = max(32, min(128, side // 32 * 32))  # a window a typical patch fills; stride half of it
    ds.attrs.update({"patch_layout": "packed", "patch_size": 0, "patch_pitch": 0, "patch_rows": 0,
                     "patch_cols": 0, "patch_offsets": [[r, c, h, w] for (r, c), (h, w) in zip(offsets, sizes)],
                     "recommended_index": {"size": win, "stride": win // 2, "block": 4 * win, "min_usable": 0.5}})
    return ds


def patch_windows(cube: str | Path) -> pd.DataFrame:
    """Each patch's window (name, cube=0, row, col) in slot order, e.g. to score a patch cube patch by
    patch with ``train.predict_windows`` or to map predictions back to files."""
    a = open_cube(cube).attrs
    if a.get("mosaic") != "patches":
        raise InputDataError(f"{cube} is not a patch mosaic (made by import_patches)")
    if a.get("patch_layout") == "packed":  # mixed sizes: each patch's own window (rows h, cols w)
        off = np.asarray(a["patch_offsets"], dtype=int).reshape(-1, 4)
        return pd.DataFrame({"name": a["patch_files"], "cube": 0, "row": off[:, 0], "col": off[:, 1],
                             "h": off[:, 2], "w": off[:, 3]})
    i = np.arange(a["patch_count"])
    df = pd.DataFrame({"name": a["patch_files"], "cube": 0, "row": i // a["patch_cols"] * a["patch_pitch"],
                       "col": i % a["patch_cols"] * a["patch_pitch"]})
    df.attrs["size"] = a["patch_size"]
    return df


def _saturation(out: Path) -> float:
    ds = open_cube(out)
    post, valid = ds["post"].data, ds["valid"].data
    hit = ((post == 1) | (post == 65535)).any(axis=0) & valid
    n_hit, n = dask.compute(hit.sum(), valid.sum())
    return float(n_hit) / max(int(n), 1)


def import_patches(source: str | Path, out: str | Path, fmt: str = "l4s", bands: str | dict | BandMap | None = None,
                   masks: str | Path | None = None, require_masks: bool = True, ignore_value: float | None = None,
                   gap: int = 0, res: float = 10.0, chunk: int = 1024, progress: bool = True,
                   quicklook: bool = False) -> Path:
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
            log.warning("gap %d with %d px patches needs a %d px index stride (slow index): prefer a gap like 16",
                        gap, size, rec["stride"])
        ds = assemble_patches(patches, fmt, bmap, size, gap, res, chunk, ignore_value, str(source))
    else:  # mixed or non-square sizes, as e.g. the Bijie dataset ships them: packed, gap >= 1 between them
        ds = assemble_packed(patches, sizes, fmt, bmap, max(gap, 16), res, chunk, ignore_value, str(source))
    out = write_cube(ds, Path(out), progress)
    frac = _saturation(out)
    import zarr

    zarr.open_group(out, mode="r+").attrs["dn_saturated_fraction"] = frac
    if frac > 0.01:
        log.warning("%.1f%% of valid pixels have a DN clipped to 1 or 65535: check the band mapping's scale and "
                    "offset (negative source values need an offset)", 100 * frac)
    if quicklook:
        from .quicklook import cube_quicklook

        cube_quicklook(out, out.with_suffix(".png"))
    return out
