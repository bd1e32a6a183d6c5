"""The country outputs of a job, rebuilt from its finished cells at the end of every run: polygons
merged across cell borders (EPSG:4326), one VRT mosaic per UTM zone over the per-cell COGs, one
country mosaic (probability and not-mapped COGs on the web map's Web Mercator grid, which all
zones share), the offline web map and STAC item, the summary table and the overview map;
published to the job's object-store output when it has one.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

from ..common.files import atomic_write
from ..common.vrt import VrtSource, vrt_xml, write_vrt_xml
from ..errors import CountryJobError, InputDataError
from .cell import STAGES, cell_dir

__all__ = ["merge_cell_polygons", "write_vrt", "write_country_outputs", "overview_map", "STATUS_COLOURS"]


def merge_cell_polygons(parts, res: float = 10.0):
    """Merge per-cell polygons into one GeoDataFrame in EPSG:4326; parts cut by cell borders rejoin.

    ``parts``: iterable of ``(cell, gdf)``, ``cell`` a :class:`~landslide_dask.jobs.cells.Cell` (its
    ``id``, ``epsg`` and ``square`` are used) and ``gdf`` that cell's polygons (``polygonize``
    columns ``area_m2``, ``mean_prob``, ``max_prob``) in the cell's UTM CRS.

    Only polygons within ``res`` of their cell square's edge or their cell's AOI boundary are
    candidates. Same zone: two candidates of different cells are joined when they share a border
    segment or overlap (cells of a zone share one pixel grid, so a cut landslide's two parts share
    an edge exactly; touching at a corner only does not join, as 4-connectivity within a cell).
    Different zones (cells meeting on the zone meridian, whose pixel grids differ): joined when
    closer than ``res``; their union is closed by ``res`` to bridge the sub-pixel gap.
    Groups are found with an STRtree and union-find, and unioned in the first part's UTM CRS.
    ``area_m2`` is the sum of the parts' (their mapped pixel areas), ``mean_prob`` the
    area-weighted mean, ``max_prob`` the maximum.
    """
    import geopandas as gpd

    rows, cand = _border_parts(parts, res)
    cols = ["id", "cells", "epsg", "area_m2", "mean_prob", "max_prob"]
    if not rows:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")
    joined = DisjointSet(range(len(rows)))  # parts of one landslide cut by cell borders
    idx = np.flatnonzero(cand)
    _join_same_zone(rows, idx, joined)
    _join_across_zones(rows, idx, joined, res)
    groups = {min(s): sorted(s) for s in joined.subsets()}  # keyed and ordered by the first part
    out_rows = [_union_group(rows, groups[root], res) for root in sorted(groups)]
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(out_rows) + 1, dtype=np.int64),
            "cells": [r[0] for r in out_rows],
            "epsg": np.array([r[1] for r in out_rows], dtype=np.int32),
            "area_m2": np.array([r[2] for r in out_rows], dtype=np.float64),
            "mean_prob": np.array([r[3] for r in out_rows], dtype=np.float64),
            "max_prob": np.array([r[4] for r in out_rows], dtype=np.float64),
        },
        geometry=gpd.GeoSeries([r[5] for r in out_rows], crs="EPSG:4326"),
        crs="EPSG:4326",
    )


Part = tuple  # (cell_id, epsg, geometry in the cell's UTM CRS, area_m2, mean_prob, max_prob)


@functools.cache
def _transformer(epsg_from: int, epsg_to: int):
    """xy (n, 2) -> xy (n, 2) from one CRS to another, for ``shapely.transform``."""
    from pyproj import Transformer

    t = Transformer.from_crs(epsg_from, epsg_to, always_xy=True)
    return lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))


def _border_parts(parts, res: float) -> tuple[list[Part], list[bool]]:
    """Every polygon of every cell as a row, and whether it may continue in another cell (within
    half a pixel of its cell square's edge, or a pixel of its cell's AOI boundary)."""
    import shapely

    rows: list[Part] = []
    cand: list[bool] = []
    for cell, gdf in parts:
        if gdf is None or not len(gdf):
            continue
        if gdf.crs is not None and gdf.crs.to_epsg() != cell.epsg:
            gdf = gdf.to_crs(cell.epsg)
        geoms = gdf.geometry.values
        near = shapely.dwithin(geoms, shapely.box(*cell.square).boundary, res * 0.5) | shapely.dwithin(
            geoms, cell.aoi_utm.boundary, res
        )
        for g, a, m, x, c in zip(
            geoms,
            gdf["area_m2"].to_numpy(float),
            gdf["mean_prob"].to_numpy(float),
            gdf["max_prob"].to_numpy(float),
            near,
        ):
            rows.append((cell.id, int(cell.epsg), g, a, m, x))
            cand.append(bool(c))
    return rows, cand


def _join_same_zone(rows: list[Part], idx: np.ndarray, joined: DisjointSet) -> None:
    """Candidates of different cells of one zone that overlap or share a border segment (one pixel
    grid: a cut landslide's parts share an edge exactly; a corner alone does not join)."""
    import shapely

    epsgs = np.array([r[1] for r in rows])
    for z in np.unique(epsgs[idx]):
        zi = idx[epsgs[idx] == z]
        geoms = np.array([rows[i][2] for i in zi], dtype=object)
        a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        for p, q in zip(a, b):
            if p >= q or rows[zi[p]][0] == rows[zi[q]][0]:
                continue
            gi, gj = geoms[p], geoms[q]
            if shapely.intersection(gi, gj).area > 0 or shapely.intersection(gi.boundary, gj.boundary).length > 0:
                joined.merge(int(zi[p]), int(zi[q]))


def _join_across_zones(rows: list[Part], idx: np.ndarray, joined: DisjointSet, res: float) -> None:
    """Candidates of cells in different zones closer than a pixel: compared in degrees first
    (cheap), then in metres in the first one's zone."""
    import shapely

    epsgs = np.array([r[1] for r in rows])
    if len(np.unique(epsgs[idx])) < 2:
        return
    g4326 = np.array([shapely.transform(rows[i][2], _transformer(rows[i][1], 4326)) for i in idx], dtype=object)
    tol_deg = res * 2.0 / 111_000.0 / max(0.05, math.cos(math.radians(float(np.mean([g.centroid.y for g in g4326])))))
    a, b = shapely.STRtree(g4326).query(g4326, predicate="dwithin", distance=tol_deg)
    for p, q in zip(a, b):
        i, j = int(idx[p]), int(idx[q])
        if p >= q or rows[i][1] == rows[j][1]:
            continue
        gj = shapely.transform(rows[j][2], _transformer(rows[j][1], rows[i][1]))
        if shapely.distance(rows[i][2], gj) <= res:
            joined.merge(i, j)


def _union_group(rows: list[Part], members: list[int], res: float) -> tuple:
    """One landslide from its parts: unioned in the first part's zone (across zones the union is
    closed by ``res`` to bridge the sub-pixel gap), areas summed, the area-weighted mean, the max."""
    import shapely

    first = rows[members[0]]
    if len(members) == 1:
        geom = first[2]
    else:
        z = first[1]
        gs = [
            rows[m][2] if rows[m][1] == z else shapely.transform(rows[m][2], _transformer(rows[m][1], z))
            for m in members
        ]
        geom = shapely.union_all(gs)
        if not all(rows[m][1] == z for m in members):
            geom = shapely.buffer(shapely.buffer(geom, res, join_style="mitre"), -res, join_style="mitre")
        geom = shapely.normalize(shapely.simplify(geom, 0.0, preserve_topology=True))
    areas = np.array([rows[m][3] for m in members])
    means = np.array([rows[m][4] for m in members])
    area = float(areas.sum())
    mean = float((areas * means).sum() / area) if area > 0 else float(means.mean())
    cells_txt = ",".join(sorted({rows[m][0] for m in members}))
    return (
        cells_txt,
        first[1],
        area,
        mean,
        float(max(rows[m][5] for m in members)),
        shapely.transform(geom, _transformer(first[1], 4326)),
    )


def write_vrt(
    cogs: list[Path],
    out: Path,
    *,
    sources: list[str] | None = None,
    opener=None,
    description: str = "landslide probability x 255",
    scale: float | None = 1.0 / 255.0,
) -> Path:
    """A GDAL VRT mosaic of single-band uint8 COGs on one pixel grid (same CRS and resolution,
    origins on whole pixels): each source placed at its offset, masks honoured (GDAL >= 3.5).

    ``cogs`` are read for their grids (with rasterio's ``opener``, e.g. an fsspec filesystem, if
    given). The VRT names each source by its path relative to the VRT, or by ``sources`` (one
    GDAL name per COG: absolute, e.g. ``/vsis3/bucket/key``, or relative to the VRT) when given.
    """
    import rasterio

    if not cogs:
        raise ValueError("no COG to mosaic")
    if sources is not None and len(sources) != len(cogs):
        raise ValueError("one source name per COG")
    infos = []
    for i, p in enumerate(cogs):
        with rasterio.open(p, opener=opener) as src:
            infos.append(
                (
                    p if sources is not None else Path(p),
                    src.transform,
                    src.width,
                    src.height,
                    src.crs,
                    src.block_shapes[0],
                    None if sources is None else sources[i],
                )
            )
    t0, crs = infos[0][1], infos[0][4]
    res_x, res_y = t0.a, t0.e
    minx = min(t.c for _, t, *_ in infos)
    maxy = max(t.f for _, t, *_ in infos)
    maxx = max(t.c + w * res_x for _, t, w, *_ in infos)
    miny = min(t.f + h * res_y for _, t, _, h, *_ in infos)
    width = round((maxx - minx) / res_x)
    height = round((maxy - miny) / -res_y)
    srcs = []
    for p, t, w, h, c, (by, bx), name in infos:
        if c != crs or abs(t.a - res_x) > 1e-9 or abs(t.e - res_y) > 1e-9:
            raise InputDataError(f"{p} is not on the mosaic's grid ({c}, {t.a} m); one VRT per UTM zone")
        if name is None:
            name = os.path.relpath(p, out.parent)
        srcs.append(
            VrtSource(
                filename=name,
                size=(w, h),
                block=(bx, by),
                data_type="Byte",
                relative=not name.startswith("/"),
                use_mask=True,
                dst_offset=(round((t.c - minx) / res_x), round((maxy - t.f) / -res_y)),
            )
        )
    xml = vrt_xml(
        width,
        height,
        crs.to_wkt(),
        (minx, res_x, 0.0, maxy, 0.0, res_y),
        "Byte",
        srcs,
        description=description,
        scale=scale,
    )
    return write_vrt_xml(out, xml)


def zone_vrts(manifest, cells, out: Path, remote, cell_file) -> tuple[dict[int, Path], dict]:
    """One VRT per UTM zone over its finished cells' probability COGs (``mosaic/probability_EPSG*.vrt``)
    and the mosaic index naming them; ``cell_file(cell_id, name)``: a cell's file, local or remote."""
    mosaic = out / "mosaic"
    mosaic.mkdir(parents=True, exist_ok=True)
    for old in mosaic.glob("probability_EPSG*.vrt"):
        old.unlink()
    by_zone: dict[int, list] = {}
    for c in cells:
        if manifest.status(c.id) == "done":
            by_zone.setdefault(c.epsg, []).append(c.id)
    vrts = {}
    gdal = remote.gdal_path("") if remote is not None else None
    for z, ids in sorted(by_zone.items()):
        vrt = mosaic / f"probability_EPSG{z}.vrt"
        if remote is None:
            write_vrt([cell_file(i, "probability.tif") for i in ids], vrt)
        else:  # read the COG headers on the remote; name them by GDAL's /vsis3/... paths
            write_vrt(
                [remote.path_of(cell_file(i, "probability.tif")) for i in ids],
                vrt,
                opener=remote.fs,
                # GDAL cannot read this protocol: relative names, valid once downloaded
                sources=(
                    [remote.gdal_path(cell_file(i, "probability.tif")) for i in ids]
                    if gdal
                    else [f"../{cell_file(i, 'probability.tif')}" for i in ids]
                ),
            )
        vrts[z] = vrt
    cog_rel = {
        c.id: (
            os.path.relpath(cell_dir(out, c.id) / "probability.tif", mosaic)
            if manifest.status(c.id) == "done"
            else None
        )
        for c in cells
    }
    index = {
        "description": "per-zone VRT mosaics of the per-cell probability COGs (uint8, p x 255; "
        "cells of one UTM zone share a pixel grid)",
        "vrts": {f"EPSG:{z}": os.path.relpath(v, mosaic) for z, v in vrts.items()},
        "cells": {c.id: {"epsg": c.epsg, "status": manifest.status(c.id), "cog": cog_rel[c.id]} for c in cells},
    }
    if remote is not None:
        index["root"] = remote.url
        if gdal:
            index["gdal_root"] = gdal
            index["note"] = (
                "the VRTs name their COGs by absolute GDAL paths under gdal_root; set GDAL's "
                "credentials/endpoint options (e.g. AWS_S3_ENDPOINT) to open them"
            )
    return vrts, index


def write_country_outputs(manifest, cells, out: Path, remote=None) -> tuple[dict[str, str], int]:
    """Merged polygons, per-zone VRTs, summary CSV and overview PNG from the finished cells.

    ``remote`` (a :class:`~landslide_dask.jobs.storage.RemoteLocation`): the cells are read from it,
    the outputs are built in the local folder ``out`` and then uploaded to the same names on it
    (each file in one request); the returned locations are its URLs.
    """
    import geopandas as gpd
    import pandas as pd

    from ..predict.polygons import write_polygons

    def cell_file(cid: str, name: str):
        return f"cells/{cid}/{name}" if remote is not None else cell_dir(out, cid) / name

    out.mkdir(parents=True, exist_ok=True)
    parts, table = [], []
    extra = ("upload",) if remote is not None else ()
    for c in cells:
        rec = manifest.record(c.id)
        row = {
            "cell": c.id,
            "epsg": c.epsg,
            "status": rec["status"],
            "reason": rec["reason"] or "",
            "attempts": rec.get("total_attempts", rec["attempts"]),
            "area_km2": round(c.area_km2, 4),
            "landslides": 0,
            "landslide_area_m2": 0.0,
        }
        for s in STAGES + extra:
            row[f"{s}_s"] = rec["timings"].get(s, float("nan")) if rec["timings"] else float("nan")
        if rec["status"] == "done":
            if remote is not None:
                data = remote.read_bytes(cell_file(c.id, "landslides.parquet"))
                if data is None:
                    raise CountryJobError(
                        f"cell {c.id} is done in the manifest but "
                        f"{remote.url_of(cell_file(c.id, 'landslides.parquet'))} is missing: "
                        "was the output edited? Rerun with --force to recompute"
                    )
                gdf = gpd.read_parquet(io.BytesIO(data))
            else:
                gdf = gpd.read_parquet(cell_file(c.id, "landslides.parquet"))  # (the folder may have moved)
            parts.append((c, gdf))
            row["landslides"] = len(gdf)
            row["landslide_area_m2"] = float(gdf["area_m2"].sum()) if len(gdf) else 0.0
        table.append(row)
    merged = merge_cell_polygons(parts)
    parquet, gpkg = write_polygons(merged, out / "landslides")
    csv = atomic_write(out / "summary.csv", lambda p: pd.DataFrame(table).to_csv(p, index=False))

    mosaic = out / "mosaic"
    vrts, index = zone_vrts(manifest, cells, out, remote, cell_file)
    index_path = atomic_write(mosaic / "index.json", lambda p: p.write_text(json.dumps(index, indent=1)))
    png = atomic_write(out / "overview.png", lambda p: overview_map(cells, manifest, merged, p))
    outputs = {
        "polygons_parquet": parquet,
        "polygons_gpkg": gpkg,
        "summary_csv": csv,
        "overview_png": png,
        "mosaic_index": index_path,
        **{f"vrt_EPSG{z}": v for z, v in vrts.items()},
    }
    done = [c for c in cells if manifest.status(c.id) == "done"]
    if done:
        outputs.update(
            country_products(
                done,
                manifest,
                out,
                merged,
                table,
                fetch=None if remote is None else (lambda cid, name: remote.read_bytes(cell_file(cid, name))),
            )
        )
    if remote is None:
        return {k: str(v) for k, v in outputs.items()}, len(merged)
    # publish: VRTs and index first, then the rest; VRTs of zones no longer mapped are removed
    keep = {v.name for v in vrts.values()}
    for name in remote.listdir("mosaic"):
        if name.startswith("probability_EPSG") and name.endswith(".vrt") and name not in keep:
            remote.remove(f"mosaic/{name}")
    urls = {}
    for key in sorted(outputs, key=lambda k: (not k.startswith("vrt_"), k != "mosaic_index", k)):
        rel = Path(outputs[key]).relative_to(out).as_posix()
        if key == "web_map":  # the page's whole folder: tiles, vectors, scripts
            remote.remove(Path(rel).parent.as_posix())
            remote.upload_dir(Path(outputs[key]).parent, Path(rel).parent.as_posix())
            urls[key] = remote.url_of(rel)
        else:
            urls[key] = remote.upload_file(outputs[key], rel)
    return urls, len(merged)


def country_products(cells, manifest, out: Path, polygons, table: list[dict], fetch=None) -> dict[str, Path]:
    """The country mosaic (``mosaic/probability_EPSG3857.tif``, ``mosaic/not-mapped_EPSG3857.tif``:
    COGs with QGIS styles), the offline web map (``web/index.html``) and the STAC item
    (``item.json``) from the finished ``cells``' Web Mercator rasters (``web_*.tif``), whose
    common grid makes the mosaic a plain VRT. ``fetch(cell_id, name) -> bytes``: read a cell's
    file from the job's object store (they are copied under ``out`` first)."""
    import shapely

    from ..products.item import products_item, write_item
    from ..products.page import RasterLayer, write_page
    from ..products.region import source_credit, zoom_range
    from ..products.styles import probability_qml, status_qml, write_qml
    from ..products.tiles import probability_rgba, status_rgba
    from .cells import RESOLUTION

    mosaic = out / "mosaic"
    vrts = {}
    for name, title in (("probability", "landslide probability"), ("status", "map status")):
        srcs = []
        for c in cells:
            local = cell_dir(out, c.id) / f"web_{name}.tif"
            if fetch is not None:
                data = fetch(c.id, f"web_{name}.tif")
                if data is None:
                    raise CountryJobError(f"cell {c.id} is done but its web_{name}.tif is missing: rerun with --force")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
            srcs.append(local)
        vrts[name] = write_vrt(
            srcs, mosaic / f"web_{name}.vrt", description=title, scale=1.0 / 255.0 if name == "probability" else None
        )
    files = mosaic_cogs(vrts["probability"], vrts["status"], mosaic)
    layers = [
        RasterLayer("probability", "landslide probability", files["country_probability"], probability_rgba),
        RasterLayer("status", "not mapped", files["country_not_mapped"], status_rgba),
    ]
    threshold = float(manifest.meta.get("threshold") or _first_threshold(cells, out) or 0.5)
    write_qml(files["country_probability"], probability_qml(threshold))
    write_qml(files["country_not_mapped"], status_qml())
    aoi = shapely.union_all([c.aoi_4326 for c in cells])
    import geopandas as gpd

    aoi_gdf = gpd.GeoDataFrame(geometry=[aoi], crs=4326)
    bounds = tuple(float(v) for v in aoi.bounds)
    lat = (bounds[1] + bounds[3]) / 2
    span_m = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) * 111_320.0
    zmin, zmax = zoom_range((int(span_m / RESOLUTION), 1), RESOLUTION, lat)
    meta = manifest.meta
    stac = meta.get("stac") or {}
    cube_attrs = {"stac_url": stac.get("url", ""), "collection": stac.get("collection", "")}
    event = (meta.get("event") or {}).get("date", "")
    title = f"Landslides {meta.get('name', '')}, event of {event}".replace("  ", " ")
    mapped_km2 = sum(r["area_km2"] for r in table if r["status"] == "done")
    facts = [
        f"event {event}",
        f"{len(cells)} cells mapped, {mapped_km2:.0f} km²",
        f"{len(polygons)} landslides, {float(polygons['area_m2'].sum()) / 1e6 if len(polygons) else 0:.3f} km²",
        f"threshold {threshold:.2f} (one for the whole job)",
    ]
    links = [
        ("probability (COG)", "../mosaic/probability_EPSG3857.tif"),
        ("not mapped (COG)", "../mosaic/not-mapped_EPSG3857.tif"),
        ("polygons (GPKG)", "../landslides.gpkg"),
        ("polygons (GeoParquet)", "../landslides.parquet"),
        ("summary", "../summary.csv"),
        ("STAC item", "../item.json"),
    ]
    files["web_map"] = write_page(
        out / "web",
        title=title,
        bounds=bounds,
        zmin=zmin,
        zmax=zmax,
        rasters=layers,
        polygons=polygons,
        outlines={"aoi": aoi_gdf},
        threshold=threshold,
        threshold_rule="validation",
        facts=facts,
        files=links,
        attribution=source_credit({**cube_attrs, "dem_collection": stac.get("dem_collection")}),
        res_m=RESOLUTION,
    )
    item_assets = {
        **files,
        "landslides_gpkg": out / "landslides.gpkg",
        "landslides_parquet": out / "landslides.parquet",
        "summary": out / "summary.csv",
    }
    pred_attrs = {
        "event_date": event,
        "model": meta.get("model", ""),
        "threshold": threshold,
        "threshold_rule": "validation",
        "crs": "EPSG:3857",
        "resolution": RESOLUTION,
    }
    item = products_item(
        f"landslides-{meta.get('name', 'job')}",
        geometry=shapely.geometry.mapping(aoi),
        bbox=[round(b, 6) for b in bounds],
        assets=item_assets,
        base=out,
        pred_attrs=pred_attrs,
        cube_attrs=cube_attrs,
        title=title,
        stats={"cells": len(cells), "mapped_km2": round(mapped_km2, 3), "landslides": len(polygons)},
    )
    files["item"] = write_item(out / "item.json", item)
    return files


