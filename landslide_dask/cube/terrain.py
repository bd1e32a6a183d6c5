"""Slope and hillshade from a DEM on the cube grid, chunk by chunk with a one-pixel halo.

Both use Horn's 3x3 gradient (as GDAL's ``gdaldem``), in map units of a projected CRS, so a
10 m grid gives slopes in true degrees. ``map_overlap`` gives each chunk its neighbours' edge
pixels, so the result does not depend on chunking; the outermost ring of the cube repeats its
edge (``boundary="nearest"``), a one-pixel approximation only at the cube's own border.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

__all__ = [
    "SUN_AZIMUTH_DEG",
    "SUN_ELEVATION_DEG",
    "horn_gradient",
    "slope_and_shade",
    "padded_chunks",
    "slope_degrees",
    "hillshade",
]

# Sun for the hillshade: the cartographic convention (light from the north-west, 45 deg up).
SUN_AZIMUTH_DEG = 315.0
SUN_ELEVATION_DEG = 45.0


def horn_gradient(z: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """dz/d(east), dz/d(north) of a padded block (one-pixel halo), for the interior pixels."""
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * dx)
    # Rows run southward, so north is "up" = towards row 0.
    dzdy = ((a + 2 * b + c) - (g + 2 * h + i)) / (8.0 * dy)
    return dzdx, dzdy


def slope_and_shade(
    z: np.ndarray, dx: float, dy: float, azimuth: float = SUN_AZIMUTH_DEG, elevation: float = SUN_ELEVATION_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """Slope (float32 degrees, NaN where a neighbour is missing) and hillshade (uint8 1..255, 0 where
    missing) of the interior of a block read with a one-pixel halo: one gradient for both."""
    gx, gy = horn_gradient(z.astype(np.float64), dx, dy)
    slope = np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)
    az, el = np.radians(azimuth), np.radians(elevation)
    # Lambert: unit normal (-gx, -gy, 1)/n against the unit vector towards the sun.
    sun = np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])
    shade = (-gx * sun[0] - gy * sun[1] + sun[2]) / np.sqrt(gx * gx + gy * gy + 1.0)
    shade = np.where(np.isfinite(shade), np.clip(shade, 0.0, 1.0) * 254.0 + 1.0, 0.0)
    return slope, np.rint(shade).astype(np.uint8)  # 0 is reserved for "no DEM"


def _slope_block(z: np.ndarray, dx: float, dy: float) -> np.ndarray:
    out = np.full(z.shape, np.nan, dtype=np.float32)
    if min(z.shape) >= 3:
        gx, gy = horn_gradient(z.astype(np.float64), dx, dy)
        out[1:-1, 1:-1] = np.degrees(np.arctan(np.hypot(gx, gy)))
    return out


def _hillshade_block(z: np.ndarray, dx: float, dy: float, azimuth: float, elevation: float) -> np.ndarray:
    out = np.zeros(z.shape, dtype=np.uint8)
    if min(z.shape) >= 3:
        out[1:-1, 1:-1] = slope_and_shade(z, dx, dy, azimuth, elevation)[1]
    return out


def padded_chunks(n: int, chunk: int, pad: int = 1) -> tuple[int, ...]:
    """Chunks for an axis of ``n + 2*pad`` pixels that line up with ``chunk`` once the pad is cut."""
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    sizes[0] += pad
    sizes[-1] += pad
    return tuple(sizes)


def slope_degrees(dem: da.Array, dx: float, dy: float, boundary: str = "nearest") -> da.Array:
    """Slope in degrees (float32, NaN where the DEM or a neighbour is missing)."""
    return da.map_overlap(_slope_block, dem, depth=1, boundary=boundary, dtype=np.float32, dx=abs(dx), dy=abs(dy))


def hillshade(
    dem: da.Array,
    dx: float,
    dy: float,
    azimuth: float = SUN_AZIMUTH_DEG,
    elevation: float = SUN_ELEVATION_DEG,
    boundary: str = "nearest",
) -> da.Array:
    """Hillshade as uint8 1..255 (0 where the DEM is missing)."""
    return da.map_overlap(
        _hillshade_block,
        dem,
        depth=1,
        boundary=boundary,
        dtype=np.uint8,
        dx=abs(dx),
        dy=abs(dy),
        azimuth=azimuth,
        elevation=elevation,
    )
