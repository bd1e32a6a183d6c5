"""Country jobs: a job spec's area split into cells, each mapped end to end, resumable, merged.

:func:`run_job` takes a loaded :class:`~landslide_dask.jobs.spec.JobSpec` and a connected
``distributed.Client`` and maps the whole area:

1. **Cells** -- ``make_cells(area, cell_size_km)``: squares on the UTM zone that contains them,
   with stable ids. The manifest (``OUTPUT/manifest.json``, :mod:`landslide_dask.jobs.manifest`)
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

5. **Outputs on object storage** -- ``output`` may be an fsspec URL (``s3://bucket/prefix``,
   ``gs://``, ``az://``...; options such as an S3 endpoint from the spec's ``storage_options``, see
   :mod:`landslide_dask.jobs.spec`). The cube, prediction and COG writers write local files, so each
   cell is computed in a local *scratch* folder (``spec.scratch_dir()``: the spec's ``scratch``,
   ``submit --scratch DIR`` / ``run_job(scratch=...)``, or a temp folder; every worker must be able to
   reach it) and, once finished, its files are uploaded to ``URL/cells/<id>/`` (what a killed run
   left there is removed first) and its scratch folder deleted, so scratch holds only the cells in
   flight. The manifest is kept in the scratch folder and uploaded to ``URL/manifest.json`` after
   every change, whole, in one PUT (an object store replaces an object atomically); a rerun
   downloads it first and resumes from it (the remote copy is the truth; the local lock guards only
   drivers on one machine). The country outputs are built in ``<scratch>/country/`` and uploaded to
   the same names under the URL; the per-cell polygons and COG headers are read from the remote.
   The VRTs name their COGs by GDAL's absolute ``/vsis3/bucket/key`` (``/vsigs/``, ``/vsiaz/``...)
   paths: a ``../`` relative source path inside a VRT on an object store does not work with GDAL
   (checked against an S3 server: the signed request for ``mosaic/../cells/...`` is refused); set
   GDAL's credentials and endpoint (``AWS_*``, ``AWS_S3_ENDPOINT``) to open them. For protocols
   GDAL cannot read (``memory://``, ``sftp://``...) the VRTs keep relative paths, valid once the
   output is downloaded. ``seconds`` gets an ``upload`` stage.
   A checkpoint given as a URL is downloaded once into ``<scratch>/models/`` (keyed by URL and
   ETag/size) and the workers load it from there. The output is probed (an object written, read
   back and deleted) before any cell runs: bad credentials, an unknown bucket, an unreachable
   endpoint or a missing fsspec backend fail at once with what to check or install.
"""

from __future__ import annotations

import contextlib
import io
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

from ..errors import CountryJobError, EmptySearchError, InputDataError
from ..common.workers import n_workers

log = logging.getLogger(__name__)

__all__ = ["STAGES", "CountryJobError", "JobResult", "check_output", "merge_cell_polygons", "run_job", "write_vrt"]
MANIFEST = "manifest.json"

STAGES = ("search", "cube", "predict", "cog", "polygons")
NO_VALID_PIXEL = "no valid pixel in the cube (fully clouded, or outside the imagery)"


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


def run_cell(spec, cell, out: Path, client, *, chunk: int = 1024) -> dict[str, Any]:
    """Map one cell into ``out/cells/<id>/``; returns {status, reason, outputs, timings, ...}.
    Inference takes its window, overlap, batch size and device from ``spec.predict``.

    Raises on a real error (the caller records a failed attempt); returns status ``empty`` for
    no imagery or no valid pixel.
    """
    from ..cube.build import CubeSpec, assemble, write_cube
    from ..predict.polygons import polygonize
    from ..predict import export_cog, predict

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
                       **spec.predict.kwargs())
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


