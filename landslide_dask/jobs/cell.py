"""One cell of a country job, end to end: its AOI -> search + cube -> predict -> COGs -> polygons.

The cell AOI is written in its UTM CRS, so the cube grid is exactly the cell's pixel grid, aligned
with its neighbours; the cube is written chunk by chunk (memory follows the chunks and the cells in
flight, never the country). A cell whose search finds no imagery or whose cube has no valid pixel
is ``empty``, with the reason; any other error is raised for the job to record a failed attempt.
Every file is written to a temporary name and renamed, so a killed run leaves no half file.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from ..common.files import atomic_write
from ..cube.spec import CHUNK
from ..errors import EmptySearchError

__all__ = ["STAGES", "NO_VALID_PIXEL", "run_cell", "cell_dir", "short"]

STAGES = ("search", "cube", "predict", "cog", "polygons")
NO_VALID_PIXEL = "no valid pixel in the cube (fully clouded, or outside the imagery)"


def short(text: str, n: int = 300) -> str:
    """An error message on one line, at most ``n`` characters (logs, the manifest, reasons)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


def _write_aoi(cell, path: Path) -> Path:
    return atomic_write(path, lambda tmp: cell.aoi_geodataframe().to_file(tmp, driver="GPKG", layer="aoi"))


def cell_dir(out: Path, cell_id: str) -> Path:
    """Where cell ``cell_id`` of a job writing to ``out`` keeps its files."""
    return out / "cells" / cell_id


def web_zoom(spec) -> int:
    """The Web Mercator zoom of a job's web map: one for all cells (their tiles must share a grid),
    resolving the map's pixels at the centre of the job's area."""
    from ..products.tiles import zoom_for
    from .cells import RESOLUTION

    return zoom_for(RESOLUTION, spec.area.geometry().centroid.y)


def cell_rasters(pred: Path, cell, d: Path, zoom: int) -> Path:
    """A cell's rasters: probability and not-mapped COGs on its UTM grid, and both on the job's
    Web Mercator grid (``web_*.tif``, mosaicked for the country web map); returns the probability COG."""
    import zarr

    from ..predict.store import open_prediction, transform_of
    from ..products.cog import export_cog, export_status
    from ..products.region import aoi_reader, web_rasters

    cog = export_cog(pred, d / "probability.tif")
    ds = open_prediction(pred, georeferenced=True)
    crs, transform = ds.attrs["crs"], transform_of(ds)
    inside = aoi_reader([cell.aoi_utm], transform, crs)
    export_status(pred, d / "not-mapped.tif", inside)  # (its counts: the country sums cell areas)
    web_rasters(zarr.open_group(str(pred), mode="r"), crs, transform, inside, zoom, d)
    return cog


def run_cell(spec, cell, out: Path, client, *, chunk: int = CHUNK) -> dict[str, Any]:
    """Map one cell into ``out/cells/<id>/``; returns {status, reason, outputs, timings, ...}.
    Inference takes its window, overlap, batch size and device from ``spec.predict``.

    Raises on a real error (the caller records a failed attempt); returns status ``empty`` for
    no imagery or no valid pixel.
    """
    from ..cube.build import CubeSpec, assemble, write_cube
    from ..predict import predict
    from ..predict.polygons import polygonize

    timings: dict[str, float] = {}
    d = cell_dir(out, cell.id)
    shutil.rmtree(d, ignore_errors=True)  # a cell not finished in the manifest starts afresh
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
            return {
                "status": "empty",
                "reason": "no imagery: " + short(str(exc).split(". ")[0], 240),
                "timings": timings,
            }
        t = tick("search", t)
        cube = write_cube(ds, cspec.out, progress=False)
        import xarray as xr

        valid = xr.open_zarr(cube, consolidated=False)["valid"].data
        any_valid = bool(client.compute(valid.any()).result() if client is not None else valid.any().compute())
        t = tick("cube", t)
        if not any_valid:
            return {"status": "empty", "reason": NO_VALID_PIXEL, "timings": timings}
        # one threshold for the whole country: a scene threshold per cell would differ from cell to
        # cell, and a cell without landslides has no second mode to find
        pred = predict(
            cube,
            spec.model,
            d / "probability.zarr",
            client=client,
            progress=False,
            threshold_rule="validation",
            **spec.predict.kwargs(),
        )
        t = tick("predict", t)
        cog = cell_rasters(pred, cell, d, web_zoom(spec))
        t = tick("cog", t)
        gdf = polygonize(pred, d / "landslides", threshold=spec.threshold, min_area_m2=spec.min_area_m2, client=client)
        tick("polygons", t)
    outputs = {
        "cube": str(cube),
        "probability": str(pred),
        "cog": str(cog),
        "not_mapped": str(d / "not-mapped.tif"),
        "polygons": str(d / "landslides.parquet"),
    }
    return {
        "status": "done",
        "reason": None,
        "outputs": outputs,
        "timings": timings,
        "n_polygons": len(gdf),
        "area_m2": float(gdf["area_m2"].sum()) if len(gdf) else 0.0,
    }
