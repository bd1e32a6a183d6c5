"""The one path from cube windows to model inputs: training, inference, evaluation and benchmarks.

A window of a cube becomes model inputs in exactly one way, here: the model's bands picked by name
from each cube (any cube that has them, in any order), ``(x - mean) / std`` per channel (the
training set's statistics, or with scene normalisation, ``normalise: "scene"`` in the statistics,
each acquisition's own median and spread for imagery), 0 where a pixel is not valid or not finite,
and the pre-event stream also 0 where the cube has no pre-event image (``pre_valid``). A stream the
cube lacks altogether (post-only tiles) is 0 everywhere, which only a model trained with that
stream's dropout can map. Windows may reach past the cube (inference pads the edges): outside is 0
and not valid.

Decoded zarr chunks live in one thread-safe LRU cache per process: a window touches one to four
chunks and its neighbours (in the training order or in inference's window grid) touch the same
ones, so each chunk is decoded about once per pass instead of once per window.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..cube.inventory import LABEL_UNKNOWN
from ..cube.read import TERRAIN, cube_bands, has_stream, model_bands, select_bands
from ..errors import InputDataError

__all__ = [
    "REFLECTANCE",
    "DN",
    "SCENE",
    "CACHE_MB",
    "ChunkCache",
    "PROCESS_CACHE",
    "clear_caches",
    "cube_token",
    "radiometry",
    "scene_statistics",
    "WindowReader",
]

# Imagery units the model sees: reflectance x 10,000, from each cube's recorded DN scale and offset,
# so scenes with and without Sentinel-2's +1000 DN offset (processing baseline 04.00, 2022 on) or
# other scalings look alike. Statistics (BandStats.units) say which units a model was trained in.
REFLECTANCE = "reflectance_x10000"
DN = "dn"
# Scene normalisation: each imagery stream of each cube (one acquisition or composite) standardised by
# its own median and robust spread ((p84 - p16) / 2) over its valid pixels, so top-of-atmosphere and
# surface reflectance, haze, season and sensor look alike (the paper stretched each image by itself);
# terrain keeps the training set's statistics. At most SCENE_SAMPLE_PX pixels (a regular subsample)
# are read for them.
SCENE = "scene"
SCENE_SAMPLE_PX = 2_000_000
CACHE_MB = 128  # decoded chunks kept per process for inference (a training rank keeps its own 512 MB)


class ChunkCache:
    """A thread-safe LRU of decoded chunks, bounded in bytes."""

    def __init__(self, max_mb: int = CACHE_MB) -> None:
        self.max_bytes = int(max_mb) * 2**20
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """The cached value of ``key`` (loading it on a miss) and whether it was loaded now."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit, False
        data = load()
        with self._lock:
            if key not in self._data:
                self._data[key] = data
                self._bytes += data.nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
        return data, True

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


PROCESS_CACHE = ChunkCache()
_ARRAYS: dict[tuple[str, str, str], object] = {}
_ARRAYS_LOCK = threading.Lock()


def clear_caches() -> None:
    """Forget open arrays and decoded chunks in this process (tests, or after rebuilding a cube)."""
    with _ARRAYS_LOCK:
        _ARRAYS.clear()
    with _SCENE_LOCK:
        _SCENE_STATS.clear()
    PROCESS_CACHE.clear()


def cube_token(path: str | Path) -> str:
    """Changes when a cube is rebuilt at the same path, so cached chunks of the old one are not reused."""
    meta = Path(path) / "zarr.json"
    return str(meta.stat().st_mtime_ns) if meta.exists() else "0"


def _variables(path: str) -> frozenset[str]:
    import zarr

    try:
        return frozenset(zarr.open_group(path, mode="r").array_keys())
    except Exception as exc:
        raise InputDataError(
            f"{path} is not a readable zarr cube ({exc}): rebuild it with `landslide-dask cube`."
        ) from exc


