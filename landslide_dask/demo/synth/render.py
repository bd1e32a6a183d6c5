"""Granules: the scaled-down MGRS grid over a world, and one granule's acquisitions as COGs.

``zone_reach`` finds the UTM zones whose granules cover part of a world (with the longitudes each
may reach), ``granules_for`` the granules of one zone, ``iter_granule_tasks`` one task per granule
with its item ids. ``render_granule`` (run in a worker process) rebuilds the world from the spec,
observes the granule's :class:`~.surface.Surface` on every date and writes the four 10 m bands and
the 20 m SCL, returning what the STAC item needs (footprint, cloud and class percentages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import shapes

from .country import world_of
from .geo import geojson_geometry, to_lonlat
from .regions import (
    BANDS,
    DN_OFFSET,
    GRANULE_SIZE,
    GRANULE_STRIDE,
    RES,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MED,
    SCL_NODATA,
    SCL_RES,
    ZONE_OVERLAP_DEG,
    RegionSpec,
    zone_lon_range,
    zone_of,
)
from .surface import Surface
from .world import Acquisition, World

__all__ = ["Granule", "GranuleTask", "zone_reach", "granules_for", "iter_granule_tasks", "write_cog", "render_granule"]


# When four 10 m classes fall in one 20 m pixel, the most "alarming" wins (clouds dilate a little,
# as Sen2Cor's do), and no data only where all four are empty.
_SCL_PRIORITY = np.array([0, 2, 5, 8, 3, 4, 6, 1, 10, 11, 9, 7], dtype=np.uint8)  # class -> rank
_SCL_OF_RANK = np.argsort(_SCL_PRIORITY).astype(np.uint8)  # rank -> class
_MGRS_COLS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_MGRS_ROWS = "ABCDEFGHJKLMNPQRSTUV"
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass(frozen=True)
class Granule:
    """One scaled-down MGRS granule: a square in its zone's UTM grid."""

    epsg: int
    i: int
    j: int

    @property
    def zone(self) -> int:
        return zone_of(self.epsg)

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


def zone_reach(world: World) -> list[tuple[int, tuple[float, float] | None]]:
    """UTM zones whose granules cover part of the world, with the longitudes they reach."""
    x0, y0, x1, y1 = world.world_box
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), 200.0)
    ll = to_lonlat(ring, world.epsg)
    lon0, lat0, lon1, lat1 = ll.bounds
    hemi = 32600 if world.spec.lat >= 0 else 32700
    out = []
    for zone in range(int((lon0 + 180) // 6) + 1, int((lon1 + 180) // 6) + 2):
        if not 1 <= zone <= 60:
            continue
        w, e = zone_lon_range(zone)
        lo, hi = w - ZONE_OVERLAP_DEG, e + ZONE_OVERLAP_DEG
        if hi <= lon0 or lo >= lon1:
            continue
        clip = None if (lo <= lon0 and hi >= lon1) else (lo, hi)
        out.append((hemi + zone, clip))
    return out


def granules_for(world: World, epsg: int, clip: tuple[float, float] | None) -> list[Granule]:
    """The granules of zone ``epsg`` (within ``clip``) over the world: tasks and the country's count."""
    x0, y0, x1, y1 = world.world_box
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), 100.0)
    poly = (
        ring
        if epsg == world.epsg
        else shapely.transform(
            ring,
            lambda xy: np.stack(
                Transformer.from_crs(world.epsg, epsg, always_xy=True).transform(xy[:, 0], xy[:, 1]), axis=1
            ),
        )
    )
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


def iter_granule_tasks(spec: RegionSpec, world: World, acqs: list[Acquisition], out: Path, used_ids: set[str]):
    """The granule tasks of one world, zone by zone, as a stream (item ids made unique in ``used_ids``)."""
    for epsg, clip in zone_reach(world):
        for g in granules_for(world, epsg, clip):
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


def _cog_profile(
    width: int, height: int, dtype: str, crs: str, transform: Affine, nodata: float, resampling: str
) -> dict:
    return dict(
        driver="COG",
        width=width,
        height=height,
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        level=6,
        predictor=2,
        blocksize=256,
        overview_resampling=resampling,
        num_threads=1,
        bigtiff="NO",
    )


def write_cog(
    path: Path, data: np.ndarray, crs: str, transform: Affine, nodata: float, resampling: str = "average"
) -> None:
    """Write one band as a COG: every granule band and every DEM tile goes through here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = _cog_profile(data.shape[1], data.shape[0], data.dtype.name, crs, transform, nodata, resampling)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)


def render_granule(task: GranuleTask) -> list[dict]:
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
    surf = Surface(world, X, Y, dzdx, dzdy, win_tf, g.epsg)
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
            write_cog(out_dir / f"{name}.tif", full, crs, g.transform, 0, "average")
        scl10 = np.where(win_valid, scl10, SCL_NODATA).astype(np.uint8)
        full10 = np.zeros((n, n), dtype=np.uint8)
        full10[r0:r1, c0:c1] = scl10
        rank = _SCL_PRIORITY[full10].reshape(n // 2, 2, n // 2, 2).max(axis=(1, 3))
        scl20 = _SCL_OF_RANK[rank]
        tf20 = Affine(SCL_RES, 0.0, g.left, 0.0, -SCL_RES, g.top)
        write_cog(out_dir / "scl.tif", scl20, crs, tf20, 0, "nearest")
        counts = np.bincount(scl20.ravel(), minlength=12).astype(np.float64)
        if nvalid20 is None:
            nvalid20 = counts[1:].sum()
            footprint = _footprint(scl20 > 0, tf20, g.epsg)
        pct = 100.0 * counts / max(nvalid20, 1.0)
        results.append(
            {
                "id": item_id,
                "footprint": footprint,
                "nodata_pct": 100.0 * counts[0] / counts.sum(),
                "cloud_pct": float(pct[SCL_CLOUD_MED] + pct[SCL_CLOUD_HIGH] + pct[SCL_CIRRUS]),
                "scl_pct": {c: float(pct[c]) for c in range(1, 12)},
            }
        )
    return results


def _footprint(mask: np.ndarray, transform: Affine, epsg: int) -> dict:
    """The valid-data footprint as an EPSG:4326 polygon (what Earth Search puts in ``geometry``)."""
    polys = [
        shapely.geometry.shape(geom)
        for geom, val in shapes(mask.astype(np.uint8), mask=mask, transform=transform)
        if val == 1
    ]
    geom = shapely.union_all(polys).simplify(SCL_RES * 1.5)
    if geom.geom_type == "MultiPolygon":
        geom = max(geom.geoms, key=lambda p: p.area)
    geom = shapely.Polygon(geom.exterior)
    geom = shapely.segmentize(geom, 1000.0)
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    geom = shapely.transform(geom, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1))
    return geojson_geometry(shapely.geometry.polygon.orient(geom, 1.0))
