"""The drivers: ``make_demo_data`` (the regions) and ``make_demo_country`` (the demo country).

Both plan the worlds and their passes, render the granule and DEM tasks in a process pool, write
the STAC catalog, then the vectors and ``regions.json``. The regions' tasks are few and mapped at
once; the country's granule tasks are streamed through the pool (a bounded number in flight: one
granule's arrays per process, never the country's), and its inventory is collected strip by strip
(``country_inventory``), each strip from a fresh world.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import shapely

from ...common.files import atomic_path
from .country import CountrySpec, CountryWorld, country_area_km2, country_spec
from .dem import DemTask, add_dem_tasks, render_dem
from .geo import feature_collection, geojson_geometry, rounded, to_lonlat, write_json
from .items import dem_item, region_vectors, s2_item, write_catalog
from .regions import region_specs
from .render import GranuleTask, granules_for, iter_granule_tasks, render_granule, zone_reach
from .world import CELL, Acquisition, World, plan_acquisitions

__all__ = ["COUNTRY_INVENTORY_BLOCK_KM", "make_demo_data", "country_inventory", "make_demo_country"]


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


def _pool_map(fn, tasks: list, workers: int) -> list:
    if len(tasks) <= 1:
        workers = 1  # no process pool for a single task
    return [r for _, r in _pool_imap(fn, tasks, workers)]


def _run_task(task) -> object:
    if isinstance(task, GranuleTask):
        return render_granule(task)
    return render_dem(task)


def make_demo_data(
    out_dir: str | Path, seed: int = 0, size_km: float = 6.0, n_regions: int = 4, workers: int | None = None
) -> Path:
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
        granule_tasks.extend(iter_granule_tasks(spec, world, acqs, out, used_ids))
        add_dem_tasks(spec, world, out, dem_tasks)

    tasks: list = list(granule_tasks) + list(dem_tasks.values())
    results = _pool_map(_run_task, tasks, workers)
    gran_results = results[: len(granule_tasks)]

    s2_items = []
    for task, res in zip(granule_tasks, gran_results):
        for acq, r in zip(task.acquisitions, res):
            s2_items.append(s2_item(task.spec, task.granule, acq, r))
    write_catalog(out, s2_items, [dem_item(t) for t in dem_tasks.values()])

    regions = []
    for spec in specs:
        world, acqs = plans[spec.name]
        aoi, area, inv = region_vectors(world)
        rdir = out / "regions" / spec.name
        aoi_ll = to_lonlat(shapely.segmentize(aoi, 100.0), world.epsg)
        area_ll = to_lonlat(shapely.segmentize(area, 100.0), world.epsg)
        feats = []
        for k, (_f, poly) in enumerate(inv, start=1):
            geom = shapely.geometry.polygon.orient(to_lonlat(poly, world.epsg), 1.0)
            feats.append(
                {
                    "type": "Feature",
                    "properties": {
                        "id": k,
                        "event_date": spec.event_date.isoformat(),
                        "area_m2": rounded(poly.area, 1),
                    },
                    "geometry": geojson_geometry(geom, 8),
                }
            )
        for fname, geom in (("aoi.geojson", aoi_ll), ("inventory_area.geojson", area_ll)):
            write_json(
                rdir / fname,
                feature_collection(
                    [
                        {
                            "type": "Feature",
                            "properties": {"name": spec.name},
                            "geometry": geojson_geometry(shapely.geometry.polygon.orient(geom, 1.0)),
                        }
                    ]
                ),
            )
        write_json(rdir / "inventory.geojson", feature_collection(feats))
        zones = sorted({t.granule.epsg for t in granule_tasks if t.spec.name == spec.name})
        regions.append(
            {
                "name": spec.name,
                "event_date": spec.event_date.isoformat(),
                "epsg": world.epsg,
                "bbox": [rounded(v) for v in aoi_ll.bounds],
                "aoi": f"regions/{spec.name}/aoi.geojson",
                "inventory": f"regions/{spec.name}/inventory.geojson",
                "inventory_area": f"regions/{spec.name}/inventory_area.geojson",
                "description": spec.description,
                "imagery_epsg": zones,
                "pre_dates": [a.day.isoformat() for a in acqs if a.pre],
                "post_dates": [a.day.isoformat() for a in acqs if not a.pre],
                "landslides": len(feats),
                "landslide_area_m2": rounded(sum(p.area for _, p in inv), 1),
                "seed": seed,
            }
        )
    write_json(out / "regions.json", regions)
    return out


COUNTRY_INVENTORY_BLOCK_KM = 5.0  # the inventory is collected in strips of this height


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
    n, total = 0, 0.0
    shapely.prepare(aoi)
    with atomic_path(path, tag="partial") as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for j in range(int(math.floor(y0 / step)), int(math.floor(y1 / step)) + 1):
            world = CountryWorld(spec)  # a fresh cache per strip
            lo, hi = j * step, (j + 1) * step
            feats = world.features("slide", (x0, max(lo, y0), x1, min(hi, y1)))
            own = [f for f in feats if lo <= f.key[1] * CELL < hi and aoi.intersects(f.poly)]
            own.sort(key=lambda f: (f.key[1], f.key[0], f.key[2]))
            for f in own:
                n += 1
                total += f.poly.area
                geom = shapely.geometry.polygon.orient(to_lonlat(f.poly, world.epsg), 1.0)
                feat = {
                    "type": "Feature",
                    "properties": {
                        "id": n,
                        "event_date": spec.event_date.isoformat(),
                        "area_m2": rounded(f.poly.area, 1),
                    },
                    "geometry": geojson_geometry(geom, 8),
                }
                fh.write(("\n" if n == 1 else ",\n") + json.dumps(feat))
        fh.write("\n]}\n")
    return {"landslides": n, "landslide_area_m2": rounded(total, 1)}


def make_demo_country(
    out_dir: str | Path,
    seed: int = 0,
    bbox: tuple[float, float, float, float] | None = None,
    workers: int | None = None,
    echo: Callable[[str], None] | None = None,
    inventory_block_km: float = COUNTRY_INVENTORY_BLOCK_KM,
) -> Path:
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
    zones = zone_reach(world)
    n_gran = sum(len(granules_for(world, epsg, clip)) for epsg, clip in zones)
    dem_tasks: dict[str, DemTask] = {}
    add_dem_tasks(spec, world, out, dem_tasks)
    if echo:
        echo(
            f"[country] {spec.name}: {country_area_km2(spec):,.0f} km² in "
            f"{', '.join(f'EPSG:{e}' for e, _ in zones)}; {n_gran} granules x {len(acqs)} dates, "
            f"{len(dem_tasks)} DEM tiles, {len(spec.events)} event clusters"
        )
    t0 = datetime.now()
    s2_items, zones_used = [], set()
    used_ids: set[str] = set()
    for k, (task, res) in enumerate(
        _pool_imap(_run_task, iter_granule_tasks(spec, world, acqs, out, used_ids), workers), start=1
    ):
        for acq, r in zip(task.acquisitions, res):
            s2_items.append(s2_item(spec, task.granule, acq, r))
        if res:
            zones_used.add(task.granule.epsg)
        if echo and (k % max(1, n_gran // 10) == 0 or k == n_gran):
            echo(f"[country] granules {k}/{n_gran} ({(datetime.now() - t0).total_seconds():.0f} s)")
    dem_items = [dem_item(t) for t in dem_tasks.values()]
    for _ in _pool_imap(_run_task, iter(dem_tasks.values()), workers):
        pass
    if echo:
        echo(f"[country] DEM tiles done ({(datetime.now() - t0).total_seconds():.0f} s)")
    write_catalog(out, s2_items, dem_items)

    rdir = out / "regions" / spec.name
    inv = country_inventory(spec, rdir / "inventory.geojson", inventory_block_km)
    aoi_ll = shapely.segmentize(shapely.box(*spec.bbox), 0.01)
    for fname in ("aoi.geojson", "inventory_area.geojson"):
        write_json(
            rdir / fname,
            feature_collection(
                [
                    {
                        "type": "Feature",
                        "properties": {"name": spec.name},
                        "geometry": geojson_geometry(shapely.geometry.polygon.orient(aoi_ll, 1.0)),
                    }
                ]
            ),
        )
    if echo:
        echo(
            f"[country] inventory: {inv['landslides']} landslides, {inv['landslide_area_m2'] / 1e6:.2f} km² "
            f"({(datetime.now() - t0).total_seconds():.0f} s)"
        )
    entry = {
        "name": spec.name,
        "kind": "country",
        "event_date": spec.event_date.isoformat(),
        "epsg": world.epsg,
        "bbox": [rounded(v) for v in spec.bbox],
        "area_km2": rounded(country_area_km2(spec), 1),
        "aoi": f"regions/{spec.name}/aoi.geojson",
        "inventory": f"regions/{spec.name}/inventory.geojson",
        "inventory_area": f"regions/{spec.name}/inventory_area.geojson",
        "description": spec.description,
        "imagery_epsg": sorted(zones_used),
        "pre_dates": [a.day.isoformat() for a in acqs if a.pre],
        "post_dates": [a.day.isoformat() for a in acqs if not a.pre],
        "epicentres": [
            {"lon": rounded(lo, 5), "lat": rounded(la, 5), "decay_km": rounded(d, 2), "weight": w}
            for lo, la, d, w in spec.events
        ],
        "granules": n_gran,
        **inv,
        "seed": seed,
    }
    write_json(out / "regions.json", [entry])
    return out
