"""The land surface of one granule window, and what the satellite sees of it on each date.

:class:`Surface` evaluates the static components once per window (water, vegetation, fields,
roads and villages, the rasterised landslides and old scars, the terrain's normals);
:meth:`Surface.observe` adds one acquisition: the season, harvests, turbid rivers and fresh
scars after the event, the sun's illumination, residual haze, clouds with their shadows, cirrus,
sensor noise keyed on the absolute pixel (overlapping granules agree), and the scene class as
Sen2Cor would assign it.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import rasterize

from .noise import fbm, hash_u32, lattice_sample, smoothstep, u01
from .regions import (
    RES,
    SCL_BARE,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MED,
    SCL_DARK,
    SCL_SHADOW,
    SCL_UNCLASSIFIED,
    SCL_VEG,
    SCL_WATER,
)
from .world import EDGE_HI, EDGE_LO, Acquisition, World

__all__ = ["Surface"]


class Surface:
    """The land surface of one granule window: static components, observed per acquisition."""

    def __init__(
        self, world: World, X: np.ndarray, Y: np.ndarray, dzdx: np.ndarray, dzdy: np.ndarray, win_tf: Affine, epsg: int
    ):
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
        shift = u01(hash_u32(pu, pu * 0, world.s_parcel + 1)) * lv
        pv = np.floor((v + shift) / lv).astype(np.int64)
        hp = hash_u32(pu, pv, world.s_parcel)
        self.p_type = u01(hp)
        self.p_harvest = u01(hash_u32(pu, pv, world.s_parcel + 2))
        self.p_tone = u01(hash_u32(pu, pv, world.s_parcel + 3))
        edge_u = np.minimum(np.mod(u, lu), lu - np.mod(u, lu))
        edge_v = np.minimum(np.mod(v + shift, lv), lv - np.mod(v + shift, lv))
        self.hedge = np.clip(1.0 - np.minimum(edge_u, edge_v) / 5.0, 0, 1).astype(np.float32) * 0.5
        suit = fbm(lx / 600.0, ly / 600.0, sc + 6, 2)
        flat = smoothstep(s.field_max_slope + 2.0, s.field_max_slope - 1.0, self.slope)
        # Farmland on the valley floors and low terraces; only the odd clearing up on the hills.
        lowland = np.clip(((0.35 - vals["profile"]) / 0.2), 0, 1) + (suit > 0.25)
        self.f_field = (
            flat
            * np.clip(lowland, 0, 1)
            * (self.p_type < s.field_share)
            * (suit > -0.25)
            * (1 - np.clip(self.f_water * 3, 0, 1))
            * (d > half + 25.0)
        ).astype(np.float32)
        # A road along the valley floor's edge, and villages beside it.
        d_road = np.abs(vals["signed"] - world.road_side * (s.floor_width * 0.75 + 10.0))
        self.f_road = np.clip((4.0 - d_road) / RES + 0.5, 0, 1).astype(np.float32)
        near_road = d_road < 160.0
        village = (self.p_type > 0.93) & near_road & (self.slope < s.field_max_slope + 3)
        self.f_village = village.astype(np.float32)
        self.f_field *= ~village
        cell_h = hash_u32(np.floor(X / RES).astype(np.int64), np.floor(Y / RES).astype(np.int64), world.s_tex)
        t = u01(cell_h)
        roofs = np.where(t < 0.35, 0.85, np.where(t < 0.6, 0.55, 0.25)).astype(np.float32)
        self.village = spec((0.13, 0.14, 0.15, 0.17)) * roofs * 1.4 + spec(s.grass_spec) * (1 - roofs)

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
        return [shapely.transform(g, lambda xy: np.stack(to_gran.transform(xy[:, 0], xy[:, 1]), axis=1)) for g in geoms]

    def _coverage(self, geoms: list, win_tf: Affine, to_gran: Transformer | None) -> np.ndarray:
        h, w = self.shape
        if not geoms:
            return np.zeros((h, w), dtype=np.float32)
        fine = rasterize(
            self._to_grid(geoms, to_gran),
            out_shape=(2 * h, 2 * w),
            transform=win_tf @ Affine.scale(0.5),
            fill=0,
            default_value=1,
            dtype="uint8",
        )
        return fine.reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)

    def _burn(self, pairs: list, win_tf: Affine, to_gran: Transformer | None) -> np.ndarray:
        h, w = self.shape
        if not pairs:
            return np.zeros((h, w), dtype=np.float32)
        geoms = self._to_grid([p for p, _ in pairs], to_gran)
        out = rasterize(
            [(g, int(round(v * 250))) for g, (_, v) in zip(geoms, pairs)],
            out_shape=(h, w),
            transform=win_tf,
            fill=0,
            dtype="uint8",
        )
        return out.astype(np.float32) / np.float32(250)

    # One acquisition

    def observe(self, acq: Acquisition, abs_col: np.ndarray, abs_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        hz = lattice_sample(
            lambda a, b: fbm((a - w.ox) / 3000.0, (b - w.oy) / 3000.0, acq.cloud_seed + 3, 2), X, Y, 200.0
        )
        haze = acq.haze * np.clip(0.5 + hz, 0, 1)
        refl = refl + spec((0.030, 0.020, 0.012, 0.006)) * haze
        # Clouds, their shadows (displaced away from the sun), thin cirrus.
        thr = acq.cloud_thr
        cn = lattice_sample(lambda a, b: w.cloud_noise(acq, a, b), X, Y, 40.0)
        alpha = smoothstep(thr - EDGE_LO, thr + EDGE_HI, cn)
        off = acq.cloud_height / math.tan(max(el, math.radians(10)))
        dx, dy = off * math.sin(az), off * math.cos(az)
        sn = lattice_sample(lambda a, b: w.cloud_noise(acq, a, b), X + dx, Y + dy, 40.0)
        shadow = smoothstep(thr - EDGE_LO, thr + EDGE_HI, sn)
        cirrus = np.float32(0)
        if acq.cirrus > 0:
            cr = lattice_sample(lambda a, b: w.cirrus_noise(acq, a, b), X, Y, 80.0)
            cirrus = acq.cirrus * smoothstep(0.0, 0.3, cr)
        refl = refl * (1 - 0.72 * shadow)
        top = np.clip(0.55 + 0.8 * (cn - thr), 0.35, 0.9)
        cloud = spec((1.03, 1.0, 0.98, 0.97)) * top
        refl = refl * (1 - alpha) + cloud * alpha
        refl = refl + spec((1.0, 0.97, 0.93, 0.9)) * cirrus
        refl = _sensor_noise(refl, abs_col, abs_row, acq.noise_seed)
        return refl, self._scene_classes(refl, illum, shadow, cirrus, alpha, acq.cirrus > 0)

    def _scene_classes(
        self, refl: np.ndarray, illum: np.ndarray, shadow: np.ndarray, cirrus, alpha: np.ndarray, has_cirrus: bool
    ) -> np.ndarray:
        """Scene classification as Sen2Cor would do it (but missing thin cloud edges)."""
        blue, red, nir = refl[0], refl[2], refl[3]
        ndvi = (nir - red) / (nir + red + 1e-6)
        scl = np.full(self.shape, SCL_BARE, dtype=np.uint8)
        scl[ndvi >= 0.33] = SCL_VEG
        scl[(ndvi >= 0.27) & (ndvi < 0.33)] = SCL_UNCLASSIFIED
        scl[(illum < 0.3) & (nir < 0.08)] = SCL_DARK
        scl[self.f_water > 0.5] = SCL_WATER
        scl[shadow >= 0.35] = SCL_SHADOW
        if has_cirrus:
            scl[cirrus >= 0.045] = SCL_CIRRUS
        scl[alpha >= 0.25] = SCL_CLOUD_MED
        scl[(alpha >= 0.6) & (blue > 0.25)] = SCL_CLOUD_HIGH
        return scl


def _sensor_noise(refl: np.ndarray, abs_col: np.ndarray, abs_row: np.ndarray, seed: int) -> np.ndarray:
    """Sensor and sub-pixel noise, keyed on the absolute pixel so overlapping granules agree."""
    h1 = hash_u32(abs_col, abs_row, seed)
    h2 = hash_u32(abs_col, abs_row, seed + 1)
    sixteen = np.uint32(0xFFFF)
    us = [(h1 & sixteen), (h1 >> np.uint32(16)), (h2 & sixteen), (h2 >> np.uint32(16))]
    noise = np.stack([(u.astype(np.float32) / np.float32(65535) - np.float32(0.5)) for u in us])
    refl = refl * (1 + np.float32(0.03) * noise) + np.float32(0.004) * noise
    return np.clip(refl, 0.0005, 1.2).astype(np.float32)
