"""Cube build throughput against the raw read of the same COG bytes, the loaders side by side,
and peak memory vs region size.

    python benchmarks/cube.py [--size-km 6] [--chunk 512] [--threads 2] [--repeat 3] [--small]

For a region of S x S km and one of 2S x 2S km (4x the area), in one run, each in a fresh process
with the same number of threads:
- the cube build (search, per-block reads, composites, terrain, labels, zarr write): its wall
  time, output Mpx/s (cube grid pixels per second) and peak RSS;
- a plain rasterio read of the window of every asset the cube used (same items, same bands);
- the per-day mosaics of the same imagery items on the same grid and chunks, (day, band, y, x),
  by three loaders: this package's (``cube.build.daily_mosaics``), stackstac as the package used
  it before (one stack per solar day, ``stackstac.mosaic``, concatenated) and odc-stac's ``load``
  with ``groupby="solar_day"``; each reduced to per-(day, band) sums, which also say whether the
  loaders produced the same pixels.
The figure of merit is raw read time / cube time: 1.0 would mean the cube costs no more than
reading its input bytes. Peak memory of the larger region over the smaller one shows whether
memory follows the chunk (about 1x) or the region (about 4x). Module imports happen before the
clocks start, in every process.

And the composite's median on one chunk of 4 bands with 4, 8 and 16 dates (10 % no data, the SCL
classes drawn at random), the package's ``median_composite`` against ``np.nanmedian`` of the same
observations (the definition it is tested against), best of 3 in this process.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date
from multiprocessing import get_context
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(data: str, region: dict, url: str, out: str, chunk: int, threads: int) -> dict:
    import dask
    import pyogrio  # noqa: F401  imported lazily by the build (vector files, STAC search): before
    import pystac_client  # noqa: F401  the clock, as the raw read imports rasterio before its own

    from landslide_dask.cube.build import CubeSpec, build_cube
    from landslide_dask.cube.read import open_cube

    dask.config.set(scheduler="threads", num_workers=threads)
    spec = CubeSpec(
        stac_url=url,
        event_date=date.fromisoformat(region["event_date"]),
        aoi=Path(data) / region["aoi"],
        out=Path(out),
        inventory=Path(data) / region["inventory"],
        inventory_area=Path(data) / region["inventory_area"],
        chunk=chunk,
    )
    t0 = time.perf_counter()
    build_cube(spec, progress=False, quicklook=False)
    seconds = time.perf_counter() - t0
    ds = open_cube(out)
    t = ds.attrs["transform"]
    bounds = (t[2], t[5] - ds.sizes["y"] * t[0], t[2] + ds.sizes["x"] * t[0], t[5])
    return {
        "seconds": seconds,
        "pixels": ds.sizes["y"] * ds.sizes["x"],
        "peak_mb": _peak_mb(),
        "items": ds.attrs["stac_items"],
        "dem_items": ds.attrs["dem_items"],
        "bands": ds.attrs["bands"],
        "bounds": bounds,
        "crs": ds.attrs["crs"],
        "resolution": t[0],
    }


def raw_read(data: str, cube: dict, threads: int) -> dict:
    """Read, with rasterio alone, the window of every source file that the cube covers."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    from landslide_dask.cube.load import GDAL_READ_ENV
    from landslide_dask.stac.local import load_stac_dir

    _, all_items = load_stac_dir(data)
    by_id = {it["id"]: it for it in all_items}
    hrefs = [by_id[i]["assets"][b]["href"] for i in cube["items"] for b in [*cube["bands"], "scl"]]
    hrefs += [by_id[i]["assets"]["data"]["href"] for i in cube["dem_items"]]

    def read(href: str) -> tuple[int, int]:
        with rasterio.open(href) as src:
            left, bottom, right, top = transform_bounds(cube["crs"], src.crs, *cube["bounds"])
            win = from_bounds(left, bottom, right, top, src.transform).round_offsets().round_lengths()
            try:
                win = win.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
            except rasterio.errors.WindowError:  # the footprint only touches the cube's bbox
                return 0, 0
            arr = src.read(window=win)
        return arr.shape[-1] * arr.shape[-2] * arr.shape[0], arr.nbytes

    t0 = time.perf_counter()
    with rasterio.Env(**GDAL_READ_ENV), ThreadPoolExecutor(threads) as pool:  # the loader's GDAL settings
        sizes = list(pool.map(read, hrefs))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "pixels": sum(s[0] for s in sizes),
        "bytes": sum(s[1] for s in sizes),
        "files": len(hrefs),
        "peak_mb": _peak_mb(),
    }


LOADERS = ("landslide_dask", "stackstac", "odc-stac")


def _imagery(data: str, cube: dict) -> tuple[list[dict], list[str]]:
    from landslide_dask.stac.local import load_stac_dir

    _, all_items = load_stac_dir(data)
    by_id = {it["id"]: it for it in all_items}
    return [by_id[i] for i in cube["items"]], [*cube["bands"], "scl"]


