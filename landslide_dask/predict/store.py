"""The prediction store: a zarr v3 group written chunk by chunk, resumable, refused until complete.

After a chunk is written a marker file ``_done/<i>.<j>`` is created; a rerun with the same
arguments (checked against the ``run`` attribute: cube, model hash, window, overlap, batch size)
skips marked chunks (and the windows only they need). ``complete: true`` is set only once every
chunk is written (the markers are then removed); :func:`open_prediction` refuses anything else.
The layout is the prediction contract of ``docs/contracts.md``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputDataError
from .engine import Plan
from .windows import WEIGHT_FLOOR, asymptotic_overhead, chunk_grid, grid_origin, overhead, windows_of

__all__ = [
    "open_prediction",
    "transform_of",
    "coverage",
    "done_chunks",
    "create_output",
    "prediction_attrs",
    "open_existing",
    "write_block",
    "mark_done",
    "finish",
]


def done_chunks(out: Path) -> set[tuple[int, int]]:
    """Chunks ``(i, j)`` of an unfinished prediction that are written."""
    d = Path(out) / "_done"
    done = set()
    if d.is_dir():
        for f in d.iterdir():
            parts = f.name.split(".")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                done.add((int(parts[0]), int(parts[1])))
    return done


def _copy_coord(src, dst, name: str) -> None:
    if name not in src:
        return
    a = src[name]
    arr = dst.create_array(
        name,
        shape=a.shape,
        dtype=a.dtype,
        chunks=a.shape,
        fill_value=a.fill_value,
        dimension_names=a.metadata.dimension_names,
        attributes=dict(a.attrs),
    )
    if a.shape:
        arr[...] = a[...]
    else:
        arr[()] = a[()]


def create_output(out: Path, plan: Plan, run: dict, attrs: dict) -> None:
    """Create the empty prediction group atomically (built beside ``out``, then renamed)."""
    import zarr

    tmp = out.with_name(out.name + ".init")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        src = zarr.open_group(plan.cube, mode="r")
        for name in ("y", "x", "spatial_ref"):
            _copy_coord(src, g, name)
        coords = " ".join(n for n in ("spatial_ref",) if n in src)
        common = {"grid_mapping": "spatial_ref", "coordinates": coords} if coords else {}
        g.create_array(
            "probability",
            shape=plan.shape,
            chunks=plan.chunks,
            dtype="uint8",
            fill_value=0,
            dimension_names=("y", "x"),
            attributes={
                **common,
                "long_name": "landslide probability x 255 (0 where not valid)",
                "units": "1/255",
                "valid_range": [0, 255],
            },
        )
        g.create_array(
            "valid",
            shape=plan.shape,
            chunks=plan.chunks,
            dtype="bool",
            fill_value=False,
            dimension_names=("y", "x"),
            attributes={**common, "long_name": "mapped: the inputs the model needs are there"},
        )
        if "pre" in plan.streams:
            mapped = (
                "mapped from post-event imagery and terrain"
                if not plan.reader.require_pre
                else "not mapped (the model was trained without pre-event dropout)"
            )
            g.create_array(
                "no_pre",
                shape=plan.shape,
                chunks=plan.chunks,
                dtype="bool",
                fill_value=False,
                dimension_names=("y", "x"),
                attributes={**common, "long_name": f"no pre-event image: {mapped}"},
            )
        g.attrs.update({**attrs, "run": run, "complete": False})
        zarr.open_group(str(tmp / "_done"), mode="w", zarr_format=3)  # marker files live here while running
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prediction_attrs(plan: Plan, extra: dict, run: dict) -> dict:
    """The store's attributes: georeferencing, the model and how the windows were blended."""
    from ..train.checkpoint import contract
    from ..train.model import receptive_field_margin

    ds, c = extra["ds"], contract(extra["ckpt"])
    keep = ("crs", "epsg", "transform", "resolution", "event_date", "inventory")
    attrs = {k: ds.attrs[k] for k in keep if k in ds.attrs}
    attrs.update(
        {
            "landslide_dask_version": __version__,
            "product": "landslide probability",
            "cube": plan.cube,
            "model": plan.model,
            "model_sha256": run["model_sha256"],
            "threshold": c.threshold,
            "bands": list(c.bands),
            "streams": list(plan.streams),
            "window": plan.window,
            "overlap": plan.overlap,
            "stride": plan.window - plan.overlap,
            "batch_size": run["batch_size"],
            "blending": f"Hann-tapered (Tukey) weights, ramp {plan.overlap} px, floor {WEIGHT_FLOOR}",
            "grid_origin": [grid_origin(plan.overlap, plan.multiple)] * 2,
            "windows": len(windows_of(plan.shape, plan.window, plan.overlap, plan.multiple)),
            "overhead": round(overhead(plan.shape, plan.window, plan.overlap, plan.multiple), 4),
            "overhead_asymptotic": round(asymptotic_overhead(plan.window, plan.overlap), 4),
            "receptive_field_margin": receptive_field_margin(extra["config"]),
            "probability_scale": 1.0 / 255.0,
            "chunks_total": len(chunk_grid(plan.shape, plan.chunks)),
        }
    )
    return attrs


