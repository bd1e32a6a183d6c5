"""Synthetic event regions, written exactly like a user's real data.

Why this module exists: without an event inventory with matching imagery that every clone can
carry, the accuracy tests and the demo need regions where the learning problem is real:
landslides that are bright, vegetation-free scars *on steep ground* next to look-alikes that are
not landslides (harvested fields, old scars, cloud remnants, river sediment), under changing sun,
clouds and seasons, in several UTM zones. And the files must look like Earth Search's, so every
stage after this one runs unchanged on real data.

How: each region is a *procedural world* defined in its own "home" UTM CRS. Every field (terrain,
land cover, clouds, noise) is a pure function of position (and date), built from hashed integer
lattices, and vector features (landslides, old scars) are generated per 1 km cell from a
cell-keyed random stream. So every output tile -- a Sentinel-2 granule in any UTM zone, or a DEM
tile in EPSG:4326 -- is computed on its own from the world's description: overlapping granules of
one zone agree pixel for pixel, memory follows the tile, not the area, and a later "country" mode
(thousands of km², several epicentres, two zones) only needs a bigger world and more tiles.

Layout written (the contract other modules rely on)::

    out_dir/regions.json
    out_dir/regions/<name>/{aoi,inventory,inventory_area}.geojson      (EPSG:4326)
    out_dir/stac/collections/{sentinel-2-l2a,cop-dem-glo-30}.json
    out_dir/stac/items/{sentinel-2-l2a,cop-dem-glo-30}.json            (FeatureCollections)
    out_dir/sentinel-2-l2a/<item_id>/{blue,green,red,nir,scl}.tif      (COGs)
    out_dir/cop-dem-glo-30/<item_id>/data.tif                          (COG)

Imagery DN = surface reflectance * 10000 + 1000 (processing baseline >= 04.00), nodata 0; SCL at
20 m with the Sen2Cor classes; DEM float32 metres at 1 arc-second, nodata -32767.

The country mode (``make_demo_country``, ``make-demo-data DIR --country``): a ``CountrySpec`` (the
``gorkha_like`` look over a lon/lat bbox; by default that of ``cluster/jobs/demo-country.yaml``,
~2,180 km² across the UTM 44N/45N boundary at 84 E) makes a ``CountryWorld``: parallel main
valleys with their tributaries (each valley's influence ends smoothly at a finite distance, so a
tile evaluates only the valleys near it, still a pure function of position) and several
epicentres with their own decay and weight, so some cells have many landslides and some almost
none. The granule tasks are streamed through the process pool (a bounded number in flight: one
granule's arrays per process, never the country's), and the inventory is collected strip by strip
(``country_inventory``), each strip from a fresh world. The layout is the regions' (one
``regions.json`` entry with ``"kind": "country"``), so ``serve-stac`` and country jobs read it
unchanged.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import rasterize, shapes

from ..errors import InputDataError

__all__ = [
    "DEMO_COUNTRY_BBOX",
    "REGION_TEMPLATES",
    "CountrySpec",
    "CountryWorld",
    "RegionSpec",
    "World",
    "country_spec",
    "make_demo_country",
    "make_demo_data",
    "region_specs",
]

# --------------------------------------------------------------------------------------------
# Conventions of the written data
# --------------------------------------------------------------------------------------------

RES = 10.0                      # m, the 10 m bands
SCL_RES = 20.0                  # m, the scene classification
GRANULE_STRIDE = 4400.0         # m, the scaled-down MGRS grid step ...
GRANULE_SIZE = 4800.0           # m, ... and granule side: neighbours overlap by 400 m (real: 9.8 km)
ZONE_OVERLAP_DEG = 0.002        # how far a zone's granules reach past the zone's edge (degrees)
DEM_TILE_ARCSEC = 180           # 0.05 degree DEM tiles (real Copernicus DEM: 1 degree)
DEM_NODATA = -32767.0
DN_OFFSET = 1000                # BOA_ADD_OFFSET of processing baseline >= 04.00
BANDS = ("blue", "green", "red", "nir")
BAND_INFO = {  # name -> (Sentinel-2 band, centre wavelength um, FWHM um)
    "blue": ("B02", 0.490, 0.098), "green": ("B03", 0.560, 0.045),
    "red": ("B04", 0.665, 0.038), "nir": ("B08", 0.842, 0.145),
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
DEM_DATETIME = "2021-04-22T00:00:00Z"
S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]
DEM_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
# SCL classes (Sen2Cor)
SCL_NODATA, SCL_SATURATED, SCL_DARK, SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER = 0, 1, 2, 3, 4, 5, 6
SCL_UNCLASSIFIED, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 7, 8, 9, 10, 11
# When four 10 m classes fall in one 20 m pixel, the most "alarming" wins (clouds dilate a little,
# as Sen2Cor's do), and no data only where all four are empty.
_SCL_PRIORITY = np.array([0, 2, 5, 8, 3, 4, 6, 1, 10, 11, 9, 7], dtype=np.uint8)  # class -> rank
_SCL_OF_RANK = np.argsort(_SCL_PRIORITY).astype(np.uint8)                          # rank -> class
_MGRS_COLS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_MGRS_ROWS = "ABCDEFGHJKLMNPQRSTUV"
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"

Spec4 = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------
# Procedural noise: pure functions of position, vectorised numpy
# --------------------------------------------------------------------------------------------

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


def _u01(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0, 1)
    return t * t * (np.float32(3) - np.float32(2) * t)


def lattice_sample(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                   step: float) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# Regions: what differs between them (look, relief, zone, season, event)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionSpec:
    """Everything that defines one synthetic event region; the world is a pure function of it."""

    name: str
    lon: float
    lat: float
    event_date: date
    description: str
    relief: float = 900.0           # m, valley floor to hill tops
    base_elev: float = 600.0        # m, valley floor at the centre
    hill_scale: float = 1800.0      # m, wavelength of the ridge pattern
    valley_width: float = 650.0     # m, e-folding width of valley walls
    floor_width: float = 110.0      # m, half-width of the flat valley floor
    valley_angle: float = 20.0      # degrees, direction of the main valley
    trib_spacing: float = 1700.0    # m between tributary valleys
    river_width: float = 24.0       # m
    veg_density: float = 0.85       # mean vegetation cover of natural ground
    forest: float = 0.6             # share of forest in the vegetation
    tree_line: float = 1e9          # m, vegetation thins above
    rock_line: float = 1e9          # m, bare rock above
    forest_spec: Spec4 = (0.025, 0.050, 0.030, 0.320)
    grass_spec: Spec4 = (0.040, 0.075, 0.060, 0.300)
    soil_spec: Spec4 = (0.100, 0.130, 0.160, 0.220)
    rock_spec: Spec4 = (0.130, 0.150, 0.170, 0.210)
    scar_spec: Spec4 = (0.120, 0.150, 0.185, 0.230)
    water_spec: Spec4 = (0.040, 0.055, 0.035, 0.015)
    turbid_spec: Spec4 = (0.070, 0.100, 0.105, 0.045)
    haze: float = 0.5               # 0..1 residual haze after atmospheric correction
    pheno_peak_doy: int = 200       # greenest day of year
    pheno_amp: float = 0.10
    field_max_slope: float = 5.0    # degrees
    field_share: float = 0.7
    parcel: tuple[float, float] = (110.0, 60.0)  # m, along/across the valley
    slide_density: float = 60.0     # candidate landslides per km² at the epicentre (before rejection)
    slide_decay_km: float = 3.0
    slide_size: float = 1.0         # multiplies landslide lengths
    epicentre_offset: tuple[float, float] = (0.15, 0.1)  # fraction of size from the centre
    scar_density: float = 4.0       # old scars per km² on susceptible ground
    cloudiness: float = 1.0
    inventory_strip: str = "east"   # side of the AOI left out of the inventory
    size_km: float = 6.0
    margin_km: float = 0.6
    seed: int = 0

    @property
    def epsg(self) -> int:
        return utm_epsg(self.lon, self.lat)


def utm_epsg(lon: float, lat: float) -> int:
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def _zone_of(epsg: int) -> int:
    return epsg % 100


def _zone_lon_range(zone: int) -> tuple[float, float]:
    w = -180.0 + 6.0 * (zone - 1)
    return w, w + 6.0


REGION_TEMPLATES: tuple[RegionSpec, ...] = (
    RegionSpec(
        name="hokkaido_like", lon=141.95, lat=42.75, event_date=date(2023, 9, 6),
        description="Low, densely forested hills on bright pumice soils; a dense swarm of small shallow "
                    "slides after an earthquake in early autumn; rice and wheat fields on the valley floors "
                    "being harvested. UTM zone 54N.",
        relief=330.0, base_elev=60.0, hill_scale=1200.0, valley_width=450.0, floor_width=150.0,
        valley_angle=35.0, trib_spacing=1300.0, river_width=20.0, veg_density=0.95, forest=0.85,
        forest_spec=(0.022, 0.048, 0.026, 0.340), grass_spec=(0.035, 0.075, 0.050, 0.330),
        soil_spec=(0.120, 0.155, 0.190, 0.250), scar_spec=(0.140, 0.180, 0.215, 0.260),
        haze=0.35, pheno_peak_doy=210, pheno_amp=0.08, field_max_slope=5.0, field_share=0.85,
        parcel=(140.0, 70.0), slide_density=450.0, slide_decay_km=3.0, slide_size=0.7,
        epicentre_offset=(-0.1, 0.15), scar_density=3.0, cloudiness=1.0, inventory_strip="west",
    ),
    RegionSpec(
        name="gorkha_like", lon=83.995, lat=28.20, event_date=date(2023, 4, 25),
        description="High Himalayan foothills with 1500 m of relief, patchy forest, terraced fields on "
                    "gentle slopes and a grey glacial river; pre-monsoon haze; an earthquake in late April. "
                    "Straddles the UTM 44N/45N boundary at 84 E: its imagery comes from granules in two CRSs.",
        relief=1300.0, base_elev=900.0, hill_scale=2400.0, valley_width=1300.0, floor_width=90.0,
        valley_angle=-25.0, trib_spacing=2600.0, river_width=34.0, veg_density=0.78, forest=0.55,
        tree_line=2200.0, rock_line=2300.0,
        forest_spec=(0.028, 0.052, 0.036, 0.290), grass_spec=(0.050, 0.080, 0.080, 0.260),
        soil_spec=(0.095, 0.120, 0.150, 0.205), scar_spec=(0.125, 0.145, 0.170, 0.195),
        water_spec=(0.060, 0.075, 0.060, 0.030), turbid_spec=(0.090, 0.115, 0.120, 0.060),
        haze=0.9, pheno_peak_doy=240, pheno_amp=0.10, field_max_slope=12.0, field_share=0.75,
        parcel=(60.0, 30.0), slide_density=140.0, slide_decay_km=3.0, slide_size=1.3,
        epicentre_offset=(0.1, -0.1), scar_density=5.0, cloudiness=0.8, inventory_strip="east",
    ),
    RegionSpec(
        name="kaikoura_like", lon=173.62, lat=-42.25, event_date=date(2022, 11, 14),
        description="Steep greywacke ranges under tussock grass and scrub with little forest, grey rock "
                    "above 1300 m, sheep pasture on the flats; spring; large rock and debris slides. "
                    "UTM zone 59S (southern hemisphere: overpass at 22:xx UTC the previous day).",
        relief=1000.0, base_elev=150.0, hill_scale=2200.0, valley_width=1100.0, floor_width=130.0,
        valley_angle=60.0, trib_spacing=2200.0, river_width=40.0, veg_density=0.7, forest=0.2,
        tree_line=1100.0, rock_line=1300.0,
        forest_spec=(0.030, 0.055, 0.040, 0.260), grass_spec=(0.060, 0.090, 0.095, 0.250),
        soil_spec=(0.110, 0.125, 0.140, 0.190), rock_spec=(0.140, 0.155, 0.165, 0.200),
        scar_spec=(0.150, 0.165, 0.180, 0.205), water_spec=(0.050, 0.070, 0.045, 0.020),
        haze=0.15, pheno_peak_doy=330, pheno_amp=0.10, field_max_slope=4.0, field_share=0.6,
        parcel=(180.0, 110.0), slide_density=110.0, slide_decay_km=2.5, slide_size=1.5,
        epicentre_offset=(0.0, 0.2), scar_density=6.0, cloudiness=0.6, inventory_strip="east",
    ),
    RegionSpec(
        name="haiti_like", lon=-73.48, lat=18.38, event_date=date(2021, 8, 14),
        description="Tropical mountains of moderate relief with a mosaic of secondary forest, shrub and "
                    "small farms on red lateritic soil; hazy and cloudy in the hurricane season; "
                    "earthquake-triggered slides in mid August. UTM zone 18N.",
        relief=650.0, base_elev=300.0, hill_scale=1600.0, valley_width=800.0, floor_width=100.0,
        valley_angle=-70.0, trib_spacing=1800.0, river_width=22.0, veg_density=0.8, forest=0.5,
        forest_spec=(0.030, 0.058, 0.034, 0.330), grass_spec=(0.045, 0.085, 0.065, 0.300),
        soil_spec=(0.075, 0.105, 0.165, 0.235), scar_spec=(0.085, 0.120, 0.190, 0.250),
        turbid_spec=(0.070, 0.105, 0.125, 0.050),
        haze=0.7, pheno_peak_doy=250, pheno_amp=0.06, field_max_slope=8.0, field_share=0.7,
        parcel=(45.0, 35.0), slide_density=170.0, slide_decay_km=2.5, slide_size=1.0,
        epicentre_offset=(-0.15, -0.05), scar_density=5.0, cloudiness=1.3, inventory_strip="west",
    ),
)


def region_specs(n_regions: int, seed: int, size_km: float) -> list[RegionSpec]:
    """The first ``n_regions`` regions: the templates, then shifted variants of them."""
    if n_regions < 1:
        raise InputDataError(f"n_regions must be at least 1, got {n_regions}.")
    if not (0.5 <= size_km <= 200.0):
        raise InputDataError(f"size_km must be between 0.5 and 200 km, got {size_km}.")
    out = []
    for k in range(n_regions):
        t = REGION_TEMPLATES[k % len(REGION_TEMPLATES)]
        rep = k // len(REGION_TEMPLATES)
        rng = np.random.default_rng([seed, k, 11])
        name, lon, lat, event = t.name, t.lon, t.lat, t.event_date
        if rep:
            # Variants: same climate and look, elsewhere in the same zone (away from its edges).
            name = f"{t.name}_{rep + 1}"
            w, e = _zone_lon_range(_zone_of(t.epsg))
            lon = float(np.clip(t.lon + 0.35 * rep * (1 if rep % 2 else -1), w + 0.5, e - 0.5))
            lat = t.lat + 0.3 * rep
            event = t.event_date + timedelta(days=int(rng.integers(-40, 40)))
        out.append(RegionSpec(**{**t.__dict__, "name": name, "lon": lon, "lat": lat, "event_date": event,
                                 "size_km": float(size_km), "margin_km": max(0.5, 0.1 * size_km),
                                 "seed": int(rng.integers(0, 2**31 - 1))}))
    return out


# --------------------------------------------------------------------------------------------
# The procedural world of one region (home UTM CRS, metres)
# --------------------------------------------------------------------------------------------

HILL_OCTAVES, HILL_GAIN, HILL_SHARE = 5, 0.42, 0.5   # the ridge pattern: detail, roughness, weight
CELL = 1000.0          # m, vector features are generated per cell of this size
_FEATURE_STEP = 10.0   # m, step of the downslope trace
SLIDE_MIN_SLOPE = 22.0     # degrees: sources need steeper ground (susceptibility rises to 40 deg)
RUNOUT_STOP_SLOPE = 22.0   # degrees: a scar stops two steps after the ground gets gentler


@dataclass
class Feature:
    """One landslide or old scar, in the home CRS."""

    key: tuple[int, int, int]     # (cell ix, cell iy, k): stable identity
    poly: shapely.Polygon
    toe: shapely.Geometry | None = None
    reveg: float = 0.0            # old scars: vegetation that has come back (0..1)


@dataclass(frozen=True)
class Acquisition:
    """One satellite pass over a region: its date, sun, and the state of the sky."""

    day: date                   # local solar day
    when: datetime              # UTC (naive)
    platform: str
    sun_azimuth: float
    sun_elevation: float
    cover: float                # wanted cloud fraction (flagged)
    cloud_seed: int
    cloud_scale: float          # m
    cloud_height: float         # m, for the shadow offset
    cloud_thr: float
    cirrus: float               # 0..~0.3 peak reflectance added by thin cirrus
    haze: float                 # residual haze of the date
    noise_seed: int
    pre: bool


class World:
    """The procedural world of one region: terrain, land cover, landslides, clouds.

    Every method takes home-CRS coordinates (float64 metres) and is a pure function of them and
    of the region spec, so any tile can be computed alone.
    """

    def __init__(self, spec: RegionSpec):
        self.spec = spec
        self.epsg = spec.epsg
        to_home = Transformer.from_crs(4326, self.epsg, always_xy=True)
        cx, cy = to_home.transform(spec.lon, spec.lat)
        self.cx, self.cy = round(cx / SCL_RES) * SCL_RES, round(cy / SCL_RES) * SCL_RES
        # Local origin, snapped coarsely: noise is evaluated on small numbers (precision).
        self.ox, self.oy = round(cx / 10000.0) * 10000.0, round(cy / 10000.0) * 10000.0
        half = (spec.size_km / 2.0 + spec.margin_km) * 1000.0
        self.world_box = (self._snap(self.cx - half, -1), self._snap(self.cy - half, -1),
                          self._snap(self.cx + half, 1), self._snap(self.cy + half, 1))
        a = spec.size_km * 500.0
        self.aoi_box = (self.cx - a, self.cy - a, self.cx + a, self.cy + a)
        rng = np.random.default_rng([spec.seed, 1])
        self.s_terrain, self.s_cover, self.s_parcel, self.s_scar, self.s_slide, self.s_tex = (
            int(v) for v in rng.integers(0, 2**31 - 1, 6))
        th = math.radians(spec.valley_angle)
        self.cos_t, self.sin_t = math.cos(th), math.sin(th)
        # Main valley centre line v = c(u): offset and meanders.
        off = float(rng.uniform(-0.12, 0.12)) * spec.size_km * 1000.0
        self.meander = (off, float(rng.uniform(150, 320)), float(rng.uniform(900, 1500)), float(rng.uniform(0, 6.28)),
                        float(rng.uniform(40, 90)), float(rng.uniform(250, 400)), float(rng.uniform(0, 6.28)))
        self.road_side = float(rng.choice([-1.0, 1.0]))
        # Tributaries joining the main valley, alternating sides, every trib_spacing along it.
        reach = half * 1.5 + 3000.0
        k0, k1 = int(-reach // spec.trib_spacing) - 1, int(reach // spec.trib_spacing) + 1
        tribs = []
        for k in range(k0, k1 + 1):
            r = np.random.default_rng([spec.seed, 2, k + 10_000])
            u0 = k * spec.trib_spacing + float(r.uniform(-0.25, 0.25)) * spec.trib_spacing
            side = 1.0 if (k % 2 == 0) else -1.0
            ang = math.radians(side * float(r.uniform(55, 100)))
            tribs.append((u0, ang, float(r.uniform(40, 120)), float(r.uniform(400, 800)), float(r.uniform(0, 6.28)),
                          float(r.uniform(1800, 3500)), float(r.uniform(0.6, 1.0))))
        self.tribs = tribs
        # Epicentre(s): several would make a country-scale event.
        ex, ey = spec.epicentre_offset
        self.epicentres = [(self.cx + ex * spec.size_km * 1000.0, self.cy + ey * spec.size_km * 1000.0,
                            max(1.5, spec.slide_decay_km * spec.size_km / 6.0) * 1000.0, 1.0)]
        self._cells: dict[tuple[str, int, int], list[Feature]] = {}

    @staticmethod
    def _snap(v: float, direction: int) -> float:
        return (math.ceil(v / SCL_RES) if direction > 0 else math.floor(v / SCL_RES)) * SCL_RES

    # ---- valleys and terrain --------------------------------------------------------------

    def frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, v): along and across the main valley, metres from the region centre."""
        dx, dy = x - self.cx, y - self.cy
        return dx * self.cos_t + dy * self.sin_t, -dx * self.sin_t + dy * self.cos_t

    def centreline(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        off, a1, l1, p1, a2, l2, p2 = self.meander
        c = off + a1 * np.sin(u / l1 + p1) + a2 * np.sin(u / l2 + p2)
        dc = a1 / l1 * np.cos(u / l1 + p1) + a2 / l2 * np.cos(u / l2 + p2)
        return c, dc

    def valleys(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Distances to the main river and the combined valley profile P (0 on floors, ->1 on hills)."""
        s = self.spec
        u, v = self.frame(x, y)
        c, dc = self.centreline(u)
        signed = ((v - c) / np.sqrt(1.0 + dc * dc)).astype(np.float32)
        d_main = np.abs(signed)
        prof = self._profile(d_main, s.floor_width, s.valley_width)
        d_trib = np.full(d_main.shape, 1e6, dtype=np.float32)
        for u0, ang, amp, lam, ph, fade, depth in self.tribs:
            c0, _ = self.centreline(np.asarray(u0))
            du, dv = u - u0, v - float(c0)
            ca, sa = math.cos(ang), math.sin(ang)
            a = du * ca + dv * sa
            b = -du * sa + dv * ca
            bc = amp * np.sin(a / lam + ph) - amp * math.sin(ph)
            d = np.where(a >= 0, np.abs(b - bc), np.hypot(a, b)).astype(np.float32)
            if not np.any(d < 4000):
                continue
            p = self._profile(d, 0.25 * s.floor_width, 0.8 * s.valley_width)
            # The tributary valley fades upstream and is shallower than the main one.
            keep = np.exp(-np.maximum(a, 0) / fade).astype(np.float32) * np.float32(depth)
            p = np.float32(1) - (np.float32(1) - p) * keep
            prof = np.minimum(prof, p)
            d_trib = np.minimum(d_trib, np.where(a >= 0, d, 1e6).astype(np.float32))
        return {"u": u, "v": v, "signed": signed, "d_main": d_main, "d_trib": d_trib, "profile": prof}

    @staticmethod
    def _profile(d: np.ndarray, floor: float, width: float) -> np.ndarray:
        t = np.maximum(d - np.float32(floor), 0) / np.float32(width)
        return (np.float32(1) - np.exp(-(t ** 1.5))).astype(np.float32)

    def elevation(self, x: np.ndarray, y: np.ndarray, vals: dict | None = None) -> np.ndarray:
        """Terrain elevation (m, float32): ridged hills carved by river valleys with flat floors."""
        s = self.spec
        vals = vals if vals is not None else self.valleys(x, y)
        lx, ly = (x - self.ox) / s.hill_scale, (y - self.oy) / s.hill_scale
        h = ridged(lx, ly, self.s_terrain, HILL_OCTAVES, HILL_GAIN)
        h = np.clip((h - np.float32(0.08)) / np.float32(0.55), 0, 1.3)
        rough = fbm((x - self.ox) / 90.0, (y - self.oy) / 90.0, self.s_terrain + 5, 2)
        p = vals["profile"]
        z = (np.float32(s.base_elev) - np.float32(0.01) * vals["u"].astype(np.float32)
             + np.float32(s.relief) * p * (np.float32(1.0 - HILL_SHARE) + np.float32(HILL_SHARE) * h)
             + np.float32(6.0) * rough * p)
        return z.astype(np.float32)

    def elevation_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.elevation(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def gradient_at(self, x: np.ndarray, y: np.ndarray, h: float = RES) -> tuple[np.ndarray, np.ndarray]:
        """dz/dx, dz/dy by central differences at arbitrary points (one batched evaluation)."""
        n = len(x)
        xs = np.concatenate([x + h, x - h, x, x])
        ys = np.concatenate([y, y, y + h, y - h])
        z = self.elevation_at(xs, ys).astype(np.float64)
        return (z[:n] - z[n:2 * n]) / (2 * h), (z[2 * n:3 * n] - z[3 * n:]) / (2 * h)

    def in_world(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.world_box
        return (x >= x0) & (x < x1) & (y > y0) & (y <= y1)

    # ---- vector features: landslides and old scars, per cell --------------------------------

    def slope_intensity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Relative event intensity: decays with distance from the epicentre(s)."""
        out = np.zeros(np.shape(x))
        for ex, ey, decay, w in self.epicentres:
            out = out + w * np.exp(-np.hypot(x - ex, y - ey) / decay)
        return np.clip(out, 0, 1)

    def features(self, kind: str, bounds: tuple[float, float, float, float]) -> list[Feature]:
        """Event landslides (``kind='slide'``) or old scars (``'scar'``) touching ``bounds``."""
        ix0, iy0 = int(math.floor(bounds[0] / CELL)) - 1, int(math.floor(bounds[1] / CELL)) - 1
        ix1, iy1 = int(math.floor(bounds[2] / CELL)) + 1, int(math.floor(bounds[3] / CELL)) + 1
        cells = [(i, j) for j in range(iy0, iy1 + 1) for i in range(ix0, ix1 + 1)]
        self._ensure_cells(kind, [(i, j) for j in range(iy0 - 1, iy1 + 2) for i in range(ix0 - 1, ix1 + 2)])
        box = shapely.box(*bounds)
        out = []
        for c in cells:
            for f in self._final(kind, c):
                if f.poly.intersects(box):
                    out.append(f)
        return out

    def _final(self, kind: str, cell: tuple[int, int]) -> list[Feature]:
        """A cell's features minus those touching an earlier neighbour's (a local, deterministic rule)."""
        mine = self._cells[(kind, *cell)]
        if not mine:
            return []
        others = []
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                nb = (cell[0] + di, cell[1] + dj)
                if (nb[1], nb[0]) < (cell[1], cell[0]):
                    others.extend(f.poly for f in self._cells[(kind, *nb)])
        if not others:
            return list(mine)
        arr = np.array(others, dtype=object)
        return [f for f in mine if not np.any(shapely.dwithin(arr, f.poly, 5.0))]

    def _ensure_cells(self, kind: str, cells: list[tuple[int, int]]) -> None:
        todo = [c for c in cells if (kind, *c) not in self._cells]
        if not todo:
            return
        s = self.spec
        x0, y0, x1, y1 = self.world_box
        srcs, sizes, owners = [], [], []
        for c in todo:
            self._cells[(kind, *c)] = []
            cx0, cy0 = c[0] * CELL, c[1] * CELL
            if cx0 >= x1 or cx0 + CELL <= x0 or cy0 >= y1 or cy0 + CELL <= y0:
                continue
            r = np.random.default_rng([s.seed, 3 if kind == "slide" else 4, c[0] + 2**30, c[1] + 2**30])
            dens = (s.slide_density if kind == "slide" else s.scar_density) * 2.5
            n = int(r.poisson(dens * CELL * CELL / 1e6))
            px = cx0 + r.random(n) * CELL
            py = cy0 + r.random(n) * CELL
            accept_u = r.random(n)
            length = 40.0 * (1.0 - r.random(n)) ** (-1.0 / 1.45)          # power-law lengths
            # width / length across the range of real inventories (0.2 narrow debris slides to 0.8
            # broad slope failures; 0.18-0.42 before, which made every slide a thin streak)
            aspect = r.uniform(0.2, 0.8, n)
            jitter = r.integers(0, 2**31 - 1, n)
            reveg = r.uniform(0.25, 0.7, n)
            for k in range(n):
                srcs.append((px[k], py[k], accept_u[k]))
                sizes.append((length[k], aspect[k], int(jitter[k]), reveg[k]))
                owners.append((c, k))
        if not srcs:
            return
        a = np.array(srcs)
        px, py, acc = a[:, 0], a[:, 1], a[:, 2]
        inside = self.in_world(px, py)
        gx, gy = self.gradient_at(px, py)
        slope = np.degrees(np.arctan(np.hypot(gx, gy)))
        susc = np.clip((slope - SLIDE_MIN_SLOPE) / 18.0, 0, 1) ** 2
        if kind == "slide":
            p = 0.4 * susc * self.slope_intensity(px, py)
        else:
            p = 0.4 * susc
        keep = np.flatnonzero(inside & (acc < p))
        if keep.size == 0:
            return
        lengths = np.array([sizes[k][0] for k in keep]) * s.slide_size
        if kind == "scar":
            lengths = lengths * 1.2
        lengths = np.minimum(lengths, 500.0)
        aspects = np.array([sizes[k][1] for k in keep])
        widths = np.clip(lengths * aspects, 12.0, 150.0)
        paths = self._trace(px[keep], py[keep], lengths)
        for j, k in enumerate(keep):
            c, kk = owners[k]
            path = paths[j]
            if len(path) < 4:
                continue
            poly, toe = _slide_polygon(path, widths[j], sizes[k][2], lengths[j] > 180.0 and kind == "slide")
            if poly is None or poly.area < 300.0:
                continue
            cur = self._cells[(kind, *c)]
            if cur and np.any(shapely.dwithin(np.array([f.poly for f in cur], dtype=object), poly, 5.0)):
                continue
            cur.append(Feature((c[0], c[1], kk), poly, toe, float(sizes[k][3])))

    def _trace(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """Downslope paths from sources: follow -grad z until the length is used or the ground flattens."""
        n = len(x)
        steps = np.ceil(lengths / _FEATURE_STEP).astype(int)
        pts = [np.stack([x, y], axis=1)]
        active = np.ones(n, dtype=bool)
        count = np.ones(n, dtype=int)
        flat = np.zeros(n, dtype=int)
        prev = None
        px, py = x.copy(), y.copy()
        for k in range(int(steps.max())):
            gx, gy = self.gradient_at(px, py)
            g = np.hypot(gx, gy) + 1e-9
            dx, dy = -gx / g, -gy / g
            if prev is not None:
                dx, dy = 0.6 * dx + 0.4 * prev[0], 0.6 * dy + 0.4 * prev[1]
                norm = np.hypot(dx, dy) + 1e-9
                dx, dy = dx / norm, dy / norm
            prev = (dx, dy)
            slope = np.degrees(np.arctan(g))
            flat = np.where(slope < RUNOUT_STOP_SLOPE, flat + 1, 0)
            active &= (k < steps) & (flat < 2)
            px = np.where(active, px + dx * _FEATURE_STEP, px)
            py = np.where(active, py + dy * _FEATURE_STEP, py)
            count += active
            pts.append(np.stack([px, py], axis=1))
            if not active.any():
                break
        allp = np.stack(pts, axis=1)  # (n, steps+1, 2)
        return [allp[i, :count[i]] for i in range(n)]

    # ---- clouds ---------------------------------------------------------------------------

    def cloud_noise(self, acq: Acquisition, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._cloud_noise(acq.cloud_seed, acq.cloud_scale, x, y)

    def _cloud_noise(self, seed: int, scale: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return fbm((x - self.ox) / scale, (y - self.oy) / scale, seed, 6)

    def cirrus_noise(self, acq: Acquisition, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Streaky thin cirrus: noise stretched along a per-date wind direction, in patches."""
        ang = (acq.cloud_seed % 360) * math.pi / 180.0
        dx, dy = x - self.ox, y - self.oy
        a = (dx * math.cos(ang) + dy * math.sin(ang)) / 5000.0
        b = (-dx * math.sin(ang) + dy * math.cos(ang)) / 900.0
        patch = fbm(dx / 4000.0, dy / 4000.0, acq.cloud_seed + 11, 2)
        return fbm(a, b, acq.cloud_seed + 9, 4) + patch - np.float32(0.1)


def _slide_polygon(path: np.ndarray, width: float, jseed: int, with_toe: bool
                   ) -> tuple[shapely.Polygon | None, shapely.Geometry | None]:
    """An elongated scar around a downslope path: narrow crown, wide body, flared toe."""
    m = len(path)
    s = np.linspace(0.0, 1.0, m)
    r = np.random.default_rng(jseed)
    style = r.random()
    if style < 0.5:    # teardrop: broad source area narrowing downslope
        shape = 0.5 + 0.7 * np.exp(-((s - 0.22) / 0.32) ** 2)
    elif style < 0.8:  # flow: source bowl, narrow track, deposition fan
        shape = 0.35 + 0.8 * np.exp(-(s / 0.22) ** 2) + 0.55 * np.clip((s - 0.7) / 0.3, 0, 1)
    else:              # slump: a compact elongated body
        shape = 0.55 + 0.45 * np.sin(np.pi * np.clip(s * 1.15, 0, 1)) ** 0.6 + 0.15 * s
    # Correlated wobble of the edges and of the centre line: no two scars alike.
    walk = np.cumsum(r.standard_normal((3, m)), axis=1) * 0.09
    walk -= walk.mean(axis=1, keepdims=True)
    t = np.gradient(path, axis=0)
    t /= np.hypot(t[:, 0], t[:, 1])[:, None] + 1e-9
    nrm = np.stack([-t[:, 1], t[:, 0]], axis=1)
    half = 0.5 * width * shape
    path = path + nrm * (np.clip(walk[2], -0.3, 0.3) * half)[:, None]
    rl = np.maximum(half * (1.0 + np.clip(walk[0], -0.35, 0.35)), 4.0)
    rr = np.maximum(half * (1.0 + np.clip(walk[1], -0.35, 0.35)), 4.0)
    radius = 0.5 * (rl + rr)
    left = path + nrm * rl[:, None]
    right = path - nrm * rr[:, None]
    ang = np.linspace(0, np.pi, 7)[1:-1]
    toe_cap = [path[-1] + radius[-1] * (np.cos(a) * nrm[-1] * -1 + np.sin(a) * t[-1]) for a in ang[::-1]]
    crown_cap = [path[0] + radius[0] * (np.cos(a) * nrm[0] - np.sin(a) * t[0]) for a in ang[::-1]]
    ring = np.concatenate([left, np.array(toe_cap)[::-1], right[::-1], np.array(crown_cap)[::-1]])
    poly = shapely.Polygon(ring)
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    poly = poly.buffer(3.0, quad_segs=2).buffer(-3.0, quad_segs=2)
    if poly.geom_type == "MultiPolygon":
        poly = max(poly.geoms, key=lambda g: g.area)
    if poly.is_empty or poly.geom_type != "Polygon":
        return None, None
    poly = shapely.Polygon(poly.exterior).simplify(1.0)
    toe = None
    if with_toe:
        k = int(0.7 * m)
        toe = shapely.LineString(path[k:]).buffer(float(radius[k:].max()) * 1.2).intersection(poly)
        if toe.is_empty:
            toe = None
    return poly, toe


# --------------------------------------------------------------------------------------------
# Acquisitions: dates, sun, sky
# --------------------------------------------------------------------------------------------


def sun_position(day: date, lat: float, local_hour: float = 10.5) -> tuple[float, float]:
    """Sun azimuth (deg from north, clockwise) and elevation at the overpass's local solar time."""
    doy = day.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    hour = math.radians(15.0 * (local_hour - 12.0))
    phi = math.radians(lat)
    el = math.asin(math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour))
    az = math.atan2(math.sin(hour), math.cos(hour) * math.sin(phi) - math.tan(decl) * math.cos(phi)) + math.pi
    return math.degrees(az) % 360.0, math.degrees(el)


# Cloud edges: alpha rises from 0 to 1 over [thr - EDGE_LO, thr + EDGE_HI]; flagged from alpha 0.25.
_EDGE_LO, _EDGE_HI = 0.10, 0.16


def plan_acquisitions(spec: RegionSpec, world: World) -> list[Acquisition]:
    """4 passes in the 60 days before the event and 4 in the 45 days after, on a 5-day revisit."""
    rng = np.random.default_rng([spec.seed, 5])
    anchor = spec.event_date - timedelta(days=int(rng.integers(1, 5)))
    pre_slots = sorted(rng.choice(np.arange(0, 12), 4, replace=False).tolist())
    post_slots = sorted(rng.choice(np.arange(1, 10), 4, replace=False).tolist())
    pre_cov = rng.permutation([rng.uniform(0.0, 0.04), rng.uniform(0.05, 0.2), rng.uniform(0.15, 0.35),
                               rng.uniform(0.02, 0.12)])
    post_cov = rng.permutation([rng.uniform(0.45, 0.65), rng.uniform(0.0, 0.04), rng.uniform(0.05, 0.25),
                                rng.uniform(0.1, 0.3)])
    days = [(anchor - timedelta(days=5 * int(k)), True, float(c)) for k, c in zip(pre_slots, pre_cov)]
    days += [(anchor + timedelta(days=5 * int(k)), False, float(c)) for k, c in zip(post_slots, post_cov)]
    days.sort()
    x0, y0, x1, y1 = world.world_box
    sample = np.random.default_rng([spec.seed, 7])
    sx, sy = sample.uniform(x0, x1, 20000), sample.uniform(y0, y1, 20000)
    out = []
    for i, (day, pre, cover) in enumerate(days):
        r = np.random.default_rng([spec.seed, 6, i])
        cover = float(np.clip(cover * spec.cloudiness, 0.0, 0.85)) if cover > 0.05 else cover
        cloud_seed, cloud_scale = int(r.integers(0, 2**31 - 1)), float(r.uniform(1400, 2600))
        # The threshold comes from the noise over this very world, so the cover is what was asked.
        q = np.percentile(world._cloud_noise(cloud_seed, cloud_scale, sx, sy), 100.0 * (1.0 - cover))
        thr_flag = float(q) if cover > 0.002 else 9.0
        # alpha = smoothstep over [thr - LO, thr + HI] reaches 0.25 at 32.6 % of the way.
        thr = thr_flag + _EDGE_LO - 0.3264 * (_EDGE_LO + _EDGE_HI)
        az, el = sun_position(day, spec.lat)
        slot = (day - anchor).days // 5
        # Local 10:30 solar time -> UTC; NZ passes fall on the previous UTC day, as real ones do.
        when = datetime(day.year, day.month, day.day, 10, 30) - timedelta(hours=spec.lon / 15.0)
        when = when.replace(microsecond=0) + timedelta(seconds=int(r.integers(0, 50)), milliseconds=24)
        out.append(Acquisition(
            day=day, when=when, platform="sentinel-2a" if slot % 2 == 0 else "sentinel-2b",
            sun_azimuth=round(az, 4), sun_elevation=round(el, 4), cover=cover,
            cloud_seed=cloud_seed, cloud_scale=cloud_scale,
            cloud_height=float(r.uniform(900, 2600)), cloud_thr=thr,
            cirrus=float(r.choice([0.0, 0.0, r.uniform(0.03, 0.09), r.uniform(0.05, 0.14)])) if cover > 0.05 else 0.0,
            haze=float(spec.haze * r.uniform(0.4, 1.2)), noise_seed=int(r.integers(0, 2**31 - 1)), pre=pre))
    return out


# --------------------------------------------------------------------------------------------
# Granules and tiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Granule:
    """One scaled-down MGRS granule: a square in its zone's UTM grid."""

    epsg: int
    i: int
    j: int

    @property
    def zone(self) -> int:
        return _zone_of(self.epsg)

    @property
    def left(self) -> float:
        return self.i * GRANULE_STRIDE

    @property
    def top(self) -> float:
        return (self.j + 1) * GRANULE_STRIDE

    @property
    def size(self) -> int:
        return int(round(GRANULE_SIZE / RES))

    @property
    def transform(self) -> Affine:
        return Affine(RES, 0.0, self.left, 0.0, -RES, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.left, self.top - GRANULE_SIZE, self.left + GRANULE_SIZE, self.top)

    def code(self, lat: float) -> str:
        band = _LAT_BANDS[int(np.clip((lat + 80.0) // 8.0, 0, 19))]
        return f"{self.zone:02d}{band}{_MGRS_COLS[self.i % 24]}{_MGRS_ROWS[self.j % 20]}"


@dataclass(frozen=True)
class GranuleTask:
    spec: RegionSpec
    granule: Granule
    acquisitions: tuple[Acquisition, ...]
    item_ids: tuple[str, ...]
    out_dir: str
    band_lon: tuple[float, float] | None  # data only between these longitudes (zone reach)


@dataclass(frozen=True)
class DemTask:
    spec: RegionSpec
    ti: int          # tile index of the south edge, in DEM_TILE_ARCSEC units
    tj: int          # tile index of the west edge
    item_id: str
    out_dir: str


def _cog_profile(width: int, height: int, dtype: str, crs: str, transform: Affine, nodata: float,
                 resampling: str) -> dict:
    return dict(driver="COG", width=width, height=height, count=1, dtype=dtype, crs=crs, transform=transform,
                nodata=nodata, compress="deflate", level=6, predictor=2, blocksize=256,
                overview_resampling=resampling, num_threads=1, bigtiff="NO")


def _write_cog(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata: float,
               resampling: str = "average") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = _cog_profile(data.shape[1], data.shape[0], data.dtype.name, crs, transform, nodata, resampling)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)


def _render_granule(task: GranuleTask) -> list[dict]:
    """All acquisitions of one granule: static land surface once, then each date's sky."""
    world = world_of(task.spec)
    g = task.granule
    n = g.size
    crs = f"EPSG:{g.epsg}"
    # Pixel centres of the whole granule, in the granule's CRS and in the world's home CRS.
    cols = g.left + (np.arange(n) + 0.5) * RES
    rows = g.top - (np.arange(n) + 0.5) * RES
    gxx, gyy = np.meshgrid(cols, rows)
    same = g.epsg == world.epsg
    if same:
        hx, hy = gxx, gyy
    else:
        hx, hy = Transformer.from_crs(g.epsg, world.epsg, always_xy=True).transform(gxx, gyy)
    valid = world.in_world(hx, hy)
    if task.band_lon is not None:
        lon, _ = Transformer.from_crs(g.epsg, 4326, always_xy=True).transform(gxx, gyy)
        valid &= (lon >= task.band_lon[0]) & (lon <= task.band_lon[1])
    # Aligned to the 20 m grid so that the SCL blocks match the 10 m pixels.
    rr, cc = np.nonzero(valid)
    if rr.size == 0:
        return []
    r0, r1 = (rr.min() // 2) * 2, min(n, (rr.max() // 2) * 2 + 2)
    c0, c1 = (cc.min() // 2) * 2, min(n, (cc.max() // 2) * 2 + 2)
    h, w = r1 - r0, c1 - c0
    # Terrain on the window plus a one-pixel ring (beyond the granule if need be: it is procedural),
    # so the gradient is a central difference everywhere and overlapping granules agree.
    pc = g.left + (np.arange(c0 - 1, c1 + 1) + 0.5) * RES
    pr = g.top - (np.arange(r0 - 1, r1 + 1) + 0.5) * RES
    pxx, pyy = np.meshgrid(pc, pr)
    if same:
        phx, phy = pxx, pyy
    else:
        phx, phy = Transformer.from_crs(g.epsg, world.epsg, always_xy=True).transform(pxx, pyy)
    zpad = world.elevation(phx, phy)
    dzdy_rows, dzdx = np.gradient(zpad.astype(np.float64), RES, RES)
    dzdx = dzdx[1:-1, 1:-1].astype(np.float32)
    dzdy = (-dzdy_rows[1:-1, 1:-1]).astype(np.float32)  # rows run south: north is -row
    X, Y = phx[1:-1, 1:-1], phy[1:-1, 1:-1]
    win_valid = valid[r0:r1, c0:c1]
    win_tf = g.transform @ Affine.translation(c0, r0)
    surf = _Surface(world, X, Y, dzdx, dzdy, win_tf, g.epsg)
    # Absolute pixel indices in the zone's grid: the per-pixel noise is keyed on them.
    abs_col = (np.arange(c0, c1) + int(round(g.left / RES)))[None, :]
    abs_row = (np.arange(r0, r1) - int(round(g.top / RES)))[:, None]
    abs_col = np.broadcast_to(abs_col, (h, w))
    abs_row = np.broadcast_to(abs_row, (h, w))

    results = []
    nvalid20 = None
    for acq, item_id in zip(task.acquisitions, task.item_ids):
        refl, scl10 = surf.observe(acq, abs_col, abs_row)
        out_dir = Path(task.out_dir) / item_id
        dn_full = {}
        for b, name in enumerate(BANDS):
            dn = np.clip(np.rint(refl[b] * 10000.0) + DN_OFFSET, 1, 65535).astype(np.uint16)
            full = np.zeros((n, n), dtype=np.uint16)
            full[r0:r1, c0:c1] = np.where(win_valid, dn, 0)
            dn_full[name] = full
            _write_cog(out_dir / f"{name}.tif", full, crs, g.transform, 0, "average")
        scl10 = np.where(win_valid, scl10, SCL_NODATA).astype(np.uint8)
        full10 = np.zeros((n, n), dtype=np.uint8)
        full10[r0:r1, c0:c1] = scl10
        rank = _SCL_PRIORITY[full10].reshape(n // 2, 2, n // 2, 2).max(axis=(1, 3))
        scl20 = _SCL_OF_RANK[rank]
        tf20 = Affine(SCL_RES, 0.0, g.left, 0.0, -SCL_RES, g.top)
        _write_cog(out_dir / "scl.tif", scl20, crs, tf20, 0, "nearest")
        counts = np.bincount(scl20.ravel(), minlength=12).astype(np.float64)
        if nvalid20 is None:
            nvalid20 = counts[1:].sum()
            footprint = _footprint(scl20 > 0, tf20, g.epsg)
        pct = 100.0 * counts / max(nvalid20, 1.0)
        results.append({
            "id": item_id, "footprint": footprint,
            "nodata_pct": 100.0 * counts[0] / counts.sum(),
            "cloud_pct": float(pct[SCL_CLOUD_MED] + pct[SCL_CLOUD_HIGH] + pct[SCL_CIRRUS]),
            "scl_pct": {c: float(pct[c]) for c in range(1, 12)},
        })
    return results


def _footprint(mask: np.ndarray, transform: Affine, epsg: int) -> dict:
    """The valid-data footprint as an EPSG:4326 polygon (what Earth Search puts in ``geometry``)."""
    polys = [shapely.geometry.shape(geom) for geom, val in
             shapes(mask.astype(np.uint8), mask=mask, transform=transform) if val == 1]
    geom = shapely.union_all(polys).simplify(SCL_RES * 1.5)
    if geom.geom_type == "MultiPolygon":
        geom = max(geom.geoms, key=lambda p: p.area)
    geom = shapely.Polygon(geom.exterior)
    geom = shapely.segmentize(geom, 1000.0)
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    geom = shapely.transform(geom, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1))
    return _geojson_geometry(shapely.geometry.polygon.orient(geom, 1.0))


class _Surface:
    """The land surface of one granule window: static components, observed per acquisition."""

    def __init__(self, world: World, X: np.ndarray, Y: np.ndarray, dzdx: np.ndarray, dzdy: np.ndarray,
                 win_tf: Affine, epsg: int):
        self.world = world
        s = world.spec
        self.X, self.Y = X, Y
        self.shape = X.shape
        self.dzdx, self.dzdy = dzdx, dzdy
        grad = np.hypot(dzdx, dzdy)
        self.slope = np.degrees(np.arctan(grad)).astype(np.float32)
        self.cos_slope = (1.0 / np.sqrt(1.0 + grad * grad)).astype(np.float32)
        vals = world.valleys(X, Y)
        z = world.elevation(X, Y, vals)
        self.z = z
        lx, ly = (X - world.ox), (Y - world.oy)
        sc = world.s_cover
        spec = lambda t: np.array(t, dtype=np.float32)[:, None, None]  # noqa: E731

        # Water: the main river (anti-aliased on the 10 m grid) and its gravel bars.
        half = s.river_width / 2.0
        d = vals["d_main"]
        self.f_water = np.clip((half - d) / RES + 0.5, 0, 1).astype(np.float32)
        self.f_water = np.maximum(self.f_water, 0.5 * np.clip((2.0 - vals["d_trib"]) / RES + 0.5, 0, 1))
        self.bar_zone = smoothstep(half + 60.0, half, d) * (d > half - 5)
        self.bar_noise = fbm(lx / 70.0, ly / 70.0, sc + 1, 3)
        # Natural vegetation: cover and forest share vary smoothly; thins on cliffs and up high.
        cover_n = fbm(lx / 500.0, ly / 500.0, sc + 2, 4)
        forest_n = fbm(lx / 900.0, ly / 900.0, sc + 3, 4)
        canopy = fbm(lx / 22.0, ly / 22.0, sc + 4, 2)
        fv = s.veg_density + 0.9 * cover_n - smoothstep(38.0, 55.0, self.slope) * 0.6
        fv = fv - np.clip((z - s.tree_line) / 400.0, 0, 1)
        self.f_veg = np.clip(fv, 0, 1).astype(np.float32)
        ff = np.clip(s.forest + 2.2 * forest_n - 0.3 * smoothstep(30.0, 50.0, self.slope), 0, 1)
        veg = spec(s.forest_spec) * ff + spec(s.grass_spec) * (1 - ff)
        self.veg = veg * (np.float32(1) + np.array([0.1, 0.1, 0.1, 0.18], np.float32)[:, None, None] * canopy)
        rock = np.clip(smoothstep(36.0, 60.0, self.slope) + np.clip((z - s.rock_line) / 300.0, 0, 1), 0, 1)
        soil_tex = fbm(lx / 40.0, ly / 40.0, sc + 5, 2)
        self.ground = (spec(s.soil_spec) * (1 - rock) + spec(s.rock_spec) * rock) * (np.float32(1) + 0.25 * soil_tex)

        # Agriculture: parcels on a lattice along the valley, only on flat ground.
        u, v = vals["u"], vals["v"]
        lu, lv = s.parcel
        pu = np.floor(u / lu).astype(np.int64)
        shift = _u01(hash_u32(pu, pu * 0, world.s_parcel + 1)) * lv
        pv = np.floor((v + shift) / lv).astype(np.int64)
        hp = hash_u32(pu, pv, world.s_parcel)
        self.p_type = _u01(hp)
        self.p_harvest = _u01(hash_u32(pu, pv, world.s_parcel + 2))
        self.p_tone = _u01(hash_u32(pu, pv, world.s_parcel + 3))
        edge_u = np.minimum(np.mod(u, lu), lu - np.mod(u, lu))
        edge_v = np.minimum(np.mod(v + shift, lv), lv - np.mod(v + shift, lv))
        self.hedge = np.clip(1.0 - np.minimum(edge_u, edge_v) / 5.0, 0, 1).astype(np.float32) * 0.5
        suit = fbm(lx / 600.0, ly / 600.0, sc + 6, 2)
        flat = smoothstep(s.field_max_slope + 2.0, s.field_max_slope - 1.0, self.slope)
        # Farmland on the valley floors and low terraces; only the odd clearing up on the hills.
        lowland = np.clip(((0.35 - vals["profile"]) / 0.2), 0, 1) + (suit > 0.25)
        self.f_field = (flat * np.clip(lowland, 0, 1) * (self.p_type < s.field_share) * (suit > -0.25)
                        * (1 - np.clip(self.f_water * 3, 0, 1)) * (d > half + 25.0)).astype(np.float32)
        # A road along the valley floor's edge, and villages beside it.
        d_road = np.abs(vals["signed"] - world.road_side * (s.floor_width * 0.75 + 10.0))
        self.f_road = np.clip((4.0 - d_road) / RES + 0.5, 0, 1).astype(np.float32)
        near_road = d_road < 160.0
        village = (self.p_type > 0.93) & near_road & (self.slope < s.field_max_slope + 3)
        self.f_village = village.astype(np.float32)
        self.f_field *= ~village
        cell_h = hash_u32(np.floor(X / RES).astype(np.int64), np.floor(Y / RES).astype(np.int64), world.s_tex)
        t = _u01(cell_h)
        roofs = np.where(t < 0.35, 0.85, np.where(t < 0.6, 0.55, 0.25)).astype(np.float32)
        self.village = (spec((0.13, 0.14, 0.15, 0.17)) * roofs * 1.4 + spec(s.grass_spec) * (1 - roofs))

        # Vector features: event landslides and old scars, rasterised with 2x2 supersampling.
        wb = self._home_bounds(X, Y)
        to_gran = None if epsg == world.epsg else Transformer.from_crs(world.epsg, epsg, always_xy=True)
        slides = world.features("slide", wb)
        scars = world.features("scar", wb)
        self.c_slide = self._coverage([f.poly for f in slides], win_tf, to_gran)
        self.c_toe = self._coverage([f.toe for f in slides if f.toe is not None], win_tf, to_gran)
        self.c_scar = self._coverage([f.poly for f in scars], win_tf, to_gran)
        self.scar_reveg = self._burn([(f.poly, f.reveg) for f in scars], win_tf, to_gran)
        scar_tex = fbm(lx / 15.0, ly / 15.0, sc + 7, 2)
        self.scar = spec(s.scar_spec) * (np.float32(1) + 0.18 * scar_tex)
        # Illumination geometry: unit normal of the terrain.
        nrm = np.sqrt(1.0 + grad * grad)
        self.nx = (-dzdx / nrm).astype(np.float32)
        self.ny = (-dzdy / nrm).astype(np.float32)
        self.nz = (1.0 / nrm).astype(np.float32)

    @staticmethod
    def _home_bounds(X: np.ndarray, Y: np.ndarray) -> tuple[float, float, float, float]:
        return (float(X.min()) - 30, float(Y.min()) - 30, float(X.max()) + 30, float(Y.max()) + 30)

    def _to_grid(self, geoms: list, to_gran: Transformer | None) -> list:
        if to_gran is None:
            return geoms
        return [shapely.transform(g, lambda xy: np.stack(to_gran.transform(xy[:, 0], xy[:, 1]), axis=1))
                for g in geoms]

    def _coverage(self, geoms: list, win_tf: Affine, to_gran: Transformer | None) -> np.ndarray:
        h, w = self.shape
        if not geoms:
            return np.zeros((h, w), dtype=np.float32)
        fine = rasterize(self._to_grid(geoms, to_gran), out_shape=(2 * h, 2 * w),
                         transform=win_tf @ Affine.scale(0.5), fill=0, default_value=1, dtype="uint8")
        return fine.reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)

    def _burn(self, pairs: list, win_tf: Affine, to_gran: Transformer | None) -> np.ndarray:
        h, w = self.shape
        if not pairs:
            return np.zeros((h, w), dtype=np.float32)
        geoms = self._to_grid([p for p, _ in pairs], to_gran)
        out = rasterize([(g, int(round(v * 250))) for g, (_, v) in zip(geoms, pairs)], out_shape=(h, w),
                        transform=win_tf, fill=0, dtype="uint8")
        return out.astype(np.float32) / np.float32(250)

    # ---- one acquisition ------------------------------------------------------------------

    def observe(self, acq: Acquisition, abs_col: np.ndarray, abs_row: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Surface reflectance as the satellite sees it (4, h, w) and the 10 m scene class."""
        w = self.world
        s = w.spec
        doy = acq.day.timetuple().tm_yday
        pheno = np.float32(s.pheno_amp * math.cos(2 * math.pi * (doy - s.pheno_peak_doy) / 365.0))
        spec = lambda t: np.array(t, dtype=np.float32)[:, None, None]  # noqa: E731
        # Natural cover, with the season: greener NIR and less red at the peak.
        season = spec((1 - 0.5 * pheno, 1 + 0.2 * pheno, 1 - 0.8 * pheno, 1 + pheno))
        fv = self.f_veg * (np.float32(1) - self.c_scar * (np.float32(1) - self.scar_reveg))
        ground = self.ground * (1 - self.c_scar) + self.scar * 0.9 * self.c_scar
        land = self.veg * season * fv + ground * (np.float32(1) - fv)
        # Fields: crops grow, are harvested (some between the pre and post passes), ploughed.
        days_to_harvest = (acq.day - s.event_date).days - (self.p_harvest * 110.0 - 45.0)
        green = np.clip(0.75 - days_to_harvest / 60.0, 0.05, 1.0) * (self.p_tone < 0.8)
        harvested = days_to_harvest > 0
        crop = spec((0.030, 0.070, 0.040, 0.420))
        bare = spec(s.soil_spec) * (0.75 + 0.5 * self.p_tone)
        stubble = spec((0.080, 0.110, 0.130, 0.230))
        after = np.where(self.p_tone < 0.45, bare, stubble)
        field_spec = np.where(harvested, after, crop * green + bare * (1 - green))
        field_spec = field_spec * (1 - self.hedge) + self.veg * self.hedge
        land = land * (1 - self.f_field) + field_spec * self.f_field
        land = land * (1 - self.f_village) + self.village * self.f_village
        road = spec((0.115, 0.125, 0.135, 0.165))
        land = land * (1 - self.f_road) + road * self.f_road
        # River: more gravel bars and turbid water after the event (sediment from the slides).
        post = not acq.pre
        bar_thr = -0.05 if post else 0.12
        f_bar = self.bar_zone * smoothstep(bar_thr, bar_thr + 0.1, self.bar_noise)
        land = land * (1 - f_bar) + spec(s.rock_spec) * 1.05 * f_bar
        turb = 0.75 if post else 0.15
        water = spec(s.water_spec) * (1 - turb) + spec(s.turbid_spec) * turb
        land = land * (1 - self.f_water) + water * self.f_water
        # The event's landslides: fresh soil and rock, a darker wet toe on the big ones.
        if post:
            scar = self.scar * (1 - 0.35 * self.c_toe)
            land = land * (1 - self.c_slide) + scar * self.c_slide
        # Topographic illumination (Lambert plus skylight) for this date's sun.
        az, el = math.radians(acq.sun_azimuth), math.radians(acq.sun_elevation)
        sx, sy, sz = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)
        cos_i = self.nx * sx + self.ny * sy + self.nz * sz
        direct = np.clip(cos_i, 0, None) / max(sz, 0.15)
        illum = (0.22 + 0.78 * direct) * (1 - 0.6 * self.f_water) + 1.0 * 0.6 * self.f_water
        refl = land * illum
        # Atmosphere left over after correction: smooth, blue-heavy haze, unflagged.
        X, Y = self.X, self.Y
        hz = lattice_sample(lambda a, b: fbm((a - w.ox) / 3000.0, (b - w.oy) / 3000.0, acq.cloud_seed + 3, 2),
                            X, Y, 200.0)
        haze = acq.haze * np.clip(0.5 + hz, 0, 1)
        refl = refl + spec((0.030, 0.020, 0.012, 0.006)) * haze
        # Clouds, their shadows (displaced away from the sun), thin cirrus.
        thr = acq.cloud_thr
        cn = lattice_sample(lambda a, b: w.cloud_noise(acq, a, b), X, Y, 40.0)
        alpha = smoothstep(thr - _EDGE_LO, thr + _EDGE_HI, cn)
        off = acq.cloud_height / math.tan(max(el, math.radians(10)))
        dx, dy = off * math.sin(az), off * math.cos(az)
        sn = lattice_sample(lambda a, b: w.cloud_noise(acq, a, b), X + dx, Y + dy, 40.0)
        shadow = smoothstep(thr - _EDGE_LO, thr + _EDGE_HI, sn)
        cirrus = np.float32(0)
        if acq.cirrus > 0:
            cr = lattice_sample(lambda a, b: w.cirrus_noise(acq, a, b), X, Y, 80.0)
            cirrus = acq.cirrus * smoothstep(0.0, 0.3, cr)
        refl = refl * (1 - 0.72 * shadow)
        top = np.clip(0.55 + 0.8 * (cn - thr), 0.35, 0.9)
        cloud = spec((1.03, 1.0, 0.98, 0.97)) * top
        refl = refl * (1 - alpha) + cloud * alpha
        refl = refl + spec((1.0, 0.97, 0.93, 0.9)) * cirrus
        # Sensor and sub-pixel noise: keyed on the absolute pixel, so overlapping granules agree.
        h1 = hash_u32(abs_col, abs_row, acq.noise_seed)
        h2 = hash_u32(abs_col, abs_row, acq.noise_seed + 1)
        sixteen = np.uint32(0xFFFF)
        us = [(h1 & sixteen), (h1 >> np.uint32(16)), (h2 & sixteen), (h2 >> np.uint32(16))]
        noise = np.stack([(u.astype(np.float32) / np.float32(65535) - np.float32(0.5)) for u in us])
        refl = refl * (1 + np.float32(0.03) * noise) + np.float32(0.004) * noise
        refl = np.clip(refl, 0.0005, 1.2).astype(np.float32)

        # Scene classification as Sen2Cor would do it (but missing thin cloud edges).
        blue, red, nir = refl[0], refl[2], refl[3]
        ndvi = (nir - red) / (nir + red + 1e-6)
        scl = np.full(self.shape, SCL_BARE, dtype=np.uint8)
        scl[ndvi >= 0.33] = SCL_VEG
        scl[(ndvi >= 0.27) & (ndvi < 0.33)] = SCL_UNCLASSIFIED
        scl[(illum < 0.3) & (nir < 0.08)] = SCL_DARK
        scl[self.f_water > 0.5] = SCL_WATER
        scl[shadow >= 0.35] = SCL_SHADOW
        if acq.cirrus > 0:
            scl[cirrus >= 0.045] = SCL_CIRRUS
        scl[alpha >= 0.25] = SCL_CLOUD_MED
        scl[(alpha >= 0.6) & (blue > 0.25)] = SCL_CLOUD_HIGH
        return refl, scl


# --------------------------------------------------------------------------------------------
# DEM tiles
# --------------------------------------------------------------------------------------------


def _dem_name(ti: int, tj: int) -> str:
    """Copernicus-style tile name from the south-west corner, in degrees and arc-minutes."""
    def part(idx: int, pos: str, neg: str, width: int) -> str:
        minutes = idx * DEM_TILE_ARCSEC // 60
        sign = pos if minutes >= 0 else neg
        minutes = abs(minutes)
        return f"{sign}{minutes // 60:0{width}d}_{minutes % 60:02d}"
    return f"Copernicus_DSM_COG_10_{part(ti, 'N', 'S', 2)}_{part(tj, 'E', 'W', 3)}_DEM"


def _dem_tile_transform(ti: int, tj: int) -> Affine:
    px = 1.0 / 3600.0
    return Affine(px, 0.0, tj * DEM_TILE_ARCSEC / 3600.0, 0.0, -px, (ti + 1) * DEM_TILE_ARCSEC / 3600.0)


def _render_dem(task: DemTask) -> dict:
    """One DEM tile: the world's elevation averaged over each 1" pixel (3x3 samples)."""
    world = world_of(task.spec)
    n = DEM_TILE_ARCSEC
    tf = _dem_tile_transform(task.ti, task.tj)
    to_home = Transformer.from_crs(4326, world.epsg, always_xy=True)
    c = tf.c + (np.arange(n) + 0.5) * tf.a
    r = tf.f + (np.arange(n) + 0.5) * tf.e
    lon, lat = np.meshgrid(c, r)
    hx, hy = to_home.transform(lon, lat)
    valid = world.in_world(hx, hy)
    out = np.full((n, n), DEM_NODATA, dtype=np.float32)
    if valid.any():
        lo, la = lon[valid], lat[valid]
        acc = np.zeros(lo.shape, dtype=np.float64)
        offs = (-1.0 / 3.0, 0.0, 1.0 / 3.0)
        sx = np.concatenate([lo + a * tf.a for a in offs for _ in offs])
        sy = np.concatenate([la + b * tf.e for _ in offs for b in offs])
        x, y = to_home.transform(sx, sy)
        z = world.elevation_at(x, y).astype(np.float64).reshape(9, -1)
        acc = z.mean(axis=0)
        out[valid] = np.round(acc, 2).astype(np.float32)
    path = Path(task.out_dir) / task.item_id / "data.tif"
    _write_cog(path, out, "EPSG:4326", tf, DEM_NODATA, "average")
    return {"id": task.item_id, "valid_pct": 100.0 * float(valid.mean())}


# --------------------------------------------------------------------------------------------
# STAC documents
# --------------------------------------------------------------------------------------------


def _r(v: float, nd: int = 7) -> float:
    return float(round(float(v), nd))


def _geojson_geometry(geom: shapely.Geometry, nd: int = 7) -> dict:
    g = shapely.geometry.mapping(geom)

    def rnd(c):
        if isinstance(c[0], (int, float)):
            return [_r(c[0], nd), _r(c[1], nd)]
        return [rnd(x) for x in c]
    return {"type": g["type"], "coordinates": rnd(g["coordinates"])}


def _bbox_of(geom_json: dict) -> list[float]:
    b = shapely.geometry.shape(geom_json).bounds
    return [_r(v) for v in b]


def _s2_item(region: RegionSpec, g: Granule, acq: Acquisition, res: dict) -> dict:
    tile = g.code(region.lat)
    mgrs_band, square = tile[2], tile[3:]
    t20 = Affine(SCL_RES, 0.0, g.left, 0.0, -SCL_RES, g.top)
    assets = {}
    for name in BANDS:
        band, wl, fwhm = BAND_INFO[name]
        assets[name] = {
            "href": f"../../sentinel-2-l2a/{res['id']}/{name}.tif", "type": COG_TYPE,
            "title": f"{name.capitalize()} ({band}) - 10m", "roles": ["data", "reflectance"],
            "proj:shape": [g.size, g.size], "proj:transform": list(g.transform)[:6],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                              "spatial_resolution": RES, "scale": 0.0001, "offset": -0.1}],
            "eo:bands": [{"name": band, "common_name": name, "center_wavelength": wl,
                          "full_width_half_max": fwhm}],
            "gsd": RES,
        }
    assets["scl"] = {
        "href": f"../../sentinel-2-l2a/{res['id']}/scl.tif", "type": COG_TYPE,
        "title": "Scene classification map (SCL)", "roles": ["data"],
        "proj:shape": [g.size // 2, g.size // 2], "proj:transform": list(t20)[:6],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": SCL_RES, "unit": "class"}],
    }
    pct = res["scl_pct"]
    props = {
        "datetime": acq.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "platform": acq.platform, "constellation": "sentinel-2", "instruments": ["msi"],
        "gsd": RES, "eo:cloud_cover": _r(res["cloud_pct"], 6),
        "proj:code": f"EPSG:{g.epsg}", "proj:epsg": g.epsg,
        "proj:bbox": [_r(v, 1) for v in g.bounds], "proj:shape": [g.size, g.size],
        "proj:transform": list(g.transform)[:6],
        "mgrs:utm_zone": g.zone, "mgrs:latitude_band": mgrs_band, "mgrs:grid_square": square,
        "grid:code": f"MGRS-{tile}",
        "view:sun_azimuth": acq.sun_azimuth, "view:sun_elevation": acq.sun_elevation,
        "s2:product_type": "S2MSI2A", "s2:processing_baseline": "05.09",
        "s2:nodata_pixel_percentage": _r(res["nodata_pct"], 6),
        "s2:saturated_defective_pixel_percentage": _r(pct[SCL_SATURATED], 6),
        "s2:dark_features_percentage": _r(pct[SCL_DARK], 6),
        "s2:cloud_shadow_percentage": _r(pct[SCL_SHADOW], 6),
        "s2:vegetation_percentage": _r(pct[SCL_VEG], 6),
        "s2:not_vegetated_percentage": _r(pct[SCL_BARE], 6),
        "s2:water_percentage": _r(pct[SCL_WATER], 6),
        "s2:unclassified_percentage": _r(pct[SCL_UNCLASSIFIED], 6),
        "s2:medium_proba_clouds_percentage": _r(pct[SCL_CLOUD_MED], 6),
        "s2:high_proba_clouds_percentage": _r(pct[SCL_CLOUD_HIGH], 6),
        "s2:thin_cirrus_percentage": _r(pct[SCL_CIRRUS], 6),
        "s2:snow_ice_percentage": _r(pct[SCL_SNOW], 6),
        "earthsearch:boa_offset_applied": False,
        "synthetic:region": region.name,
    }
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": S2_EXTENSIONS,
        "id": res["id"], "collection": "sentinel-2-l2a",
        "geometry": res["footprint"], "bbox": _bbox_of(res["footprint"]),
        "properties": props, "links": [], "assets": assets,
    }


def _dem_item(task: DemTask) -> dict:
    tf = _dem_tile_transform(task.ti, task.tj)
    n = DEM_TILE_ARCSEC
    w, n_ = tf.c, tf.f
    e, s = w + n * tf.a, n_ + n * tf.e
    geom = {"type": "Polygon", "coordinates": [[[_r(w), _r(s)], [_r(e), _r(s)], [_r(e), _r(n_)],
                                                [_r(w), _r(n_)], [_r(w), _r(s)]]]}
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": DEM_EXTENSIONS,
        "id": task.item_id, "collection": "cop-dem-glo-30",
        "geometry": geom, "bbox": [_r(w), _r(s), _r(e), _r(n_)],
        "properties": {"datetime": DEM_DATETIME, "platform": "tandem-x", "gsd": 30,
                       "proj:code": "EPSG:4326", "proj:epsg": 4326, "proj:shape": [n, n],
                       "proj:transform": [_r(v, 12) for v in list(tf)[:6]]},
        "links": [],
        "assets": {"data": {
            "href": f"../../cop-dem-glo-30/{task.item_id}/data.tif", "type": COG_TYPE,
            "title": "Digital surface model (synthetic)", "roles": ["data"],
            "proj:shape": [n, n], "proj:transform": [_r(v, 12) for v in list(tf)[:6]],
            "raster:bands": [{"nodata": DEM_NODATA, "data_type": "float32", "spatial_resolution": 30,
                              "unit": "metre"}],
        }},
    }


def _collection(cid: str, title: str, description: str, items: list[dict], extra: dict) -> dict:
    bbs = np.array([it["bbox"] for it in items])
    times = sorted(it["properties"]["datetime"] for it in items)
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": cid, "title": title,
        "description": description, "license": "proprietary",
        "keywords": ["synthetic", "landslides", "demo"],
        "providers": [{"name": "landslide_dask synthetic generator", "roles": ["producer", "processor"]}],
        "extent": {"spatial": {"bbox": [[_r(bbs[:, 0].min()), _r(bbs[:, 1].min()),
                                         _r(bbs[:, 2].max()), _r(bbs[:, 3].max())]]},
                   "temporal": {"interval": [[times[0], times[-1]]]}},
        "links": [], **extra,
    }


def _s2_collection(items: list[dict]) -> dict:
    item_assets = {name: {"type": COG_TYPE, "roles": ["data", "reflectance"], "gsd": RES,
                          "eo:bands": [{"name": BAND_INFO[name][0], "common_name": name,
                                        "center_wavelength": BAND_INFO[name][1]}],
                          "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": RES,
                                            "scale": 0.0001, "offset": -0.1}]} for name in BANDS}
    item_assets["scl"] = {"type": COG_TYPE, "roles": ["data"],
                          "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": SCL_RES}]}
    return _collection(
        "sentinel-2-l2a", "Sentinel-2 Level-2A (synthetic)",
        "Synthetic Sentinel-2 L2A granules in the Earth Search conventions: one COG per band, DN = "
        "reflectance * 10000 + 1000 (scale 0.0001, offset -0.1), nodata 0, SCL at 20 m.",
        items, {"stac_extensions": ["https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"],
                "summaries": {"platform": ["sentinel-2a", "sentinel-2b"], "constellation": ["sentinel-2"],
                              "instruments": ["msi"], "gsd": [RES]},
                "item_assets": item_assets})


def _dem_collection(items: list[dict]) -> dict:
    return _collection(
        "cop-dem-glo-30", "Copernicus DEM GLO-30 (synthetic)",
        "Synthetic elevation tiles in the Earth Search cop-dem-glo-30 conventions: float32 metres, "
        "EPSG:4326 at 1 arc-second, nodata -32767 outside the generated worlds.",
        items, {"item_assets": {"data": {"type": COG_TYPE, "roles": ["data"]}}})


# --------------------------------------------------------------------------------------------
# Region vectors: AOI, inventory area, inventory
# --------------------------------------------------------------------------------------------


def _to_lonlat(geom: shapely.Geometry, epsg: int) -> shapely.Geometry:
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1))


