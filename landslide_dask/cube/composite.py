"""Cloud-masked median composites: per-date mosaics of granules, then a median over clear dates."""

from __future__ import annotations

import numpy as np

__all__ = ["SCL_NOT_CLEAR", "clear_mask", "sorting_network", "median_composite", "composite_block"]

# Scene classification (Sentinel-2 L2A SCL) classes that are not a clear view of the ground.
SCL_NOT_CLEAR = (0, 1, 3, 8, 9, 10)  # no data, saturated, cloud shadow, cloud medium/high, cirrus


def clear_mask(scl: np.ndarray, not_clear: tuple[int, ...] = SCL_NOT_CLEAR) -> np.ndarray:
    """True where a pixel is a clear view of the ground (one SIMD comparison per class: faster
    than ``np.isin``'s sort for a handful of classes)."""
    cloudy = np.zeros(scl.shape, dtype=bool)
    for c in not_clear:
        cloudy |= scl == c
    return ~cloudy


def sorting_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort as compare-exchange pairs (i < j) for ``n`` inputs.

    Why a network: sorting a few dates per pixel along a strided axis is ``np.sort``'s worst case,
    while a compare-exchange is one ``np.minimum`` and one ``np.maximum`` over whole planes
    (19 of them sort 8 dates, 63 sort 16). Tested exhaustively (0-1 principle) up to 16 inputs.
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _sorted_planes(planes: list[np.ndarray]) -> list[np.ndarray]:
    """Sort a list of equal-shaped arrays element-wise, in place, by the network: planes[0] smallest."""
    tmp = np.empty_like(planes[0])
    for i, j in sorting_network(len(planes)):
        a, b = planes[i], planes[j]
        np.minimum(a, b, out=tmp)
        np.maximum(a, b, out=b)
        planes[i], tmp = tmp, a
    return planes


def median_composite(refl: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Median over time of the clear, non-zero observations.

    refl: (time, band, y, x) uint16 DN with 0 = no data; clear: (time, y, x) bool.
    Returns (band, y, x) uint16, the median rounded half to even, 0 where no date was clear.
    This is the definition the tests check against ``np.nanmedian``.

    Computed in integers, with element-wise arithmetic only (``np.where`` and fancy indexing cost
    30-50x a SIMD pass on these arrays; ``benchmarks/cube.py`` times the whole against
    ``np.nanmedian``). A pixel with ``n`` observations that count has ``t - n`` that do not; these
    are padded, per pixel, with ``a`` zeros (below every real DN >= 1) and ``t - n - a`` 65535s
    (not below any), ``a`` chosen so that after an element-wise sort of the dates (a sorting
    network) the lower median of the ``n`` lands at the fixed index ``(t - 1) // 2`` and the upper
    one (even ``n``) right after it. An even count averages the two and rounds half to even, as
    ``np.rint`` of the float median does.
    """
    t = refl.shape[0]
    mid = (t - 1) // 2
    counted = [(refl[k] != 0) & clear[k][None] for k in range(t)]
    n = np.zeros(refl.shape[1:], dtype=np.uint8 if t < 256 else np.uint16)
    for c in counted:
        n += c
    low_pads = (mid + 1) - ((n + 1) >> 1)  # = mid - (n - 1) // 2, the zeros in front of the n
    seen = np.zeros_like(n)  # pads placed so far: the first low_pads are zeros
    planes = []
    for k in range(t):
        c = counted[k]
        plane = refl[k] * c
        plane |= ((seen >= low_pads) & ~c) * np.uint16(65535)
        planes.append(plane)
        seen += ~c
    _sorted_planes(planes)
    lo = planes[mid]
    hi = planes[mid + 1] if t > 1 else lo
    odd = (n & 1).astype(np.uint16)
    total = lo.astype(np.uint32)
    total += hi + (lo - hi) * odd  # odd n: lo twice; uint16 wrap-around cancels exactly
    half = total >> 1
    med = half + (total & half & 1)  # x.5 rounds to the even neighbour
    med *= n > 0
    return med.astype(np.uint16)


def composite_block(refl: np.ndarray, scl: np.ndarray, is_pre: np.ndarray, want_pre: bool) -> np.ndarray:
    """One spatial chunk: pick the pre- or post-event dates and composite them."""
    sel = is_pre if want_pre else ~is_pre
    if not sel.any():
        return np.zeros(refl.shape[1:], dtype=np.uint16)
    return median_composite(refl[sel], clear_mask(scl[sel]))