def radiometry(path: str | Path) -> tuple[float, float]:
    """(gain, bias) turning a cube's imagery DN into reflectance x 10,000, from its
    ``dn_scale_offset`` attribute; a cube that records none (or 1, 0: nothing recorded) is taken
    as Sentinel-2 DN without offset (reflectance x 10,000 already)."""
    import zarr

    so = zarr.open_group(str(path), mode="r").attrs.get("dn_scale_offset")
    if not so or (float(so[0]) == 1.0 and float(so[1]) == 0.0):
        return 1.0, 0.0
    return float(so[0]) * 1e4, float(so[1]) * 1e4


_SCENE_STATS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_SCENE_LOCK = threading.Lock()


def scene_statistics(
    path: str | Path,
    var: str,
    band_index: Sequence[int],
    gain_bias: tuple[float, float] = (1.0, 0.0),
    token: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(median, robust spread) per band of one imagery stream of a cube over its valid pixels (the
    pre-event stream: those with a pre-event image), in the units ``gain_bias`` gives; cached per
    process and cube version (``token``: the cube's :func:`cube_token`, if known)."""
    import zarr

    key = (str(path), token or cube_token(path), var, tuple(band_index), tuple(gain_bias))
    with _SCENE_LOCK:
        hit = _SCENE_STATS.get(key)
    if hit is not None:
        return hit
    g = zarr.open_group(str(path), mode="r")
    ny, nx = g["valid"].shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / SCENE_SAMPLE_PX))))
    ok = np.asarray(g["valid"][::step, ::step]).astype(bool)
    if var == "pre" and "pre_valid" in g.array_keys():
        ok &= np.asarray(g["pre_valid"][::step, ::step]).astype(bool)
    x = np.asarray(g[var][:, ::step, ::step])[list(band_index)][:, ok].astype(np.float64)
    if x.shape[1] < 100:
        raise InputDataError(
            f"{path}: only {x.shape[1]} valid pixels of {var!r} in a 1:{step} sample, too few "
            "to normalise the scene by its own statistics; map a larger area or use a model "
            "trained with global normalisation."
        )
    gain, bias = gain_bias
    x = x * gain + bias
    p16, p50, p84 = np.percentile(x, [16, 50, 84], axis=1)
    out = (p50.astype(np.float32), np.maximum((p84 - p16) / 2.0, 1.0).astype(np.float32))
    with _SCENE_LOCK:
        _SCENE_STATS[key] = out
    return out


