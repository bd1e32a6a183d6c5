"""Prediction groups as ``predict`` writes them, from a probability array: polygons and reports
are tested on shapes drawn here, pixel by pixel."""

from __future__ import annotations

import numpy as np
import shapely
import xarray as xr

X0, Y0, RES = 500_000.0, 2_000_000.0, 10.0
ATTRS = {
    "crs": "EPSG:32618",
    "epsg": 32618,
    "transform": [RES, 0.0, X0, 0.0, -RES, Y0],
    "threshold": 0.5,
    "model": "test.pt",
    "complete": True,
    "run": {"test": True},
}


def write_prediction(
    path, prob: np.ndarray, chunk: int = 64, valid: np.ndarray | None = None, no_pre: np.ndarray | None = None, **attrs
) -> str:
    """A prediction group as predict.py writes it: uint8 probability, optional valid and no_pre masks, attrs."""
    data = {"probability": (("y", "x"), prob.astype(np.uint8))}
    if valid is not None:
        data["valid"] = (("y", "x"), valid.astype(bool))
    if no_pre is not None:
        data["no_pre"] = (("y", "x"), no_pre.astype(bool))
    h, w = prob.shape
    ds = xr.Dataset(data, coords={"y": Y0 - (np.arange(h) + 0.5) * RES, "x": X0 + (np.arange(w) + 0.5) * RES})
    ds.attrs.update({**ATTRS, **attrs})
    ds.chunk({"y": chunk, "x": chunk}).to_zarr(path, mode="w", consolidated=False)
    return str(path)


def pixel_box(r0: int, r1: int, c0: int, c1: int) -> shapely.Polygon:
    """Map-coordinate outline of pixel rows r0..r1-1, columns c0..c1-1."""
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)