def mosaic_cogs(prob_vrt: Path, status_vrt: Path, folder: Path) -> dict[str, Path]:
    """The country's probability and not-mapped COGs from the VRT mosaics of the cells' Web
    Mercator rasters: the probability masked where the status says not mapped (a VRT composes its
    sources by their masks but exposes none of its own), block by block."""
    import rasterio
    from rasterio.windows import Window

    from ..products.cog import STATUS, STATUS_COLOURS, stream_cog

    with rasterio.open(prob_vrt) as prob, rasterio.open(status_vrt) as status:
        shape, crs, transform = (prob.height, prob.width), prob.crs, prob.transform

        def read_prob(y0: int, y1: int, x0: int, x1: int):
            win = Window(x0, y0, x1 - x0, y1 - y0)
            mapped = np.isin(status.read(1, window=win), (1, 2))
            return prob.read(1, window=win), np.where(mapped, 255, 0).astype(np.uint8)

        def read_status(y0: int, y1: int, x0: int, x1: int):
            return status.read(1, window=Window(x0, y0, x1 - x0, y1 - y0)), None

        p = stream_cog(
            folder / "probability_EPSG3857.tif",
            read_prob,
            shape,
            (1024, 1024),
            crs=crs,
            transform=transform,
            scale=1.0 / 255.0,
            description="landslide probability x 255",
            tags={"product": "landslide probability x 255"},
        )
        s = stream_cog(
            folder / "not-mapped_EPSG3857.tif",
            read_status,
            shape,
            (1024, 1024),
            crs=crs,
            transform=transform,
            nodata=0,
            colormap=STATUS_COLOURS,
            description="map status",
            tags={"product": "landslide map status", **{f"code_{k}": v for k, v in STATUS.items()}},
            overview_resampling="nearest",
        )
    return {"country_probability": p, "country_not_mapped": s}


