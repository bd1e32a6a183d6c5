"""How long a map's products take, and what the offline web map weighs, as the map grows.

A synthetic finished prediction (square, 10 m pixels, landslide-like discs on low noise, a cloud
band not mapped) of each size goes through the public ``landslide_dask.products.write_products``
(no cube: probability, status and polygons, no imagery backgrounds); every step is timed by its
own call (COGs and polygons, web map, STAC item) and the web folder is weighed. With Debian's
``chromium`` installed, the page is also opened offline and timed until it has drawn its polygons.

    python benchmarks/products.py                 # 2,000 and 6,000 px squares (400 and 3,600 km²)
    python benchmarks/products.py --small         # 300 and 600 px (CI)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_prediction(path: Path, n: int, seed: int = 0, chunk: int = 1024) -> Path:
    """A finished prediction group (the contract's variables and attributes) of n x n pixels."""
    rng = np.random.default_rng(seed)
    prob = (rng.random((n, n), dtype=np.float32) * 25).astype(np.uint8)
    yy, xx = np.ogrid[:n, :n]
    for _ in range(max(4, n * n // 40_000)):  # one landslide per 4 km²
        cy, cx, r = rng.integers(0, n), rng.integers(0, n), rng.integers(3, 12)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, n), max(cx - r, 0), min(cx + r + 1, n)
        disc = (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= r * r
        prob[y0:y1, x0:x1][disc] = rng.integers(150, 250)
    valid = np.ones((n, n), bool)
    valid[n // 3 : n // 3 + n // 20, :] = False  # a cloud band
    prob[~valid] = 0
    x0m, y0m, res = 500_000.0, 4_800_000.0, 10.0
    ds = xr.Dataset(
        {"probability": (("y", "x"), prob), "valid": (("y", "x"), valid)},
        coords={"y": y0m - (np.arange(n) + 0.5) * res, "x": x0m + (np.arange(n) + 0.5) * res},
    )
    ds.attrs.update(
        crs="EPSG:32654",
        epsg=32654,
        transform=[res, 0.0, x0m, 0.0, -res, y0m],
        resolution=res,
        threshold=0.5,
        threshold_rule="validation",
        model="synthetic.pt",
        event_date="2024-01-01",
        complete=True,
        run={"benchmark": True},
    )
    ds.chunk({"y": chunk, "x": chunk}).to_zarr(path, mode="w", consolidated=False)
    return path


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure(n: int, work: Path) -> dict:
    from landslide_dask.products.region import MapSource, gis_files, stac_item, statistics, web_map

    pred = synthetic_prediction(work / f"pred{n}.zarr", n)
    out = work / f"products{n}"
    t0 = time.perf_counter()
    src = MapSource.open(pred)
    files, polygons, counts = gis_files(src, out, None)
    t1 = time.perf_counter()
    stats = statistics(counts, src.res, polygons)
    files["web_map"] = web_map(src, out / "web", polygons, stats, title="benchmark")
    t2 = time.perf_counter()
    files["item"] = stac_item(src, out, files, stats, "benchmark")
    t3 = time.perf_counter()
    n_files, n_bytes = folder_bytes(out / "web")
    tiles = sum(1 for _ in (out / "web" / "tiles").rglob("*.png"))
    km2 = n * n * 100 / 1e6
    row = {
        "pixels": n * n,
        "km2": km2,
        "polygons": len(polygons),
        "gis_s": round(t1 - t0, 2),
        "web_s": round(t2 - t1, 2),
        "item_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "km2_per_hour": round(km2 / (t3 - t0) * 3600),
        "tiles": tiles,
        "web_files": n_files,
        "web_mb": round(n_bytes / 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    try:
        from tests.helpers.browser import chromium, open_page

        if chromium() is not None:
            t = time.perf_counter()
            res = open_page(files["web_map"].as_uri(), ready="document.body.dataset.ready === '1'", settle=0.0)
            row["page_ready_s"] = round(time.perf_counter() - t, 2)
            row["page_errors"] = len(res.errors)
    except ImportError:  # a clone without the tests folder: no page timing
        pass
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="300 and 600 px (CI)")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], help="square sides in pixels")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([300, 600] if args.small else [2000, 6000])
    with tempfile.TemporaryDirectory(prefix="products-bench-") as tmp:
        rows = [measure(n, Path(tmp)) for n in sizes]
    cols = [
        "km2",
        "pixels",
        "polygons",
        "gis_s",
        "web_s",
        "item_s",
        "total_s",
        "km2_per_hour",
        "tiles",
        "web_mb",
        "peak_rss_mb",
        "page_ready_s",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(
            f"\n{b['pixels'] / a['pixels']:.0f}x the pixels took {b['total_s'] / max(a['total_s'], 1e-9):.1f}x "
            f"the time (web map {b['web_s'] / max(a['web_s'], 1e-9):.1f}x) and weighs "
            f"{b['web_mb'] / max(a['web_mb'], 1e-9):.1f}x"
        )
    res = {"rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