def load_mosaics(loader: str, data: str, cube: dict, chunk: int, threads: int) -> dict:
    """Per-day mosaics of the cube's imagery by one loader, reduced to per-(day, band) sums."""
    from collections import defaultdict

    import dask
    import numpy as np

    from landslide_dask.cube.build import daily_mosaics, solar_day
    from landslide_dask.cube.grid import Grid

    dask.config.set(scheduler="threads", num_workers=threads)
    items, assets = _imagery(data, cube)
    left, bottom, right, top = cube["bounds"]
    res = cube["resolution"]
    grid = Grid(
        int(cube["crs"].split(":")[1]),
        res,
        left,
        top,
        int(round((right - left) / res)),
        int(round((top - bottom) / res)),
    )
    if loader == "odc-stac":
        import odc.stac
        import pystac
        from odc.geo.geobox import GeoBox

        pitems = [pystac.Item.from_dict(it) for it in items]
    elif loader == "stackstac":
        import stackstac
        import xarray as xr
        from rasterio.enums import Resampling
    t0 = time.perf_counter()
    if loader == "landslide_dask":
        arr = daily_mosaics(items, assets, grid, chunk)[0].data
    elif loader == "stackstac":  # what cube.build did up to 2026-12-02
        by_day = defaultdict(list)
        for it in items:
            by_day[solar_day(it)].append(it)
        mosaics = []
        for day in sorted(by_day):
            st = stackstac.stack(
                by_day[day],
                assets=assets,
                epsg=grid.epsg,
                resolution=res,
                bounds=grid.bounds,
                snap_bounds=False,
                xy_coords="center",
                chunksize=chunk,
                dtype="uint16",
                fill_value=np.uint16(0),
                rescale=False,
                resampling=Resampling.nearest,
                properties=False,
                band_coords=False,
                errors_as_nodata=(),
            )
            mosaics.append(
                stackstac.mosaic(st, dim="time", nodata=0).drop_vars(
                    [c for c in st.coords if c not in ("band", "y", "x")], errors="ignore"
                )
            )
        arr = xr.concat(mosaics, dim="time").chunk({"time": -1, "band": -1}).data
    else:
        gbox = GeoBox((grid.height, grid.width), grid.transform, f"EPSG:{grid.epsg}")
        ds = odc.stac.load(
            pitems,
            bands=assets,
            geobox=gbox,
            chunks={"x": chunk, "y": chunk},
            groupby="solar_day",
            resampling="nearest",
            dtype="uint16",
            nodata=0,
            fail_on_error=True,
        )
        arr = ds[assets].to_array("band").transpose("time", "band", "y", "x").data
    sums = arr.astype(np.uint64).sum(axis=(2, 3))
    tasks = len(dict(sums.__dask_graph__()))
    (sums,) = dask.compute(sums)
    seconds = time.perf_counter() - t0
    return {
        "loader": loader,
        "seconds": seconds,
        "tasks": tasks,
        "shape": list(arr.shape),
        "sums": sums.tolist(),
        "peak_mb": _peak_mb(),
    }


def median_speed(chunk: int, dates=(4, 8, 16)) -> list[dict]:
    """Seconds per chunk: the package's masked median against ``np.nanmedian`` (same result)."""
    import numpy as np

    from landslide_dask.cube.composite import SCL_NOT_CLEAR, clear_mask, median_composite

    rng = np.random.default_rng(0)
    out = []
    for t in dates:
        refl = rng.integers(1, 12000, size=(t, 4, chunk, chunk), dtype=np.uint16)
        refl[rng.random(refl.shape) < 0.1] = 0
        clear = clear_mask(rng.choice(np.array([4, 5, 6, *SCL_NOT_CLEAR]), size=(t, chunk, chunk)))

        def numpy_median(refl=refl, clear=clear):
            data = refl.astype(np.float32)
            data[(refl == 0) | ~clear[:, None]] = np.nan
            has = np.isfinite(data).any(axis=0)
            data[:, ~has] = 0.0
            return np.where(has, np.rint(np.nanmedian(data, axis=0)), 0).astype(np.uint16)

        times = {}
        for name, fn in (
            ("nanmedian", numpy_median),
            ("package", lambda refl=refl, clear=clear: median_composite(refl, clear)),
        ):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                res = fn()
                best = min(best, time.perf_counter() - t0)
            times[name] = (best, res)
        assert (times["nanmedian"][1] == times["package"][1]).all(), "the medians differ"
        out.append({"dates": t, "nanmedian_s": times["nanmedian"][0], "package_s": times["package"][0]})
    return out


