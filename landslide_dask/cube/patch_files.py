"""Reading benchmark patch files (Landslide4Sense ``.h5``, image/mask folders): find, check, decode.

Why a module of its own: this part knows the file formats, the pairing of images with masks and the
band mapping, while :mod:`.patches` assembles what is read here into one cube and knows nothing of
the files beyond these functions.

Files. Images are listed in natural order (``image_2`` before ``image_10``), which is the slot order
of the mosaic. A Landslide4Sense image ``image_N.h5`` holds ``img`` (H, W, C) and its mask
``mask_N.h5`` holds ``mask``; a folder dataset pairs each raster image (``.tif``, ``.tiff``, ``.png``)
with the mask of the same stem. Masks: any value > 0 is a landslide (0/1 and 0/255 masks alike),
``ignore_value`` is unknown, and a patch without a mask is unknown (label 255) everywhere.

Values. Imagery DN = clip(round(source * scale[channel] + offset), 1, 65535), 0 only where the
source is not finite (nodata), so real zeros stay valid data; slope = source * slope_scale
(degrees), DEM = source * dem_scale (metres). The ``l4s`` preset undoes the dataset's own scaling:
its maintainers divided every channel by a per-channel mean (iarai/Landslide4Sense-2022 issue #4),
so the preset multiplies by those means, giving Sentinel-2-like DN, degrees and metres. Negative
source values clip to DN 1 (``import_patches`` reports how many valid DN hit 1 or 65535).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputDataError, UsageError
from .inventory import LABEL_UNKNOWN

__all__ = [
    "FORMATS",
    "IMAGE_DIRS",
    "MASK_DIRS",
    "RASTER_EXTS",
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
]

FORMATS = ("l4s", "folder")
IMAGE_DIRS = ("img", "image", "images")
MASK_DIRS = ("mask", "masks", "label", "labels")
RASTER_EXTS = (".tif", ".tiff", ".png")
L4S_CHANNELS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem")
# The divisors the Landslide4Sense maintainers applied to the 14 channels (GitHub issue #4).
L4S_MEAN = (
    1111.81236406,
    824.63171476,
    663.41636217,
    445.17289745,
    645.8582926,
    1547.73508126,
    1960.44401001,
    1941.32229668,
    674.07572865,
    9.04787384,
    1113.98338755,
    519.90397929,
    20.29228266,
    772.83144788,
)


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
    def from_dict(cls, d: dict) -> BandMap:
        """Validated mapping from a JSON-like dict, e.g. ``{"post": {"red": 3}, "dem": 13}``."""
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise UsageError(
                f"band mapping has unknown keys {sorted(unknown)}: use post, pre, slope, dem, "
                "scale, offset, slope_scale, dem_scale"
            )
        if not isinstance(d.get("post"), dict) or not d["post"]:
            raise UsageError('band mapping needs "post": {band name: channel index, ...}')
        pre = d.get("pre")
        if pre is not None and (not isinstance(pre, dict) or list(pre) != list(d["post"])):
            raise UsageError(
                f"band mapping: pre bands {list(pre or {})} must be the post bands "
                f"{list(d['post'])}, in the same order (the cube has one band list)"
            )
        for name, ch in [*d["post"].items(), *(pre or {}).items(), ("slope", d.get("slope")), ("dem", d.get("dem"))]:
            if ch is not None and (not isinstance(ch, int) or isinstance(ch, bool) or ch < 0):
                raise UsageError(f"band mapping: channel of {name!r} must be a 0-based integer, not {ch!r}")
        if d.get("slope") is not None and d.get("dem") is None:
            raise UsageError(
                "band mapping has slope but no dem: the hillshade needs the DEM channel "
                "(map dem too, or leave slope out to train without terrain)"
            )
        scale = d.get("scale", 1.0)
        try:
            return cls(
                post=dict(d["post"]),
                pre=dict(pre) if pre else None,
                slope=d.get("slope"),
                dem=d.get("dem"),
                scale=tuple(float(s) for s in scale) if isinstance(scale, (list, tuple)) else float(scale),
                offset=float(d.get("offset", 0.0)),
                slope_scale=float(d.get("slope_scale", 1.0)),
                dem_scale=float(d.get("dem_scale", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"band mapping: scale, offset, slope_scale and dem_scale must be numbers "
                f"(scale may be a list per channel): {exc}"
            ) from None

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
    "l4s": BandMap(
        post={"blue": 1, "green": 2, "red": 3, "nir": 7},
        slope=12,
        dem=13,
        scale=L4S_MEAN,
        slope_scale=L4S_MEAN[12],
        dem_scale=L4S_MEAN[13],
    ),
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
            raise UsageError(f"--bands {text!r} is neither a preset ({', '.join(PRESETS)}), JSON text, nor a JSON file")
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


def find_patches(
    source: str | Path, fmt: str = "l4s", masks: str | Path | None = None, require_masks: bool = True
) -> list[PatchFile]:
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
        raise InputDataError(
            f"no {want} in {image_dir}: point at the dataset folder that holds img/ and mask/ "
            "(e.g. TrainData) or at the image folder itself"
        )
    mask_dir = Path(masks) if masks is not None else _subdir(source, MASK_DIRS)
    if mask_dir is None and fmt == "l4s" and any(source.glob("mask*.h5")):
        mask_dir = source
    if mask_dir is not None and not mask_dir.is_dir():
        raise InputDataError(f"mask folder {mask_dir} does not exist")
    if mask_dir is None and require_masks:
        raise InputDataError(
            f"no mask folder ({'/'.join(MASK_DIRS)}) in {source}: pass the mask folder "
            "(--masks), or import unlabelled test data with --no-masks (labels 255)"
        )
    out = []
    for img in sorted(images, key=_natural):
        mask = _mask_for(img, mask_dir, fmt) if mask_dir is not None else None
        if mask is None and require_masks:
            raise InputDataError(
                f"no mask for {img} in {mask_dir} (expected "
                f"{img.stem.replace('image', 'mask', 1) if fmt == 'l4s' else img.stem}.*): add it, "
                "remove the image, or import without labels (--no-masks)"
            )
        out.append(PatchFile(str(img.relative_to(source)), img, mask))
    return out


def _h5(path: Path, key: str, data: bool):
    """A dataset's array (or just its shape), with corrupt files and missing keys explained."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise InputDataError(
                    f"{path} has no dataset {key!r} (it has {sorted(f.keys())}): Landslide4Sense "
                    f"{'images' if key == 'img' else 'masks'} keep it under {key!r}; is this the "
                    "right file or folder?"
                )
            return f[key][()] if data else f[key].shape
    except InputDataError:
        raise
    except (OSError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise InputDataError(
            f"{path} is not a readable HDF5 file ({exc}): it is probably truncated or corrupt; "
            "download it again or remove it"
        ) from None


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