def _region_vectors(world: World) -> tuple[shapely.Polygon, shapely.Polygon, list[tuple[Feature, shapely.Polygon]]]:
    """AOI (a square with one corner cut), inventory area (the AOI less a side strip), inventory."""
    s = world.spec
    x0, y0, x1, y1 = world.aoi_box
    side = x1 - x0
    cut = 0.18 * side
    aoi = shapely.Polygon([(x0, y0), (x1 - cut, y0), (x1, y0 + cut), (x1, y1), (x0, y1)])
    strip = 0.15 * side
    keep = (shapely.box(x0 + strip, y0 - 1, x1 + 1, y1 + 1) if s.inventory_strip == "west"
            else shapely.box(x0 - 1, y0 - 1, x1 - strip, y1 + 1))
    area = aoi.intersection(keep)
    slides = world.features("slide", area.bounds)
    inv = [(f, f.poly) for f in slides if f.poly.intersects(area)]
    inv.sort(key=lambda t: (t[0].key[1], t[0].key[0], t[0].key[2]))
    return aoi, area, inv


def _fc(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def _zone_reach(world: World) -> list[tuple[int, tuple[float, float] | None]]:
    """UTM zones whose granules cover part of the world, with the longitudes they reach."""
    x0, y0, x1, y1 = world.world_box
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), 200.0)
    ll = _to_lonlat(ring, world.epsg)
    lon0, lat0, lon1, lat1 = ll.bounds
    hemi = 32600 if world.spec.lat >= 0 else 32700
    out = []
    for zone in range(int((lon0 + 180) // 6) + 1, int((lon1 + 180) // 6) + 2):
        if not 1 <= zone <= 60:
            continue
        w, e = _zone_lon_range(zone)
        lo, hi = w - ZONE_OVERLAP_DEG, e + ZONE_OVERLAP_DEG
        if hi <= lon0 or lo >= lon1:
            continue
        clip = None if (lo <= lon0 and hi >= lon1) else (lo, hi)
        out.append((hemi + zone, clip))
    return out


def _granules_for(world: World, epsg: int, clip: tuple[float, float] | None) -> list[Granule]:
    x0, y0, x1, y1 = world.world_box
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), 100.0)
    poly = ring if epsg == world.epsg else shapely.transform(
        ring, lambda xy: np.stack(Transformer.from_crs(world.epsg, epsg, always_xy=True)
                                  .transform(xy[:, 0], xy[:, 1]), axis=1))
    if clip is not None:
        lat0, lat1 = world.spec.lat - 1.0, world.spec.lat + 1.0
        band = shapely.segmentize(shapely.box(clip[0], lat0, clip[1], lat1), 0.01)
        tr = Transformer.from_crs(4326, epsg, always_xy=True)
        poly = poly.intersection(shapely.transform(band, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1)))
    if poly.is_empty:
        return []
    bx0, by0, bx1, by1 = poly.bounds
    out = []
    i0, i1 = int(math.floor((bx0 - GRANULE_SIZE) / GRANULE_STRIDE)), int(math.floor(bx1 / GRANULE_STRIDE))
    j0, j1 = int(math.floor(by0 / GRANULE_STRIDE)) - 1, int(math.floor((by1 + GRANULE_SIZE) / GRANULE_STRIDE))
    for i in range(i0, i1 + 1):
        for j in range(j0, j1 + 1):
            g = Granule(epsg, i, j)
            if shapely.box(*g.bounds).intersection(poly).area > 4 * RES * RES:
                out.append(g)
    return out


