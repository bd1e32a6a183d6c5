"""Country jobs: a job spec's area split into cells, each mapped end to end, resumable, merged.

:func:`run_job` takes a loaded :class:`~landslide_dask.jobs.spec.JobSpec` and a connected
``distributed.Client`` and maps the whole area:

1. **Cells** -- ``make_cells(area, cell_size_km)``: squares on the UTM zone that contains them,
   with stable ids. The manifest (``OUTPUT/manifest.json``, :mod:`landslide_dask.jobs.manifest`)
   belongs to the job's fingerprint; a rerun of the same job skips ``done`` and ``empty`` cells.
2. **One cell** (its own small task graph, computed on the shared client):
   ``cells/<id>/aoi.gpkg`` (the cell AOI in its UTM CRS, so the cube grid is exactly the cell's
   pixel grid, aligned with its neighbours) -> search + lazy cube (``cube.zarr``, written chunk by
   chunk: memory follows the chunks and the cells in flight, never the country) -> ``predict`` (``probability.zarr`` +
   ``probability.tif`` COG)
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
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.files import write_bytes
from ..common.workers import n_workers
from ..cube.spec import CHUNK
from ..errors import CountryJobError
from .cell import NO_VALID_PIXEL, STAGES, cell_dir, run_cell, short
from .merge import merge_cell_polygons, write_country_outputs, write_vrt

log = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "NO_VALID_PIXEL",
    "CountryJobError",
    "JobResult",
    "check_output",
    "merge_cell_polygons",
    "run_cell",
    "run_job",
    "write_country_outputs",
    "write_vrt",
]
MANIFEST = "manifest.json"


@dataclass
class JobResult:
    """What :func:`run_job` returns: the manifest summary, the country outputs and timings."""

    summary: Any  # manifest.ManifestSummary
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # stage totals over finished cells + merge
    computed: list[str] = field(default_factory=list)  # cells computed (done/empty) in this run
    n_polygons: int = 0

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def failed(self) -> bool:
        return not self.summary.ok

    def __str__(self) -> str:
        return str(self.summary)


def _probe_local(folder: Path, what: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CountryJobError(
            f"{what} {folder} cannot be written ({exc.strerror or exc}): choose a folder you can write to"
        ) from None
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
    _probe_local(
        spec.scratch_dir(scratch),
        "scratch folder (the local working folder of a URL output; set `scratch:` in the job spec or pass --scratch)",
    )
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
        write_bytes(path, data)

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
                time.sleep(0.5 * 2**i)
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


def run_job(
    spec,
    client,
    *,
    progress: bool = True,
    force: bool = False,
    concurrency: int | None = None,
    chunk: int = CHUNK,
    on_cell: Callable[[str, str], None] | None = None,
    echo: Callable[[str], None] | None = print,
    scratch: str | Path | None = None,
) -> JobResult:
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
    manifest = Manifest.create_or_open(
        target.manifest_path,
        fingerprint,
        [c.id for c in cells],
        retries=spec.retries,
        force=force,
        meta=spec.to_dict(),
        before_read=target.pull_manifest if remote else None,
        on_write=target.push_manifest if remote else None,
    )
    computed: list[str] = []
    try:
        todo = manifest.todo()
        n_skip = len(cells) - len(todo)
        if echo:
            zones = sorted({c.epsg for c in cells})
            echo(
                f"[job] {spec.name}: {len(cells)} cells of {spec.cell_size_km:g} km in "
                f"{', '.join(f'EPSG:{z}' for z in zones)}; {n_skip} already finished, {len(todo)} to run"
            )
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
            outputs, n_poly = write_country_outputs(manifest, cells, target.scratch / "country", remote=target.remote)
            shutil.rmtree(target.scratch / "country", ignore_errors=True)
            with contextlib.suppress(OSError):
                (target.work / "cells").rmdir()  # only when empty (no failed cell's files kept)
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
        echo(
            f"[job] {n_poly} landslide polygons -> {outputs.get('polygons_parquet')}; "
            f"summary {outputs.get('summary_csv')}; "
            f"map {outputs.get('overview_png')}"
        )
        if outputs.get("web_map"):
            echo(f"[job] one mosaic: {outputs.get('country_probability')}; offline web map {outputs.get('web_map')}")
    return JobResult(summary=summary, outputs=outputs, seconds=seconds, computed=computed, n_polygons=n_poly)


def _run_cell_in(spec, cell, target: _Target, client, *, chunk: int = CHUNK) -> dict[str, Any]:
    """:func:`run_cell` into ``target.work``; for a URL output, upload the finished cell's files to
    ``URL/cells/<id>/`` (after removing what a killed run left there) and free its scratch folder."""
    if target.remote is None:
        return run_cell(spec, cell, target.work, client, chunk=chunk)
    rel = f"cells/{cell.id}"
    target.remote.remove(rel)
    res = run_cell(spec, cell, target.work, client, chunk=chunk)
    t0 = time.perf_counter()
    d = cell_dir(target.work, cell.id)
    target.remote.upload_dir(d, rel)
    res["outputs"] = {
        k: target.remote.url_of(f"{rel}/{Path(v).relative_to(d).as_posix()}")
        for k, v in (res.get("outputs") or {}).items()
    }
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
                    log.warning(
                        "cell %s failed (%s)%s",
                        cid,
                        short(f"{type(exc).__name__}: {exc}"),
                        ": retrying" if again else "",
                    )
                    if again:
                        queue.append(cid)
                    status = "failed"
                if bar is not None and cid not in queue:  # finished, or failed for this run
                    bar.update(1)
                if on_cell is not None:
                    on_cell(cid, status)
    except BaseException:
        # Ctrl-C, SIGTERM or a hook's error: stop now. Cells in flight stay `running` in the
        # manifest, which a rerun turns back into pending (an interrupted attempt is not counted).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