def _first_threshold(cells, out: Path) -> float | None:
    """The threshold the cells' polygons used (the job's one), read from a cell's probability COG tags."""
    import rasterio

    for c in cells:
        p = cell_dir(out, c.id) / "probability.tif"
        if p.exists():
            with rasterio.open(p) as src:
                v = src.tags().get("threshold")
            if v not in (None, "None"):
                return float(v)
    return None


STATUS_COLOURS = {
    "done": "#7fbf7f",
    "empty": "#d9d9d9",
    "failed": "#e34a33",
    "pending": "#ffffff",
    "running": "#fdd49e",
}


def overview_map(cells, manifest, polygons, path: Path) -> Path:
    """PNG: cells coloured by status, landslide polygons on top, in EPSG:4326."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .cells import cells_to_geodataframe

    gdf = cells_to_geodataframe(cells)
    gdf["status"] = [manifest.status(c.id) for c in cells]
    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    gdf.plot(ax=ax, color=[STATUS_COLOURS.get(s, "#ffffff") for s in gdf["status"]], edgecolor="#555555", linewidth=0.5)
    if len(polygons):
        polygons.plot(ax=ax, color="#b30000", edgecolor="#b30000", linewidth=0.3)
    counts = gdf["status"].value_counts().to_dict()
    ax.legend(
        handles=[
            Patch(facecolor=STATUS_COLOURS[s], edgecolor="#555555", label=f"{s} ({counts.get(s, 0)})")
            for s in ("done", "empty", "failed")
        ]
        + [Patch(color="#b30000", label=f"landslides ({len(polygons)})")],
        loc="upper left",
        fontsize=8,
        framealpha=0.9,
    )
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect(1.0 / max(0.05, math.cos(math.radians(float(gdf.total_bounds[[1, 3]].mean())))))
    ax.set_title(f"{len(cells)} cells: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "empty", "failed")))
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
