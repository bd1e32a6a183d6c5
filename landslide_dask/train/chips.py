"""Training windows ("chips") over cubes: an index, a spatial split, statistics, augmentations.

- The index is computed from per-cell counts (cells of ``stride`` pixels, one dask pass per cube),
  so choosing windows never loads a whole cube.
- Splits are by spatial blocks per inventory: a window belongs to a split only if it lies wholly
  inside one block of that split, so windows of different splits never overlap (the strip of
  windows straddling two blocks is the gap).
- The epoch order visits windows grouped by chunk, so the window reader (``reader.py``) decodes
  each chunk about once per pass.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd

from ..cube.inventory import LABEL_UNKNOWN
from ..cube.read import TERRAIN, has_stream, model_bands, open_cube, select_bands
from ..cube.spec import CHUNK
from ..cube.tiles import sparse_labels
from ..errors import InputDataError, UsageError
from .config import TrainConfig
from .reader import DN, REFLECTANCE, radiometry

__all__ = [
    "SPLITS",
    "MIN_SPLIT_POSITIVES",
    "MIN_BLOCKS",
    "SPARSE_MIN_KNOWN",
    "auto_block",
    "build_index",
    "split_mask",
    "split_summary",
    "check_splits",
    "sampling_weights",
    "BandStats",
    "compute_stats",
    "augment",
    "WAVELENGTH_NM",
    "HAZE_MAX",
    "haze",
    "drop_pre",
    "drop_streams",
    "epoch_windows",
    "shift_windows",
]

SPLITS = ("train", "val", "test")


#: Labels that are sparse samples (blobs of a few pixels, not outlines: ``cube.tiles.sparse_labels``):
#: a window qualifies by its share of valid pixels and needs at least this many labelled ones.
SPARSE_MIN_KNOWN = 9


def _cell_counts(ds, stride: int) -> dict[str, da.Array]:
    """Per-cell (stride x stride) counts of valid, usable (valid and labelled) and landslide pixels, lazily."""
    valid = ds["valid"].data
    usable = valid
    if "label" in ds:
        usable = usable & (ds["label"].data != LABEL_UNKNOWN)
        slide = usable & (ds["label"].data == 1)
    else:
        slide = da.zeros_like(usable)
    h, w = (s // stride * stride for s in usable.shape)
    out = {}
    for name, arr in (("valid", valid), ("usable", usable), ("slide", slide)):
        arr = arr[:h, :w].astype(np.int32)
        out[name] = da.coarsen(np.sum, arr, {0: stride, 1: stride}, trim_excess=True)
    return out


def _window_sums(cells: np.ndarray, k: int) -> np.ndarray:
    """Sum of every k x k block of cells (integral image), for windows at each cell offset."""
    ii = np.pad(cells, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]


#: A split must hold at least this many landslide pixels (and as many others) to choose a
#: threshold and stop early on: 2 ha at 10 m; fewer and its MCC is noise.
MIN_SPLIT_POSITIVES = 200
#: The automatic split block is the largest of 4, 3, 2 and 1 windows that cuts every labelled
#: region into at least this many blocks holding pixels: fewer, and a 15 % validation share is one
#: block, landslides or not (a ~50 km² inventory has 2 blocks of 4 windows of 224 px).
MIN_BLOCKS = 12


def _deal(n: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Splits for ``n`` blocks: a shuffle cut by the fractions; val and test get at least one block
    each when there are three or more."""
    counts = np.floor(np.asarray(fractions) * n).astype(int)
    if n >= 3:
        counts[1:] = np.maximum(counts[1:], 1)
    counts[0] = n - counts[1:].sum()
    out = np.empty(n, dtype=int)
    out[rng.permutation(n)] = np.repeat(np.arange(3), counts)
    return out


