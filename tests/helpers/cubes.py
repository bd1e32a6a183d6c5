"""Small cubes written exactly as ``cube.write_cube`` writes them, from arrays made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr

from landslide_dask.cube.build import write_cube

BANDS = ["blue", "green", "red", "nir"]


def _smooth(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of coarse noise)."""
    cy, cx = shape[0] // scale + 2, shape[1] // scale + 2
    coarse = torch.from_numpy(rng.random((1, 1, cy, cx), dtype=np.float32))
    up = torch.nn.functional.interpolate(coarse, size=(cy * scale, cx * scale), mode="bilinear", align_corners=False)
    return up[0, 0, : shape[0], : shape[1]].numpy()


def make_arrays(shape=(200, 232), seed=0, kind="texture") -> dict[str, np.ndarray]:
    """Cube variables as numpy arrays. ``texture``: varied scenes; ``ramp``: a gentle ramp."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if kind == "ramp":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 0.3 * yy / h + 0.7 * xx / w
        fields = [base + 0.05 * k for k in range(10)]
    else:
        fields = [_smooth(rng, shape, s) for s in (8, 12, 16, 24, 8, 12, 16, 24, 20, 10)]
    pre = np.stack([500 + 2500 * f for f in fields[:4]]).astype(np.uint16)
    post = np.stack([500 + 2500 * f for f in fields[4:8]]).astype(np.uint16)
    return {
        "pre": pre,
        "post": post,
        "slope": (45 * fields[8]).astype(np.float32),
        "hillshade": (255 * np.clip(fields[9], 0, 1)).astype(np.uint8),
        "valid": np.ones(shape, bool),
        "label": np.zeros(shape, np.uint8),
    }


def write_test_cube(
    path: Path, arrays: dict[str, np.ndarray], chunk: int | tuple[int, int] = 64, bands: list[str] = BANDS
) -> Path:
    """Write arrays as a cube exactly as ``cube.write_cube`` does (zarr v3, dask chunks)."""
    h, w = arrays["valid"].shape
    cy, cx = (chunk, chunk) if isinstance(chunk, int) else chunk
    data = {}
    for name, a in arrays.items():
        dims = ("band", "y", "x") if a.ndim == 3 else ("y", "x")
        data[name] = xr.DataArray(a, dims=dims)
    ds = xr.Dataset(
        data,
        coords={
            "y": 1000.0 - 10 * np.arange(h) - 5,
            "x": 500.0 + 10 * np.arange(w) + 5,
            "band": np.array(bands, dtype=object),
            "spatial_ref": xr.DataArray(0, attrs={"crs_wkt": "EPSG:32633"}),
        },
    )
    ds.attrs.update(
        crs="EPSG:32633",
        epsg=32633,
        transform=[10.0, 0.0, 500.0, 0.0, -10.0, 1000.0],
        resolution=10.0,
        bands=list(bands),
    )
    ds = ds.chunk({"y": cy, "x": cx, "band": -1})
    return write_cube(ds, path, progress=False)
