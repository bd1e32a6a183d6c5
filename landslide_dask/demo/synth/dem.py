"""DEM tiles: the world's elevation as Copernicus-style 0.05 degree tiles in EPSG:4326.

``add_dem_tasks`` lists the tiles under a world's box; ``render_dem`` (run in a worker process)
averages the elevation over each 1 arc-second pixel from 3x3 samples and writes the tile's COG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer

from .country import world_of
from .geo import to_lonlat
from .regions import DEM_NODATA, DEM_TILE_ARCSEC, RegionSpec
from .render import write_cog
from .world import World

__all__ = ["DemTask", "dem_tile_transform", "render_dem", "add_dem_tasks"]


@dataclass(frozen=True)
class DemTask:
    spec: RegionSpec
    ti: int  # tile index of the south edge, in DEM_TILE_ARCSEC units
    tj: int  # tile index of the west edge
    item_id: str
    out_dir: str


def _dem_name(ti: int, tj: int) -> str:
    """Copernicus-style tile name from the south-west corner, in degrees and arc-minutes."""

    def part(idx: int, pos: str, neg: str, width: int) -> str:
        minutes = idx * DEM_TILE_ARCSEC // 60
        sign = pos if minutes >= 0 else neg
        minutes = abs(minutes)
        return f"{sign}{minutes // 60:0{width}d}_{minutes % 60:02d}"

    return f"Copernicus_DSM_COG_10_{part(ti, 'N', 'S', 2)}_{part(tj, 'E', 'W', 3)}_DEM"


def dem_tile_transform(ti: int, tj: int) -> Affine:
    """The 1 arc-second grid of tile (ti, tj): the tile's raster and its STAC item share it."""
    px = 1.0 / 3600.0
    return Affine(px, 0.0, tj * DEM_TILE_ARCSEC / 3600.0, 0.0, -px, (ti + 1) * DEM_TILE_ARCSEC / 3600.0)


def render_dem(task: DemTask) -> dict:
    """One DEM tile: the world's elevation averaged over each 1" pixel (3x3 samples)."""
    world = world_of(task.spec)
    n = DEM_TILE_ARCSEC
    tf = dem_tile_transform(task.ti, task.tj)
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
    write_cog(path, out, "EPSG:4326", tf, DEM_NODATA, "average")
    return {"id": task.item_id, "valid_pct": 100.0 * float(valid.mean())}


def add_dem_tasks(spec: RegionSpec, world: World, out: Path, dem_tasks: dict[str, DemTask]) -> None:
    """The DEM tiles (0.05 degree) under the world's box, added to ``dem_tasks`` by name."""
    x0, y0, x1, y1 = world.world_box
    ll = to_lonlat(shapely.segmentize(shapely.box(x0, y0, x1, y1), 200.0), world.epsg).bounds
    a = DEM_TILE_ARCSEC / 3600.0
    for ti in range(int(math.floor(ll[1] / a)), int(math.floor(ll[3] / a)) + 1):
        for tj in range(int(math.floor(ll[0] / a)), int(math.floor(ll[2] / a)) + 1):
            name = _dem_name(ti, tj)
            if name not in dem_tasks:  # regions never share tiles, but be safe
                dem_tasks[name] = DemTask(spec, ti, tj, name, str(out / "cop-dem-glo-30"))
