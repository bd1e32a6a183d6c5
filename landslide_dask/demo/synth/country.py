"""The demo country's world: one large world, several event clusters, two UTM zones.

A :class:`CountrySpec` (``country_spec``: the ``gorkha_like`` look over a lon/lat bbox; by default
that of ``cluster/jobs/demo-country.yaml``, ~2,180 km² across the UTM 44N/45N boundary at 84 E)
makes a :class:`CountryWorld`: parallel main valleys with their tributaries, each valley's
influence ending smoothly at a finite distance (a tile evaluates only the valleys near it, still a
pure function of position), and several epicentres with their own decay and weight, so some cells
have many landslides and some almost none. ``world_of`` rebuilds the world of either kind of spec
(what a render task does in its process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer

from ...errors import UsageError
from .noise import smoothstep
from .regions import REGION_TEMPLATES, RegionSpec
from .world import World

__all__ = [
    "DEMO_COUNTRY_BBOX",
    "DEMO_COUNTRY_EVENTS",
    "CountrySpec",
    "world_of",
    "country_spec",
    "CountryWorld",
    "country_area_km2",
]


# The bbox of cluster/jobs/demo-country.yaml: ~2,180 km² around gorkha_like, across 84 E (44N/45N).
DEMO_COUNTRY_BBOX = (83.75, 28.0, 84.25, 28.4)
# Event clusters as (x, y) fractions of the bbox (0, 0 = south-west), e-folding distance as a
# fraction of the bbox's mean side (at least 1.5 km), and relative intensity. Two clusters lie in
# each zone; the main one is 8 km east of the zone boundary, so its slides straddle it.
DEMO_COUNTRY_EVENTS = (
    (0.66, 0.62, 0.12, 1.0),
    (0.22, 0.30, 0.08, 0.85),
    (0.86, 0.14, 0.06, 0.7),
    (0.30, 0.86, 0.05, 0.6),
)
_TRIB_D_CUT = 4000.0  # m: a tributary's influence ends smoothly at this distance ...
_TRIB_FADES = 3.0  # ... and this many e-folding lengths upstream
_MAIN_CUT_WIDTHS = 5.0  # a main valley's influence ends at this many valley widths


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


def country_spec(
    seed: int = 0,
    bbox: tuple[float, float, float, float] | None = None,
    events: tuple[tuple[float, float, float, float], ...] = DEMO_COUNTRY_EVENTS,
    name: str = "gorkha_country",
) -> CountrySpec:
    """The demo country: the ``gorkha_like`` look over ``bbox`` (default: the demo-country job's
    ~2,180 km² across the UTM 44N/45N boundary), with the event clusters ``events`` (fractions of
    the bbox, see ``DEMO_COUNTRY_EVENTS``). Deterministic by seed."""
    w, s, e, n = (float(v) for v in (bbox or DEMO_COUNTRY_BBOX))
    if not (-180 <= w < e <= 180 and -80 <= s < n <= 84):
        raise UsageError(f"country bbox must be [west, south, east, north] in degrees, got {bbox!r}.")
    kx, ky = _bbox_km((w, s, e, n))
    if max(kx, ky) > 400.0:
        raise UsageError(f"country bbox of {kx:.0f} x {ky:.0f} km is larger than the generator allows (400 km).")
    t = next(r for r in REGION_TEMPLATES if r.name == "gorkha_like")
    side = 0.5 * (kx + ky)
    ev = tuple((w + fx * (e - w), s + fy * (n - s), max(1.5, fd * side), float(wt)) for fx, fy, fd, wt in events)
    rng = np.random.default_rng([seed, 99, 11])
    return CountrySpec(
        **{
            **t.__dict__,
            "name": name,
            "lon": 0.5 * (w + e),
            "lat": 0.5 * (s + n),
            "description": "A demo country with the gorkha_like look: Himalayan foothills with "
            "parallel main valleys, several earthquake-triggered landslide clusters, "
            "across the UTM 44N/45N boundary when it spans 84 E.",
            "size_km": float(max(kx, ky)),
            "margin_km": 1.0 if max(kx, ky) > 10 else 0.4,
            "seed": int(rng.integers(0, 2**31 - 1)),
            "bbox": (w, s, e, n),
            "events": ev,
        }
    )


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
            meander = (
                off,
                float(r.uniform(150, 320)),
                float(r.uniform(900, 1500)),
                float(r.uniform(0, 6.28)),
                float(r.uniform(40, 90)),
                float(r.uniform(250, 400)),
                float(r.uniform(0, 6.28)),
            )
            tribs = []
            t0 = int(math.floor((cu.min() - reach) / spec.trib_spacing)) - 1
            t1 = int(math.ceil((cu.max() + reach) / spec.trib_spacing)) + 1
            for t in range(t0, t1 + 1):
                rt = np.random.default_rng([spec.seed, 22, k + 10_000, t + 10_000])
                u0 = t * spec.trib_spacing + float(rt.uniform(-0.25, 0.25)) * spec.trib_spacing
                side = 1.0 if (t + k) % 2 == 0 else -1.0
                ang = math.radians(side * float(rt.uniform(55, 100)))
                tribs.append(
                    (
                        u0,
                        ang,
                        float(rt.uniform(40, 120)),
                        float(rt.uniform(400, 800)),
                        float(rt.uniform(0, 6.28)),
                        float(rt.uniform(1800, 3500)),
                        float(rt.uniform(0.6, 1.0)),
                    )
                )
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
            reach = (
                (ta.max(axis=1) >= -_TRIB_D_CUT)
                & (ta.min(axis=1) <= _TRIB_FADES * tr[:, 5])
                & (tb.min(axis=1) <= bcut)
                & (tb.max(axis=1) >= -bcut)
            )
            for t in np.flatnonzero(reach):
                u0, _, amp, lam, ph, fade, depth = (float(q) for q in tr[t])
                c0, ca, sa = float(c0s[t]), float(cas[t]), float(sas[t])
                du, dv = u - u0, v - c0
                a = du * ca + dv * sa
                b = -du * sa + dv * ca
                bc = amp * np.sin(a / lam + ph) - amp * math.sin(ph)
                d = np.where(a >= 0, np.abs(b - bc), np.hypot(a, b)).astype(np.float32)
                p = self._profile(d, 0.25 * s.floor_width, 0.8 * s.valley_width)
                keep = (
                    np.exp(-np.maximum(a, 0) / fade).astype(np.float32)
                    * np.float32(depth)
                    * smoothstep(_TRIB_D_CUT, 0.6 * _TRIB_D_CUT, d)
                    * smoothstep(_TRIB_FADES * fade, (_TRIB_FADES - 1.0) * fade, a)
                )
                p = np.float32(1) - (np.float32(1) - p) * keep
                prof = np.minimum(prof, p)
                d_trib = np.minimum(d_trib, np.where((a >= 0) & (d < _TRIB_D_CUT), d, 1e6).astype(np.float32))
        return {
            "u": u,
            "v": v,
            "signed": signed,
            "d_main": d_main,
            "d_trib": d_trib,
            "profile": prof.astype(np.float32),
        }


def country_area_km2(spec: CountrySpec) -> float:
    """Area of the country's bbox (km², in its home UTM CRS)."""
    return CountryWorld(spec).aoi_home.area / 1e6