class WindowReader:
    """Model inputs, labels and masks of cube windows.

    ``bands``: the model's bands (None: every band of the first cube). ``stats``: per-stream
    ``{"mean": {...}, "std": {...}, "units": ...}`` (a ``BandStats`` or its dict); None leaves
    values raw. Imagery is converted to reflectance x 10,000 first when the statistics are in
    those units (``REFLECTANCE``; models trained before they existed saw DN).
    ``require_pre``: pixels without a pre-event image count as not valid (a model trained without
    pre-event dropout cannot map them); otherwise they are mapped with the pre stream at 0.
    Picklable: workers get paths and small tuples, never open handles or cached data.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        streams: Sequence[str] = ("pre", "post", "terrain"),
        stats=None,
        bands: Sequence[str] | None = None,
        require_pre: bool = False,
        cache: ChunkCache | None = None,
    ) -> None:
        self.paths = tuple(str(p) for p in paths)
        self.streams = tuple(streams)
        self.require_pre = bool(require_pre)
        imagery = any(s != "terrain" for s in self.streams)
        have = [cube_bands(p) for p in self.paths] if imagery else [[] for _ in self.paths]
        self.bands = model_bands(bands, self.paths) if imagery else tuple(bands or ())
        self.band_index = tuple(
            select_bands(self.bands, h, f"the cube {p}") if imagery else () for p, h in zip(self.paths, have)
        )
        self.tokens = tuple(cube_token(p) for p in self.paths)
        self.variables = tuple(_variables(p) for p in self.paths)
        if stats is not None and not isinstance(stats, dict):
            stats = stats.to_dict()
        self.units = stats.get("units", DN) if stats is not None else DN
        self.scene = stats is not None and stats.get("normalise") == SCENE
        self.gain_bias = tuple(radiometry(p) if self.units == REFLECTANCE else (1.0, 0.0) for p in self.paths)
        self.mean = (
            {s: np.asarray(stats["mean"][s], np.float32)[:, None, None] for s in self.streams}
            if stats is not None
            else None
        )
        self.std = (
            {s: np.asarray(stats["std"][s], np.float32)[:, None, None] for s in self.streams}
            if stats is not None
            else None
        )
        self.cache = cache or PROCESS_CACHE
        self.decoded = 0  # chunks this reader decoded (benchmarks and tests)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["cache"] = None
        state["decoded"] = 0
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.cache = PROCESS_CACHE

    # -- raw arrays -------------------------------------------------------------------------
    def array(self, cube: int, var: str):
        """The zarr array ``var`` of cube ``cube``, opened once per process."""
        import zarr

        path, token = self.paths[cube], self.tokens[cube]
        key = (path, token, var)
        with _ARRAYS_LOCK:
            arr = _ARRAYS.get(key)
        if arr is None:
            try:
                arr = zarr.open_group(path, mode="r")[var]
            except Exception as exc:
                raise InputDataError(
                    f"{path}: cannot open variable {var!r} ({exc}). Rebuild the cube with `landslide-dask cube`."
                ) from exc
            with _ARRAYS_LOCK:
                _ARRAYS[key] = arr
        return arr

    def has(self, cube: int, var: str) -> bool:
        return var in self.variables[cube]

    def has_stream(self, cube: int, stream: str) -> bool:
        return has_stream(self.variables[cube], stream)

    def _chunk(self, cube: int, var: str, iy: int, ix: int) -> np.ndarray:
        arr = self.array(cube, var)
        cy, cx = arr.chunks[-2:]

        def load() -> np.ndarray:
            try:
                return np.asarray(arr[..., iy * cy : (iy + 1) * cy, ix * cx : (ix + 1) * cx])
            except MemoryError:
                raise
            except Exception as exc:
                lead = (0,) * (arr.ndim - 2)
                try:
                    where = f"file {self.paths[cube]}/{var}/{arr.metadata.encode_chunk_key((*lead, iy, ix))}"
                except Exception:  # pragma: no cover - other chunk key encodings
                    where = f"{self.paths[cube]}/{var} chunk {(*lead, iy, ix)}"
                raise InputDataError(
                    f"Cannot decode chunk ({iy}, {ix}) of {var!r} in {self.paths[cube]} ({where}): "
                    f"{type(exc).__name__}: {exc}. The cube is corrupt or truncated: rebuild it with "
                    "`landslide-dask cube`, then rerun (finished work is kept)."
                ) from exc

        data, loaded = self.cache.get((self.paths[cube], self.tokens[cube], var, iy, ix), load)
        self.decoded += loaded
        return data

    def raw(self, cube: int, var: str, row: int, col: int, h: int, w: int) -> np.ndarray:
        """``var[..., row:row+h, col:col+w]`` assembled from cached chunks; 0 (False) outside the cube."""
        arr = self.array(cube, var)
        ny, nx = arr.shape[-2:]
        cy, cx = arr.chunks[-2:]
        out = np.zeros(arr.shape[:-2] + (h, w), dtype=arr.dtype)
        y0, y1, x0, x1 = max(row, 0), min(row + h, ny), max(col, 0), min(col + w, nx)
        for iy in range(y0 // cy, (y1 - 1) // cy + 1) if y0 < y1 and x0 < x1 else ():
            for ix in range(x0 // cx, (x1 - 1) // cx + 1):
                c = self._chunk(cube, var, iy, ix)
                r0, r1 = max(y0, iy * cy), min(y1, iy * cy + c.shape[-2])
                c0, c1 = max(x0, ix * cx), min(x1, ix * cx + c.shape[-1])
                out[..., r0 - row : r1 - row, c0 - col : c1 - col] = c[
                    ..., r0 - iy * cy : r1 - iy * cy, c0 - ix * cx : c1 - ix * cx
                ]
        return out

    # -- model inputs -----------------------------------------------------------------------
    def masks(self, cube: int, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(valid, pre_valid, no_pre) of a window: the pixels the model maps, those with a pre-event
        image, and those the cube covers without one (None when the model has no pre-event stream,
        whose ``pre_valid`` is then ``valid``; cubes built before ``pre_valid`` existed required a
        pre-event image for ``valid``)."""
        valid = self.raw(cube, "valid", row, col, h, w).astype(bool, copy=False)
        if "pre" not in self.streams:
            return valid, valid, None
        if not self.has(cube, "pre"):  # a post-only cube: no pre-event image anywhere
            pre_valid = np.zeros_like(valid)
        elif self.has(cube, "pre_valid"):
            pre_valid = self.raw(cube, "pre_valid", row, col, h, w).astype(bool, copy=False) & valid
        else:
            pre_valid = valid
        no_pre = valid & ~pre_valid
        return (pre_valid if self.require_pre else valid), pre_valid, no_pre

    def inputs(
        self, cube: int, row: int, col: int, h: int, w: int, skip_empty: bool = False
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Normalised float32 streams (C, h, w) of one window, its valid and pre_valid masks.
        ``skip_empty``: no streams when no pixel is valid (inference skips such windows).
        In place, one float copy per stream: an unfused version cost 14 % of a CPU forward pass."""
        valid, pre_valid, _ = self.masks(cube, row, col, h, w)
        if skip_empty and not valid.any():
            return {}, valid, pre_valid
        out = {}
        for name in self.streams:
            if not self.has_stream(cube, name):  # a model trained with this stream's dropout: zeros
                out[name] = np.zeros((len(TERRAIN) if name == "terrain" else len(self.bands), h, w), np.float32)
                continue
            if name == "terrain":
                parts = [self.raw(cube, t, row, col, h, w) for t in TERRAIN]
                x = np.empty((len(parts), h, w), np.float32)
                for k, part in enumerate(parts):
                    x[k] = part
                exact = all(part.dtype.kind in "iub" for part in parts)
            else:
                raw = self.raw(cube, name, row, col, h, w)
                idx = self.band_index[cube]
                x = (raw if idx == tuple(range(raw.shape[0])) else raw[list(idx)]).astype(np.float32)
                exact = raw.dtype.kind in "iub"
                gain, bias = self.gain_bias[cube]
                if gain != 1.0 or bias != 0.0:
                    x *= np.float32(gain)
                    x += np.float32(bias)
                if self.scene:
                    centre, spread = scene_statistics(
                        self.paths[cube], name, idx, self.gain_bias[cube], self.tokens[cube]
                    )
                    x -= centre[:, None, None]
                    x /= spread[:, None, None]
            if self.mean is not None and not (self.scene and name != "terrain"):
                x -= self.mean[name]
                x /= self.std[name]
            if not exact:  # float inputs (slope) may hold NaN or inf; integers cannot
                np.copyto(x, 0.0, where=~np.isfinite(x))
            np.copyto(x, 0.0, where=~(pre_valid if name == "pre" else valid)[None])
            out[name] = x
        return out, valid, pre_valid

    def sample(self, cube: int, row: int, col: int, window: int) -> dict[str, np.ndarray]:
        """A training or scoring sample of a ``window`` px square: the streams, ``label`` (255 =
        unknown or not valid), ``valid`` and ``pre_valid``."""
        x, valid, pre_valid = self.inputs(cube, row, col, window, window)
        if self.has(cube, "label"):
            label = self.raw(cube, "label", row, col, window, window)
            label = np.where(valid, label, LABEL_UNKNOWN).astype(np.uint8)
        else:
            label = np.full(valid.shape, LABEL_UNKNOWN, np.uint8)
        return {**x, "valid": valid, "pre_valid": pre_valid, "label": label}
