"""Quicklook PNGs: what a person checks first — the post-event image, the inventory, the gaps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import ndimage  # noqa: E402

from .inventory import LABEL_UNKNOWN  # noqa: E402

__all__ = ["stretch", "rgb_of", "cube_quicklook"]


def stretch(rgb: np.ndarray, valid: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
    """Per-band percentile stretch to 0..1 over valid pixels."""
    out = np.zeros(rgb.shape, dtype=np.float32)
    for i in range(rgb.shape[-1]):
        band = rgb[..., i].astype(np.float32)
        vals = band[valid & (band > 0)]
        if vals.size == 0:
            continue
        a, b = np.percentile(vals, [lo, hi])
        out[..., i] = np.clip((band - a) / max(b - a, 1e-6), 0, 1)
    return out


def rgb_of(ds: xr.Dataset, var: str, step: int) -> np.ndarray:
    bands = [str(b) for b in ds["band"].values]
    pick = [bands.index(b) for b in ("red", "green", "blue") if b in bands]
    if len(pick) < 3:
        pick = list(range(min(3, len(bands))))
    arr = ds[var].isel(band=pick, y=slice(None, None, step), x=slice(None, None, step)).values
    return np.moveaxis(arr, 0, -1)


def cube_quicklook(cube: str | Path, png: str | Path, max_px: int = 1400) -> Path:
    """Post-event colour image; inventory outlined in yellow; cloud/data gaps in magenta;
    unmapped inventory area hatched grey. Subsampled so a country cube stays cheap to draw."""
    ds = xr.open_zarr(cube, consolidated=False)
    step = max(1, int(np.ceil(max(ds.sizes["y"], ds.sizes["x"]) / max_px)))
    valid = ds["valid"][::step, ::step].values
    rgb = stretch(rgb_of(ds, "post", step), valid)
    img = rgb.copy()
    img[~valid] = (0.85, 0.1, 0.75)
    panels = [("post-event composite", img)]
    if "pre" in ds:
        pre_valid = ds["pre_valid"][::step, ::step].values if "pre_valid" in ds else valid
        pre = stretch(rgb_of(ds, "pre", step), pre_valid)
        pre[~pre_valid] = (0.85, 0.1, 0.75)
        panels.insert(0, ("pre-event composite", pre))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.8), squeeze=False)
    for ax, (title, im) in zip(axes[0], panels):
        ax.imshow(im, interpolation="nearest")
        if "label" in ds:
            label = ds["label"][::step, ::step].values
            slide = label == 1
            edge = slide & ~ndimage.binary_erosion(slide)
            overlay = np.zeros(slide.shape + (4,), dtype=np.float32)
            overlay[edge] = (1.0, 0.95, 0.0, 1.0)
            overlay[label == LABEL_UNKNOWN] = (0.5, 0.5, 0.5, 0.45)
            ax.imshow(overlay, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=(0.85, 0.1, 0.75), label="no valid data (cloud, gap, outside AOI)")]
    if "label" in ds:
        handles += [
            Patch(color=(1.0, 0.95, 0.0), label="inventory landslides"),
            Patch(color=(0.5, 0.5, 0.5), label="outside inventory area"),
        ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    name = Path(cube).name.removesuffix(".zarr")
    fig.suptitle(
        f"{name} — event {ds.attrs.get('event_date', '?')} — {ds.attrs.get('crs', '')}, "
        f"{ds.sizes['x']}x{ds.sizes['y']} px (1:{step})"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)