def _write_catalog(out: Path, s2_items: list[dict], dem_items: list[dict]) -> None:
    """The STAC collections and item collections of the imagery and the DEM, sorted."""
    s2_items.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
    dem_items.sort(key=lambda it: it["id"])
    _write_json(out / "stac" / "collections" / "sentinel-2-l2a.json", _s2_collection(s2_items))
    _write_json(out / "stac" / "collections" / "cop-dem-glo-30.json", _dem_collection(dem_items))
    _write_json(out / "stac" / "items" / "sentinel-2-l2a.json", _fc(s2_items))
    _write_json(out / "stac" / "items" / "cop-dem-glo-30.json", _fc(dem_items))


def _pool_map(fn, tasks: list, workers: int) -> list:
    if len(tasks) <= 1:
        workers = 1  # no process pool for a single task
    return [r for _, r in _pool_imap(fn, tasks, workers)]


def _run_task(task) -> object:
    if isinstance(task, GranuleTask):
        return _render_granule(task)
    return _render_dem(task)


def _granule_tasks(spec: RegionSpec, world: World, acqs: list[Acquisition], out: Path, used_ids: set[str]):
    """The granule tasks of one world, zone by zone, as a stream (item ids made unique in ``used_ids``)."""
    for epsg, clip in _zone_reach(world):
        for g in _granules_for(world, epsg, clip):
            ids = []
            for a in acqs:
                sat = "S2A" if a.platform == "sentinel-2a" else "S2B"
                seq = 0
                while f"{sat}_{g.code(spec.lat)}_{a.when:%Y%m%d}_{seq}_L2A" in used_ids:
                    seq += 1
                iid = f"{sat}_{g.code(spec.lat)}_{a.when:%Y%m%d}_{seq}_L2A"
                used_ids.add(iid)
                ids.append(iid)
            yield GranuleTask(spec, g, tuple(acqs), tuple(ids), str(out / "sentinel-2-l2a"), clip)


