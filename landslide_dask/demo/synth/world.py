"""The procedural world of one region (home UTM CRS, metres), and the satellite passes over it.

A :class:`World` is a pure function of its :class:`~.regions.RegionSpec`: ridged hills carved by a
meandering main valley and its tributaries, event landslides and old scars generated per 1 km cell
from a cell-keyed random stream (a tile needs only the cells near it), and the cloud fields.
``plan_acquisitions`` then picks the passes before and after the event, each an
:class:`Acquisition` with its date, sun and sky, the cloud threshold set from this very world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import shapely
from pyproj import Transformer

from .noise import fbm, ridged
from .regions import RES, SCL_RES, RegionSpec

__all__ = [
    "HILL_OCTAVES",
    "HILL_GAIN",
    "HILL_SHARE",
    "CELL",
    "SLIDE_MIN_SLOPE",
    "RUNOUT_STOP_SLOPE",
    "Feature",
    "Acquisition",
    "World",
    "sun_position",
    "EDGE_LO",
    "EDGE_HI",
    "plan_acquisitions",
]


HILL_OCTAVES, HILL_GAIN, HILL_SHARE = 5, 0.42, 0.5  # the ridge pattern: detail, roughness, weight
CELL = 1000.0  # m, vector features are generated per cell of this size
_FEATURE_STEP = 10.0  # m, step of the downslope trace
SLIDE_MIN_SLOPE = 22.0  # degrees: sources need steeper ground (susceptibility rises to 40 deg)
RUNOUT_STOP_SLOPE = 22.0  # degrees: a scar stops two steps after the ground gets gentler


@dataclass
class Feature:
    """One landslide or old scar, in the home CRS."""

    key: tuple[int, int, int]  # (cell ix, cell iy, k): stable identity
    poly: shapely.Polygon
    toe: shapely.Geometry | None = None
    reveg: float = 0.0  # old scars: vegetation that has come back (0..1)


@dataclass(frozen=True)
class Acquisition:
    """One satellite pass over a region: its date, sun, and the state of the sky."""

    day: date  # local solar day
    when: datetime  # UTC (naive)
    platform: str
    sun_azimuth: float
    sun_elevation: float
    cover: float  # wanted cloud fraction (flagged)
    cloud_seed: int
    cloud_scale: float  # m
    cloud_height: float  # m, for the shadow offset
    cloud_thr: float
    cirrus: float  # 0..~0.3 peak reflectance added by thin cirrus
    haze: float  # residual haze of the date
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
        self.world_box = (
            self._snap(self.cx - half, -1),
            self._snap(self.cy - half, -1),
            self._snap(self.cx + half, 1),
            self._snap(self.cy + half, 1),
        )
        a = spec.size_km * 500.0
        self.aoi_box = (self.cx - a, self.cy - a, self.cx + a, self.cy + a)
        rng = np.random.default_rng([spec.seed, 1])
        self.s_terrain, self.s_cover, self.s_parcel, self.s_scar, self.s_slide, self.s_tex = (
            int(v) for v in rng.integers(0, 2**31 - 1, 6)
        )
        th = math.radians(spec.valley_angle)
        self.cos_t, self.sin_t = math.cos(th), math.sin(th)
        # Main valley centre line v = c(u): offset and meanders.
        off = float(rng.uniform(-0.12, 0.12)) * spec.size_km * 1000.0
        self.meander = (
            off,
            float(rng.uniform(150, 320)),
            float(rng.uniform(900, 1500)),
            float(rng.uniform(0, 6.28)),
            float(rng.uniform(40, 90)),
            float(rng.uniform(250, 400)),
            float(rng.uniform(0, 6.28)),
        )
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
            tribs.append(
                (
                    u0,
                    ang,
                    float(r.uniform(40, 120)),
                    float(r.uniform(400, 800)),
                    float(r.uniform(0, 6.28)),
                    float(r.uniform(1800, 3500)),
                    float(r.uniform(0.6, 1.0)),
                )
            )
        self.tribs = tribs
        # Epicentre(s): several would make a country-scale event.
        ex, ey = spec.epicentre_offset
        self.epicentres = [
            (
                self.cx + ex * spec.size_km * 1000.0,
                self.cy + ey * spec.size_km * 1000.0,
                max(1.5, spec.slide_decay_km * spec.size_km / 6.0) * 1000.0,
                1.0,
            )
        ]
        self._cells: dict[tuple[str, int, int], list[Feature]] = {}

    @staticmethod
    def _snap(v: float, direction: int) -> float:
        return (math.ceil(v / SCL_RES) if direction > 0 else math.floor(v / SCL_RES)) * SCL_RES

    # Valleys and terrain

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
        return (np.float32(1) - np.exp(-(t**1.5))).astype(np.float32)

    def elevation(self, x: np.ndarray, y: np.ndarray, vals: dict | None = None) -> np.ndarray:
        """Terrain elevation (m, float32): ridged hills carved by river valleys with flat floors."""
        s = self.spec
        vals = vals if vals is not None else self.valleys(x, y)
        lx, ly = (x - self.ox) / s.hill_scale, (y - self.oy) / s.hill_scale
        h = ridged(lx, ly, self.s_terrain, HILL_OCTAVES, HILL_GAIN)
        h = np.clip((h - np.float32(0.08)) / np.float32(0.55), 0, 1.3)
        rough = fbm((x - self.ox) / 90.0, (y - self.oy) / 90.0, self.s_terrain + 5, 2)
        p = vals["profile"]
        z = (
            np.float32(s.base_elev)
            - np.float32(0.01) * vals["u"].astype(np.float32)
            + np.float32(s.relief) * p * (np.float32(1.0 - HILL_SHARE) + np.float32(HILL_SHARE) * h)
            + np.float32(6.0) * rough * p
        )
        return z.astype(np.float32)

    def elevation_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.elevation(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def gradient_at(self, x: np.ndarray, y: np.ndarray, h: float = RES) -> tuple[np.ndarray, np.ndarray]:
        """dz/dx, dz/dy by central differences at arbitrary points (one batched evaluation)."""
        n = len(x)
        xs = np.concatenate([x + h, x - h, x, x])
        ys = np.concatenate([y, y, y + h, y - h])
        z = self.elevation_at(xs, ys).astype(np.float64)
        return (z[:n] - z[n : 2 * n]) / (2 * h), (z[2 * n : 3 * n] - z[3 * n :]) / (2 * h)

    def in_world(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.world_box
        return (x >= x0) & (x < x1) & (y > y0) & (y <= y1)

    # Vector features: landslides and old scars, per cell

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
            length = 40.0 * (1.0 - r.random(n)) ** (-1.0 / 1.45)  # power-law lengths
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
        return [allp[i, : count[i]] for i in range(n)]

    # Clouds

    def cloud_noise(self, acq: Acquisition, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.cloud_noise_of(acq.cloud_seed, acq.cloud_scale, x, y)

    def cloud_noise_of(self, seed: int, scale: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cloud noise of any seed and scale: ``plan_acquisitions`` sets a date's cover from it."""
        return fbm((x - self.ox) / scale, (y - self.oy) / scale, seed, 6)

    def cirrus_noise(self, acq: Acquisition, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Streaky thin cirrus: noise stretched along a per-date wind direction, in patches."""
        ang = (acq.cloud_seed % 360) * math.pi / 180.0
        dx, dy = x - self.ox, y - self.oy
        a = (dx * math.cos(ang) + dy * math.sin(ang)) / 5000.0
        b = (-dx * math.sin(ang) + dy * math.cos(ang)) / 900.0
        patch = fbm(dx / 4000.0, dy / 4000.0, acq.cloud_seed + 11, 2)
        return fbm(a, b, acq.cloud_seed + 9, 4) + patch - np.float32(0.1)


def _slide_polygon(
    path: np.ndarray, width: float, jseed: int, with_toe: bool
) -> tuple[shapely.Polygon | None, shapely.Geometry | None]:
    """An elongated scar around a downslope path: narrow crown, wide body, flared toe."""
    m = len(path)
    s = np.linspace(0.0, 1.0, m)
    r = np.random.default_rng(jseed)
    style = r.random()
    if style < 0.5:  # teardrop: broad source area narrowing downslope
        shape = 0.5 + 0.7 * np.exp(-(((s - 0.22) / 0.32) ** 2))
    elif style < 0.8:  # flow: source bowl, narrow track, deposition fan
        shape = 0.35 + 0.8 * np.exp(-((s / 0.22) ** 2)) + 0.55 * np.clip((s - 0.7) / 0.3, 0, 1)
    else:  # slump: a compact elongated body
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
# (Public: the planned cover here and the rendered clouds of ``surface`` share the edges.)
EDGE_LO, EDGE_HI = 0.10, 0.16


def plan_acquisitions(spec: RegionSpec, world: World) -> list[Acquisition]:
    """4 passes in the 60 days before the event and 4 in the 45 days after, on a 5-day revisit."""
    rng = np.random.default_rng([spec.seed, 5])
    anchor = spec.event_date - timedelta(days=int(rng.integers(1, 5)))
    pre_slots = sorted(rng.choice(np.arange(0, 12), 4, replace=False).tolist())
    post_slots = sorted(rng.choice(np.arange(1, 10), 4, replace=False).tolist())
    pre_cov = rng.permutation(
        [rng.uniform(0.0, 0.04), rng.uniform(0.05, 0.2), rng.uniform(0.15, 0.35), rng.uniform(0.02, 0.12)]
    )
    post_cov = rng.permutation(
        [rng.uniform(0.45, 0.65), rng.uniform(0.0, 0.04), rng.uniform(0.05, 0.25), rng.uniform(0.1, 0.3)]
    )
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
        q = np.percentile(world.cloud_noise_of(cloud_seed, cloud_scale, sx, sy), 100.0 * (1.0 - cover))
        thr_flag = float(q) if cover > 0.002 else 9.0
        # alpha = smoothstep over [thr - LO, thr + HI] reaches 0.25 at 32.6 % of the way.
        thr = thr_flag + EDGE_LO - 0.3264 * (EDGE_LO + EDGE_HI)
        az, el = sun_position(day, spec.lat)
        slot = (day - anchor).days // 5
        # Local 10:30 solar time -> UTC; NZ passes fall on the previous UTC day, as real ones do.
        when = datetime(day.year, day.month, day.day, 10, 30) - timedelta(hours=spec.lon / 15.0)
        when = when.replace(microsecond=0) + timedelta(seconds=int(r.integers(0, 50)), milliseconds=24)
        out.append(
            Acquisition(
                day=day,
                when=when,
                platform="sentinel-2a" if slot % 2 == 0 else "sentinel-2b",
                sun_azimuth=round(az, 4),
                sun_elevation=round(el, 4),
                cover=cover,
                cloud_seed=cloud_seed,
                cloud_scale=cloud_scale,
                cloud_height=float(r.uniform(900, 2600)),
                cloud_thr=thr,
                cirrus=float(r.choice([0.0, 0.0, r.uniform(0.03, 0.09), r.uniform(0.05, 0.14)]))
                if cover > 0.05
                else 0.0,
                haze=float(spec.haze * r.uniform(0.4, 1.2)),
                noise_seed=int(r.integers(0, 2**31 - 1)),
                pre=pre,
            )
        )
    return out
