"""Reading a finished cube: open it, its bands, and the one check of a cube against a model.

Training, evaluation and inference all read cubes through here, so a cube that does not fit a
model is refused with the same words wherever it is met. Light on purpose (xarray is imported by
:func:`open_cube` only): the window reader and the inference engine import this module without
the cube builder and its STAC stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputDataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["TERRAIN", "open_cube", "cube_bands", "model_bands", "select_bands", "has_stream", "check_cube_for_model"]

#: The cube variables of the terrain stream, in the model's channel order.
TERRAIN = ("hillshade", "slope")


def open_cube(path: str | Path) -> xr.Dataset:
    """Open a cube lazily; a path that is not a finished cube is an error that says so."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = " A '.partial' write exists: that build did not finish; run it again." if partial.exists() else ""
        raise InputDataError(f"No cube at {path}.{hint}")
    try:
        return xr.open_zarr(path, consolidated=False)
    except Exception as exc:
        raise InputDataError(f"{path} is not a readable zarr cube: {exc}") from exc


def _band_labels(ds: xr.Dataset) -> list[str]:
    return [str(b) for b in ds["band"].values] if "band" in ds.coords else []


def cube_bands(cube: str | Path | xr.Dataset) -> list[str]:
    """The band labels of a cube's imagery composites (empty for a cube without imagery)."""
    return _band_labels(cube if not isinstance(cube, (str, Path)) else open_cube(cube))


def model_bands(bands: Sequence[str] | None, cubes: Sequence[str | Path | xr.Dataset]) -> tuple[str, ...]:
    """The imagery bands a model sees: ``bands`` as given, or (None) every band of the first cube
    (a path or an opened cube)."""
    if bands is not None:
        return tuple(str(b) for b in bands)
    return tuple(cube_bands(cubes[0])) if cubes else ()


def select_bands(wanted: Sequence[str], have: Sequence[str], where: str) -> tuple[int, ...]:
    """Indices of ``wanted`` bands in ``have``; an error naming the missing ones otherwise."""
    missing = [b for b in wanted if b not in have]
    if missing:
        raise InputDataError(
            f"{where} has bands {list(have)} but {list(wanted)} are needed (missing "
            f"{missing}): rebuild the cube with them (`landslide-dask cube --bands "
            f"{','.join(wanted)}`) or use a model trained on bands the cube has."
        )
    return tuple(list(have).index(b) for b in wanted)


def has_stream(variables, stream: str) -> bool:
    """Whether a cube holding ``variables`` (names, or its dataset) has a model stream."""
    return all(t in variables for t in TERRAIN) if stream == "terrain" else stream in variables


def _problems(ds: xr.Dataset, streams: Sequence[str], bands: Sequence[str], droppable: Sequence[str]) -> list[str]:
    """What the cube lacks for a model of these streams and bands, every problem at once."""
    problems = []
    for s in streams:
        if s in droppable:
            continue  # trained with this stream's dropout: a cube without it is read as zeros
        if s == "terrain":
            missing = [v for v in TERRAIN if v not in ds]
            if missing:
                problems.append(f"its terrain stream needs {' and '.join(missing)}, which the cube lacks")
        elif s not in ds:
            problems.append(f"its {s!r} stream needs a {s!r} composite, which the cube lacks")
    if "valid" not in ds:
        problems.append("the cube has no 'valid' mask")
    have = _band_labels(ds)
    missing_b = [b for b in bands if b not in have]
    if any(s != "terrain" for s in streams) and missing_b:
        problems.append(f"it sees bands {list(bands)}; the cube has {have} (missing {missing_b})")
    return problems


def check_cube_for_model(
    ds: xr.Dataset,
    streams: Sequence[str],
    bands: Sequence[str],
    droppable: Sequence[str] = (),
    *,
    cube: str | Path = "the cube",
    model: str | Path | None = None,
) -> None:
    """Refuse a cube that lacks a stream or band of a model (every problem at once), saying what
    makes it fit. ``droppable``: streams the model was trained to do without (their dropout);
    ``cube``, ``model``: named in the message (``model``: the checkpoint, None for a model in
    training)."""
    problems = _problems(ds, [str(s) for s in streams], [str(b) for b in bands], [str(s) for s in droppable])
    if problems:
        who = f"the model {model}" if model is not None else "the model"
        raise InputDataError(
            f"The cube {cube} does not fit {who}: " + "; ".join(problems) + ". Use a model trained on streams "
            "and bands the cube has (`train --streams ... --bands ...`), or with the missing streams' dropout "
            "(`train --pre-dropout 0.1`, `--stream-dropout terrain=0.2`), or rebuild the cube with them "
            "(`landslide-dask cube --bands ...`, with a DEM for terrain)."
        )
    dims = tuple(ds["valid"].dims)
    if dims != ("y", "x"):
        raise InputDataError(f"{cube}: 'valid' has dims {dims}, expected ('y', 'x'); rebuild the cube.")
