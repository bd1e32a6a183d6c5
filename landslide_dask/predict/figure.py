"""The picture of an evaluated map (``map.png``): the post-event image, toned down, with each
cell's majority class of true positives, false positives, misses and predictions outside the
evaluated area on top, drawn one image cell per screen pixel (module docstring of :mod:`.report`).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ..common.files import atomic_write
from ..errors import InputDataError

__all__ = ["COLOURS", "LEGEND", "coarse", "class_image", "draw", "rgb_lazy", "stretch_rgb", "cell_pixels"]

# class index -> RGB (0..1)
COLOURS = {
    "tp": (1.0, 0.86, 0.0),  # yellow
    "fp": (1.0, 0.0, 1.0),  # magenta
    "fn": (0.0, 1.0, 1.0),  # cyan
    "outside": (1.0, 1.0, 1.0),  # predicted where nothing can be judged
}
LEGEND = {
    "tp": "true positive (detected)",
    "fp": "false positive",
    "fn": "missed (false negative)",
    "outside": "predicted outside the inventory area",
}


def coarse(arr: da.Array, step: int) -> da.Array:
    """Block sums over step x step (padded at the far edges), lazily."""
    if step == 1:
        return arr.astype(np.int32)
    x = xr.DataArray(arr.astype(np.int32), dims=("y", "x"))
    return x.coarsen(y=step, x=step, boundary="pad").sum().data


def class_image(
    counts: dict[str, np.ndarray], unevaluated: np.ndarray, rgb: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """RGB (0..1) of the map: image, greyed where unevaluated, each cell's majority class on top.

    The image is toned down (half desaturated, dimmed) so the saturated class colours stand out
    even over bright or bluish ground.
    """
    grey_of = rgb @ np.array([0.299, 0.587, 0.114])
    img = 0.8 * (0.5 * rgb + 0.5 * grey_of[..., None])
    img[~valid] = (0.25, 0.25, 0.25)
    grey = unevaluated & valid
    img[grey] = 0.45 * img[grey] + 0.55 * np.array([0.6, 0.6, 0.6])
    names = list(COLOURS)
    stack = np.stack([counts[n] for n in names])  # order is also the tie priority
    best = np.argmax(stack, axis=0)
    anyc = stack.max(axis=0) > 0
    for k, n in enumerate(names):
        img[anyc & (best == k)] = COLOURS[n]
    return img


def draw(
    img: np.ndarray,
    png: Path,
    title: str,
    present: set[str],
    min_side: int = 800,
    attribution: str | None = None,
    attribution_latin: str | None = None,
) -> None:
    """Save the map one image cell per screen pixel (small maps enlarged by a whole factor), so no
    class is lost or blended by matplotlib's own resampling; title above, legend (and the data's
    attribution) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    h, w = img.shape[:2]
    scale = max(1, min_side // max(h, w, 1))
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        h, w = img.shape[:2]
    dpi, top, bottom, side = 100, 50, 60 + (40 if attribution else 0), 10
    fig_w, fig_h = max(w + 2 * side, 1000), h + top + bottom
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes(((fig_w - w) / 2 / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
    ax.imshow(img, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [
        Patch(facecolor=COLOURS[n], edgecolor="black", linewidth=0.5, label=LEGEND[n])
        for n in COLOURS
        if n in present or n in ("tp", "fp", "fn")
    ]
    handles.append(
        Patch(
            facecolor=(0.6, 0.6, 0.6), edgecolor="black", linewidth=0.5, label="not evaluated (outside inventory area)"
        )
    )
    handles.append(Patch(facecolor=(0.25, 0.25, 0.25), edgecolor="black", linewidth=0.5, label="no valid data"))
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 40 / fig_h if attribution else 0.0),
        ncol=3,
        frameon=False,
        fontsize=9,
    )
    if attribution:
        import textwrap

        fonts = _cjk_font()
        # without a font for its script, a notice would print as empty boxes: print its Latin form
        # (the full notice is in the PNG's metadata and in report.md)
        text = (
            attribution
            if fonts[0] != "DejaVu Sans" or attribution.isascii() or not attribution_latin
            else attribution_latin
        )
        fig.text(
            0.5,
            4 / fig_h,
            "\n".join(textwrap.wrap(text, max(60, fig_w // 7))),
            ha="center",
            va="bottom",
            fontsize=7,
            fontfamily=fonts,
        )
    fig.suptitle(title, fontsize=10, y=1 - 4 / fig_h, va="top")
    try:
        atomic_write(
            png,
            lambda tmp: fig.savefig(
                tmp, dpi=dpi, format="png", metadata={"Copyright": attribution} if attribution else None
            ),
        )
    finally:
        plt.close(fig)


def _cjk_font() -> list[str]:
    """Fonts that draw the Japanese attribution notices, where installed, before the default."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [
        n for n in ("Noto Sans CJK JP", "IPAexGothic", "IPAGothic", "TakaoPGothic", "Droid Sans Fallback") if n in have
    ]
    return [*cjk, "DejaVu Sans"]


def rgb_lazy(cb: xr.Dataset, step: int) -> da.Array:
    """The cube's post-event (else pre-event) red, green, blue at 1:``step``, (y, x, 3), lazily."""
    var = "post" if "post" in cb else ("pre" if "pre" in cb else None)
    if var is None:
        raise InputDataError("The cube has no 'post' (or 'pre') image to draw the map on.")
    bands = [str(b) for b in cb["band"].values] if "band" in cb.coords else []
    pick = [bands.index(b) for b in ("red", "green", "blue") if b in bands]
    if len(pick) < 3:
        pick = list(range(min(3, cb[var].sizes["band"])))
    arr = cb[var].isel(band=pick).data[:, ::step, ::step]
    return da.moveaxis(arr, 0, -1)


def stretch_rgb(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The image stretched for display as the quicklooks are (a grey image repeated to three bands)."""
    from ..cube.quicklook import stretch

    rgb = np.asarray(rgb)
    if rgb.shape[-1] < 3:  # grey image: repeat its band
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    return stretch(rgb, valid)


def cell_pixels(h: int, w: int, step: int) -> np.ndarray:
    """Pixels of the region inside each coarse cell (edge cells are partial)."""
    ny, nx = -(-h // step), -(-w // step)
    rows = np.full(ny, step)
    rows[-1] = h - step * (ny - 1)
    cols = np.full(nx, step)
    cols[-1] = w - step * (nx - 1)
    return rows[:, None] * cols[None, :]
