"""Country jobs: a job spec's area split into cells, each mapped end to end, resumable, merged.

:func:`run_job` takes a loaded :class:`~landslide_dask.jobspec.JobSpec` and a connected
``distributed.Client`` and maps the whole area:

1. **Cells** -- ``make_cells(area, cell_size_km)``: squares on the UTM zone that contains them,
   with stable ids. The manifest (``OUTPUT/manifest.json``, :mod:`landslide_dask.manifest`)
   belongs to the job's fingerprint; a rerun of the same job skips ``done`` and ``empty`` cells.
2. **One cell** (its own small task graph, computed on the shared client):
   ``cells/<id>/aoi.gpkg`` (the cell AOI in its UTM CRS, so the cube grid is exactly the cell's
   pixel grid, aligned with its neighbours) -> search + lazy cube (``cube.zarr``, written chunk by
   chunk: memory follows the chunks and the cells in flight, never the country) -> ``predict`` (``probability.zarr`` + ``probability.tif`` COG)
   -> ``polygonize`` (``landslides.parquet`` + ``.gpkg``, in the cell's UTM CRS). Seconds per stage
   (``search``, ``cube``, ``predict``, ``cog``, ``polygons``) go into the manifest.
   A cell whose STAC search finds no imagery (:class:`~landslide_dask.errors.EmptySearchError`)
   or whose cube has no valid pixel (fully clouded, or outside the imagery) is ``empty``, with the
   reason; any other error is a failed attempt, retried up to ``spec.retries`` times in this run,
   then recorded ``failed`` with its message while the other cells go on.
   Several cells run at once (``concurrency`` driver threads, each submitting its cell's graphs
   to the same client); only the driver's main thread writes the manifest. Ctrl-C / SIGTERM stop
   the driver at once: cells in flight stay ``running`` and a rerun starts them again.
3. **Idempotent, atomic cells** -- a cell not finished in the manifest starts from an empty
   ``cells/<id>/`` folder (whatever a killed run left there is removed); every file is written to a
   temporary name and renamed (cube, prediction, COG, polygons), and the cell is recorded ``done``
   only after all of them exist. A killed job rerun recomputes only unfinished cells.
4. **Country outputs** (rebuilt from the finished cells at the end of every run):

   - ``landslides.parquet`` + ``landslides.gpkg``: polygons of all cells in EPSG:4326, merged
     across cell borders (:func:`merge_cell_polygons`): a landslide cut by a cell border is one
     polygon again. Columns ``id``, ``cells`` (the cell ids it came from), ``epsg`` (the UTM zone
     of its first part), ``area_m2`` (mapped area: the sum of its parts' pixel areas, i.e. the
     area of the union in the UTM CRS when the parts share a zone), ``mean_prob`` (area-weighted
     mean of the parts'), ``max_prob``.
   - ``mosaic/probability_EPSG<code>.vrt``: one GDAL VRT per UTM zone over that zone's per-cell
     COGs (cells of one zone share one pixel grid, so a VRT mosaics them without resampling;
     QGIS/GDAL/rasterio open it; several zones cannot share one VRT without warping), plus
     ``mosaic/index.json`` listing the VRTs and cells.
   - ``summary.csv``: per cell id, epsg, status, reason, attempts, landslide count and area,
     seconds per stage; ``overview.png``: the cells coloured by status with the polygons, EPSG:4326.

Outputs must be a local folder for now: an fsspec URL (s3://, gs://...) is refused with a clear
message (the cube, prediction and COG writers of this package write local files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from .errors import EmptySearchError, InputDataError, LandslideDaskError

log = logging.getLogger(__name__)

__all__ = ["STAGES", "CountryJobError", "JobResult", "check_output", "merge_cell_polygons", "run_job", "write_vrt"]

STAGES = ("search", "cube", "predict", "cog", "polygons")
NO_VALID_PIXEL = "no valid pixel in the cube (fully clouded, or outside the imagery)"


class CountryJobError(LandslideDaskError):
    """The job cannot run as asked (e.g. an output location this runner does not support)."""


@dataclass
class JobResult:
    """What :func:`run_job` returns: the manifest summary, the country outputs and timings."""

    summary: Any                     # manifest.ManifestSummary
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)   # stage totals over finished cells + merge
    computed: list[str] = field(default_factory=list)          # cells computed (done/empty) in this run
    n_polygons: int = 0

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def failed(self) -> bool:
        return not self.summary.ok

    def __str__(self) -> str:
        return str(self.summary)


# --------------------------------------------------------------------------------------------
# one cell


def _short(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


def _write_aoi(cell, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    tmp.unlink(missing_ok=True)
    cell.aoi_geodataframe().to_file(tmp, driver="GPKG", layer="aoi")
    os.replace(tmp, path)
    return path


def _cell_dir(out: Path, cell_id: str) -> Path:
    return out / "cells" / cell_id


def run_cell(spec, cell, out: Path, client, *, chunk: int = 1024,
             predict_options: dict | None = None) -> dict[str, Any]:
    """Map one cell into ``out/cells/<id>/``; returns {status, reason, outputs, timings, ...}.

    Raises on a real error (the caller records a failed attempt); returns status ``empty`` for
    no imagery or no valid pixel.
    """
    from .cube import CubeSpec, assemble, write_cube
    from .polygons import polygonize
    from .predict import export_cog, predict

    timings: dict[str, float] = {}
    d = _cell_dir(out, cell.id)
    shutil.rmtree(d, ignore_errors=True)   # a cell not finished in the manifest starts afresh
    d.mkdir(parents=True)

    def tick(stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + t1 - t0
        return t1

    ctx = client.as_current() if client is not None else contextlib.nullcontext()
    with ctx:
        t = time.perf_counter()
        aoi = _write_aoi(cell, d / "aoi.gpkg")
        cspec = CubeSpec(**spec.cube_kwargs(), aoi=aoi, out=d / "cube.zarr", epsg=cell.epsg, chunk=chunk)
        try:
            ds = assemble(cspec)
        except EmptySearchError as exc:
            tick("search", t)
            return {"status": "empty", "reason": "no imagery: " + _short(str(exc).split(". ")[0], 240),
                    "timings": timings}
        t = tick("search", t)
        cube = write_cube(ds, cspec.out, progress=False)
        import xarray as xr

        valid = xr.open_zarr(cube, consolidated=False)["valid"].data
        any_valid = bool(client.compute(valid.any()).result() if client is not None else valid.any().compute())
        t = tick("cube", t)
        if not any_valid:
            return {"status": "empty", "reason": NO_VALID_PIXEL, "timings": timings}
        pred = predict(cube, spec.model, d / "probability.zarr", client=client, progress=False,
                       **(predict_options or {}))
        t = tick("predict", t)
        cog = export_cog(pred, d / "probability.tif")
        t = tick("cog", t)
        gdf = polygonize(pred, d / "landslides", threshold=spec.threshold, min_area_m2=spec.min_area_m2,
                         client=client)
        tick("polygons", t)
    outputs = {"cube": str(cube), "probability": str(pred), "cog": str(cog),
               "polygons": str(d / "landslides.parquet")}
    return {"status": "done", "reason": None, "outputs": outputs, "timings": timings,
            "n_polygons": len(gdf), "area_m2": float(gdf["area_m2"].sum()) if len(gdf) else 0.0}


# --------------------------------------------------------------------------------------------
# the job


def check_output(spec) -> Path:
    """The local output folder, created and probed for writing; a clear error otherwise (URLs too)."""
    if not spec.output_is_local:
        raise CountryJobError(
            f"output {spec.output}: writing a country job to an fsspec URL is not supported yet by the job "
            "runner (the cube, prediction and COG writers write local files). Give a local folder (e.g. a "
            "shared file system on a cluster) and copy it afterwards (e.g. `aws s3 sync`, `gsutil rsync`)")
    if not spec.model_is_local:
        raise CountryJobError(f"model {spec.model}: reading the checkpoint from an fsspec URL is not supported yet "
                              "by the job runner; copy it to a local (or shared) path")
    out = spec.output_path
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CountryJobError(f"output {out} cannot be written ({exc.strerror or exc}): choose a folder you "
                              "can write to") from None
    return out


def _n_workers(client) -> int:
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:  # noqa: BLE001 - only a default for the concurrency
        return 1


def run_job(spec, client, *, progress: bool = True, force: bool = False, concurrency: int | None = None,
            chunk: int = 1024, predict_options: dict | None = None,
            on_cell: Callable[[str, str], None] | None = None, echo: Callable[[str], None] | None = print
            ) -> JobResult:
    """Map every cell of ``spec`` on ``client``, resumably; merge and summarise; return a JobResult.

    ``force``: start over when the output holds a manifest of another configuration (it is kept
    as ``manifest.json.replaced-TIME``). ``concurrency``: cells in flight at once (default: the
    number of workers, at least 2). ``chunk``: cube chunk size in pixels. ``predict_options``:
    extra :func:`~landslide_dask.predict.predict` arguments (``window``, ``overlap``,
    ``batch_size``, ``device``). ``on_cell(cell_id, status)`` is called in the driver after every
    finished attempt (tests use it). ``result.failed`` is True when any cell failed (the CLI then
    exits non-zero).
    """
    from .cells import make_cells
    from .manifest import Manifest

    t_job = time.perf_counter()
    spec.check_paths()
    out = check_output(spec)
    area = spec.area.geometry()
    cells = make_cells(area, spec.cell_size_km)
    by_id = {c.id: c for c in cells}
    fingerprint = spec.fingerprint(area_geometry=area)
    manifest = Manifest.create_or_open(out / "manifest.json", fingerprint, [c.id for c in cells],
                                       retries=spec.retries, force=force, meta=spec.to_dict())
    computed: list[str] = []
    try:
        todo = manifest.todo()
        n_skip = len(cells) - len(todo)
        if echo:
            zones = sorted({c.epsg for c in cells})
            echo(f"[job] {spec.name}: {len(cells)} cells of {spec.cell_size_km:g} km in "
                 f"{', '.join(f'EPSG:{z}' for z in zones)}; {n_skip} already finished, {len(todo)} to run")
        n_par = max(1, int(concurrency)) if concurrency else max(2, _n_workers(client))
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(cells), initial=n_skip, desc="cells", unit="cell", mininterval=1.0)
        try:
            _run_cells(manifest, todo, by_id, spec, out, client, n_par, chunk, predict_options, on_cell,
                       bar, computed)
        finally:
            if bar is not None:
                bar.close()
        t_merge = time.perf_counter()
        outputs, n_poly = write_country_outputs(manifest, cells, out)
        merge_s = time.perf_counter() - t_merge
        summary = manifest.summary()
        seconds = {k: round(v, 3) for k, v in manifest.timings().items()}
        seconds["merge"] = round(merge_s, 3)
        seconds["wall"] = round(time.perf_counter() - t_job, 3)
    finally:
        manifest.close()
    if echo:
        echo(f"[job] {summary}")
        echo(f"[job] {n_poly} landslide polygons -> {outputs.get('polygons_parquet')}; summary {outputs.get('summary_csv')}; "
             f"map {outputs.get('overview_png')}")
    return JobResult(summary=summary, outputs=outputs, seconds=seconds, computed=computed, n_polygons=n_poly)


def _run_cells(manifest, todo, by_id, spec, out, client, n_par, chunk, predict_options, on_cell, bar,
               computed) -> None:
    """Driver loop: at most ``n_par`` cells in flight; the main thread alone writes the manifest."""
    queue = list(todo)
    running: dict = {}
    pool = ThreadPoolExecutor(max_workers=n_par, thread_name_prefix="cell")
    try:
        while queue or running:
            while queue and len(running) < n_par:
                cid = queue.pop(0)
                manifest.mark_running(cid)
                fut = pool.submit(run_cell, spec, by_id[cid], out, client, chunk=chunk,
                                  predict_options=predict_options)
                running[fut] = cid
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                cid = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    res = fut.result()
                    if res["status"] == "done":
                        manifest.mark_done(cid, res["outputs"], res["timings"])
                    else:
                        manifest.mark_empty(cid, res["reason"], res["timings"])
                    computed.append(cid)
                    status = res["status"]
                else:
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise exc
                    again = manifest.mark_failed(cid, exc)
                    log.warning("cell %s failed (%s)%s", cid, _short(f"{type(exc).__name__}: {exc}"),
                                ": retrying" if again else "")
                    if again:
                        queue.append(cid)
                    status = "failed"
                if bar is not None and cid not in queue:   # finished, or failed for this run
                    bar.update(1)
                if on_cell is not None:
                    on_cell(cid, status)
    except BaseException:
        # Ctrl-C, SIGTERM or a hook's error: stop now. Cells in flight stay `running` in the
        # manifest, which a rerun turns back into pending (an interrupted attempt is not counted).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# merging polygons across cell borders


def merge_cell_polygons(parts, res: float = 10.0):
    """Merge per-cell polygons into one GeoDataFrame in EPSG:4326; parts cut by cell borders rejoin.

    ``parts``: iterable of ``(cell, gdf)``, ``cell`` a :class:`~landslide_dask.cells.Cell` (its
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
    import shapely
    from pyproj import Transformer

    rows = []   # (cell_id, epsg, geom_utm, area, mean, max)
    cand = []   # bool per row
    for cell, gdf in parts:
        if gdf is None or not len(gdf):
            continue
        if gdf.crs is not None and gdf.crs.to_epsg() != cell.epsg:
            gdf = gdf.to_crs(cell.epsg)
        sq = shapely.box(*cell.square).boundary
        aoi_b = cell.aoi_utm.boundary
        geoms = gdf.geometry.values
        near = (shapely.dwithin(geoms, sq, res * 0.5)) | shapely.dwithin(geoms, aoi_b, res)
        for g, a, m, x, c in zip(geoms, gdf["area_m2"].to_numpy(float), gdf["mean_prob"].to_numpy(float),
                                 gdf["max_prob"].to_numpy(float), near):
            rows.append((cell.id, int(cell.epsg), g, a, m, x))
            cand.append(bool(c))
    cols = ["id", "cells", "epsg", "area_m2", "mean_prob", "max_prob"]
    if not rows:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=gpd.GeoSeries([], crs="EPSG:4326"),
                                crs="EPSG:4326")
    n = len(rows)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    to4326 = {}

    def tr(epsg_from: int, epsg_to: int):
        key = (epsg_from, epsg_to)
        if key not in to4326:
            t = Transformer.from_crs(epsg_from, epsg_to, always_xy=True)
            to4326[key] = lambda xy, t=t: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
        return to4326[key]

    idx = np.flatnonzero(cand)
    epsgs = np.array([r[1] for r in rows])
    # same zone: exact shared edges
    for z in np.unique(epsgs[idx]):
        zi = idx[epsgs[idx] == z]
        geoms = np.array([rows[i][2] for i in zi], dtype=object)
        tree = shapely.STRtree(geoms)
        a, b = tree.query(geoms, predicate="intersects")
        for p, q in zip(a, b):
            if p >= q or rows[zi[p]][0] == rows[zi[q]][0]:
                continue
            gi, gj = geoms[p], geoms[q]
            inter = shapely.intersection(gi, gj)
            if inter.area > 0 or shapely.intersection(gi.boundary, gj.boundary).length > 0:
                union(int(zi[p]), int(zi[q]))
    # across zones: close within a pixel, compared in degrees first (cheap) then in metres
    zones = np.unique(epsgs[idx])
    if len(zones) > 1:
        g4326 = np.array([shapely.transform(rows[i][2], tr(rows[i][1], 4326)) for i in idx], dtype=object)
        tol_deg = res * 2.0 / 111_000.0 / max(0.05, math.cos(math.radians(
            float(np.mean([g.centroid.y for g in g4326])))))
        tree = shapely.STRtree(g4326)
        a, b = tree.query(g4326, predicate="dwithin", distance=tol_deg)
        for p, q in zip(a, b):
            i, j = int(idx[p]), int(idx[q])
            if p >= q or rows[i][1] == rows[j][1]:
                continue
            gj = shapely.transform(rows[j][2], tr(rows[j][1], rows[i][1]))
            if shapely.distance(rows[i][2], gj) <= res:
                union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out_rows = []
    for root in sorted(groups):
        members = groups[root]
        first = rows[members[0]]
        if len(members) == 1:
            geom = first[2]
        else:
            z = first[1]
            same = all(rows[m][1] == z for m in members)
            gs = [rows[m][2] if rows[m][1] == z else shapely.transform(rows[m][2], tr(rows[m][1], z))
                  for m in members]
            geom = shapely.union_all(gs)
            if not same:
                geom = shapely.buffer(shapely.buffer(geom, res, join_style="mitre"), -res, join_style="mitre")
            geom = shapely.normalize(shapely.simplify(geom, 0.0, preserve_topology=True))
        areas = np.array([rows[m][3] for m in members])
        means = np.array([rows[m][4] for m in members])
        area = float(areas.sum())
        mean = float((areas * means).sum() / area) if area > 0 else float(means.mean())
        cells_txt = ",".join(sorted({rows[m][0] for m in members}))
        geom4326 = shapely.transform(geom, tr(first[1], 4326))
        out_rows.append((cells_txt, first[1], area, mean, float(max(rows[m][5] for m in members)), geom4326))
    gdf = gpd.GeoDataFrame({
        "id": np.arange(1, len(out_rows) + 1, dtype=np.int64),
        "cells": [r[0] for r in out_rows],
        "epsg": np.array([r[1] for r in out_rows], dtype=np.int32),
        "area_m2": np.array([r[2] for r in out_rows], dtype=np.float64),
        "mean_prob": np.array([r[3] for r in out_rows], dtype=np.float64),
        "max_prob": np.array([r[4] for r in out_rows], dtype=np.float64),
    }, geometry=gpd.GeoSeries([r[5] for r in out_rows], crs="EPSG:4326"), crs="EPSG:4326")
    return gdf


