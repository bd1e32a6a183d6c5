"""The global window grid of inference and its blending weights.

* **One grid of windows**, anchored to the cube's origin: windows of ``window`` px every
  ``stride = window - overlap`` px, the first starting at ``-overlap / 2`` rounded to the model's
  input multiple (every window then has the phase of a whole-image pass), as many as needed to
  cover the cube; the last one per axis is trimmed to the smallest multiple reaching the cube's end
  (its start stays on the grid), which keeps the overhead of modest cubes low. Input outside the
  cube is zero and invalid. The grid depends only on the cube's shape, the window and the overlap,
  never on the chunking, so neither does the result.
* **Blending**: each window's probabilities are weighted by a separable Hann-tapered (Tukey)
  window: 1 in the interior, a ``sin²`` ramp over the ``overlap`` px at each edge, floored at
  ``WEIGHT_FLOOR``. Neighbouring ramps overlap exactly, so the weights of all windows covering a
  pixel sum to 1 (a cross-fade, no seam) and every pixel is dominated by a window that sees at
  least ``overlap / 2`` px of context on every side. (A full Hann or nnU-Net Gaussian is designed
  for 50 % overlap; at the ~10 % overlap that keeps the overhead <= 1.3 its weights in the overlap
  strips are tiny, while the taper is exactly a partition of unity.)
* **Overhead** (pixels through the model / pixels written) is :func:`overhead`; for large regions
  it tends to ``(window / stride)²``. The defaults were chosen by measurement (README, "Inference").
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import UsageError
from ..train.config import INPUT_MULTIPLE
from .config import DEFAULT_OVERLAP, DEFAULT_WINDOW

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_OVERLAP",
    "WEIGHT_FLOOR",
    "grid_origin",
    "axis_windows",
    "windows_of",
    "overhead",
    "asymptotic_overhead",
    "blend_weights",
    "resolve_window",
    "batches_of",
    "chunk_grid",
    "chunk_bounds",
    "contributions",
]

WEIGHT_FLOOR = 1e-3

Window = tuple[int, int, int, int]  # row, col, height, width (cube pixels; row/col may be negative)


def grid_origin(overlap: int, multiple: int = INPUT_MULTIPLE) -> int:
    """Start of the first window: ``-overlap / 2`` rounded towards 0 to a multiple of ``multiple``, so
    every window sits at the same phase of the model's ``multiple``-px cycle as a whole-image pass
    (measured: a 16 px phase shift alone changes ~0.4 % of the pixels by more than 2/255)."""
    return -((overlap // 2) // multiple) * multiple


def axis_windows(n: int, window: int, overlap: int, multiple: int = INPUT_MULTIPLE) -> list[tuple[int, int]]:
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


def windows_of(shape: tuple[int, ...], window: int, overlap: int, multiple: int = INPUT_MULTIPLE) -> list[Window]:
    """All windows ``(row, col, height, width)`` of a ``(..., H, W)`` region, row-major."""
    ys = axis_windows(int(shape[-2]), window, overlap, multiple)
    xs = axis_windows(int(shape[-1]), window, overlap, multiple)
    return [(r, c, h, w) for r, h in ys for c, w in xs]


def overhead(
    shape: tuple[int, ...], window: int | None = None, overlap: int | None = None, multiple: int = INPUT_MULTIPLE
) -> float:
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
        w[size - r :] = np.minimum(w[size - r :], ramp[::-1])
    return np.maximum(w, WEIGHT_FLOOR)


@functools.lru_cache(maxsize=16)
def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """The 2-D blending weight of a window (float32, read-only): separable Hann-tapered (Tukey)."""
    w = np.outer(_taper(height, overlap), _taper(width, overlap)).astype(np.float32)
    w.flags.writeable = False
    return w


def resolve_window(window: int | None, overlap: int | None, multiple: int = INPUT_MULTIPLE) -> tuple[int, int]:
    """The effective (window, overlap), checked: both multiples of the model's input multiple."""
    window = DEFAULT_WINDOW if window is None else int(window)
    overlap = DEFAULT_OVERLAP if overlap is None else int(overlap)
    if window <= 0 or window % multiple:
        raise UsageError(f"window {window} must be a positive multiple of the model's input multiple {multiple}")
    if overlap < 0 or overlap % multiple or overlap >= window:
        raise UsageError(
            f"overlap {overlap} must be a multiple of {multiple} in [0, window={window}) "
            f"(a multiple keeps every window at the same phase of the model's {multiple} px cycle)"
        )
    return window, overlap


def batches_of(windows: list[Window], batch_size: int) -> list[tuple[Window, ...]]:
    """Windows grouped into batches of up to ``batch_size`` consecutive windows of one row and one
    size, in row-major order. Batches never mix rows, so output chunks are finished row by row and
    the window results they wait for stay bounded by a strip of the region, whatever its height
    (grouping all same-sized windows of the region first left the trimmed last column until the
    end, and every row's windows waiting for it)."""
    batches: list[tuple[Window, ...]] = []
    run: list[Window] = []
    for win in windows:
        if run and (len(run) == batch_size or win[0] != run[0][0] or win[2:] != run[0][2:]):
            batches.append(tuple(run))
            run = []
        run.append(win)
    if run:
        batches.append(tuple(run))
    return batches


def chunk_grid(shape: tuple[int, int], chunks: tuple[int, int]) -> list[tuple[int, int]]:
    """Indices ``(i, j)`` of the output chunks of a region, row-major."""
    ny, nx = -(-shape[0] // chunks[0]), -(-shape[1] // chunks[1])
    return [(i, j) for i in range(ny) for j in range(nx)]


def chunk_bounds(shape: tuple[int, int], chunks: tuple[int, int], i: int, j: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of output chunk (i, j)."""
    cy, cx = chunks
    return i * cy, min((i + 1) * cy, shape[0]), j * cx, min((j + 1) * cx, shape[1])


def contributions(
    shape: tuple[int, int], chunks: tuple[int, int], batches: list[tuple[Window, ...]], todo: list[tuple[int, int]]
) -> dict[tuple[int, int], list[tuple[int, int, int, int, int, int]]]:
    """For each chunk of ``todo``: ``(row, col, h, w, batch, k)`` of every window overlapping it, in
    window order (row-major), ``batch``/``k`` locating the window in ``batches``."""
    where = {win: (b, k) for b, batch in enumerate(batches) for k, win in enumerate(batch)}
    ys = sorted({(r, h) for r, _, h, _ in where})
    xs = sorted({(c, w) for _, c, _, w in where})
    out = {}
    for i, j in todo:
        y0, y1, x0, x1 = chunk_bounds(shape, chunks, i, j)
        out[(i, j)] = [
            (r, c, h, w, *where[(r, c, h, w)])
            for r, h in ys
            if r < y1 and r + h > y0
            for c, w in xs
            if c < x1 and c + w > x0
        ]
    return out