def _median_run(runs: list[dict]) -> dict:
    """The run of median time (each figure from one run); all the times kept under 'all_seconds'."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {
        **ordered[len(ordered) // 2],
        "all_seconds": [r["seconds"] for r in runs],
        "peak_mb": max(r["peak_mb"] for r in runs),
    }


# Imported once by a fork server, so the raw reads and the loaders start in milliseconds instead of
# importing these again (a few seconds each; the imports were never inside the clocks). The cube
# build, whose peak memory is reported, runs in a spawned process instead: a forked child's peak RSS
# also holds whatever its parent had touched.
PRELOAD = [
    "numpy",
    "dask.array",
    "xarray",
    "zarr",
    "rasterio",
    "pyproj",
    "pystac",
    "shapely",
    "landslide_dask.cube.build",
    "landslide_dask.stac.server",
    "stackstac",
    "odc.stac",
]
_FORK = get_context("forkserver")
_FORK.set_forkserver_preload(PRELOAD)


def fresh(fn, *args, spawn: bool = False) -> dict:
    """Run fn in a new process: spawned (its peak RSS is its own) or forked from the fork server."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn") if spawn else _FORK) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-km", type=float, default=6.0)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", help="keep data and cubes here (default: a temp dir)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement, interleaved; medians are shown")
    p.add_argument(
        "--small", action="store_true", help="CI mode: 0.5 and 1 km regions, 128 px chunks, one run (seconds)"
    )
    args = p.parse_args()
    if args.small:
        args.size_km, args.chunk, args.repeat = 0.5, 128, 1

    from landslide_dask.demo.synth import make_demo_data
    from landslide_dask.stac.server import serve_stac

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cube-"))
    results = []
    for factor in (1, 2):
        size = args.size_km * factor
        data = work / f"data-{size:g}km"
        if not (data / "regions.json").exists():
            make_demo_data(data, seed=0, size_km=size, n_regions=1)
        region = json.loads((data / "regions.json").read_text())[0]
        cubes, raws, loads = [], [], {name: [] for name in LOADERS}
        for _ in range(args.repeat):  # interleaved, so a slow spell of a shared machine hits all alike
            with serve_stac(data) as url:
                cubes.append(
                    fresh(
                        build,
                        str(data),
                        region,
                        url,
                        str(work / f"cube-{size:g}km.zarr"),
                        args.chunk,
                        args.threads,
                        spawn=True,
                    )
                )
            raws.append(fresh(raw_read, str(data), cubes[-1], args.threads))
            for name in LOADERS:
                loads[name].append(fresh(load_mosaics, name, str(data), cubes[-1], args.chunk, args.threads))
        results.append(
            {
                "size_km": size,
                "region": region["name"],
                "cube": _median_run(cubes),
                "raw": _median_run(raws),
                "loaders": [_median_run(runs) for runs in loads.values()],
                "repeat": args.repeat,
            }
        )

    print(f"\ncube benchmark: chunk {args.chunk}, {args.threads} threads, median of {args.repeat} interleaved runs\n")
    print(
        "| area | cube px | cube s | cube Mpx/s | raw files | raw Mpx read | raw s | raw Mpx/s "
        "| raw read / cube | cube peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c, w = r["cube"], r["raw"]
        print(
            f"| {r['size_km']:g}x{r['size_km']:g} km | {c['pixels']:,} | {c['seconds']:.1f} | "
            f"{c['pixels'] / c['seconds'] / 1e6:.2f} | {w['files']} | {w['pixels'] / 1e6:.1f} | "
            f"{w['seconds']:.2f} | {w['pixels'] / w['seconds'] / 1e6:.1f} | {w['seconds'] / c['seconds']:.2f} | "
            f"{c['peak_mb']:.0f} |"
        )
    print(
        f"\nper-day mosaics of the same items, grid and {args.chunk} px chunks (day x band x y x x), "
        f"{args.threads} threads:\n"
    )
    print("| area | loader | graph tasks | s | raw read / loader | same pixels as landslide_dask |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ours = r["loaders"][0]["sums"]
        for ld in r["loaders"]:
            print(
                f"| {r['size_km']:g}x{r['size_km']:g} km | {ld['loader']} | {ld['tasks']:,} | {ld['seconds']:.2f} | "
                f"{r['raw']['seconds'] / ld['seconds']:.2f} | {'yes' if ld['sums'] == ours else 'no'} |"
            )
    med = median_speed(args.chunk)
    print(f"\nmedian composite of one {args.chunk} x {args.chunk} chunk, 4 bands (identical results):\n")
    print("| dates | np.nanmedian ms | package ms | speed-up |")
    print("|---|---|---|---|")
    for m in med:
        print(
            f"| {m['dates']} | {m['nanmedian_s'] * 1e3:.1f} | {m['package_s'] * 1e3:.1f} | "
            f"{m['nanmedian_s'] / m['package_s']:.1f}x |"
        )
    small, large = results[0]["cube"], results[1]["cube"]
    print(
        f"\npeak memory, 4x the area: {large['peak_mb']:.0f} MB vs {small['peak_mb']:.0f} MB "
        f"({large['peak_mb'] / small['peak_mb']:.2f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"regions": results, "median": med}, indent=1, default=str))


if __name__ == "__main__":
    main()