def _probe_local(folder: Path, what: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CountryJobError(f"{what} {folder} cannot be written ({exc.strerror or exc}): choose a folder you "
                              "can write to") from None
    return folder


def check_output(spec, scratch: str | Path | None = None) -> Path | str:
    """Probe the job's output for writing before anything runs; a clear error otherwise.

    Local: the folder, created. URL: the URL, after a probe object was written, read back and
    deleted there (credentials, endpoint and bucket checked), and the scratch folder created.
    A checkpoint URL is checked for reading (it is fetched by :func:`run_job`).
    """
    from .storage import StorageError, check_readable, check_writable

    if not spec.model_is_local:
        try:
            check_readable(spec.model, spec.fsspec_options(spec.model))
        except StorageError as exc:
            raise CountryJobError(f"model: {exc}") from None
    if spec.output_is_local:
        return _probe_local(spec.output_path, "output")
    try:
        check_writable(spec.output, spec.fsspec_options(spec.output))
    except StorageError as exc:
        raise CountryJobError(f"output: {exc}") from None
    _probe_local(spec.scratch_dir(scratch), "scratch folder (the local working folder of a URL output; "
                 "set `scratch:` in the job spec or pass --scratch)")
    return spec.output


class _Target:
    """Where a job writes: ``work`` (cells are computed there, the manifest lives there) and, for a
    URL output, ``remote`` (a :class:`~landslide_dask.jobs.storage.RemoteLocation`) it is published to."""

    def __init__(self, spec, scratch: str | Path | None = None):
        from .storage import RemoteLocation

        self.scratch = spec.scratch_dir(scratch)
        if spec.output_is_local:
            self.remote = None
            self.work = spec.output_path
        else:
            self.remote = RemoteLocation(spec.output, spec.fsspec_options(spec.output))
            self.work = self.scratch
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.work / MANIFEST

    # -- the manifest on the remote ----------------------------------------------------------------
    def pull_manifest(self, path: Path) -> None:
        """Replace the local manifest by the remote one (or remove it: the remote is the truth)."""
        data = self._retry(lambda: self.remote.read_bytes(MANIFEST), "reading", MANIFEST)
        if data is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{path.name}.pull-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def push_manifest(self, path: Path) -> None:
        """Upload a manifest file just written, whole, in one PUT."""
        data = path.read_bytes()
        self._retry(lambda: self.remote.write_bytes(path.name, data), "writing", path.name)

    def _retry(self, fn, doing: str, rel: str, attempts: int = 3):
        from .storage import explain

        for i in range(attempts):
            try:
                return fn()
            except Exception as exc:  # a blip is retried, then reported clearly
                if i == attempts - 1:
                    raise CountryJobError(explain(exc, self.remote.url_of(rel), doing)) from exc
                log.warning("%s %s failed (%s); retrying", doing, self.remote.url_of(rel), exc)
                time.sleep(0.5 * 2 ** i)
        return None


def _model_for_run(spec, target: _Target) -> tuple[Any, Path | None]:
    """The spec the cells run with (a checkpoint URL replaced by its local cached copy) and that copy."""
    if spec.model_is_local:
        return spec, None
    from .storage import StorageError, fetch_cached

    try:
        local = fetch_cached(spec.model, target.scratch / "models", spec.fsspec_options(spec.model))
    except StorageError as exc:
        raise CountryJobError(f"model: {exc}") from None
    return spec.model_copy(update={"model": str(local)}), local


def _n_workers(client) -> int:
    try:
        return max(1, n_workers(client))
    except Exception:  # noqa: BLE001 - only a default for the concurrency
        return 1


def run_job(spec, client, *, progress: bool = True, force: bool = False, concurrency: int | None = None,
            chunk: int = 1024, on_cell: Callable[[str, str], None] | None = None,
            echo: Callable[[str], None] | None = print,
            scratch: str | Path | None = None) -> JobResult:
    """Map every cell of ``spec`` on ``client``, resumably; merge and summarise; return a JobResult.

    ``force``: start over when the output holds a manifest of another configuration (it is kept
    as ``manifest.json.replaced-TIME``). ``concurrency``: cells in flight at once (default: the
    number of workers, at least 2). ``chunk``: cube chunk size in pixels. The inference settings
    (window, overlap, batch size, device) are the spec's ``predict`` section, part of its
    fingerprint, so every cell of a job is mapped alike. ``on_cell(cell_id, status)`` is called
    in the driver after every finished attempt (tests use it). ``result.failed`` is True when any
    cell failed (the CLI then exits non-zero). ``scratch``: the local working folder of a URL
    output (and the cache of a checkpoint URL), overriding the spec's ``scratch`` (see
    :meth:`JobSpec.scratch_dir`).
    """
    from .cells import make_cells
    from .manifest import Manifest

    t_job = time.perf_counter()
    spec.check_paths()
    check_output(spec, scratch)
    target = _Target(spec, scratch)
    run_spec, model_file = _model_for_run(spec, target)
    area = spec.area.geometry()
    cells = make_cells(area, spec.cell_size_km)
    by_id = {c.id: c for c in cells}
    fingerprint = spec.fingerprint(area_geometry=area, model_file=model_file)
    remote = target.remote is not None
    manifest = Manifest.create_or_open(target.manifest_path, fingerprint, [c.id for c in cells],
                                       retries=spec.retries, force=force, meta=spec.to_dict(),
                                       before_read=target.pull_manifest if remote else None,
                                       on_write=target.push_manifest if remote else None)
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
            from ..common.logs import progress_bar

            bar = progress_bar(total=len(cells), initial=n_skip, desc="cells", unit="cell", mininterval=1.0)
        try:
            _run_cells(manifest, todo, by_id, run_spec, target, client, n_par, chunk, on_cell, bar, computed)
        finally:
            if bar is not None:
                bar.close()
        t_merge = time.perf_counter()
        if remote:
            outputs, n_poly = write_country_outputs(manifest, cells, target.scratch / "country",
                                                    remote=target.remote)
            shutil.rmtree(target.scratch / "country", ignore_errors=True)
            with contextlib.suppress(OSError):
                (target.work / "cells").rmdir()   # only when empty (no failed cell's files kept)
        else:
            outputs, n_poly = write_country_outputs(manifest, cells, target.work)
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


def _run_cell_in(spec, cell, target: _Target, client, *, chunk: int = 1024) -> dict[str, Any]:
    """:func:`run_cell` into ``target.work``; for a URL output, upload the finished cell's files to
    ``URL/cells/<id>/`` (after removing what a killed run left there) and free its scratch folder."""
    if target.remote is None:
        return run_cell(spec, cell, target.work, client, chunk=chunk)
    rel = f"cells/{cell.id}"
    target.remote.remove(rel)
    res = run_cell(spec, cell, target.work, client, chunk=chunk)
    t0 = time.perf_counter()
    d = _cell_dir(target.work, cell.id)
    target.remote.upload_dir(d, rel)
    res["outputs"] = {k: target.remote.url_of(f"{rel}/{Path(v).relative_to(d).as_posix()}")
                      for k, v in (res.get("outputs") or {}).items()}
    res["timings"]["upload"] = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return res


def _run_cells(manifest, todo, by_id, spec, target, client, n_par, chunk, on_cell, bar, computed) -> None:
    """Driver loop: at most ``n_par`` cells in flight; the main thread alone writes the manifest."""
    queue = list(todo)
    running: dict = {}
    pool = ThreadPoolExecutor(max_workers=n_par, thread_name_prefix="cell")
    try:
        while queue or running:
            while queue and len(running) < n_par:
                cid = queue.pop(0)
                manifest.mark_running(cid)
                fut = pool.submit(_run_cell_in, spec, by_id[cid], target, client, chunk=chunk)
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


def write_vrt(cogs: list[Path], out: Path, *, sources: list[str] | None = None, opener=None) -> Path:
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
            infos.append((p if sources is not None else Path(p), src.transform, src.width, src.height, src.crs,
                          src.block_shapes[0], None if sources is None else sources[i]))
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
        xoff = round((t.c - minx) / res_x)
        yoff = round((maxy - t.f) / -res_y)
        if name is None:
            name = os.path.relpath(p, out.parent)
        relative = 0 if name.startswith("/") else 1
        srcs.append(
            f'    <ComplexSource>\n'
            f'      <SourceFilename relativeToVRT="{relative}">{escape(name)}</SourceFilename>\n'
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
        return f"cells/{cid}/{name}" if remote is not None else _cell_dir(out, cid) / name

    out.mkdir(parents=True, exist_ok=True)
    parts, table = [], []
    extra = ("upload",) if remote is not None else ()
    for c in cells:
        rec = manifest.record(c.id)
        row = {"cell": c.id, "epsg": c.epsg, "status": rec["status"], "reason": rec["reason"] or "",
               "attempts": rec.get("total_attempts", rec["attempts"]), "area_km2": round(c.area_km2, 4),
               "landslides": 0, "landslide_area_m2": 0.0}
        for s in STAGES + extra:
            row[f"{s}_s"] = rec["timings"].get(s, float("nan")) if rec["timings"] else float("nan")
        if rec["status"] == "done":
            if remote is not None:
                data = remote.read_bytes(cell_file(c.id, "landslides.parquet"))
                if data is None:
                    raise CountryJobError(f"cell {c.id} is done in the manifest but "
                                          f"{remote.url_of(cell_file(c.id, 'landslides.parquet'))} is missing: "
                                          "was the output edited? Rerun with --force to recompute")
                gdf = gpd.read_parquet(io.BytesIO(data))
            else:
                gdf = gpd.read_parquet(cell_file(c.id, "landslides.parquet"))   # (the folder may have moved)
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
        else:   # read the COG headers on the remote; name them by GDAL's /vsis3/... paths
            write_vrt([remote.path_of(cell_file(i, "probability.tif")) for i in ids], vrt, opener=remote.fs,
                      # GDAL cannot read this protocol: relative names, valid once downloaded
                      sources=([remote.gdal_path(cell_file(i, "probability.tif")) for i in ids] if gdal else
                               [f"../{cell_file(i, 'probability.tif')}" for i in ids]))
        vrts[z] = vrt
    cog_rel = {c.id: (os.path.relpath(_cell_dir(out, c.id) / "probability.tif", mosaic)
                      if manifest.status(c.id) == "done" else None) for c in cells}
    index = {"description": "per-zone VRT mosaics of the per-cell probability COGs (uint8, p x 255; "
                            "cells of one UTM zone share a pixel grid)",
             "vrts": {f"EPSG:{z}": os.path.relpath(v, mosaic) for z, v in vrts.items()},
             "cells": {c.id: {"epsg": c.epsg, "status": manifest.status(c.id), "cog": cog_rel[c.id]}
                       for c in cells}}
    if remote is not None:
        index["root"] = remote.url
        if gdal:
            index["gdal_root"] = gdal
            index["note"] = ("the VRTs name their COGs by absolute GDAL paths under gdal_root; set GDAL's "
                             "credentials/endpoint options (e.g. AWS_S3_ENDPOINT) to open them")
    index_path = _atomic(mosaic / "index.json", lambda p: p.write_text(json.dumps(index, indent=1)))
    png = _atomic(out / "overview.png", lambda p: overview_map(cells, manifest, merged, p))
    outputs = {"polygons_parquet": parquet, "polygons_gpkg": gpkg, "summary_csv": csv,
               "overview_png": png, "mosaic_index": index_path, **{f"vrt_EPSG{z}": v for z, v in vrts.items()}}
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
        urls[key] = remote.upload_file(outputs[key], rel)
    return urls, len(merged)


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
