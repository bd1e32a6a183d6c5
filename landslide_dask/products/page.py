"""The offline web map: one folder with ``index.html`` that opens from disk with no network.

The page is static (``web/index.html``, ``app.js``, ``app.css`` and Leaflet, vendored from the npm
registry with its licence); what differs per map is written beside it: ``tiles/<layer>/{z}/{x}/{y}.png``
(:mod:`.tiles`) and ``data.js`` (bounds, zooms, which tiles exist, legend, facts, attribution and
the vectors). Polygons go in ``data.js`` when there are few; a country's many go in tiles of one
zoom keyed by centroid (``vectors/{z}/{x}/{y}.js``, loaded as the view moves; below that zoom the
probability tiles, whose parents keep the max of their children, show where they are), so the page
opens fast however large the map.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..common.files import write_text
from .cog import STATUS, STATUS_COLOURS
from .tiles import RAMP, TILE, tile_layer

__all__ = ["RasterLayer", "write_page", "web_geojson", "MAX_SINGLE_POLYGONS"]

#: Polygons up to this many go into ``data.js`` at once; more are tiled.
MAX_SINGLE_POLYGONS = 20000


@dataclass
class RasterLayer:
    """One tiled layer of the page: a raster on the Web Mercator grid (:func:`.tiles.warp_to_web`)."""

    id: str
    title: str
    path: Path
    render: object
    reduce: str = "max"
    base: bool = False
    on: bool = True
    opacity: float = 1.0
    attribution: str = ""
    tiles: list[str] = field(default_factory=list)


def web_geojson(gdf, columns: tuple[str, ...] = (), simplify_m: float | None = None) -> dict:
    """A GeoDataFrame as compact GeoJSON in EPSG:4326: simplified in its own metres first (a
    tolerance of half a pixel changes nothing a screen shows), coordinates to 1e-6 degrees."""
    import shapely

    g = gdf[[c for c in columns if c in gdf.columns] + [gdf.geometry.name]].copy()
    if simplify_m and g.crs is not None and g.crs.is_projected:
        g = g.set_geometry(shapely.simplify(g.geometry.values, simplify_m, preserve_topology=True))
    g = g.to_crs(4326)
    g = g.set_geometry(shapely.set_precision(g.geometry.values, 1e-6, mode="pointwise"))
    for c in columns:
        if c in g.columns and g[c].dtype.kind == "f":
            g[c] = g[c].round(3)
    return json.loads(g.to_json(drop_id=True))


def _copy_static(out: Path) -> None:
    web = resources.files("landslide_dask.products") / "web"
    for name in ("index.html", "app.js", "app.css"):
        (out / name).write_bytes((web / name).read_bytes())
    dst = out / "leaflet"
    shutil.rmtree(dst, ignore_errors=True)
    with resources.as_file(web / "leaflet") as src:
        shutil.copytree(src, dst)


def _tile_key(lon: float, lat: float, z: int) -> str:
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    r = math.radians(max(min(lat, 85.0511), -85.0511))
    y = int((1.0 - math.log(math.tan(r) + 1.0 / math.cos(r)) / math.pi) / 2.0 * n)
    return f"{z}/{min(max(x, 0), n - 1)}/{min(max(y, 0), n - 1)}"


def _landslide_vectors(out: Path, polygons, zoom: int, max_single: int, res_m: float | None) -> tuple[dict, dict]:
    """(config, data) of the landslide polygons: in ``data.js`` if few, else tiled at ``zoom``."""
    cols = ("area_m2", "mean_prob", "max_prob")
    if polygons is None or not len(polygons):
        return {"mode": "single", "count": 0}, {"landslides": {"type": "FeatureCollection", "features": []}}
    gj = web_geojson(polygons, cols, simplify_m=res_m / 2 if res_m else None)
    if len(gj["features"]) <= max_single:
        return {"mode": "single", "count": len(gj["features"])}, {"landslides": gj}
    cents = polygons.to_crs(4326).geometry.representative_point()
    by_tile: dict[str, list] = {}
    for f, c in zip(gj["features"], cents):
        by_tile.setdefault(_tile_key(c.x, c.y, zoom), []).append(f)
    shutil.rmtree(out / "vectors", ignore_errors=True)
    for key, feats in by_tile.items():
        text = json.dumps({"type": "FeatureCollection", "features": feats}, separators=(",", ":"))
        (out / "vectors" / key).parent.mkdir(parents=True, exist_ok=True)
        write_text(out / "vectors" / f"{key}.js", f"window.LANDSLIDE_MAP.addVectorTile({json.dumps(key)}, {text});\n")
    return {"mode": "tiled", "zoom": zoom, "count": len(gj["features"]), "tiles": sorted(by_tile)}, {}


def write_page(
    out: str | Path,
    *,
    title: str,
    bounds: tuple[float, float, float, float],
    zmin: int,
    zmax: int,
    rasters: list[RasterLayer],
    polygons=None,
    outlines: dict | None = None,
    threshold: float | None = None,
    threshold_rule: str = "",
    facts: list[str] = (),
    files: list[tuple[str, str]] = (),
    attribution: str = "",
    res_m: float | None = None,
    max_single: int | None = None,
) -> Path:
    """Write the web map folder ``out``; returns ``out/index.html``.

    ``bounds``: W, S, E, N (degrees) the page opens on. ``rasters``: tiled layers (their tiles
    are written here). ``polygons``: landslide polygons (any CRS). ``outlines``: {"aoi": gdf,
    "inventory": gdf} drawn as outlines. ``facts``: lines of the info box; ``files``: (label,
    path relative to ``out``) links to the products. ``attribution``: imagery and inventory credit.
    ``res_m``: the map's pixel size; polygons are simplified by half of it for the page.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _copy_static(out)
    shutil.rmtree(out / "tiles", ignore_errors=True)
    for r in rasters:
        r.tiles = tile_layer(r.path, out / "tiles" / r.id, zmin, render=r.render, reduce=r.reduce)
    vzoom = max(zmin, min(zmax - 3, 13))
    vconf, data = _landslide_vectors(out, polygons, vzoom, max_single or MAX_SINGLE_POLYGONS, res_m)
    for name, gdf in (outlines or {}).items():
        if gdf is not None and len(gdf):
            data[name] = web_geojson(gdf, simplify_m=5.0)
    rasters_conf = [
        {
            "id": r.id,
            "title": r.title,
            "tiles": r.tiles,
            "base": r.base,
            "on": r.on,
            "opacity": r.opacity,
            "attribution": r.attribution,
        }
        for r in rasters
    ]
    config = {
        "title": title,
        "bounds": [round(float(b), 6) for b in bounds],
        "zmin": zmin,
        "zmax": zmax,
        "rasters": rasters_conf,
        "vectors": {"landslides": vconf},
        "data": data,
        "legend": {
            "ramp": [[s, list(c)] for s, c in RAMP],
            "threshold": threshold,
            "threshold_rule": threshold_rule,
            "status": [{"code": c, "label": STATUS[c], "rgba": list(STATUS_COLOURS[c])} for c in (2, 3, 4)],
        },
        "facts": list(facts),
        "files": [list(f) for f in files],
        "attribution": attribution,
        "tile_size": TILE,
    }
    write_text(out / "data.js", "window.LANDSLIDE_MAP = " + json.dumps(config, separators=(",", ":")) + ";\n")
    return out / "index.html"
