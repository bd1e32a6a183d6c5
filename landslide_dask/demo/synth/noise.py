"""Procedural noise: pure functions of position, vectorised numpy.

Every field of a world (terrain, land cover, clouds, haze, sensor noise) is built from these:
gradient noise on a hashed integer lattice, its fractal and ridged sums, a 32-bit hash of lattice
coordinates, and smooth fields sampled on a global lattice. None of them depends on the tile it is
evaluated for, which is why any tile of a world can be computed alone and overlapping tiles agree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = ["gradient_noise", "fbm", "ridged", "hash_u32", "u01", "smoothstep", "lattice_sample"]


_PERM_N = 1024
_GX = np.array([1, -1, 0, 0, 0.7071, -0.7071, 0.7071, -0.7071], dtype=np.float32)
_GY = np.array([0, 0, 1, -1, 0.7071, 0.7071, -0.7071, -0.7071], dtype=np.float32)


@lru_cache(maxsize=512)
def _perm(seed: int) -> np.ndarray:
    """A seeded permutation table (the classic Perlin hash, period 1024 lattice cells)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 7]).permutation(_PERM_N).astype(np.int64)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * np.float32(6) - np.float32(15)) + np.float32(10))


def gradient_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """2-D gradient (Perlin) noise in about [-1, 1]; x, y in lattice units (float64)."""
    p = _perm(seed)
    m = _PERM_N - 1
    fx0, fy0 = np.floor(x), np.floor(y)
    fx = (x - fx0).astype(np.float32)
    fy = (y - fy0).astype(np.float32)
    ix = fx0.astype(np.int64)
    iy = fy0.astype(np.int64)
    px0, px1 = p[ix & m], p[(ix + 1) & m]

    def corner(px: np.ndarray, dy: int, ox: np.ndarray, oy: np.ndarray) -> np.ndarray:
        h = p[(px + iy + dy) & m] & 7
        return _GX[h] * ox + _GY[h] * oy

    fx1, fy1 = fx - np.float32(1), fy - np.float32(1)
    n00 = corner(px0, 0, fx, fy)
    n10 = corner(px1, 0, fx1, fy)
    n01 = corner(px0, 1, fx, fy1)
    n11 = corner(px1, 1, fx1, fy1)
    u, v = _fade(fx), _fade(fy)
    a = n00 + u * (n10 - n00)
    b = n01 + u * (n11 - n01)
    return (a + v * (b - a)) * np.float32(1.4)


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of gradient noise, normalised to std of about 0.3 whatever the octaves."""
    total = np.zeros(np.shape(x), dtype=np.float32)
    amp, norm, f = 1.0, 0.0, 1.0
    for o in range(octaves):
        total += np.float32(amp) * gradient_noise(x * f, y * f, seed + 1013 * o)
        norm += amp
        amp *= gain
        f *= 2.0
    return total / np.float32(norm)


def ridged(x: np.ndarray, y: np.ndarray, seed: int, octaves: int, gain: float = 0.5) -> np.ndarray:
    """Ridged multifractal in [0, 1]: sharp crests, broad lows, detail that grows on the crests."""
    total = np.zeros(np.shape(x), dtype=np.float32)
    weight = np.ones(np.shape(x), dtype=np.float32)
    amp, norm, f = 1.0, 0.0, 1.0
    for o in range(octaves):
        r = np.float32(1) - np.abs(gradient_noise(x * f, y * f, seed + 7919 * o))
        r = r * r * weight
        total += np.float32(amp) * r
        weight = np.clip(r * np.float32(1.6), 0, 1)
        norm += amp
        amp *= gain
        f *= 2.0
    return total / np.float32(norm)


def hash_u32(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed 32-bit hash of integer lattice coordinates (per-pixel randomness)."""
    h = ix.astype(np.uint32) * np.uint32(0x9E3779B1)
    h ^= iy.astype(np.uint32) * np.uint32(0x85EBCA77)
    h ^= np.uint32(seed & 0xFFFFFFFF)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def u01(h: np.ndarray) -> np.ndarray:
    """A hash's top 24 bits as a float in [0, 1): the land surface's per-parcel and per-pixel draws."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0, 1)
    return t * t * (np.float32(3) - np.float32(2) * t)


def lattice_sample(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, step: float
) -> np.ndarray:
    """``fn`` evaluated on the global lattice of spacing ``step`` and interpolated bilinearly.

    Why: smooth fields (clouds, haze) need not be evaluated per pixel. The lattice is anchored
    to the CRS origin and the interpolation weights depend only on the point, so every tile gets
    the same value at the same place.
    """
    gx, gy = x / step, y / step
    ix0, iy0 = np.floor(gx), np.floor(gy)
    fx = (gx - ix0).astype(np.float32)
    fy = (gy - iy0).astype(np.float32)
    ix = ix0.astype(np.int64)
    iy = iy0.astype(np.int64)
    if ix.size == 0:
        return np.zeros(np.shape(x), dtype=np.float32)
    x0, y0 = int(ix.min()), int(iy.min())
    nx, ny = int(ix.max()) - x0 + 2, int(iy.max()) - y0 + 2
    lx = (np.arange(nx, dtype=np.float64) + x0) * step
    ly = (np.arange(ny, dtype=np.float64) + y0) * step
    grid = fn(*np.meshgrid(lx, ly))
    jx, jy = ix - x0, iy - y0
    g00, g10 = grid[jy, jx], grid[jy, jx + 1]
    g01, g11 = grid[jy + 1, jx], grid[jy + 1, jx + 1]
    a = g00 + fx * (g10 - g00)
    b = g01 + fx * (g11 - g01)
    return a + fy * (b - a)