# --------------------------------------------------------------------------------------------
# country outputs


def write_vrt(cogs: list[Path], out: Path) -> Path:
    """A GDAL VRT mosaic of single-band uint8 COGs on one pixel grid (same CRS and resolution,
    origins on whole pixels): each source placed at its offset, masks honoured (GDAL >= 3.5)."""
    import rasterio

    if not cogs:
        raise ValueError("no COG to mosaic")
    infos = []
    for p in cogs:
        with rasterio.open(p) as src:
            infos.append((Path(p), src.transform, src.width, src.height, src.crs, src.block_shapes[0]))
    t0, crs = infos[0][1], infos[0][4]
    res_x, res_y = t0.a, t0.e
    minx = min(t.c for _, t, *_ in infos)
    maxy = max(t.f for _, t, *_ in infos)
    maxx = max(t.c + w * res_x for _, t, w, *_ in infos)
    miny = min(t.f + h * res_y for _, t, _, h, *_ in infos)
    width = round((maxx - minx) / res_x)
    height = round((maxy - miny) / -res_y)
    srcs = []
    for p, t, w, h, c, (by, bx) in infos:
        if c != crs or abs(t.a - res_x) > 1e-9 or abs(t.e - res_y) > 1e-9:
            raise InputDataError(f"{p} is not on the mosaic's grid ({c}, {t.a} m); one VRT per UTM zone")
        xoff = round((t.c - minx) / res_x)
        yoff = round((maxy - t.f) / -res_y)
        rel = os.path.relpath(p, out.parent)
        srcs.append(
            f'    <ComplexSource>\n'
            f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>\n'
            f'      <SourceBand>1</SourceBand>\n'
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="Byte" '
            f'BlockXSize="{bx}" BlockYSize="{by}"/>\n'
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
            f'      <DstRect xOff="{xoff}" yOff="{yoff}" xSize="{w}" ySize="{h}"/>\n'
            f'      <UseMaskBand>true</UseMaskBand>\n'
            f'    </ComplexSource>\n')
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
           f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>\n'
           f'  <GeoTransform>{minx!r}, {res_x!r}, 0.0, {maxy!r}, 0.0, {res_y!r}</GeoTransform>\n'
           f'  <VRTRasterBand dataType="Byte" band="1">\n'
           f'    <Description>landslide probability x 255</Description>\n'
           + "".join(srcs) +
           '  </VRTRasterBand>\n</VRTDataset>\n')
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(xml)
    os.replace(tmp, out)
    return out