def _add_dem_tasks(spec: RegionSpec, world: World, out: Path, dem_tasks: dict[str, DemTask]) -> None:
    """The DEM tiles (0.05 degree) under the world's box, added to ``dem_tasks`` by name."""
    x0, y0, x1, y1 = world.world_box
    ll = _to_lonlat(shapely.segmentize(shapely.box(x0, y0, x1, y1), 200.0), world.epsg).bounds
    a = DEM_TILE_ARCSEC / 3600.0
    for ti in range(int(math.floor(ll[1] / a)), int(math.floor(ll[3] / a)) + 1):
        for tj in range(int(math.floor(ll[0] / a)), int(math.floor(ll[2] / a)) + 1):
            name = _dem_name(ti, tj)
            if name not in dem_tasks:  # regions never share tiles, but be safe
                dem_tasks[name] = DemTask(spec, ti, tj, name, str(out / "cop-dem-glo-30"))


def make_demo_data(out_dir: str | Path, seed: int = 0, size_km: float = 6.0, n_regions: int = 4,
                   workers: int | None = None) -> Path:
    """Generate the demo regions under out_dir; deterministic by seed. Returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    specs = region_specs(n_regions, seed, size_km)

    granule_tasks: list[GranuleTask] = []
    dem_tasks: dict[str, DemTask] = {}
    plans: dict[str, tuple[World, list[Acquisition]]] = {}
    used_ids: set[str] = set()
    for spec in specs:
        world = World(spec)
        acqs = plan_acquisitions(spec, world)
        plans[spec.name] = (world, acqs)
        granule_tasks.extend(_granule_tasks(spec, world, acqs, out, used_ids))
        _add_dem_tasks(spec, world, out, dem_tasks)

    tasks: list = list(granule_tasks) + list(dem_tasks.values())
    results = _pool_map(_run_task, tasks, workers)
    gran_results = results[:len(granule_tasks)]

    s2_items = []
    for task, res in zip(granule_tasks, gran_results):
        for acq, r in zip(task.acquisitions, res):
            s2_items.append(_s2_item(task.spec, task.granule, acq, r))
    _write_catalog(out, s2_items, [_dem_item(t) for t in dem_tasks.values()])

    regions = []
    for spec in specs:
        world, acqs = plans[spec.name]
        aoi, area, inv = _region_vectors(world)
        rdir = out / "regions" / spec.name
        aoi_ll = _to_lonlat(shapely.segmentize(aoi, 100.0), world.epsg)
        area_ll = _to_lonlat(shapely.segmentize(area, 100.0), world.epsg)
        feats = []
        for k, (f, poly) in enumerate(inv, start=1):
            geom = shapely.geometry.polygon.orient(_to_lonlat(poly, world.epsg), 1.0)
            feats.append({"type": "Feature", "properties": {
                "id": k, "event_date": spec.event_date.isoformat(), "area_m2": _r(poly.area, 1)},
                "geometry": _geojson_geometry(geom, 8)})
        for fname, geom in (("aoi.geojson", aoi_ll), ("inventory_area.geojson", area_ll)):
            _write_json(rdir / fname, _fc([{"type": "Feature", "properties": {"name": spec.name},
                                            "geometry": _geojson_geometry(shapely.geometry.polygon.orient(geom, 1.0))}]))
        _write_json(rdir / "inventory.geojson", _fc(feats))
        zones = sorted({t.granule.epsg for t in granule_tasks if t.spec.name == spec.name})
        regions.append({
            "name": spec.name, "event_date": spec.event_date.isoformat(), "epsg": world.epsg,
            "bbox": [_r(v) for v in aoi_ll.bounds],
            "aoi": f"regions/{spec.name}/aoi.geojson",
            "inventory": f"regions/{spec.name}/inventory.geojson",
            "inventory_area": f"regions/{spec.name}/inventory_area.geojson",
            "description": spec.description,
            "imagery_epsg": zones,
            "pre_dates": [a.day.isoformat() for a in acqs if a.pre],
            "post_dates": [a.day.isoformat() for a in acqs if not a.pre],
            "landslides": len(feats), "landslide_area_m2": _r(sum(p.area for _, p in inv), 1),
            "seed": seed,
        })
    _write_json(out / "regions.json", regions)
    return out


# --------------------------------------------------------------------------------------------
# The demo country: one large world, several event clusters, two UTM zones
# --------------------------------------------------------------------------------------------

# The bbox of cluster/jobs/demo-country.yaml: ~2,180 km² around gorkha_like, across 84 E (44N/45N).
DEMO_COUNTRY_BBOX = (83.75, 28.0, 84.25, 28.4)
# Event clusters as (x, y) fractions of the bbox (0, 0 = south-west), e-folding distance as a
# fraction of the bbox's mean side (at least 1.5 km), and relative intensity. Two clusters lie in
# each zone; the main one is 8 km east of the zone boundary, so its slides straddle it.
DEMO_COUNTRY_EVENTS = ((0.66, 0.62, 0.12, 1.0), (0.22, 0.30, 0.08, 0.85),
                       (0.86, 0.14, 0.06, 0.7), (0.30, 0.86, 0.05, 0.6))
COUNTRY_INVENTORY_BLOCK_KM = 5.0   # the inventory is collected in strips of this height
_TRIB_D_CUT = 4000.0               # m: a tributary's influence ends smoothly at this distance ...
_TRIB_FADES = 3.0                  # ... and this many e-folding lengths upstream
_MAIN_CUT_WIDTHS = 5.0             # a main valley's influence ends at this many valley widths


@dataclass(frozen=True)
class CountrySpec(RegionSpec):
    """A region grown to a country: a lon/lat bbox, parallel main valleys, several event clusters.

    ``events``: (lon, lat, e-folding km, weight) of each epicentre. ``size_km`` is the bbox's
    larger side (only the look of the valleys' meanders depends on it).
    """

    bbox: tuple[float, float, float, float] = DEMO_COUNTRY_BBOX
    events: tuple[tuple[float, float, float, float], ...] = ()
    valley_spacing_km: float = 11.0


def world_of(spec: RegionSpec) -> World:
    """The procedural world of a region or country spec (what a render task rebuilds)."""
    return CountryWorld(spec) if isinstance(spec, CountrySpec) else World(spec)


def _bbox_km(bbox: tuple[float, float, float, float]) -> tuple[float, float]:
    w, s, e, n = bbox
    mid = math.radians(0.5 * (s + n))
    return (e - w) * 111.32 * math.cos(mid), (n - s) * 110.95


def country_spec(seed: int = 0, bbox: tuple[float, float, float, float] | None = None,
                 events: tuple[tuple[float, float, float, float], ...] = DEMO_COUNTRY_EVENTS,
                 name: str = "gorkha_country") -> CountrySpec:
    """The demo country: the ``gorkha_like`` look over ``bbox`` (default: the demo-country job's
    ~2,180 km² across the UTM 44N/45N boundary), with the event clusters ``events`` (fractions of
    the bbox, see ``DEMO_COUNTRY_EVENTS``). Deterministic by seed."""
    w, s, e, n = (float(v) for v in (bbox or DEMO_COUNTRY_BBOX))
    if not (-180 <= w < e <= 180 and -80 <= s < n <= 84):
        raise InputDataError(f"country bbox must be [west, south, east, north] in degrees, got {bbox!r}.")
    kx, ky = _bbox_km((w, s, e, n))
    if max(kx, ky) > 400.0:
        raise InputDataError(f"country bbox of {kx:.0f} x {ky:.0f} km is larger than the generator allows (400 km).")
    t = next(r for r in REGION_TEMPLATES if r.name == "gorkha_like")
    side = 0.5 * (kx + ky)
    ev = tuple((w + fx * (e - w), s + fy * (n - s), max(1.5, fd * side), float(wt)) for fx, fy, fd, wt in events)
    rng = np.random.default_rng([seed, 99, 11])
    return CountrySpec(**{**t.__dict__, "name": name, "lon": 0.5 * (w + e), "lat": 0.5 * (s + n),
                          "description": "A demo country with the gorkha_like look: Himalayan foothills with "
                                         "parallel main valleys, several earthquake-triggered landslide clusters, "
                                         "across the UTM 44N/45N boundary when it spans 84 E.",
                          "size_km": float(max(kx, ky)), "margin_km": 1.0 if max(kx, ky) > 10 else 0.4,
                          "seed": int(rng.integers(0, 2**31 - 1)), "bbox": (w, s, e, n), "events": ev})


class CountryWorld(World):
    """The world of a :class:`CountrySpec`: a lon/lat bbox (plus margin) instead of a square,
    several parallel main valleys with their tributaries, and several epicentres.

    Every valley's influence ends smoothly at a finite distance, so a tile evaluates only the
    valleys near it and the result is still a pure function of position (tiles agree exactly).
    """

    def __init__(self, spec: CountrySpec):
        super().__init__(spec)
        to_home = Transformer.from_crs(4326, self.epsg, always_xy=True)
        ring = shapely.segmentize(shapely.box(*spec.bbox), 0.005)
        self.aoi_home = shapely.transform(ring, lambda xy: np.stack(to_home.transform(xy[:, 0], xy[:, 1]), axis=1))
        x0, y0, x1, y1 = self.aoi_home.bounds
        m = spec.margin_km * 1000.0
        self.world_box = (self._snap(x0 - m, -1), self._snap(y0 - m, -1), self._snap(x1 + m, 1), self._snap(y1 + m, 1))
        self.aoi_box = (x0, y0, x1, y1)
        ex, ey = to_home.transform([v[0] for v in spec.events], [v[1] for v in spec.events])
        self.epicentres = [(float(a), float(b), v[2] * 1000.0, v[3]) for a, b, v in zip(ex, ey, spec.events)]
        # Parallel main valleys across the world, each with its own meanders and tributaries.
        bx0, by0, bx1, by1 = self.world_box
        cu, cv = self.frame(np.array([bx0, bx1, bx0, bx1]), np.array([by0, by0, by1, by1]))
        spacing = spec.valley_spacing_km * 1000.0
        reach = 3.0 * 3500.0
        self.mains = []
        for k in range(int(math.floor(cv.min() / spacing)) - 1, int(math.ceil(cv.max() / spacing)) + 2):
            r = np.random.default_rng([spec.seed, 21, k + 10_000])
            off = k * spacing + float(r.uniform(-0.15, 0.15)) * spacing
            meander = (off, float(r.uniform(150, 320)), float(r.uniform(900, 1500)), float(r.uniform(0, 6.28)),
                       float(r.uniform(40, 90)), float(r.uniform(250, 400)), float(r.uniform(0, 6.28)))
            tribs = []
            t0 = int(math.floor((cu.min() - reach) / spec.trib_spacing)) - 1
            t1 = int(math.ceil((cu.max() + reach) / spec.trib_spacing)) + 1
            for t in range(t0, t1 + 1):
                rt = np.random.default_rng([spec.seed, 22, k + 10_000, t + 10_000])
                u0 = t * spec.trib_spacing + float(rt.uniform(-0.25, 0.25)) * spec.trib_spacing
                side = 1.0 if (t + k) % 2 == 0 else -1.0
                ang = math.radians(side * float(rt.uniform(55, 100)))
                tribs.append((u0, ang, float(rt.uniform(40, 120)), float(rt.uniform(400, 800)),
                              float(rt.uniform(0, 6.28)), float(rt.uniform(1800, 3500)), float(rt.uniform(0.6, 1.0))))
            # Per tributary: junction (u0, c0), direction, meander and fade, as arrays for the culling.
            tr = np.array(tribs, dtype=np.float64).reshape(-1, 7)
            c0 = self._main_centreline(meander, tr[:, 0])[0]
            self.mains.append((meander, tr, c0, np.cos(tr[:, 1]), np.sin(tr[:, 1])))

    @staticmethod
    def _main_centreline(meander: tuple, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        off, a1, l1, p1, a2, l2, p2 = meander
        c = off + a1 * np.sin(u / l1 + p1) + a2 * np.sin(u / l2 + p2)
        dc = a1 / l1 * np.cos(u / l1 + p1) + a2 / l2 * np.cos(u / l2 + p2)
        return c, dc

    def valleys(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """As :meth:`World.valleys`, over the nearby main valleys: the river, road and fields
        follow the nearest main valley within reach; the profile is the lowest of all."""
        s = self.spec
        u, v = self.frame(x, y)
        shape = np.shape(u)
        prof = np.ones(shape, dtype=np.float32)
        signed = np.full(shape, 1e6, dtype=np.float32)
        d_main = np.full(shape, 1e6, dtype=np.float32)
        d_trib = np.full(shape, 1e6, dtype=np.float32)
        if u.size == 0:
            return {"u": u, "v": v, "signed": signed, "d_main": d_main, "d_trib": d_trib, "profile": prof}
        umin, umax, vmin, vmax = float(u.min()), float(u.max()), float(v.min()), float(v.max())
        cut = _MAIN_CUT_WIDTHS * s.valley_width
        cu_ = np.array([umin, umax, umin, umax])
        cv_ = np.array([vmin, vmin, vmax, vmax])
        for meander, tr, c0s, cas, sas in self.mains:
            off, a1, l1, _, a2, l2, _ = meander
            # |signed| >= (|v - off| - a1 - a2) / sqrt(1 + max|c'|^2): skip valleys out of reach.
            wig = a1 + a2
            slope_max = math.sqrt(1.0 + (a1 / l1 + a2 / l2) ** 2)
            near = max(vmin - off - wig, off - wig - vmax, 0.0) / slope_max
            if near < cut:
                c, dc = self._main_centreline(meander, u)
                sg = ((v - c) / np.sqrt(1.0 + dc * dc)).astype(np.float32)
                d = np.abs(sg)
                p = self._profile(d, s.floor_width, s.valley_width)
                taper = smoothstep(cut, 0.6 * cut, d)
                prof = np.minimum(prof, np.float32(1) - (np.float32(1) - p) * taper)
                closer = (d < d_main) & (d < cut)
                signed = np.where(closer, sg, signed)
                d_main = np.where(closer, d, d_main)
            # The tile's (u, v) box in each tributary's frame (linear: extremes at the corners).
            du_ = cu_[None, :] - tr[:, :1]
            dv_ = cv_[None, :] - c0s[:, None]
            ta = du_ * cas[:, None] + dv_ * sas[:, None]
            tb = -du_ * sas[:, None] + dv_ * cas[:, None]
            bcut = _TRIB_D_CUT + 2.0 * tr[:, 2]
            reach = ((ta.max(axis=1) >= -_TRIB_D_CUT) & (ta.min(axis=1) <= _TRIB_FADES * tr[:, 5])
                     & (tb.min(axis=1) <= bcut) & (tb.max(axis=1) >= -bcut))
            for t in np.flatnonzero(reach):
                u0, _, amp, lam, ph, fade, depth = (float(q) for q in tr[t])
                c0, ca, sa = float(c0s[t]), float(cas[t]), float(sas[t])
                du, dv = u - u0, v - c0
                a = du * ca + dv * sa
                b = -du * sa + dv * ca
                bc = amp * np.sin(a / lam + ph) - amp * math.sin(ph)
                d = np.where(a >= 0, np.abs(b - bc), np.hypot(a, b)).astype(np.float32)
                p = self._profile(d, 0.25 * s.floor_width, 0.8 * s.valley_width)
                keep = (np.exp(-np.maximum(a, 0) / fade).astype(np.float32) * np.float32(depth)
                        * smoothstep(_TRIB_D_CUT, 0.6 * _TRIB_D_CUT, d)
                        * smoothstep(_TRIB_FADES * fade, (_TRIB_FADES - 1.0) * fade, a))
                p = np.float32(1) - (np.float32(1) - p) * keep
                prof = np.minimum(prof, p)
                d_trib = np.minimum(d_trib, np.where((a >= 0) & (d < _TRIB_D_CUT), d, 1e6).astype(np.float32))
        return {"u": u, "v": v, "signed": signed, "d_main": d_main, "d_trib": d_trib,
                "profile": prof.astype(np.float32)}


def country_area_km2(spec: CountrySpec) -> float:
    """Area of the country's bbox (km², in its home UTM CRS)."""
    return CountryWorld(spec).aoi_home.area / 1e6


def _pool_imap(fn, tasks, workers: int, window: int | None = None):
    """``(task, fn(task))`` over a stream of tasks, in order, with a bounded number in flight
    (the task list is never built: memory follows the tasks in flight)."""
    # A daemonic process (e.g. a multiprocessing or Dask nanny worker) may not have children.
    if workers <= 1 or mp.current_process().daemon:
        for t in tasks:
            yield t, fn(t)
        return
    # forkserver/spawn, not fork: the caller may be a threaded program (a Dask client).
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    window = window or 2 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method)) as ex:
        pending: list = []
        for t in tasks:
            pending.append((t, ex.submit(fn, t)))
            if len(pending) >= window:
                t0, f = pending.pop(0)
                yield t0, f.result()
        for t0, f in pending:
            yield t0, f.result()


