"""Seamless, chunking-independent, resumable inference over whole regions.

How a region is mapped
----------------------
* **One global grid of windows**, anchored to the cube's origin: windows of ``window`` px every
  ``stride = window - overlap`` px, the first starting at ``-overlap / 2`` rounded to the model's
  32 px input multiple (every window then has the phase of a whole-image pass), as many as needed
  to cover the cube; the last one per axis is trimmed to the smallest multiple of 32 reaching the
  cube's end (its start stays on the grid), which keeps the overhead of modest cubes low. Input
  outside the cube is zero and invalid. The grid depends only on the cube's shape, the window and
  the overlap, never on the chunking, so neither does the result.
* **Each window is predicted once** (in batches of up to ``batch_size`` windows of one row and
  one size, one task per batch, reading its input straight from the zarr store through a
  per-process cache of decoded chunks: only paths and offsets travel in the tasks). Windows
  without a single valid pixel are skipped.
* **Blending**: each window's probabilities are weighted by a separable Hann-tapered (Tukey)
  window: 1 in the interior, a ``sin²`` ramp over the ``overlap`` px at each edge, floored at
  ``WEIGHT_FLOOR``. Neighbouring ramps overlap exactly, so the weights of all windows covering a
  pixel sum to 1 (a cross-fade, no seam) and every pixel is dominated by a window that sees at
  least ``overlap / 2`` px of context on every side. (A full Hann or nnU-Net Gaussian is designed
  for 50 % overlap; at the ~10 % overlap that keeps the overhead <= 1.3 its weights in the overlap
  strips are tiny, while the taper is exactly a partition of unity.)
* **Output chunks** follow the cube's chunks: each sums ``p * w`` and ``w`` of the windows that
  overlap it (in window order, so the float sum does not depend on the chunking), divides, sets
  0 where ``valid`` is False and writes ``round(p * 255)`` as uint8 — one aligned write per chunk.
* **Overhead** (pixels through the model / pixels written) is ``overhead(shape, window,
  overlap)``; for large regions it tends to ``(window / stride)²``.
* **Resumable**: after a chunk is written a marker file ``_done/<i>.<j>`` is created; a rerun with
  the same arguments (checked against the ``run`` attribute: cube, model hash, window, overlap,
  batch size) skips marked chunks (and the windows only they need). ``complete: true`` is set
  only once every chunk is written (the markers are then removed); :func:`open_prediction`
  refuses anything else.
* **Streaming, strip by strip** (:func:`_stream`): batches are submitted in row-major order for
  the output chunk rows up to a small lookahead past the first unfinished one (enough to keep
  twice as many batches in flight as there are threads); a chunk is written as soon as the
  batches it overlaps are done, and a window result is released when the last chunk needing it
  is written. The same driver runs on this process's threads or on a ``distributed.Client``
  (futures: window results move only from the worker that computed them to the one writing).
  Handing dask the whole graph instead let ``dask.order`` start windows all over the region, and
  the results held grew with it (a test counts them).
* **Memory** per process: the decoded-chunk cache (``reader.PROCESS_CACHE``), ``threads x batch_size``
  windows in the model, and the window results of a strip of chunk rows across the region: it
  does not grow with the region's height (nor with its area, for a given width).

The model is loaded once per worker process from the checkpoint path (cached by path,
modification time and device), never shipped in the graph; inference runs under
``torch.inference_mode`` with channels-last tensors, autocast (bf16/fp16) on CUDA and, on CPU,
``cores // dask threads on the host`` torch threads per task.

Defaults, by measurement (CPU, the 3.6 M-parameter demo checkpoint on the 1202 x 1202 px
``haiti_like`` cube, against one whole-image forward pass, pixels > 64 px from the cube border):

=========================  ========  ==========  =====================  ====================
window / overlap           overhead  asymptotic  max diff (1/255)       pixels > 2/255
=========================  ========  ==========  =====================  ====================
512 / 0 (naive tiling)     1.02      1.00        220                    0.39 %
512 / 32                   1.13      1.14        9                      0.05 %
512 / 64                   1.31      1.31        4                      0.004 %
768 / 64 (default)         1.19      1.19        4                      0.001 %
768 / 128                  1.37      1.44        1                      0
=========================  ========  ==========  =====================  ====================

Model throughput per pixel on CPU was flat from 256 to 1024 px windows (noise on a shared 2-core
machine exceeded any trend), while forward-pass memory grows with ``batch_size x window²`` (peak
0.48 GB for four 512 px windows of the demo model, 1.7 GB for four 1024 px ones): 768 px windows
with a 64 px overlap give the asymptotic overhead 1.19 (<= 1.29 for every square region of
1000 px or more) at <= 4/255 from a whole-image pass. Larger windows suit GPUs: pass ``window=``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputDataError
from .reader import TERRAIN, WindowReader
from .reader import clear_caches as _clear_reader_caches
from .workers import worker_table

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_OVERLAP",
    "DEFAULT_BATCH_SIZE",
    "default_batch_size",
    "predict",
    "lazy_probability",
    "open_prediction",
    "export_cog",
    "overhead",
    "asymptotic_overhead",
    "axis_windows",
    "windows_of",
    "grid_origin",
    "blend_weights",
    "resolve_window",
]

#: Defaults chosen by measurement (module docstring).
DEFAULT_WINDOW = 768
DEFAULT_OVERLAP = 64
#: Windows per forward pass by device type. CPU: 1 -- batching costs CPU there (demo model, one
#: torch thread, 768 px windows: 0.72 CPU s per window in batches of 1, 0.96 in batches of 4;
#: ``benchmarks/predict.py --batch-sizes 1,4``) and forward-pass memory grows with the batch.
#: CUDA: 4 (not measured here: no GPU was lent; pass ``batch_size=``).
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 4}
WEIGHT_FLOOR = 1e-3
PREDICTION_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# the window grid and its weights
# ---------------------------------------------------------------------------------------------
def grid_origin(overlap: int, multiple: int = 32) -> int:
    """Start of the first window: ``-overlap / 2`` rounded towards 0 to a multiple of ``multiple``, so
    every window sits at the same phase of the model's ``multiple``-px cycle as a whole-image pass
    (measured: a 16 px phase shift alone changes ~0.4 % of the pixels by more than 2/255)."""
    return -((overlap // 2) // multiple) * multiple


def axis_windows(n: int, window: int, overlap: int, multiple: int = 32) -> list[tuple[int, int]]:
    """``(start, size)`` of the windows along an axis of ``n`` px: starts every ``window - overlap``
    px from :func:`grid_origin`; the last window is trimmed to the smallest multiple of
    ``multiple`` that reaches the cube's end (its start stays on the grid, so nothing else moves)."""
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"need window > 0 and 0 <= overlap < window, got window={window} overlap={overlap}")
    stride = window - overlap
    first = grid_origin(overlap, multiple)
    count = 1 + max(0, math.ceil((n - first - window) / stride))
    out = []
    for k in range(count):
        start = first + k * stride
        size = window if k < count - 1 else min(window, -(-(n - start) // multiple) * multiple)
        out.append((int(start), int(size)))
    return out


def windows_of(shape: tuple[int, ...], window: int, overlap: int,
               multiple: int = 32) -> list[tuple[int, int, int, int]]:
    """All windows ``(row, col, height, width)`` of a ``(..., H, W)`` region, row-major."""
    ys = axis_windows(int(shape[-2]), window, overlap, multiple)
    xs = axis_windows(int(shape[-1]), window, overlap, multiple)
    return [(r, c, h, w) for r, h in ys for c, w in xs]


def overhead(shape: tuple[int, ...], window: int | None = None, overlap: int | None = None,
             multiple: int = 32) -> float:
    """Pixels pushed through the model / pixels written for a ``(..., H, W)`` region (None: the
    defaults). Windows without a valid pixel are skipped at run time: this is an upper bound."""
    window, overlap = resolve_window(window, overlap, multiple)
    h, w = int(shape[-2]), int(shape[-1])
    per_axis = [sum(size for _, size in axis_windows(n, window, overlap, multiple)) for n in (h, w)]
    return per_axis[0] * per_axis[1] / float(h * w)


def asymptotic_overhead(window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP) -> float:
    """The overhead of an unbounded region: ``(window / stride)²``."""
    return (window / (window - overlap)) ** 2


def _taper(size: int, overlap: int) -> np.ndarray:
    """1-D weight: 1 inside, a sin² ramp over ``overlap`` px at both ends, floored. Ramps of
    neighbouring windows overlap exactly and sum to 1 (sin² + cos²)."""
    w = np.ones(size, dtype=np.float64)
    r = min(overlap, size)
    if r:
        ramp = np.sin(np.pi * (np.arange(r) + 0.5) / (2 * overlap)) ** 2
        w[:r] = np.minimum(w[:r], ramp)
        w[size - r:] = np.minimum(w[size - r:], ramp[::-1])
    return np.maximum(w, WEIGHT_FLOOR)


@functools.lru_cache(maxsize=16)
def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """The 2-D blending weight of a window (float32, read-only): separable Hann-tapered (Tukey)."""
    w = np.outer(_taper(height, overlap), _taper(width, overlap)).astype(np.float32)
    w.flags.writeable = False
    return w


def resolve_window(window: int | None, overlap: int | None, multiple: int = 32) -> tuple[int, int]:
    """The effective (window, overlap), checked: both multiples of the model's input multiple."""
    window = DEFAULT_WINDOW if window is None else int(window)
    overlap = DEFAULT_OVERLAP if overlap is None else int(overlap)
    if window <= 0 or window % multiple:
        raise InputDataError(f"window {window} must be a positive multiple of the model's input multiple {multiple}")
    if overlap < 0 or overlap % multiple or overlap >= window:
        raise InputDataError(f"overlap {overlap} must be a multiple of {multiple} in [0, window={window}) "
                             f"(a multiple keeps every window at the same phase of the model's {multiple} px cycle)")
    return window, overlap


# ---------------------------------------------------------------------------------------------
# per-process caches: models (arrays and decoded chunks: the window reader's)
# ---------------------------------------------------------------------------------------------
_LOCK = threading.RLock()
_MODELS: dict[tuple[str, int, str], tuple[object, dict]] = {}
_MODEL_LOCKS: dict[tuple[str, int, str], threading.Lock] = {}


def clear_caches() -> None:
    """Forget cached arrays, chunks and models in this process (tests, or after rebuilding a cube)."""
    _clear_reader_caches()
    with _LOCK:
        _MODELS.clear()


def default_batch_size(device: str | None = None) -> int:
    """Windows per forward pass: ``DEFAULT_BATCH_SIZE`` of the device type (None: CUDA if this
    process has it, else CPU)."""
    kind = _resolve_device(device).type
    return DEFAULT_BATCH_SIZE.get(kind, DEFAULT_BATCH_SIZE["cpu"])


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _resolve_device(device: str | None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model(ckpt_path: str, mtime_ns: int, device: str | None):
    """The checkpoint's model on ``device``, loaded once per process (thread-safe)."""
    import torch

    from .train import build_model, load_checkpoint

    dev = _resolve_device(device)
    key = (ckpt_path, mtime_ns, str(dev))
    with _LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            return hit
        lock = _MODEL_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _LOCK:
            hit = _MODELS.get(key)
        if hit is not None:
            return hit
        ckpt = load_checkpoint(ckpt_path)
        model = build_model(ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
        model = model.to(dev, memory_format=torch.channels_last).eval()
        meta = {"stats": ckpt["stats"], "streams": list(ckpt["streams"]), "device": dev}
        with _LOCK:
            _MODELS[key] = (model, meta)
        return model, meta


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _threads_per_task(plan: "_Plan") -> int:
    """Torch threads for one task: the host's cores shared by every dask thread on that host
    (measured on 2 shared cores: 2 dask threads x 1 torch thread mapped the demo cube in 2.0 s,
    1 x 2 in 6.9-11 s)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return max(1, _cores() // max(1, plan.local_threads))
    given = dict(plan.worker_threads).get(worker.address)
    return given if given else max(1, _cores() // max(1, worker.state.nthreads))


def _worker_threads(client) -> tuple[tuple[str, int], ...]:
    """Torch threads per worker address: cores of its host // dask threads of all workers there."""
    workers = worker_table(client)
    try:
        cores = client.run(_cores)
    except Exception:  # pragma: no cover - a worker that cannot run it just gets the fallback
        return ()
    per_host: dict[str, int] = {}
    for w in workers.values():
        per_host[w.get("host", "")] = per_host.get(w.get("host", ""), 0) + int(w.get("nthreads", 1))
    return tuple(sorted((addr, max(1, int(cores.get(addr, 1)) // max(1, per_host.get(w.get("host", ""), 1))))
                        for addr, w in workers.items()))


# ---------------------------------------------------------------------------------------------
# the tasks
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What every task needs; small and picklable (no arrays, no model)."""

    cube: str
    reader: WindowReader
    shape: tuple[int, int]
    chunks: tuple[int, int]
    model: str
    model_mtime_ns: int
    device: str | None
    window: int
    overlap: int
    streams: tuple[str, ...]
    local_threads: int
    multiple: int = 32
    worker_threads: tuple[tuple[str, int], ...] = ()


def _window_inputs(plan: _Plan, row: int, col: int, h: int, w: int) -> tuple[dict[str, np.ndarray], bool]:
    """The model inputs of one window (the window reader's, as in training) and whether any pixel
    of it is mapped."""
    x, _, _ = plan.reader.inputs(0, row, col, h, w, skip_empty=True)
    return x, bool(x)


def _run_batch(plan: _Plan, windows: tuple[tuple[int, int, int, int], ...]) -> list[np.ndarray | None]:
    """Probabilities (float32, cropped to the cube) of a batch of same-sized windows; None for
    windows without a valid pixel. One forward pass for the batch."""
    import torch

    model, meta = _model(plan.model, plan.model_mtime_ns, plan.device)
    dev = meta["device"]
    samples, keep = [], []
    for row, col, h, w in windows:
        x, any_valid = _window_inputs(plan, row, col, h, w)
        keep.append(any_valid)
        if any_valid:
            samples.append(x)
    results: list[np.ndarray | None] = [None] * len(windows)
    if not samples:
        return results
    if dev.type == "cpu":
        torch.set_num_threads(_threads_per_task(plan))
    inputs = {name: torch.from_numpy(np.stack([x[name] for x in samples])).to(dev, non_blocking=True)
              .contiguous(memory_format=torch.channels_last) for name in plan.streams}
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
        prob = torch.sigmoid(model(inputs)["logits"].float())[:, 0].cpu().numpy()
    it = iter(prob)
    ny, nx = plan.shape
    for k, ((row, col, _, _), ok) in enumerate(zip(windows, keep)):
        if ok:
            p = next(it)
            # a copy, never a view: a view would keep the whole batch array alive while the window
            # waits for its output chunks
            results[k] = np.array(p[max(0, -row):ny - row, max(0, -col):nx - col], dtype=np.float32, copy=True)
    return results


def _chunk_bounds(plan: _Plan, i: int, j: int) -> tuple[int, int, int, int]:
    cy, cx = plan.chunks
    return i * cy, min((i + 1) * cy, plan.shape[0]), j * cx, min((j + 1) * cx, plan.shape[1])


def _assemble(plan: _Plan, i: int, j: int, contributions: list
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 probability, mapped pixels and (where the model uses a pre-event stream) pixels
    without a pre-event image, of output chunk (i, j) from the windows overlapping it."""
    y0, y1, x0, x1 = _chunk_bounds(plan, i, j)
    acc = np.zeros((y1 - y0, x1 - x0), np.float32)
    wsum = np.zeros_like(acc)
    for row, col, h, w, results, k in contributions:  # in window order: the float sum does not depend on chunking
        p = results[k]
        if p is None:
            continue
        # p covers rows [max(row, 0), min(row + h, H)) and the matching columns of the cube
        py0, px0 = max(row, 0), max(col, 0)
        r0, r1 = max(y0, row), min(y1, row + h)
        c0, c1 = max(x0, col), min(x1, col + w)
        if r0 >= r1 or c0 >= c1:
            continue
        wt = blend_weights(h, w, plan.overlap)[r0 - row:r1 - row, c0 - col:c1 - col]
        acc[r0 - y0:r1 - y0, c0 - x0:c1 - x0] += wt * p[r0 - py0:r1 - py0, c0 - px0:c1 - px0]
        wsum[r0 - y0:r1 - y0, c0 - x0:c1 - x0] += wt
    prob = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    valid, _, no_pre = plan.reader.masks(0, y0, x0, y1 - y0, x1 - x0)
    out = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[~valid] = 0
    return out, valid, no_pre


def _probability_block(plan: _Plan, i: int, j: int, contributions: list) -> np.ndarray:
    return _assemble(plan, i, j, contributions)[0]


def _write_block(out: str, name: str, y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
    import zarr

    zarr.open_array(f"{out}/{name}", mode="r+")[y0:y1, x0:x1] = block


def _write_chunk(plan: _Plan, out: str, i: int, j: int, contributions: list) -> tuple[int, int, int]:
    """Assemble, write (chunk-aligned) and mark output chunk (i, j) done; returns (i, j, valid px)."""
    prob, valid, no_pre = _assemble(plan, i, j, contributions)
    y0, y1, x0, x1 = _chunk_bounds(plan, i, j)
    _write_block(out, "probability", y0, y1, x0, x1, prob)
    _write_block(out, "valid", y0, y1, x0, x1, valid)
    if no_pre is not None:
        _write_block(out, "no_pre", y0, y1, x0, x1, no_pre)
    (Path(out) / "_done" / f"{i}.{j}").touch()  # written last: the chunk above is complete
    return i, j, int(valid.sum())


# ---------------------------------------------------------------------------------------------
# graph construction
# ---------------------------------------------------------------------------------------------
def _check_inputs(cube: Path, ckpt: dict, ckpt_path: Path):
    """Validate the cube against the checkpoint (every problem at once); returns the dataset."""
    from .cube import open_cube

    ds = open_cube(cube)
    streams = [str(s) for s in ckpt["streams"]]
    problems = []
    for s in streams:
        if s == "terrain":
            missing = [v for v in TERRAIN if v not in ds]
            if missing:
                problems.append(f"the model's terrain stream needs {' and '.join(missing)}, which the cube lacks")
        elif s not in ds:
            problems.append(f"the model's {s!r} stream needs a {s!r} composite, which the cube lacks")
    if "valid" not in ds:
        problems.append("the cube has no 'valid' mask")
    bands_ckpt = [str(b) for b in ckpt["bands"]]
    bands_cube = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
    missing_b = [b for b in bands_ckpt if b not in bands_cube]
    if any(s != "terrain" for s in streams) and missing_b:
        problems.append(f"the model was trained on bands {bands_ckpt}; the cube has {bands_cube} "
                        f"(missing {missing_b})")
    if problems:
        raise InputDataError(
            f"The checkpoint {ckpt_path} does not fit the cube {cube}: " + "; ".join(problems) +
            ". Use a model trained on bands and streams the cube has, or rebuild the cube with "
            "them (`landslide-dask cube --bands ...`).")
    dims = tuple(ds["valid"].dims)
    if dims != ("y", "x"):
        raise InputDataError(f"{cube}: 'valid' has dims {dims}, expected ('y', 'x'); rebuild the cube.")
    return ds


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _prepare(cube, model, window, overlap, batch_size, device, local_threads):
    """Load and check the inputs; returns (plan, batches, chunk grid, run fingerprint, extras)."""
    import zarr

    from .model import ModelConfig
    from .train import checkpoint_reader, load_checkpoint

    cube, model = Path(cube).resolve(), Path(model).resolve()

    ckpt = load_checkpoint(model)
    ds = _check_inputs(cube, ckpt, model)
    valid = zarr.open_group(str(cube), mode="r")["valid"]
    shape = tuple(int(v) for v in valid.shape)
    chunks = tuple(int(v) for v in valid.chunks)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    window, overlap = resolve_window(window, overlap, cfg.size_multiple)
    if batch_size is None:
        batch_size = default_batch_size(device)
    if batch_size < 1:
        raise InputDataError(f"batch_size must be >= 1, got {batch_size}")
    plan = _Plan(cube=str(cube), reader=checkpoint_reader(ckpt, [cube]), shape=shape, chunks=chunks,
                 model=str(model), model_mtime_ns=model.stat().st_mtime_ns, device=device, window=window,
                 overlap=overlap, streams=tuple(str(s) for s in ckpt["streams"]), local_threads=local_threads,
                 multiple=cfg.size_multiple)
    batches = _batches(windows_of(shape, window, overlap, cfg.size_multiple), batch_size)
    run = {"format": PREDICTION_FORMAT, "cube": str(cube), "shape": list(shape), "chunks": list(chunks),
           "model": str(model), "model_sha256": _file_sha256(model), "window": window, "overlap": overlap,
           "batch_size": int(batch_size)}
    extra = {"ckpt": ckpt, "ds": ds, "config": cfg}
    return plan, batches, run, extra


def _batches(windows: list[tuple[int, int, int, int]], batch_size: int) -> list[tuple]:
    """Windows grouped into batches of up to ``batch_size`` consecutive windows of one row and one
    size, in row-major order. Batches never mix rows, so output chunks are finished row by row and
    the window results they wait for stay bounded by a strip of the region, whatever its height
    (grouping all same-sized windows of the region first left the trimmed last column until the
    end, and every row's windows waiting for it)."""
    batches: list[tuple] = []
    run: list[tuple[int, int, int, int]] = []
    for win in windows:
        if run and (len(run) == batch_size or win[0] != run[0][0] or win[2:] != run[0][2:]):
            batches.append(tuple(run))
            run = []
        run.append(win)
    if run:
        batches.append(tuple(run))
    return batches


def _contributions(plan: _Plan, batches: list, todo: list[tuple[int, int]]
                   ) -> dict[tuple[int, int], list[tuple[int, int, int, int, int, int]]]:
    """For each chunk of ``todo``: ``(row, col, h, w, batch, k)`` of every window overlapping it, in
    window order (row-major), ``batch``/``k`` locating the window in ``batches``."""
    where = {win: (b, k) for b, batch in enumerate(batches) for k, win in enumerate(batch)}
    ys = sorted({(r, h) for r, _, h, _ in where})
    xs = sorted({(c, w) for _, c, _, w in where})
    out = {}
    for i, j in todo:
        y0, y1, x0, x1 = _chunk_bounds(plan, i, j)
        out[(i, j)] = [(r, c, h, w, *where[(r, c, h, w)]) for r, h in ys if r < y1 and r + h > y0
                       for c, w in xs if c < x1 and c + w > x0]
    return out


def _graph(plan: _Plan, batches: list, todo: list[tuple[int, int]]) -> list:
    """Delayed probability blocks, one per chunk in ``todo``, for :func:`lazy_probability`: each
    batch is one task (each window computed once), each block sums the batches it overlaps."""
    from dask import delayed
    from dask.base import tokenize

    tok = tokenize(plan, batches)
    batch_tasks: dict[int, object] = {}

    def batch_task(b: int):
        if b not in batch_tasks:
            batch_tasks[b] = delayed(_run_batch, pure=True)(plan, batches[b], dask_key_name=f"predict-batch-{tok}-{b}")
        return batch_tasks[b]

    return [delayed(_probability_block, pure=True)(
        plan, i, j, [(r, c, h, w, batch_task(b), k) for r, c, h, w, b, k in contrib],
        dask_key_name=f"predict-block-{tok}-{i}-{j}")
        for (i, j), contrib in _contributions(plan, batches, todo).items()]


def _chunk_grid_of(shape: tuple[int, int], chunks: tuple[int, int]) -> list[tuple[int, int]]:
    ny, nx = -(-shape[0] // chunks[0]), -(-shape[1] // chunks[1])
    return [(i, j) for i in range(ny) for j in range(nx)]


def _chunk_grid(plan: _Plan) -> list[tuple[int, int]]:
    return _chunk_grid_of(plan.shape, plan.chunks)


def _local_threads(device: str | None) -> int:
    """Dask threads of the local scheduler: up to 4 concurrent batches, the cores split among them."""
    return max(1, min(_cores(), 4))


def lazy_probability(cube: str | Path, model: str | Path, *, window: int | None = None,
                     overlap: int | None = None, batch_size: int | None = None, device: str | None = None):
    """The blended probability (uint8, 0 where invalid) as a lazy dask array on the cube's chunks —
    the same computation as :func:`predict`, without writing (benchmarks, in-memory checks)."""
    import dask.array as da

    plan, batches, _, _ = _prepare(cube, model, window, overlap, batch_size, device, _local_threads(device))
    grid = _chunk_grid(plan)
    tasks = dict(zip(grid, _graph(plan, batches, grid)))
    ny, nx = grid[-1][0] + 1, grid[-1][1] + 1
    rows = []
    for i in range(ny):
        row = []
        for j in range(nx):
            y0, y1, x0, x1 = _chunk_bounds(plan, i, j)
            row.append(da.from_delayed(tasks[(i, j)], shape=(y1 - y0, x1 - x0), dtype=np.uint8))
        rows.append(row)
    return da.block(rows)


# ---------------------------------------------------------------------------------------------
# the output store
# ---------------------------------------------------------------------------------------------
def _done_chunks(out: Path) -> set[tuple[int, int]]:
    d = out / "_done"
    done = set()
    if d.is_dir():
        for f in d.iterdir():
            parts = f.name.split(".")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                done.add((int(parts[0]), int(parts[1])))
    return done


def _copy_coord(src, dst, name: str) -> None:
    if name not in src:
        return
    a = src[name]
    arr = dst.create_array(name, shape=a.shape, dtype=a.dtype, chunks=a.shape,
                           fill_value=a.fill_value, dimension_names=a.metadata.dimension_names,
                           attributes=dict(a.attrs))
    if a.shape:
        arr[...] = a[...]
    else:
        arr[()] = a[()]


def _create_output(out: Path, plan: _Plan, run: dict, attrs: dict) -> None:
    """Create the empty prediction group atomically (built beside ``out``, then renamed)."""
    import zarr

    tmp = out.with_name(out.name + ".init")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        src = zarr.open_group(plan.cube, mode="r")
        for name in ("y", "x", "spatial_ref"):
            _copy_coord(src, g, name)
        coords = " ".join(n for n in ("spatial_ref",) if n in src)
        common = {"grid_mapping": "spatial_ref", "coordinates": coords} if coords else {}
        g.create_array("probability", shape=plan.shape, chunks=plan.chunks, dtype="uint8", fill_value=0,
                       dimension_names=("y", "x"),
                       attributes={**common, "long_name": "landslide probability x 255 (0 where not valid)",
                                   "units": "1/255", "valid_range": [0, 255]})
        g.create_array("valid", shape=plan.shape, chunks=plan.chunks, dtype="bool", fill_value=False,
                       dimension_names=("y", "x"),
                       attributes={**common, "long_name": "mapped: the inputs the model needs are there"})
        if "pre" in plan.streams:
            mapped = "mapped from post-event imagery and terrain" if not plan.reader.require_pre else \
                "not mapped (the model was trained without pre-event dropout)"
            g.create_array("no_pre", shape=plan.shape, chunks=plan.chunks, dtype="bool", fill_value=False,
                           dimension_names=("y", "x"),
                           attributes={**common, "long_name": f"no pre-event image: {mapped}"})
        g.attrs.update({**attrs, "run": run, "complete": False})
        zarr.open_group(str(tmp / "_done"), mode="w", zarr_format=3)  # marker files live here while running
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prediction_attrs(plan: _Plan, extra: dict, run: dict) -> dict:
    from .model import receptive_field_margin

    ds, ckpt = extra["ds"], extra["ckpt"]
    keep = ("crs", "epsg", "transform", "resolution", "event_date", "inventory")
    attrs = {k: ds.attrs[k] for k in keep if k in ds.attrs}
    attrs.update({
        "landslide_dask_version": __version__, "product": "landslide probability",
        "cube": plan.cube, "model": plan.model, "model_sha256": run["model_sha256"],
        "threshold": float(ckpt.get("threshold", 0.5)), "bands": [str(b) for b in ckpt["bands"]],
        "streams": list(plan.streams), "window": plan.window, "overlap": plan.overlap,
        "stride": plan.window - plan.overlap, "batch_size": run["batch_size"],
        "blending": f"Hann-tapered (Tukey) weights, ramp {plan.overlap} px, floor {WEIGHT_FLOOR}",
        "grid_origin": [grid_origin(plan.overlap, plan.multiple)] * 2,
        "windows": len(windows_of(plan.shape, plan.window, plan.overlap, plan.multiple)),
        "overhead": round(overhead(plan.shape, plan.window, plan.overlap, plan.multiple), 4),
        "overhead_asymptotic": round(asymptotic_overhead(plan.window, plan.overlap), 4),
        "receptive_field_margin": receptive_field_margin(extra["config"]),
        "probability_scale": 1.0 / 255.0,
        "chunks_total": len(_chunk_grid(plan)),
    })
    return attrs


def _open_existing(out: Path, run: dict, overwrite: bool) -> str:
    """'new', 'resume' or 'complete' for an output folder; refuses foreign or mismatched ones."""
    import zarr

    if not out.exists():
        return "new"
    if overwrite:
        shutil.rmtree(out)
        return "new"
    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception:
        attrs = {}
    old = attrs.get("run")
    if not isinstance(old, dict):
        raise InputDataError(f"{out} exists and is not a landslide-dask prediction: choose another --out, or "
                             "pass overwrite=True (--overwrite) to replace it.")
    diff = {k: (old.get(k), v) for k, v in run.items() if old.get(k) != v}
    if diff:
        text = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise InputDataError(f"{out} holds a prediction made with other arguments ({text}). Rerun with the "
                             "same arguments to resume it, choose another --out, or pass overwrite=True "
                             "(--overwrite) to start again.")
    return "complete" if attrs.get("complete") is True else "resume"


def _finish(out: Path, n_total: int) -> None:
    import zarr

    g = zarr.open_group(str(out), mode="r+")
    done = _done_chunks(out)
    if len(done) != n_total:  # pragma: no cover - guarded by the caller
        raise RuntimeError(f"{len(done)} of {n_total} chunks done")
    g.attrs.update({"complete": True, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    shutil.rmtree(out / "_done", ignore_errors=True)  # the markers served their purpose


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def predict(cube: str | Path, model: str | Path, out: str | Path, *, client=None, window: int | None = None,
            overlap: int | None = None, batch_size: int | None = None, device: str | None = None,
            progress: bool = True, overwrite: bool = False) -> Path:
    """Map landslide probability over a cube with blended overlapping windows; resumable.

    ``client``: a ``distributed.Client`` (else dask's local threaded scheduler with up to 4
    threads). ``window``, ``overlap``: pixels, multiples of the model's input multiple (32);
    defaults ``DEFAULT_WINDOW`` and ``DEFAULT_OVERLAP``. ``batch_size``: windows per forward pass
    (None: :func:`default_batch_size` of the device the workers use).
    ``device``: ``"cpu"``, ``"cuda"``...; None picks CUDA on workers that have it. An existing
    ``out`` made with the same arguments is resumed (finished chunks are skipped); with other
    arguments it is an error unless ``overwrite``. Returns ``out``; open it with
    :func:`open_prediction`. Output: zarr v3 group with ``probability`` (uint8, p x 255, 0 where
    not valid), ``valid``, the cube's ``y``/``x``/``spatial_ref`` and attrs (crs, epsg,
    transform, model, threshold, window, overlap, overhead, ...).
    """
    out = Path(out).resolve()
    local_threads = _local_threads(device)
    if batch_size is None and device is None and client is not None:
        batch_size = default_batch_size("cuda" if any(client.run(_has_cuda).values()) else "cpu")
    plan, batches, run, extra = _prepare(cube, model, window, overlap, batch_size, device, local_threads)
    if client is not None:
        plan = dataclasses.replace(plan, worker_threads=_worker_threads(client))
    if overwrite or not out.exists():
        _check_any_valid(plan)  # before anything is created or replaced
    state = _open_existing(out, run, overwrite)
    grid = _chunk_grid(plan)
    if state == "complete":
        log.info("%s is already complete", out)
        return out
    if state == "new":
        _create_output(out, plan, run, _prediction_attrs(plan, extra, run))
    done = _done_chunks(out)
    todo = [ij for ij in grid if ij not in done]
    if done:
        log.info("resuming %s: %d of %d chunks already done", out, len(done), len(grid))
    bar = None
    if progress:
        from .logs import progress_bar

        bar = progress_bar(total=len(grid), initial=len(grid) - len(todo), desc="predict", unit="chunk",
                           mininterval=1.0)
    try:
        if client is not None:
            _stream(plan, batches, todo, str(out), _DistributedPool(client), bar)
        else:
            with _ThreadPool(local_threads) as pool:
                _stream(plan, batches, todo, str(out), pool, bar)
    finally:
        if bar is not None:
            bar.close()
    missing = [ij for ij in grid if ij not in _done_chunks(out)]
    if missing:  # pragma: no cover - every write task marks its chunk
        raise RuntimeError(f"{len(missing)} chunks of {out} were not written; rerun predict")
    _finish(out, len(grid))
    return out


# ---------------------------------------------------------------------------------------------
# streaming execution: strips of the region in flight, never the whole region
# ---------------------------------------------------------------------------------------------
class _ThreadPool:
    """This process's threads (the default without a client)."""

    def __init__(self, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="predict")

    def submit(self, key: str, fn, *args):
        return self._pool.submit(fn, *args)

    @staticmethod
    def value(fut):
        return fut.result()  # batches are done before a write is submitted: no waiting

    @staticmethod
    def check(fut) -> None:
        fut.result()  # raises the task's error

    @staticmethod
    def wait_any(futures) -> set:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(futures, return_when=FIRST_COMPLETED).done

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self._pool.shutdown(wait=True, cancel_futures=True)
        return False


class _DistributedPool:
    """A ``distributed.Client``: results stay on the workers; writes receive the batch futures, so
    window results move only from the worker that computed them to the one writing the chunk."""

    def __init__(self, client) -> None:
        self.client = client
        self.threads = max(1, sum(client.nthreads().values()))

    def submit(self, key: str, fn, *args):
        return self.client.submit(fn, *args, key=key, pure=False)

    @staticmethod
    def value(fut):
        return fut

    @staticmethod
    def check(fut) -> None:
        if fut.status != "finished":  # never .result() a finished batch: it would ship its windows here
            fut.result()              # raises the task's error

    @staticmethod
    def wait_any(futures) -> set:
        from distributed import wait

        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def cancel(self, futures) -> None:
        if futures:
            self.client.cancel(list(futures))


def _stream(plan: _Plan, batches: list, todo: list[tuple[int, int]], out: str, pool, bar) -> None:
    """Compute and write the chunks of ``todo`` strip by strip.

    Batches are submitted in row-major order for the chunk rows up to ``lookahead`` rows ahead of
    the first unfinished one; a chunk's write is submitted as soon as every batch it overlaps is
    done, and a batch's result is released when the last chunk needing it has been submitted. So
    the window results held at once are those of a few chunk rows (a strip across the region, not
    its height), and the workers are never idle for want of submitted work (``lookahead`` keeps at
    least twice as many batches in flight as there are threads). Errors cancel what is pending and
    propagate (chunks already written stay marked: a rerun resumes)."""
    contrib = _contributions(plan, batches, todo)
    need = {ij: {b for *_, b, _ in c} for ij, c in contrib.items()}
    chunks_of: dict[int, list[tuple[int, int]]] = {}
    for ij, bs in need.items():
        for b in bs:
            chunks_of.setdefault(b, []).append(ij)
    by_row: dict[int, list[tuple[int, int]]] = {}
    for ij in todo:
        by_row.setdefault(ij[0], []).append(ij)
    rows = sorted(by_row)
    lookahead = max(1, math.ceil(2 * pool.threads / max(1, len(chunks_of) // max(1, len(rows)))))
    tok = hashlib.sha1(repr((plan, out)).encode()).hexdigest()[:12]
    users = {b: len(ijs) for b, ijs in chunks_of.items()}   # chunks whose write is not submitted yet
    batch_futs: dict[int, object] = {}                      # submitted and still needed
    done: set[int] = set()
    waiting: dict[tuple[int, int], set[int]] = {}           # submitted chunk rows: batches not done
    running: dict[object, tuple[str, object]] = {}
    left = {r: len(by_row[r]) for r in rows}                # chunks of a row not written yet
    state = {"submitted": 0, "first": 0}                    # chunk rows submitted / fully written

    def submit_write(ij) -> None:
        i, j = ij
        args = [(r, c, h, w, pool.value(batch_futs[b]), k) for r, c, h, w, b, k in contrib[ij]]
        running[pool.submit(f"predict-write-{tok}-{i}-{j}", _write_chunk, plan, out, i, j, args)] = ("write", ij)
        del waiting[ij]
        for b in need[ij]:
            users[b] -= 1
            if not users[b]:
                del batch_futs[b]   # the write holds the result now

    def submit_rows() -> None:
        while state["submitted"] < len(rows) and state["submitted"] <= state["first"] + lookahead:
            for ij in by_row[rows[state["submitted"]]]:
                for b in sorted(need[ij] - done - batch_futs.keys()):
                    batch_futs[b] = pool.submit(f"predict-batch-{tok}-{b}", _run_batch, plan, batches[b])
                    running[batch_futs[b]] = ("batch", b)
                waiting[ij] = need[ij] - done
                if not waiting[ij]:
                    submit_write(ij)
            state["submitted"] += 1

    try:
        submit_rows()
        while running:
            for f in pool.wait_any(list(running)):
                kind, what = running.pop(f)
                pool.check(f)   # a task's error (e.g. a corrupt chunk) is raised here
                if kind == "batch":
                    done.add(what)
                    for ij in chunks_of[what]:
                        if ij in waiting:
                            waiting[ij].discard(what)
                            if not waiting[ij]:
                                submit_write(ij)
                else:
                    left[what[0]] -= 1
                    if bar is not None:
                        bar.update(1)
            while state["first"] < len(rows) and not left[rows[state["first"]]]:
                state["first"] += 1
            submit_rows()
    except BaseException:
        pool.cancel(list(running))
        raise


def _check_any_valid(plan: _Plan) -> None:
    import dask.array as da
    import zarr

    g = zarr.open_group(plan.cube, mode="r")
    valid = da.from_zarr(g["valid"])
    needs_pre = plan.reader.require_pre and "pre" in plan.streams and "pre_valid" in g
    if needs_pre:
        valid = valid & da.from_zarr(g["pre_valid"])
    try:
        any_valid = bool(valid.any().compute(scheduler="threads"))
    except Exception as exc:
        raise InputDataError(f"Reading the 'valid' mask of {plan.cube} failed ({type(exc).__name__}: {exc}). "
                             "The cube is corrupt: rebuild it with `landslide-dask cube`.") from exc
    if not any_valid and needs_pre:
        raise InputDataError(f"{plan.cube} has no pixel with a pre-event image, and {plan.model} was trained "
                             "without pre-event dropout, so it cannot map any: use a model trained with "
                             "--pre-dropout, or rebuild the cube with a wider --pre-days window.")
    if not any_valid:
        raise InputDataError(f"{plan.cube} has no valid pixel (its 'valid' mask is all False): nothing to map. "
                             "Check the AOI and the pre/post windows (clouds?) and rebuild the cube.")


def coverage(pred) -> dict[str, int]:
    """Pixel counts of an opened prediction: ``mapped``, ``no_pre`` (no pre-event image) and
    ``no_pre_mapped`` / ``no_pre_unmapped`` (how the model handled those)."""
    import dask

    parts = {"mapped": pred["valid"].data.sum()}
    if "no_pre" in pred:
        parts["no_pre"] = pred["no_pre"].data.sum()
        parts["no_pre_mapped"] = (pred["no_pre"].data & pred["valid"].data).sum()
    (got,) = dask.compute(parts)
    out = {k: int(v) for k, v in got.items()}
    if "no_pre" in out:
        out["no_pre_unmapped"] = out["no_pre"] - out["no_pre_mapped"]
    return out


def open_prediction(out: str | Path):
    """Open a finished prediction lazily (xarray); an unfinished one is refused."""
    import xarray as xr
    import zarr

    out = Path(out)
    if not out.exists():
        raise InputDataError(f"No prediction at {out}: run `landslide-dask predict` first.")
    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception as exc:
        raise InputDataError(f"{out} is not a readable prediction ({exc}).") from exc
    if "run" not in attrs:
        raise InputDataError(f"{out} is not a landslide-dask prediction.")
    if attrs.get("complete") is not True:
        n = len(_done_chunks(out))
        raise InputDataError(f"{out} is an unfinished prediction ({n} of {attrs.get('chunks_total', '?')} chunks "
                             "written): rerun `landslide-dask predict` with the same arguments to finish it.")
    return xr.open_zarr(out, consolidated=False)


def export_cog(pred: str | Path, out_tif: str | Path, *, blocksize: int = 512, compress: str = "DEFLATE",
               overview_resampling: str = "average") -> Path:
    """Write the probability as a Cloud-Optimized GeoTIFF (GDAL's COG driver), one uint8 band.

    Values are exactly the zarr's (p x 255, 0..255). Invalid pixels are 0 **and** masked by an
    internal per-dataset mask band (GDAL mask, ``read(masked=True)``), not by a nodata value:
    0 is also a legitimate probability, and a nodata value of 255 would have to clip the top
    level. Overviews (``overview_resampling``) are built by the COG driver. Memory stays at one
    chunk: the data are streamed through a tiled temporary GeoTIFF.
    """
    import rasterio
    import rasterio.shutil
    from rasterio.transform import Affine
    from rasterio.windows import Window

    import zarr

    pred, out_tif = Path(pred), Path(out_tif)
    open_prediction(pred)  # refuses unfinished output
    g = zarr.open_group(str(pred), mode="r")
    prob, valid, attrs = g["probability"], g["valid"], dict(g.attrs)
    h, w = prob.shape
    crs = attrs.get("crs") or (f"EPSG:{attrs['epsg']}" if attrs.get("epsg") else None)
    transform = Affine(*attrs["transform"][:6]) if "transform" in attrs else Affine.identity()
    out_tif.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tif.with_name(out_tif.name + ".tmp.tif")
    part = out_tif.with_name(out_tif.name + ".partial")
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs, transform=transform,
                   tiled=True, blockxsize=blocksize, blockysize=blocksize, compress="DEFLATE", BIGTIFF="IF_SAFER")
    cy, cx = prob.chunks
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.update_tags(product="landslide probability x 255", threshold=str(attrs.get("threshold")),
                                model=str(attrs.get("model")), window=str(attrs.get("window")),
                                overlap=str(attrs.get("overlap")))
                for y0 in range(0, h, cy):
                    for x0 in range(0, w, cx):
                        y1, x1 = min(y0 + cy, h), min(x0 + cx, w)
                        win = Window(x0, y0, x1 - x0, y1 - y0)
                        dst.write(prob[y0:y1, x0:x1], 1, window=win)
                        dst.write_mask(np.where(valid[y0:y1, x0:x1], 255, 0).astype(np.uint8), window=win)
            rasterio.shutil.copy(tmp, part, driver="COG", BLOCKSIZE=blocksize, COMPRESS=compress,
                                 PREDICTOR="YES" if compress.upper() in ("DEFLATE", "ZSTD", "LZW") else "NO",
                                 OVERVIEWS="AUTO", RESAMPLING=overview_resampling.upper(), BIGTIFF="IF_SAFER")
        from rio_cogeo.cogeo import cog_validate

        ok, errors, _ = cog_validate(str(part))
        if not ok:  # pragma: no cover - GDAL's COG driver writes valid COGs
            raise RuntimeError(f"GDAL wrote an invalid COG for {out_tif}: {errors}")
        part.replace(out_tif)  # only a validated file takes the final name
    finally:
        for f in (tmp, tmp.with_name(tmp.name + ".msk"), part):
            f.unlink(missing_ok=True)
    return out_tif