def _assign_blocks(slides: np.ndarray, fractions: tuple[float, float, float], seed) -> np.ndarray:
    """A split per block, stratified: blocks with landslides and blocks without are dealt apart, each
    by the fractions, so validation and test hold landslides whenever three blocks do."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(slides), dtype=int)
    for group in (np.flatnonzero(slides > 0), np.flatnonzero(slides <= 0)):
        out[group] = _deal(len(group), fractions, rng)
    # repair: a validation or test part with too few landslide pixels takes more landslide blocks
    # from training, while training keeps more of them than it gives
    for split in (1, 2):
        while slides[out == split].sum() < MIN_SPLIT_POSITIVES:
            spare = np.flatnonzero((out == 0) & (slides > 0))
            if len(spare) <= np.count_nonzero((out != 0) & (slides > 0)) + 1:
                break
            out[rng.choice(spare)] = split
    return out


def _region_blocks(counts: dict[str, np.ndarray], cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Usable and landslide pixels per split block of ``cells`` x ``cells`` index cells."""
    u, s = counts["usable"], counts["slide"]
    ny, nx = -(-u.shape[0] // cells), -(-u.shape[1] // cells)
    pad = ((0, ny * cells - u.shape[0]), (0, nx * cells - u.shape[1]))

    def per_block(a: np.ndarray) -> np.ndarray:
        return np.pad(a, pad).reshape(ny, cells, nx, cells).sum(axis=(1, 3))

    return per_block(u), per_block(s)


def auto_block(counts: list[dict[str, np.ndarray]], window: int, stride: int) -> int:
    """The split block for ``block=None``: see :data:`MIN_BLOCKS`."""
    for m in (4, 3, 2, 1):
        block = m * window
        if all(
            int((_region_blocks(c, block // stride)[0] > 0).sum()) >= MIN_BLOCKS
            for c in counts
            if int(c["slide"].sum()) > 0
        ):
            return block
    return window


def build_index(
    cubes: list[str | Path],
    window: int = TrainConfig.window,
    stride: int = TrainConfig.stride,
    block: int | None = None,
    min_usable: float = TrainConfig.min_usable,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> pd.DataFrame:
    """Windows of ``window`` px every ``stride`` px where at least ``min_usable`` of the pixels are valid
    and inside the inventory (for a cube of sparse labelled samples: valid, with at least
    ``SPARSE_MIN_KNOWN`` labelled pixels), each with its split and landslide fraction.

    ``block`` is the side of the split blocks in pixels, a multiple of ``stride`` and at least
    ``window`` (default: :func:`auto_block`). Blocks are dealt to splits per region, stratified by
    whether they hold landslides; a window belongs to a split when every block it touches does
    (otherwise it is a ``gap``), so windows of different splits never overlap. ``index.attrs
    ["splits"]`` holds, per split, its windows, blocks and the known and landslide pixels they cover;
    ``index.attrs["window"]`` the window.
    """
    if window % stride:
        raise UsageError(f"window size {window} must be a multiple of the stride {stride}")
    if block is not None and (block % stride or block < window):
        raise UsageError(f"split block {block} must be a multiple of the stride {stride} and >= {window}")
    if not cubes:
        raise UsageError("no cubes given")
    k = window // stride
    opened = [open_cube(c) for c in cubes]
    computed = dask.compute(*[_cell_counts(ds, stride) for ds in opened])
    block = block or auto_block(list(computed), window, stride)
    cells = block // stride
    rows = []
    totals = {s: {"windows": 0, "blocks": 0, "known_px": 0, "landslide_px": 0} for s in SPLITS}
    for ci, (cube, counts) in enumerate(zip(cubes, computed)):
        if sparse_labels(opened[ci]):  # labelled samples, not an inventoried area
            usable = _window_sums(counts["valid"], k) / (window * window)
            ok = (usable >= min_usable) & (_window_sums(counts["usable"], k) >= SPARSE_MIN_KNOWN)
        else:
            usable = _window_sums(counts["usable"], k) / (window * window)
            ok = usable >= min_usable
        slide = _window_sums(counts["slide"], k) / (window * window)
        wy, wx = np.nonzero(ok)
        # seeded by the region's name, not its place in the list: a region keeps its test blocks
        # whichever regions it is trained with (a combined model never trains on a local model's test)
        block_usable, block_slide = _region_blocks(counts, cells)
        has = block_usable > 0
        dealt = np.full(block_usable.shape, -1)
        dealt[has] = _assign_blocks(block_slide[has], fractions, [seed, zlib.crc32(Path(cube).name.encode())])
        # a window's split: that of every block it touches that holds pixels (block >= window: its
        # corners' blocks are all it touches)
        r0, c0 = wy * stride, wx * stride
        corners = np.stack(
            [dealt[r // block, c // block] for r in (r0, r0 + window - 1) for c in (c0, c0 + window - 1)]
        )
        first = corners.max(axis=0)
        same = np.all((corners == first) | (corners < 0), axis=0) & (first >= 0)
        split = np.where(same, np.asarray(SPLITS, dtype=object)[np.maximum(first, 0)], "gap")
        rows.append(
            pd.DataFrame(
                {
                    "cube": ci,
                    "path": str(cube),
                    "row": r0,
                    "col": c0,
                    "split": split,
                    "usable": usable[wy, wx],
                    "slide": slide[wy, wx],
                }
            )
        )
        _count_splits(totals, rows[-1], counts, dealt, k, stride)
    index = pd.concat(rows, ignore_index=True)
    index.attrs.update(window=window, stride=stride, block=block, splits=totals)
    if not len(index):
        raise InputDataError(
            f"No {window}x{window} window in {', '.join(map(str, cubes))} has {min_usable:.0%} "
            "valid, inventoried pixels: check the cubes' valid and label layers."
        )
    return index


def _count_splits(
    totals: dict, windows: pd.DataFrame, counts: dict[str, np.ndarray], dealt: np.ndarray, k: int, stride: int
) -> None:
    """Add one region's windows, blocks and covered pixels per split to ``totals`` (in place); a
    pixel is counted once however many windows of its split cover it."""
    for i, name in enumerate(SPLITS):
        mine = windows[windows["split"] == name]
        cover = np.zeros(counts["usable"].shape, bool)
        for r, c in zip(mine["row"].to_numpy() // stride, mine["col"].to_numpy() // stride):
            cover[r : r + k, c : c + k] = True
        t = totals[name]
        t["windows"] += len(mine)
        t["blocks"] += int((dealt == i).sum())
        t["known_px"] += int(counts["usable"][cover].sum())
        t["landslide_px"] += int(counts["slide"][cover].sum())


def split_mask(index: pd.DataFrame, cube: str | Path, split: str, shape: tuple[int, int]) -> np.ndarray:
    """Pixels covered by the ``split`` windows of a training index in one cube."""
    window = int(index.attrs["window"])
    mine = index[(index["path"] == str(cube)) & (index["split"] == split)]
    out = np.zeros(shape, bool)
    for r, c in zip(mine["row"].to_numpy(), mine["col"].to_numpy()):
        out[r : r + window, c : c + window] = True
    return out


def split_summary(index: pd.DataFrame) -> str:
    """One line per split: windows, blocks, known and landslide pixels (the training log's)."""
    lines = []
    for name, t in index.attrs["splits"].items():
        share = t["landslide_px"] / t["known_px"] if t["known_px"] else 0.0
        lines.append(
            f"{name}: {t['windows']} windows in {t['blocks']} blocks, {t['known_px']:,} known px, "
            f"{t['landslide_px']:,} landslide px ({share:.1%})"
        )
    return "; ".join(lines)


def check_splits(index: pd.DataFrame, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Refuse an index whose training or validation part cannot train or choose a threshold: each
    needs windows, :data:`MIN_SPLIT_POSITIVES` landslide pixels and as many others. Says what to
    change (a smaller block or window, or more inventories)."""
    t = index.attrs["splits"]
    window, block = index.attrs["window"], index.attrs["block"]
    for name in splits:
        s = t[name]
        pos, neg = s["landslide_px"], s["known_px"] - s["landslide_px"]
        if s["windows"] and pos >= MIN_SPLIT_POSITIVES and neg >= MIN_SPLIT_POSITIVES:
            continue
        what = (
            "no windows"
            if not s["windows"]
            else f"{pos} landslide pixels"
            if pos < MIN_SPLIT_POSITIVES
            else f"only {neg} non-landslide pixels"
        )
        smaller = max(window, block // 2 // index.attrs["stride"] * index.attrs["stride"])
        hint = (
            f"--block {smaller}"
            if smaller < block
            else f"a smaller --window (e.g. --window {max(64, window // 2)} --stride {max(32, window // 4)})"
        )
        raise InputDataError(
            f"the {name} split holds {what} (it needs at least {MIN_SPLIT_POSITIVES} of each class to "
            f"{'learn' if name == 'train' else 'choose a threshold'}, and would otherwise score an empty class); "
            f"splits: {split_summary(index)}. The inventories are too small for {block} px split blocks of "
            f"{window} px windows: use {hint}, or add inventories."
        )


def sampling_weights(index: pd.DataFrame, positive_boost: float = TrainConfig.positive_boost) -> np.ndarray:
    """Windows holding landslides are drawn ``positive_boost`` times as often as others."""
    w = np.where(index["slide"].to_numpy() > 0, positive_boost, 1.0)
    return w / w.sum()


@dataclass
class BandStats:
    """Per-channel mean and std for each model stream, stored in the checkpoint."""

    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    units: str = DN  # of the imagery streams: DN as stored, or REFLECTANCE (x 10,000)
    # "global": imagery standardised by these statistics; "scene" (reader.SCENE): by each
    # acquisition's own (these then serve terrain only)
    normalise: str = "global"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "units": self.units, "normalise": self.normalise}

    @classmethod
    def from_dict(cls, d: dict) -> BandStats:
        return cls(mean=d["mean"], std=d["std"], units=d.get("units", DN), normalise=d.get("normalise", "global"))


def _stream_arrays(
    ds, streams: tuple[str, ...], bands: tuple[str, ...], where: str, gain_bias: tuple[float, float] = (1.0, 0.0)
) -> dict[str, da.Array]:
    arrays = {}
    gain, bias = gain_bias
    for s in streams:
        if s == "terrain":
            arrays[s] = da.stack([ds[t].data.astype(np.float32) for t in TERRAIN])
        else:
            idx = list(select_bands(bands, [str(b) for b in ds["band"].values], where))
            arrays[s] = ds[s].data[idx].astype(np.float32)
            if gain != 1.0 or bias != 0.0:
                arrays[s] = arrays[s] * np.float32(gain) + np.float32(bias)
    return arrays


def _window_mask(windows: pd.DataFrame, shape: tuple[int, int], window: int, stride: int, chunks) -> da.Array:
    """Lazy pixel mask of the union of windows, built on the coarse cell grid then repeated."""
    k = window // stride
    cells = np.zeros((shape[0] // stride, shape[1] // stride), dtype=bool)
    for r, c in zip(windows["row"].to_numpy() // stride, windows["col"].to_numpy() // stride):
        cells[r : r + k, c : c + k] = True
    m = da.from_array(cells, chunks=max(1, CHUNK // stride)).repeat(stride, axis=0).repeat(stride, axis=1)
    pad = ((0, shape[0] - m.shape[0]), (0, shape[1] - m.shape[1]))
    return da.pad(m, pad, constant_values=False).rechunk(chunks)


def compute_stats(
    index: pd.DataFrame,
    streams: tuple[str, ...] = ("pre", "post", "terrain"),
    split: str = "train",
    bands: tuple[str, ...] | None = None,
    units: str = DN,
    normalise: str = "global",
) -> BandStats:
    """Mean and std per channel over the valid pixels of the union of the split's windows (the
    pre-event stream: over those that have a pre-event image), in one dask pass (sums and sums of
    squares in float64). ``bands``: the imagery bands, by name (None: every band of the first
    cube); ``units``: DN as stored, or ``REFLECTANCE`` (each cube's DN scale and offset applied)."""
    window, stride = index.attrs["window"], index.attrs["stride"]
    parts: dict[str, list] = {s: [] for s in streams}
    chosen = index[index["split"] == split]
    if any(s != "terrain" for s in streams) and len(chosen):
        bands = model_bands(bands, list(dict.fromkeys(index["path"])))
    for path, windows in chosen.groupby("path"):
        ds = open_cube(path)
        valid = ds["valid"].data
        m = _window_mask(windows, valid.shape, window, stride, valid.chunks) & valid
        gb = radiometry(path) if units == REFLECTANCE else (1.0, 0.0)
        present = tuple(s for s in streams if has_stream(ds, s))
        for s, arr in _stream_arrays(ds, present, bands, f"the cube {path}", gb).items():
            ms = m & ds["pre_valid"].data if s == "pre" and "pre_valid" in ds else m
            x = da.where(ms, arr, 0.0).astype(np.float64)
            parts[s].append((x.sum(axis=(1, 2)), (x * x).sum(axis=(1, 2)), ms.sum()))
    (parts,) = dask.compute(parts)
    mean, std = {}, {}
    for s, p in parts.items():
        n = sum(int(q[2]) for q in p)
        if n == 0:
            raise InputDataError(
                f"no valid pixels of the {s!r} stream in the {split} windows to compute statistics "
                "from (does any training cube hold it?)"
            )
        mu = sum(q[0] for q in p) / n
        var = sum(q[1] for q in p) / n - mu * mu
        mean[s] = [float(v) for v in mu]
        std[s] = [float(v) for v in np.sqrt(np.maximum(var, 1e-12))]
    return BandStats(mean, std, units, normalise)


def augment(
    sample: dict[str, np.ndarray],
    rng: np.random.Generator,
    jitter: float = TrainConfig.jitter,
    streams: tuple[str, ...] = ("pre", "post"),
) -> dict[str, np.ndarray]:
    """Flips, 90-degree rotations (the same for every layer) and per-band gain/offset jitter of the
    imagery streams (terrain is a measurement, left alone)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = {}
    for name, x in sample.items():
        y = np.rot90(x, k, axes=(-2, -1))
        if flip:
            y = y[..., ::-1]
        out[name] = np.ascontiguousarray(y)
    for s in streams:
        if s in out and jitter > 0:
            n = out[s].shape[0]
            gain = rng.normal(1.0, jitter, (n, 1, 1)).astype(np.float32)
            offset = rng.normal(0.0, jitter, (n, 1, 1)).astype(np.float32)
            keep = out["pre_valid"] if s == "pre" and "pre_valid" in out else out["valid"]
            out[s] = np.where(keep, out[s] * gain + offset, 0.0).astype(np.float32)
    return out


# Sentinel-2 band centres (nm), for the wavelength dependence of haze
WAVELENGTH_NM = {
    "coastal": 443,
    "blue": 490,
    "green": 560,
    "red": 665,
    "rededge1": 705,
    "rededge2": 740,
    "rededge3": 783,
    "nir": 842,
    "nir08": 865,
    "nir09": 945,
    "swir16": 1610,
    "swir22": 2190,
}
HAZE_MAX = 800.0  # reflectance x 10,000 added to blue at most: path radiance of a hazy top-of-atmosphere scene


def haze(
    sample: dict[str, np.ndarray],
    rng: np.random.Generator,
    p: float,
    bands: tuple[str, ...],
    std: dict[str, np.ndarray],
    streams: tuple[str, ...] = ("pre", "post"),
) -> dict[str, np.ndarray]:
    """Atmospheric path radiance, per acquisition: with probability ``p`` an imagery stream gets
    an additive offset of up to ``HAZE_MAX`` (reflectance x 10,000) at blue, falling with
    wavelength as lambda^-k (k in [1, 4]: aerosol to Rayleigh). Real downloads are often
    top-of-atmosphere (L1C) or hazy where the teacher's scenes are surface reflectance; ``std``:
    the streams' per-channel std (reflectance units), to add the offset in normalised units."""
    if p <= 0:
        return sample
    out = dict(sample)
    lam = np.asarray([WAVELENGTH_NM.get(b, 842) for b in bands], np.float64)
    for s in streams:
        if s not in out or rng.random() >= p:
            continue
        k = rng.uniform(1.0, 4.0)
        h = rng.uniform(0.0, HAZE_MAX) * (lam / 490.0) ** -k
        add = (h / np.asarray(std[s], np.float64).reshape(-1)).astype(np.float32)[:, None, None]
        keep = out["pre_valid"] if s == "pre" and "pre_valid" in out else out["valid"]
        out[s] = np.where(keep, out[s] + add, 0.0).astype(np.float32)
    return out


def drop_pre(sample: dict[str, np.ndarray], rng: np.random.Generator, p: float) -> dict[str, np.ndarray]:
    """Pre-event stream dropout, so a model learns to map from post-event imagery and terrain where
    the pre-event image is missing: with probability ``p`` the whole window loses it, with
    probability ``p`` the part of it beyond a random straight edge does (as a mosaic gap or a swath
    edge cuts real scenes, e.g. Iburi 2018's). Removed pixels are 0, as the reader writes gaps."""
    if p <= 0 or "pre" not in sample:
        return sample
    u = rng.random()
    if u >= 2 * p:
        return sample
    h, w = sample["pre"].shape[-2:]
    if u < p:
        gone = np.ones((h, w), bool)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        proj = (yy - h / 2) * np.sin(angle) + (xx - w / 2) * np.cos(angle)
        gone = proj > rng.uniform(-0.4, 0.4) * max(h, w)
    out = dict(sample)
    out["pre"] = np.where(gone[None], 0.0, sample["pre"]).astype(np.float32)
    out["pre_valid"] = sample.get("pre_valid", sample["valid"]) & ~gone
    return out


def drop_streams(sample: dict[str, np.ndarray], rng: np.random.Generator, p: dict[str, float]) -> dict[str, np.ndarray]:
    """Stream dropout beyond the pre-event image: each stream named in ``p`` is hidden whole (0, as
    the reader gives for a cube without it) with its probability, independently per window."""
    out = sample
    for name, prob in p.items():
        if name in sample and prob > 0 and rng.random() < prob:
            out = dict(out) if out is sample else out
            out[name] = np.zeros_like(sample[name])
    return out


def epoch_windows(
    index: pd.DataFrame,
    split: str,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    n: int | None = None,
    positive_boost: float | None = None,
    chunk: int = CHUNK,
    local_shuffle: int = 64,
) -> pd.DataFrame:
    """This rank's windows for one epoch: the same draw on every rank, grouped by chunk, shuffled
    anew each epoch, cut into equal contiguous shards (so every rank runs the same number of steps)
    and then shuffled within runs of ``local_shuffle`` windows so a batch mixes nearby chunks."""
    pool = index[index["split"] == split]
    if not len(pool):
        raise InputDataError(f"no windows in split {split!r}")
    rng = np.random.default_rng([seed, epoch])
    if positive_boost is not None:
        take = rng.choice(len(pool), size=n or len(pool), replace=True, p=sampling_weights(pool, positive_boost))
        pool = pool.iloc[take]
    elif n is not None:
        pool = pool.iloc[rng.choice(len(pool), size=n, replace=n > len(pool))]
    group = pool["cube"].astype(np.int64) * 10**12 + (pool["row"] // chunk) * 10**6 + pool["col"] // chunk
    keys = np.unique(group.to_numpy())
    rank_of_group = dict(zip(rng.permutation(keys), range(len(keys))))
    order = np.lexsort((rng.random(len(pool)), group.map(rank_of_group).to_numpy()))
    pool = pool.iloc[order]
    per_rank = len(pool) // world
    if per_rank == 0:
        raise InputDataError(f"{len(pool)} {split} windows cannot feed {world} ranks")
    mine = pool.iloc[rank * per_rank : (rank + 1) * per_rank]
    local = np.random.default_rng([seed, epoch, rank])
    idx = np.concatenate(
        [local.permutation(np.arange(i, min(i + local_shuffle, per_rank))) for i in range(0, per_rank, local_shuffle)]
    )
    return mine.iloc[idx].reset_index(drop=True)


def shift_windows(windows: pd.DataFrame, index: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Random crops inside the split: each window moves by up to a stride (less than one) in y and x
    where the windows it moves towards (beside and diagonal) are in the index with its split, so the
    moved window stays inside the union of that split's windows and never reads another split's
    pixels. The index's grid alone shows the model each place at ``(window / stride)²`` offsets only;
    a small inventory has a few hundred windows, and the model learns their positions."""
    stride = int(index.attrs["stride"])
    if stride <= 1 or not len(windows):
        return windows
    have = {
        (int(c), str(s), int(r), int(q))
        for c, s, r, q in zip(index["cube"], index["split"], index["row"] // stride, index["col"] // stride)
    }
    n = len(windows)
    dy = rng.integers(-(stride - 1), stride, n)
    dx = rng.integers(-(stride - 1), stride, n)
    rows, cols = windows["row"].to_numpy(), windows["col"].to_numpy()
    for i, (cube, split, r, c) in enumerate(
        zip(windows["cube"].to_numpy(), windows["split"].to_numpy(), rows // stride, cols // stride)
    ):
        sy, sx = int(np.sign(dy[i])), int(np.sign(dx[i]))
        key = (int(cube), str(split))
        ok_y = sy == 0 or (*key, r + sy, c) in have
        ok_x = sx == 0 or (*key, r, c + sx) in have
        if ok_y and ok_x and sy and sx and (*key, r + sy, c + sx) not in have:
            ok_x = False  # the diagonal is missing: move along y only
        dy[i] = dy[i] if ok_y else 0
        dx[i] = dx[i] if ok_x else 0
    return windows.assign(row=rows + dy, col=cols + dx)