def country_inventory(spec: CountrySpec, path: Path, block_km: float = COUNTRY_INVENTORY_BLOCK_KM) -> dict:
    """Write the landslides of the whole country as GeoJSON (EPSG:4326), strip by strip.

    Each strip of ``block_km`` is generated by a fresh world (memory follows the strip, not the
    country); a landslide belongs to the strip of the 1 km feature cell it starts in, so it is
    written once. Ids run in (cell row, cell column, k) order, as in the region inventories.
    Returns ``{"landslides": n, "landslide_area_m2": total area}``.
    """
    world0 = CountryWorld(spec)
    aoi = world0.aoi_home
    x0, y0, x1, y1 = aoi.bounds
    step = max(1, int(round(block_km * 1000.0 / CELL))) * CELL
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    n, total = 0, 0.0
    shapely.prepare(aoi)
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for j in range(int(math.floor(y0 / step)), int(math.floor(y1 / step)) + 1):
            world = CountryWorld(spec)   # a fresh cache per strip
            lo, hi = j * step, (j + 1) * step
            feats = world.features("slide", (x0, max(lo, y0), x1, min(hi, y1)))
            own = [f for f in feats if lo <= f.key[1] * CELL < hi and aoi.intersects(f.poly)]
            own.sort(key=lambda f: (f.key[1], f.key[0], f.key[2]))
            for f in own:
                n += 1
                total += f.poly.area
                geom = shapely.geometry.polygon.orient(_to_lonlat(f.poly, world.epsg), 1.0)
                feat = {"type": "Feature", "properties": {"id": n, "event_date": spec.event_date.isoformat(),
                                                          "area_m2": _r(f.poly.area, 1)},
                        "geometry": _geojson_geometry(geom, 8)}
                fh.write(("\n" if n == 1 else ",\n") + json.dumps(feat))
        fh.write("\n]}\n")
    os.replace(tmp, path)
    return {"landslides": n, "landslide_area_m2": _r(total, 1)}