def open_existing(out: Path, run: dict, overwrite: bool) -> str:
    """'new', 'resume' or 'complete' for an output folder; refuses foreign or mismatched ones."""
    import zarr

    if not out.exists():
        return "new"
    if overwrite:
        shutil.rmtree(out)
        return "new"
    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception:
        attrs = {}
    old = attrs.get("run")
    if not isinstance(old, dict):
        raise InputDataError(
            f"{out} exists and is not a landslide-dask prediction: choose another --out, or "
            "pass overwrite=True (--overwrite) to replace it."
        )
    diff = {k: (old.get(k), v) for k, v in run.items() if old.get(k) != v}
    if diff:
        text = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise InputDataError(
            f"{out} holds a prediction made with other arguments ({text}). Rerun with the "
            "same arguments to resume it, choose another --out, or pass overwrite=True "
            "(--overwrite) to start again."
        )
    return "complete" if attrs.get("complete") is True else "resume"


def write_block(out: str, name: str, y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
    """One chunk-aligned write of array ``name``."""
    import zarr

    zarr.open_array(f"{out}/{name}", mode="r+")[y0:y1, x0:x1] = block


def mark_done(out: str, i: int, j: int) -> None:
    """Mark chunk (i, j) written: called after every array of the chunk is written."""
    (Path(out) / "_done" / f"{i}.{j}").touch()


def finish(out: Path, n_total: int) -> None:
    """Set ``complete`` once every chunk is written; the markers are then removed."""
    import zarr

    g = zarr.open_group(str(out), mode="r+")
    done = done_chunks(out)
    if len(done) != n_total:  # pragma: no cover - guarded by the caller
        raise RuntimeError(f"{len(done)} of {n_total} chunks done")
    g.attrs.update({"complete": True, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    shutil.rmtree(out / "_done", ignore_errors=True)  # the markers served their purpose


def open_prediction(out, *, georeferenced: bool = False):
    """Open a finished prediction lazily (xarray); an unfinished or foreign one is refused. An
    opened ``xarray.Dataset`` passes through the same checks. ``georeferenced``: also require the
    CRS and transform (polygons and maps need them)."""
    import xarray as xr
    import zarr

    if isinstance(out, xr.Dataset):
        ds, where = out, "the prediction dataset"
        if ds.attrs.get("complete") is not True:
            raise InputDataError(
                f"{where} is not a finished prediction (its attribute 'complete' is not true): "
                "rerun `landslide-dask predict` with the same arguments to finish it."
            )
    else:
        out = Path(out)
        where = str(out)
        if not out.exists():
            raise InputDataError(f"No prediction at {out}: run `landslide-dask predict` first.")
        try:
            attrs = dict(zarr.open_group(str(out), mode="r").attrs)
        except Exception as exc:
            raise InputDataError(f"{out} is not a readable prediction ({exc}).") from exc
        if "run" not in attrs:
            raise InputDataError(f"{out} is not a landslide-dask prediction.")
        if attrs.get("complete") is not True:
            n = len(done_chunks(out))
            raise InputDataError(
                f"{out} is an unfinished prediction ({n} of {attrs.get('chunks_total', '?')} "
                "chunks written): rerun `landslide-dask predict` with the same arguments to "
                "finish it."
            )
        ds = xr.open_zarr(out, consolidated=False)
    if "probability" not in ds:
        raise InputDataError(f"{where} has no 'probability' variable: it is not a landslide-dask prediction.")
    if georeferenced:
        for key in ("crs", "transform"):
            if key not in ds.attrs:
                raise InputDataError(
                    f"{where} has no {key!r} attribute, so its polygons cannot be georeferenced. "
                    "Rerun `landslide-dask predict`."
                )
    return ds


def transform_of(ds):
    """The affine transform of an opened prediction (``transform`` attribute)."""
    from affine import Affine

    return Affine(*list(ds.attrs["transform"])[:6])


def coverage(pred) -> dict[str, int]:
    """Pixel counts of an opened prediction: ``mapped``, ``no_pre`` (no pre-event image) and
    ``no_pre_mapped`` / ``no_pre_unmapped`` (how the model handled those)."""
    import dask

    parts = {"mapped": pred["valid"].data.sum()}
    if "no_pre" in pred:
        parts["no_pre"] = pred["no_pre"].data.sum()
        parts["no_pre_mapped"] = (pred["no_pre"].data & pred["valid"].data).sum()
    (got,) = dask.compute(parts)
    out = {k: int(v) for k, v in got.items()}
    if "no_pre" in out:
        out["no_pre_unmapped"] = out["no_pre"] - out["no_pre_mapped"]
    return out