def _atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_country_outputs(manifest, cells, out: Path) -> tuple[dict[str, str], int]:
    """Merged polygons, per-zone VRTs, summary CSV and overview PNG from the finished cells."""
    import geopandas as gpd
    import pandas as pd

    from .polygons import write_polygons

    parts, table = [], []
    for c in cells:
        rec = manifest.record(c.id)
        row = {"cell": c.id, "epsg": c.epsg, "status": rec["status"], "reason": rec["reason"] or "",
               "attempts": rec.get("total_attempts", rec["attempts"]), "area_km2": round(c.area_km2, 4),
               "landslides": 0, "landslide_area_m2": 0.0}
        for s in STAGES:
            row[f"{s}_s"] = rec["timings"].get(s, float("nan")) if rec["timings"] else float("nan")
        if rec["status"] == "done":
            gdf = gpd.read_parquet(_cell_dir(out, c.id) / "landslides.parquet")   # (the folder may have moved)
            parts.append((c, gdf))
            row["landslides"] = len(gdf)
            row["landslide_area_m2"] = float(gdf["area_m2"].sum()) if len(gdf) else 0.0
        table.append(row)
    merged = merge_cell_polygons(parts)
    parquet, gpkg = write_polygons(merged, out / "landslides")
    csv = _atomic(out / "summary.csv", lambda p: pd.DataFrame(table).to_csv(p, index=False))

    mosaic = out / "mosaic"
    mosaic.mkdir(exist_ok=True)
    for old in mosaic.glob("probability_EPSG*.vrt"):
        old.unlink()
    by_zone: dict[int, list[Path]] = {}
    for c in cells:
        rec = manifest.record(c.id)
        if rec["status"] == "done":
            by_zone.setdefault(c.epsg, []).append(_cell_dir(out, c.id) / "probability.tif")
    vrts = {z: str(write_vrt(cogs, mosaic / f"probability_EPSG{z}.vrt")) for z, cogs in sorted(by_zone.items())}
    index = {"description": "per-zone VRT mosaics of the per-cell probability COGs (uint8, p x 255; "
                            "cells of one UTM zone share a pixel grid)",
             "vrts": {f"EPSG:{z}": os.path.relpath(v, mosaic) for z, v in vrts.items()},
             "cells": {c.id: {"epsg": c.epsg, "status": manifest.status(c.id),
                              "cog": (os.path.relpath(_cell_dir(out, c.id) / "probability.tif", mosaic)
                                      if manifest.status(c.id) == "done" else None)} for c in cells}}
    index_path = _atomic(mosaic / "index.json", lambda p: p.write_text(json.dumps(index, indent=1)))
    png = _atomic(out / "overview.png", lambda p: overview_map(cells, manifest, merged, p))
    outputs = {"polygons_parquet": str(parquet), "polygons_gpkg": str(gpkg), "summary_csv": str(csv),
               "overview_png": str(png), "mosaic_index": str(index_path),
               **{f"vrt_EPSG{z}": v for z, v in vrts.items()}}
    return outputs, len(merged)


STATUS_COLOURS = {"done": "#7fbf7f", "empty": "#d9d9d9", "failed": "#e34a33", "pending": "#ffffff",
                  "running": "#fdd49e"}


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
    gdf.plot(ax=ax, color=[STATUS_COLOURS.get(s, "#ffffff") for s in gdf["status"]], edgecolor="#555555",
             linewidth=0.5)
    if len(polygons):
        polygons.plot(ax=ax, color="#b30000", edgecolor="#b30000", linewidth=0.3)
    counts = gdf["status"].value_counts().to_dict()
    ax.legend(handles=[Patch(facecolor=STATUS_COLOURS[s], edgecolor="#555555", label=f"{s} ({counts.get(s, 0)})")
                       for s in ("done", "empty", "failed")] + [Patch(color="#b30000", label=f"landslides ({len(polygons)})")],
              loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect(1.0 / max(0.05, math.cos(math.radians(float(gdf.total_bounds[[1, 3]].mean())))))
    ax.set_title(f"{len(cells)} cells: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "empty", "failed")))
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