def make_demo_country(out_dir: str | Path, seed: int = 0, bbox: tuple[float, float, float, float] | None = None,
                      workers: int | None = None, echo: Callable[[str], None] | None = None,
                      inventory_block_km: float = COUNTRY_INVENTORY_BLOCK_KM) -> Path:
    """Generate the demo country under out_dir (default bbox: ~2,180 km² across UTM 44N/45N).

    The same layout and STAC conventions as :func:`make_demo_data` (``regions.json`` holds one
    entry, with ``"kind": "country"``, its bbox, zones and epicentres), so ``serve-stac`` and
    country jobs read it unchanged. Granule tasks are streamed through a process pool (one
    granule's arrays at a time per process); the inventory is collected strip by strip.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    spec = country_spec(seed, bbox)
    world = CountryWorld(spec)
    acqs = plan_acquisitions(spec, world)
    zones = _zone_reach(world)
    n_gran = sum(len(_granules_for(world, epsg, clip)) for epsg, clip in zones)
    dem_tasks: dict[str, DemTask] = {}
    _add_dem_tasks(spec, world, out, dem_tasks)
    if echo:
        echo(f"[country] {spec.name}: {country_area_km2(spec):,.0f} km² in "
             f"{', '.join(f'EPSG:{e}' for e, _ in zones)}; {n_gran} granules x {len(acqs)} dates, "
             f"{len(dem_tasks)} DEM tiles, {len(spec.events)} event clusters")
    t0 = datetime.now()
    s2_items, zones_used = [], set()
    used_ids: set[str] = set()
    for k, (task, res) in enumerate(_pool_imap(_run_task, _granule_tasks(spec, world, acqs, out, used_ids),
                                               workers), start=1):
        for acq, r in zip(task.acquisitions, res):
            s2_items.append(_s2_item(spec, task.granule, acq, r))
        if res:
            zones_used.add(task.granule.epsg)
        if echo and (k % max(1, n_gran // 10) == 0 or k == n_gran):
            echo(f"[country] granules {k}/{n_gran} ({(datetime.now() - t0).total_seconds():.0f} s)")
    dem_items = [_dem_item(t) for t in dem_tasks.values()]
    for _ in _pool_imap(_run_task, iter(dem_tasks.values()), workers):
        pass
    if echo:
        echo(f"[country] DEM tiles done ({(datetime.now() - t0).total_seconds():.0f} s)")
    _write_catalog(out, s2_items, dem_items)

    rdir = out / "regions" / spec.name
    inv = country_inventory(spec, rdir / "inventory.geojson", inventory_block_km)
    aoi_ll = shapely.segmentize(shapely.box(*spec.bbox), 0.01)
    for fname in ("aoi.geojson", "inventory_area.geojson"):
        _write_json(rdir / fname, _fc([{"type": "Feature", "properties": {"name": spec.name},
                                        "geometry": _geojson_geometry(shapely.geometry.polygon.orient(aoi_ll, 1.0))}]))
    if echo:
        echo(f"[country] inventory: {inv['landslides']} landslides, {inv['landslide_area_m2'] / 1e6:.2f} km² "
             f"({(datetime.now() - t0).total_seconds():.0f} s)")
    entry = {
        "name": spec.name, "kind": "country", "event_date": spec.event_date.isoformat(), "epsg": world.epsg,
        "bbox": [_r(v) for v in spec.bbox], "area_km2": _r(country_area_km2(spec), 1),
        "aoi": f"regions/{spec.name}/aoi.geojson",
        "inventory": f"regions/{spec.name}/inventory.geojson",
        "inventory_area": f"regions/{spec.name}/inventory_area.geojson",
        "description": spec.description,
        "imagery_epsg": sorted(zones_used),
        "pre_dates": [a.day.isoformat() for a in acqs if a.pre],
        "post_dates": [a.day.isoformat() for a in acqs if not a.pre],
        "epicentres": [{"lon": _r(lo, 5), "lat": _r(la, 5), "decay_km": _r(d, 2), "weight": w}
                       for lo, la, d, w in spec.events],
        "granules": n_gran, **inv, "seed": seed,
    }
    _write_json(out / "regions.json", [entry])
    return out
