"""How the synthetic teacher's imagery compares with real Sentinel-2: band statistics and textures.

The synthetic regions teach the model what a landslide looks like; what carries over to a real
scene depends on how alike the two look to a CNN. For each source this measures, on red, green and
blue DN (the bands every source has):

- brightness: 2nd, 50th and 98th percentiles per band, over valid pixels, in reflectance x 10,000
  (each cube's recorded DN scale and offset applied, as the model sees them; the Chattogram
  tiles' DN taken as reflectance x 10,000);
- colour: blue/red and green/red ratios of the medians, and the red-green and red-blue correlation
  across pixels;
- texture: median over 64 px windows of the red band's local contrast (std / mean), the median
  gradient magnitude relative to the median, and the slope of the radially averaged power
  spectrum of 128 px windows (log-log, 4-32 cycles per window: about -2 for natural scenes;
  steeper is smoother, flatter is noisier).

Sources: any number of cubes (``--cubes``: the synthetic demo regions and the Iburi 2018 cube, e.g.
the folder ``benchmarks/real_event.py`` builds) and, where given, the Chattogram Sentinel-2 tiles
(``--chattogram``, ArcGIS exports, band order R, G, B, NIR per their README). Descriptive only:
the generator is not fitted to any of these numbers.

    python benchmarks/teacher.py --cubes real-event-bench/cubes --chattogram ../shared/data/chattogram_s2_tiles
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RGB = ("red", "green", "blue")


def _windows(img: np.ndarray, valid: np.ndarray, size: int, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Up to ``n`` random fully valid size x size windows of a (H, W) band."""
    h, w = img.shape
    out = []
    for _ in range(n * 10):
        if len(out) == n or h < size or w < size:
            break
        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if valid[r : r + size, c : c + size].all():
            out.append(img[r : r + size, c : c + size].astype(np.float64))
    return out


def _psd_slope(win: np.ndarray) -> float:
    n = win.shape[0]
    f = np.fft.fftshift(np.abs(np.fft.fft2((win - win.mean()) * np.hanning(n)[:, None] * np.hanning(n)[None])) ** 2)
    yy, xx = np.indices(f.shape)
    k = np.hypot(yy - n // 2, xx - n // 2).astype(int)
    radial = np.bincount(k.ravel(), f.ravel()) / np.maximum(np.bincount(k.ravel()), 1)
    ks = np.arange(4, 33)
    return float(np.polyfit(np.log(ks), np.log(radial[ks] + 1e-12), 1)[0])


def describe(bands: dict[str, np.ndarray], valid: np.ndarray, seed: int = 0) -> dict:
    """The statistics above for one scene (bands: (H, W) DN arrays by name)."""
    rng = np.random.default_rng(seed)
    px = {b: bands[b][valid].astype(np.float64) for b in RGB}
    out = {}
    for b in RGB:
        p2, p50, p98 = np.percentile(px[b], [2, 50, 98])
        out[f"{b} p2/p50/p98"] = f"{p2:.0f}/{p50:.0f}/{p98:.0f}"
    out["blue/red"] = float(np.median(px["blue"]) / np.median(px["red"]))
    out["green/red"] = float(np.median(px["green"]) / np.median(px["red"]))
    out["corr r-g"] = float(np.corrcoef(px["red"], px["green"])[0, 1])
    out["corr r-b"] = float(np.corrcoef(px["red"], px["blue"])[0, 1])
    red = bands["red"]
    w64 = _windows(red, valid, 64, rng, 200)
    out["contrast (std/mean, 64 px)"] = float(np.median([w.std() / max(w.mean(), 1) for w in w64])) if w64 else np.nan
    gy, gx = np.gradient(red.astype(np.float64))
    inner = valid & np.roll(valid, 1, 0) & np.roll(valid, -1, 0) & np.roll(valid, 1, 1) & np.roll(valid, -1, 1)
    out["gradient / median"] = float(np.median(np.hypot(gy, gx)[inner]) / np.median(px["red"]))
    w128 = _windows(red, valid, 128, rng, 60)
    out["PSD slope"] = float(np.median([_psd_slope(w) for w in w128])) if w128 else np.nan
    out["pixels"] = int(valid.sum())
    return out


def cube_scenes(cube: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Pre and post composites of a cube, in reflectance x 10,000 (its recorded DN scale and offset
    applied: the units a model sees), with their valid masks."""
    from landslide_dask.cube.read import open_cube
    from landslide_dask.train.reader import radiometry

    ds = open_cube(cube)
    gain, bias = radiometry(cube)
    have = [str(b) for b in ds["band"].values]
    out = {}
    for s in ("pre", "post"):
        if s not in ds or any(b not in have for b in RGB):
            continue
        arr = ds[s].sel(band=list(RGB)).values
        valid = ds["valid"].values & (arr > 0).all(0)
        if "pre_valid" in ds and s == "pre":
            valid &= ds["pre_valid"].values
        out[f"{cube.name.removesuffix('.zarr')} {s}"] = ({b: arr[i] * gain + bias for i, b in enumerate(RGB)}, valid)
    return out


def chattogram_scene(folder: Path) -> tuple[dict, np.ndarray]:
    """The Chattogram tiles side by side as one scene (R, G, B, NIR per the export's README)."""
    import rasterio

    tiles = sorted((folder / "LandslideData" / "images").glob("*.tif"))
    bands = {b: [] for b in RGB}
    valid = []
    for t in tiles:
        with rasterio.open(t) as src:
            a = src.read()
        v = (a[:3] > 0).all(0)
        for i, b in enumerate(RGB):  # R, G, B are the first three
            bands[b].append(a[i])
        valid.append(v)
    return {b: np.concatenate(v, axis=1) for b, v in bands.items()}, np.concatenate(valid, axis=1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cubes", required=True, help="a folder of cubes (*.zarr) or one cube")
    p.add_argument("--chattogram", help="the Chattogram Sentinel-2 tiles folder")
    p.add_argument("--out", help="also write the table here (Markdown)")
    args = p.parse_args(argv)
    src = Path(args.cubes)
    cubes = [src] if src.suffix == ".zarr" else sorted(src.glob("*.zarr"))
    scenes = {}
    for c in cubes:
        scenes.update(cube_scenes(c))
    if args.chattogram:
        scenes["chattogram (real)"] = chattogram_scene(Path(args.chattogram))
    rows = {name: describe(b, v) for name, (b, v) in scenes.items()}
    cols = list(next(iter(rows.values())))
    lines = ["| scene | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, r in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
