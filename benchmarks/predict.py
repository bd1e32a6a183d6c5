"""Whole-region inference: pipeline efficiency, overhead, memory vs region size, km²/h, and the paper's scheme.

    python benchmarks/predict.py --cube CUBE.zarr --model CKPT [--window 768] [--overlap 64] [--batch-size N]
                                 [--threads N] [--device cpu] [--repeat 3] [--tile 1] [--memory-tiles 1,2,4]
                                 [--seam-size 1024] [--seam-margin 64] [--skip-memory] [--batch-sizes 1,4]
                                 [--workdir DIR]
                                 [--json out.json]

``landslide-dask demo`` writes a cube and a checkpoint to use: ``demo-out/cubes/haiti_like.zarr`` (the unseen
region, 1002 x 1002 px) and ``demo-out/model/best.pt`` (the 3.6 M-parameter demo model).

Everything below is measured in one run, on the same checkpoint (``--model``), window, overlap, batch size and
threads. --window/--overlap default to predict's defaults (``DEFAULT_WINDOW``/``DEFAULT_OVERLAP``). Throughput is
measured on the cube, or with --tile K on its arrays tiled K x K into a new zarr (a larger region from a small
demo cube, so that fixed costs and part-filled batches weigh less).

1. **Pipeline efficiency.** In this process, alternated --repeat times (medians reported, all times in the JSON):
   - *model only*: the very batches ``predict`` runs (same windows, same sizes including the trimmed last
     row/column, windows without a valid pixel left out, ``batch_size`` per forward pass), as channels-last
     tensors already in memory (built once per batch shape from real windows of the cube by predict's own
     ``_window_inputs``), through predict's cached model (``_model``) under ``inference_mode`` (autocast on CUDA),
     on a thread pool of as many threads as predict's local scheduler has, each with predict's torch threads per
     task (``_threads_per_task``) — the concurrency of the end-to-end run. Timed: forward + sigmoid.
   - *end to end*: ``predict()`` on the local threaded scheduler (``client=None``, so it shares this process and
     its cores exactly as the model-only run does), cube zarr -> probability zarr written and marked complete,
     from cold decoded-chunk caches (``clear_caches()``) but with the model already loaded and oneDNN warmed up,
     as on a worker that has been mapping for a while. Includes predict's setup (checkpoint load and hash, cube
     checks; also timed alone) and every read, blend and write.
   - *inputs only*, as a diagnostic: predict's ``_window_inputs`` (read, decode, normalise) for every window of
     those batches, same threads, cold chunk cache, no model. End to end minus model only minus inputs only is
     roughly what blending, writing, setup and scheduling cost (not exactly: the threads overlap).
   Raw efficiency = cube pixels written per second end to end / pixels through the model per second model-only
   (it pays the overhead factor); overhead-corrected efficiency = pixels through the model per second end to end /
   the same model-only (= model-only time / end-to-end time, since both push the same pixels). Target >= 0.85.
2. **Overhead factor**: pixels through the model / pixels written, from the prediction's attrs (``overhead``,
   an upper bound; ``overhead_asymptotic`` = (window / stride)² for an unbounded region), and as actually
   run (windows without a valid pixel are skipped).
3. **Peak memory** (unless --skip-memory): ``predict()`` with the same settings in a fresh ``spawn`` process, on
   the cube tiled K x K for each K of --memory-tiles (default 1, 2, 4: the cube, 4x and 16x its area; the
   arrays tiled into new zarrs with the same attrs, chunks and dtypes, coordinates continued). Peak RSS is the
   process's VmHWM (``/proc/self/status``; ``resource.getrusage`` only where that is missing, because Linux
   carries a parent's peak RSS over fork + exec into a spawned child's ru_maxrss); also the RSS after the
   imports, before predict. Each row is compared with the previous one (4x the area); target: within 15 %,
   judged on the last pair — the smallest regions do not fill ``batch_size`` windows per batch nor the
   decoded-chunk cache yet, so their peak is lower for reasons that stop at larger sizes. These runs are cold
   (model load, first-call set-up) and their wall times give cold km²/h.
4. **km²/hour per worker**: area written per hour by the end-to-end run of (1) (one worker = this process with
   all its cores; km² from the cube's ``resolution`` attr, 10 m: 1 km² = 10,000 px).
5. **The paper's scheme** on the same model: 224 px windows every 112 px starting at -56, the centre 112 x 112 of
   each window kept (so every pixel is the centre of exactly one window; nominal overhead (224/112)² = 4),
   inputs read and normalised by predict's ``_window_inputs`` (zeros outside the cube, as predict), batches of
   ``batch_size``, same thread pool and torch threads as (1), output held in memory (no zarr write). Timed in
   the same loop as (1), after the end-to-end run (cold chunk cache, warm model): pixels/s and overhead.
   **Seams**: on the cube's top-left ``--seam-size`` px square (the whole demo cube; a larger cube is cropped into
   a new zarr), a single whole-image forward pass (zero-padded to the model's 32 px multiple) is the reference;
   against it, over valid pixels more than ``--seam-margin`` px from the cube border: max abs difference and the
   share of pixels > 2/255 for ours (``predict`` at window/overlap), the paper's scheme, naive non-overlapping
   tiling with our window (``predict`` with overlap 0) and naive tiling with 224 px windows.

6. **Batch size** (--batch-sizes, default 1,4): one full-size window of the cube through the model at each batch
   size, in-memory inputs, alternated --repeat times: this thread's CPU seconds per window with 1 torch thread (CPU
   time is hardly moved by other processes' load, wall time is) and wall seconds per window. This is how predict's
   CPU default (``DEFAULT_BATCH_SIZE``) was chosen.

--threads N restricts this process (and the spawned ones) to N of its CPUs (affinity); predict's local scheduler
then runs min(N, 4) dask threads with N // that torch threads each, and the model-only and paper runs copy that.
Timings are wall-clock: other processes on the machine slow them; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

import landslide_dask.predict as P
from landslide_dask.common.workers import cores
from landslide_dask.predict import engine
from landslide_dask.train.config import PAPER_WINDOW

PAPER_KEEP = PAPER_WINDOW // 2  # the paper keeps each window's centre half


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def _peak_mb() -> float:
    """Peak RSS of this process's own address space: VmHWM. (``getrusage``'s ru_maxrss is not used where VmHWM
    exists: Linux carries the parent's peak across fork + exec, so a spawned child reports at least the peak its
    parent had reached when it was started.)"""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else float("nan")


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _km2(pixels: float, resolution: float) -> float:
    return pixels * resolution * resolution / 1e6


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _ceil(n: int, m: int) -> int:
    return -(-n // m) * m


def fresh(fn, *args) -> dict:
    """Run fn in a new process, so its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def derive_cube(src: str, dst: Path, tile: int = 1, size: tuple[int, int] | None = None) -> Path:
    """A cube made from ``src``: its top-left ``size`` (rows, cols) crop, then tiled ``tile`` x ``tile``; same
    variables, dtypes, dims, attrs and chunks, coordinates continued on the same grid (cube.write_cube)."""
    import dask.array as da
    import xarray as xr
    import zarr

    from landslide_dask.cube.build import write_cube

    ds = xr.open_zarr(src, consolidated=False)
    if size is not None:
        ds = ds.isel(y=slice(0, size[0]), x=slice(0, size[1]))
    chunks = zarr.open_group(src, mode="r")["valid"].chunks
    h, w = ds.sizes["y"] * tile, ds.sizes["x"] * tile
    data = {}
    for name, v in ds.data_vars.items():
        a = v.data
        if tile > 1 and v.dims[-2:] == ("y", "x"):
            a = da.concatenate([da.concatenate([a] * tile, axis=-1)] * tile, axis=-2)
        data[name] = xr.DataArray(a, dims=v.dims, attrs=dict(v.attrs))
    y, x = ds["y"].values, ds["x"].values
    dy, dx = float(y[1] - y[0]), float(x[1] - x[0])
    coords = {
        "y": xr.DataArray(y[0] + dy * np.arange(h), dims="y", attrs=dict(ds["y"].attrs)),
        "x": xr.DataArray(x[0] + dx * np.arange(w), dims="x", attrs=dict(ds["x"].attrs)),
    }
    if "band" in ds.coords:
        coords["band"] = np.array([str(b) for b in ds["band"].values], dtype=object)
    if "spatial_ref" in ds.coords:
        coords["spatial_ref"] = xr.DataArray(int(ds["spatial_ref"].values), attrs=dict(ds["spatial_ref"].attrs))
    out = xr.Dataset(
        data,
        coords=coords,
        attrs={
            **ds.attrs,
            "benchmark_derived_from": str(src),
            "benchmark_derivation": f"crop {size}, tiled {tile}x{tile}",
        },
    )
    out = out.chunk({"y": chunks[0], "x": chunks[1], **({"band": -1} if "band" in out.dims else {})})
    return write_cube(out, dst, progress=False)


# ---------------------------------------------------------------------------------------------
# model-only, the paper's scheme and the whole-image pass, all with predict's own helpers
# ---------------------------------------------------------------------------------------------
def _set_task_threads(plan, dev) -> None:
    import torch

    if dev.type == "cpu":
        torch.set_num_threads(engine.torch_threads(plan))


def model_inputs(plan, batches, meta) -> tuple[list[tuple], dict, int]:
    """For every batch of predict: its key (valid windows, h, w) and the pixels it pushes; one in-memory input per
    distinct key, built from the batch's real windows. Windows without a valid pixel are left out, as predict does."""

    keys, inputs, pixels = [], {}, 0
    for batch in batches:
        ok = [win for win in batch if plan.reader.masks(0, *win)[0].any()]
        if not ok:
            continue
        key = (len(ok), ok[0][2], ok[0][3])
        if key not in inputs:
            samples = [engine.window_inputs(plan, *win)[0] for win in ok]
            inputs[key] = engine.input_tensors(samples, plan.streams, meta["device"])
        keys.append(key)
        pixels += sum(h * w for _, _, h, w in ok)
    return keys, inputs, pixels


def model_only(plan, model, meta, keys: list, inputs: dict) -> float:
    """Seconds to push every batch (in predict's order) through the model, in-memory inputs, predict's concurrency."""
    dev = meta["device"]

    def run(key):
        _set_task_threads(plan, dev)
        engine.forward(model, inputs[key], dev)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(plan.local_threads) as pool:
        list(pool.map(run, keys))
    _sync(dev)
    return time.perf_counter() - t0


def inputs_only(plan, batches, meta) -> float:
    """Seconds to read, decode and normalise every window of predict's batches (predict's ``_window_inputs``,
    predict's concurrency, from the current chunk cache); no model, no blending, no writing."""

    def run(batch):
        for win in batch:
            engine.window_inputs(plan, *win)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(plan.local_threads) as pool:
        list(pool.map(run, batches))
    return time.perf_counter() - t0


def batch_cost(plan, model, meta, sizes: list[int], repeat: int) -> list[dict]:
    """Cost of one full-size window through the model at each batch size in ``sizes``, in-memory inputs (a real
    window of the cube), alternated ``repeat`` times: CPU seconds of this thread per window with 1 torch thread (on
    CPU: insensitive to other load, unlike wall time), and wall seconds per window."""
    import torch

    dev = meta["device"]
    win = min(plan.window, _ceil(plan.shape[0], plan.multiple)), min(plan.window, _ceil(plan.shape[1], plan.multiple))
    x, _ = engine.window_inputs(plan, 0, 0, *win)
    inputs = {n: engine.input_tensors([x] * n, plan.streams, dev) for n in sizes}
    if dev.type == "cpu":
        torch.set_num_threads(1)
    for n in sizes:
        engine.forward(model, inputs[n], dev)
    _sync(dev)
    cpu = {n: [] for n in sizes}
    wall = {n: [] for n in sizes}
    for _ in range(repeat):
        for n in sizes:
            c0, t0 = time.thread_time(), time.perf_counter()
            engine.forward(model, inputs[n], dev)
            _sync(dev)
            cpu[n].append((time.thread_time() - c0) / n)
            wall[n].append((time.perf_counter() - t0) / n)
    return [
        {
            "batch_size": n,
            "window": list(win),
            "cpu_s_per_window": statistics.median(cpu[n]),
            "wall_s_per_window": statistics.median(wall[n]),
            "torch_threads": 1 if dev.type == "cpu" else None,
        }
        for n in sizes
    ]


def paper_windows(n: int, window: int = PAPER_WINDOW, keep: int = PAPER_KEEP) -> list[int]:
    """Starts along an axis: the centre ``keep`` px of the windows tile [0, n) exactly once."""
    margin = (window - keep) // 2
    return list(range(-margin, n - margin, keep))


def paper_scheme(
    plan, model, meta, batch_size: int, window: int = PAPER_WINDOW, keep: int = PAPER_KEEP
) -> tuple[np.ndarray, dict]:
    """The paper's inference: ``window`` px windows every ``keep`` px, keep the centre ``keep`` x ``keep`` of
    each. Returns the uint8 probability (0 where not valid) and timing/overhead figures."""

    dev = meta["device"]
    h, w = plan.shape
    margin = (window - keep) // 2
    wins = [(r, c, window, window) for r in paper_windows(h, window, keep) for c in paper_windows(w, window, keep)]
    batches = [wins[i : i + batch_size] for i in range(0, len(wins), batch_size)]
    prob = np.zeros((h, w), np.float32)
    pushed = [0] * len(batches)

    def run(b: int) -> None:
        samples, ok = [], []
        for win in batches[b]:
            x, any_valid = engine.window_inputs(plan, *win)
            if any_valid:
                samples.append(x)
                ok.append(win)
        if not samples:
            return
        _set_task_threads(plan, dev)
        p = engine.forward(model, engine.input_tensors(samples, plan.streams, dev), dev).cpu().numpy()
        pushed[b] = len(ok) * window * window
        for (r, c, _, _), pk in zip(ok, p):  # the centres are disjoint: no lock needed
            y0, y1 = r + margin, min(r + margin + keep, h)
            x0, x1 = c + margin, min(c + margin + keep, w)
            prob[y0:y1, x0:x1] = pk[margin : margin + y1 - y0, margin : margin + x1 - x0]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(plan.local_threads) as pool:
        list(pool.map(run, range(len(batches))))
    _sync(dev)
    valid = plan.reader.masks(0, 0, 0, h, w)[0]
    out = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[~valid] = 0
    seconds = time.perf_counter() - t0
    return out, {
        "seconds": seconds,
        "windows": len(wins),
        "model_pixels": sum(pushed),
        "pixels": h * w,
        "overhead_nominal": (window / keep) ** 2,
        "overhead_grid": len(wins) * window * window / (h * w),
    }


def whole_image(plan, model, meta) -> np.ndarray:
    """One forward pass over the whole cube, zero-padded to the model's size multiple (uint8, 0 where not valid)."""
    import torch

    dev = meta["device"]
    h, w = plan.shape
    x, _ = engine.window_inputs(plan, 0, 0, _ceil(h, plan.multiple), _ceil(w, plan.multiple))
    if dev.type == "cpu":
        torch.set_num_threads(cores())
    p = engine.forward(model, engine.input_tensors([x], plan.streams, dev), dev)[0, :h, :w].cpu().numpy()
    valid = plan.reader.masks(0, 0, 0, h, w)[0]
    out = np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[~valid] = 0
    return out


def seam_stats(ref: np.ndarray, test: np.ndarray, valid: np.ndarray, margin: int) -> dict:
    """Differences (in 1/255) over valid pixels more than ``margin`` px from the border."""
    m = valid.copy()
    m[:margin], m[-margin:], m[:, :margin], m[:, -margin:] = False, False, False, False
    d = np.abs(ref.astype(np.int16) - test.astype(np.int16))[m]
    if d.size == 0:
        return {"pixels": 0, "max": None, "share_gt_2": None, "mean": None, "p99": None}
    return {
        "pixels": int(d.size),
        "max": int(d.max()),
        "share_gt_2": float((d > 2).mean()),
        "mean": float(d.mean()),
        "p99": float(np.percentile(d, 99)),
    }


# ---------------------------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------------------------
def predict_fresh(
    cube: str, model: str, out: str, window: int, overlap: int, batch_size: int, device: str | None
) -> dict:
    """In a new process: predict() on the local scheduler; its time and peak RSS."""
    import torch  # noqa: F401 - imported before the baseline RSS, as every worker has it
    import zarr

    rss, peak0 = _rss_mb(), _peak_mb()
    t0 = time.perf_counter()
    P.predict(
        cube,
        model,
        out,
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    attrs = dict(zarr.open_group(out, mode="r").attrs)
    shape = zarr.open_group(out, mode="r")["probability"].shape
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "pixels": int(shape[0] * shape[1]),
        "shape": list(shape),
        "rss_after_imports_mb": rss,
        "peak_before_predict_mb": peak0,
        "peak_mb": _peak_mb(),
        "windows": attrs["windows"],
        "overhead": attrs["overhead"],
        "chunks": attrs["chunks_total"],
    }


def throughput(args, work: Path, cube: str) -> dict:
    """(1), (2), (4) and the paper's speed of (5) on ``cube``, in this process."""
    import zarr

    local = engine.local_threads(args.device)
    t0 = time.perf_counter()
    plan, batches, _, extra = engine.prepare(
        cube,
        args.model,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        threads=local,
    )
    setup_s = time.perf_counter() - t0
    P.clear_caches()
    t0 = time.perf_counter()
    model, meta = engine.load_model(plan)
    load_s = time.perf_counter() - t0
    dev = meta["device"]

    keys, inputs, model_px = model_inputs(plan, batches, meta)
    for key in dict.fromkeys(keys):  # warm-up: one forward per batch shape, untimed
        _set_task_threads(plan, dev)
        engine.forward(model, inputs[key], dev)
    _sync(dev)
    print(
        f"[bench] {len(keys)} batches ({len(inputs)} shapes), {model_px:,} px through the model; "
        f"setup {setup_s:.2f}s, model load {load_s:.2f}s",
        flush=True,
    )

    # the paper's scheme: warmed up on its batch shape too
    _set_task_threads(plan, dev)
    x, _ = engine.window_inputs(plan, 0, 0, PAPER_WINDOW, PAPER_WINDOW)
    engine.forward(model, engine.input_tensors([x] * args.batch_size, plan.streams, dev), dev)
    _sync(dev)

    def cold():  # cold decoded-chunk cache; the model is reloaded untimed, as a long-running worker has it
        P.clear_caches()
        return engine.load_model(plan)

    # alternated, so that a change in the machine's load hits every run alike
    mo_s, in_s, e2e_s, paper_s, attrs = [], [], [], [], {}
    for k in range(args.repeat):
        mo_s.append(model_only(plan, model, meta, keys, inputs))
        model, meta = cold()
        in_s.append(inputs_only(plan, batches, meta))
        model, meta = cold()
        out = work / f"e2e-{k}.zarr"
        t0 = time.perf_counter()
        P.predict(
            cube,
            args.model,
            out,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            device=args.device,
            progress=False,
            overwrite=True,
        )
        e2e_s.append(time.perf_counter() - t0)
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
        shutil.rmtree(out, ignore_errors=True)
        model, meta = cold()
        paper_prob, paper = paper_scheme(plan, model, meta, args.batch_size)
        paper_s.append(paper["seconds"])
        print(
            f"[bench] repeat {k + 1}/{args.repeat}: model only {mo_s[-1]:.2f}s, inputs only {in_s[-1]:.2f}s, "
            f"end to end {e2e_s[-1]:.2f}s, paper's scheme {paper_s[-1]:.2f}s",
            flush=True,
        )
    del inputs

    pixels = plan.shape[0] * plan.shape[1]
    res_m = float(extra["ds"].attrs.get("resolution", 10.0))
    mo, e2e = statistics.median(mo_s), statistics.median(e2e_s)
    model_only_pps = model_px / mo
    e2e_written_pps, e2e_model_pps = pixels / e2e, model_px / e2e
    paper["seconds"] = statistics.median(paper_s)
    paper.update(
        seconds_all=paper_s,
        written_px_per_s=pixels / paper["seconds"],
        model_px_per_s=paper["model_pixels"] / paper["seconds"],
        overhead_actual=paper["model_pixels"] / pixels,
        km2_per_hour=_km2(pixels / paper["seconds"], res_m) * 3600,
    )

    return {
        "cube": plan.cube,
        "shape": list(plan.shape),
        "chunks": list(plan.chunks),
        "resolution_m": res_m,
        "pixels": pixels,
        "km2": _km2(pixels, res_m),
        "device": str(dev),
        "dask_threads": plan.local_threads,
        "torch_threads_per_task": engine.torch_threads(plan) if dev.type == "cpu" else None,
        "batches": len(keys),
        "batch_shapes": len(set(keys)),
        "setup_s": setup_s,
        "model_load_s": load_s,
        "model_only": {"seconds": mo, "seconds_all": mo_s, "model_pixels": model_px, "model_px_per_s": model_only_pps},
        "inputs_only": {
            "seconds": statistics.median(in_s),
            "seconds_all": in_s,
            "model_px_per_s": model_px / statistics.median(in_s),
        },
        "end_to_end": {
            "seconds": e2e,
            "seconds_all": e2e_s,
            "written_px_per_s": e2e_written_pps,
            "model_px_per_s": e2e_model_pps,
            "km2_per_hour": _km2(e2e_written_pps, res_m) * 3600,
        },
        "efficiency_raw": e2e_written_pps / model_only_pps,
        "efficiency_overhead_corrected": e2e_model_pps / model_only_pps,
        "overhead": {
            "attrs": attrs.get("overhead"),
            "asymptotic": attrs.get("overhead_asymptotic"),
            "actual": model_px / pixels,
            "windows": attrs.get("windows"),
            "window": attrs.get("window"),
            "overlap": attrs.get("overlap"),
            "at_defaults": P.overhead(plan.shape),
            "asymptotic_at_defaults": P.asymptotic_overhead(),
        },
        "paper": paper,
        "_paper_prob": paper_prob,
    }


def seams(args, work: Path, cube: str, paper_prob: np.ndarray | None) -> dict:
    """(5): every scheme against one whole-image forward pass of ``cube``."""

    plan = engine.prepare(
        cube, args.model, window=args.window, overlap=args.overlap, batch_size=args.batch_size, device=args.device
    ).plan
    model, meta = engine.load_model(plan)
    ref = whole_image(plan, model, meta)
    valid = plan.reader.masks(0, 0, 0, *plan.shape)[0]
    if paper_prob is None:
        paper_prob, _ = paper_scheme(plan, model, meta, args.batch_size)
    window, overlap = plan.window, plan.overlap
    schemes = {}
    for name, win, ov in (
        (f"ours: {window} / overlap {overlap}, Hann-tapered blend", window, overlap),
        (f"naive tiling: {window} / overlap 0", window, 0),
        (f"naive tiling: {PAPER_WINDOW} / overlap 0", PAPER_WINDOW, 0),
    ):
        out = work / f"seam-{win}-{ov}.zarr"
        P.predict(
            cube,
            args.model,
            out,
            window=win,
            overlap=ov,
            batch_size=args.batch_size,
            device=args.device,
            progress=False,
            overwrite=True,
        )
        prob = P.open_prediction(out)["probability"].values
        schemes[name] = {
            "window": win,
            "stride": win - ov,
            "overhead": P.overhead(plan.shape, win, ov),
            **seam_stats(ref, prob, valid, args.seam_margin),
        }
        shutil.rmtree(out, ignore_errors=True)
    paper_grid = len(paper_windows(plan.shape[0])) * len(paper_windows(plan.shape[1])) * PAPER_WINDOW**2
    schemes[f"paper: {PAPER_WINDOW} / stride {PAPER_KEEP}, keep centre {PAPER_KEEP}"] = {
        "window": PAPER_WINDOW,
        "stride": PAPER_KEEP,
        "overhead": paper_grid / (plan.shape[0] * plan.shape[1]),
        **seam_stats(ref, paper_prob, valid, args.seam_margin),
    }
    order = list(schemes)
    order = [order[0], order[3], order[1], order[2]]
    return {
        "cube": cube,
        "shape": list(plan.shape),
        "margin": args.seam_margin,
        "schemes": {k: schemes[k] for k in order},
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def print_tables(res: dict) -> None:
    c, t = res["config"], res["throughput"]
    print(
        f"\npredict benchmark: {t['shape'][0]} x {t['shape'][1]} px cube ({t['km2']:.1f} km², chunks "
        f"{t['chunks'][0]}), window {c['window']} / overlap {c['overlap']}, batch {c['batch_size']}, "
        f"{c['params']:,} parameters, device {t['device']}, {t['dask_threads']} dask threads x "
        f"{t['torch_threads_per_task']} torch threads (local threaded scheduler, one process) on "
        f"{c['cores']} cores; medians of {c['repeat']} run(s); load average {c['load_avg_1m']:.2f} at start, "
        f"{c['load_avg_1m_end']:.2f} at end; torch {c['torch']}\n"
    )
    mo, e2e, p = t["model_only"], t["end_to_end"], t["paper"]
    print("| run | seconds | px written | px through model | written px/s | model px/s | km²/h |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| model only, tensors in memory (predict's batches) | {mo['seconds']:.2f} | - | {mo['model_pixels']:,} | - "
        f"| {mo['model_px_per_s']:,.0f} | - |"
    )
    print(
        f"| predict() end to end, cube zarr -> probability zarr | {e2e['seconds']:.2f} | {t['pixels']:,} | "
        f"{mo['model_pixels']:,} | {e2e['written_px_per_s']:,.0f} | {e2e['model_px_per_s']:,.0f} | "
        f"{e2e['km2_per_hour']:,.0f} |"
    )
    print(
        f"| paper's scheme ({PAPER_WINDOW} / stride {PAPER_KEEP}, keep centre; output in memory) | "
        f"{p['seconds']:.2f} | {p['pixels']:,} | {p['model_pixels']:,} | {p['written_px_per_s']:,.0f} | "
        f"{p['model_px_per_s']:,.0f} | {p['km2_per_hour']:,.0f} |"
    )
    o = t["overhead"]
    print(
        f"\npipeline efficiency (target >= 0.85): raw {t['efficiency_raw']:.2f} (written px/s end to end / model "
        f"px/s model only), overhead-corrected {t['efficiency_overhead_corrected']:.2f} (model px/s end to end / "
        f"model only); predict's setup (checkpoint load + hash, cube checks) {t['setup_s']:.2f}s of the "
        f"{e2e['seconds']:.2f}s"
    )
    print(
        f"overhead factor (px through model / px written) at window {o['window']} / overlap {o['overlap']}: "
        f"{o['attrs']} (attrs, {o['windows']} windows; asymptotic {o['asymptotic']}), {o['actual']:.3f} as run "
        f"(windows without valid pixels skipped); at the defaults on this cube {o['at_defaults']:.3f}, "
        f"asymptotic {o['asymptotic_at_defaults']:.3f}; paper's scheme {p['overhead_actual']:.2f} as run "
        f"(nominal {p['overhead_nominal']:.0f})"
    )
    rest = e2e["seconds"] - mo["seconds"] - t["inputs_only"]["seconds"]
    print(
        f"time end to end {e2e['seconds']:.2f}s = model {mo['seconds']:.2f}s (model only) + inputs "
        f"{t['inputs_only']['seconds']:.2f}s (read + decode + normalise alone) + {rest:.2f}s rest (blend, write, "
        "setup, scheduling, contention; approximate, the threads overlap)"
    )
    print(
        f"km²/hour per worker (one process, {c['cores']} cores): {e2e['km2_per_hour']:,.0f} "
        f"(end to end, warm model); paper's scheme {p['km2_per_hour']:,.0f}; "
        f"ours / paper speed {e2e['written_px_per_s'] / p['written_px_per_s']:.2f}x"
    )

    if res.get("memory"):
        print(
            "\n| region (predict in a fresh spawn process) | px | km² | windows | chunks | seconds (cold) "
            "| km²/h (cold) | RSS after imports MB | peak RSS MB | peak - imports MB | peak / previous row |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["memory"]["runs"]:
            km2 = _km2(r["pixels"], t["resolution_m"])
            name = "the cube" if r["tile"] == 1 else f"cube tiled {r['tile']} x {r['tile']}"
            ratio = f"{r['ratio_to_previous']:.2f}x" if "ratio_to_previous" in r else "-"
            print(
                f"| {name}: {r['shape'][0]} x {r['shape'][1]} | {r['pixels']:,} | {km2:,.1f} | {r['windows']} "
                f"| {r['chunks']} | {r['seconds']:.2f} | {km2 / r['seconds'] * 3600:,.0f} | "
                f"{r['rss_after_imports_mb']:.0f} | {r['peak_mb']:.0f} | "
                f"{r['peak_mb'] - r['rss_after_imports_mb']:.0f} "
                f"| {ratio} |"
            )
        m = res["memory"]
        if "ratio" in m:
            verdict = "within" if m["ratio"] <= 1.15 else "NOT within"
            print(
                f"\npeak memory of the largest region over the one 4x smaller: {m['ratio']:.2f}x ({verdict} the 15 % "
                "target). Peak RSS = VmHWM of the process (imports, model, forward passes of dask threads x "
                "batch_size windows, decoded-chunk cache, window results awaiting their output chunks)."
            )

    if res.get("batch_sizes"):
        print(
            "\n| batch size (full windows, in-memory inputs) | CPU s per window (1 torch thread) | wall s per window |"
        )
        print("|---|---|---|")
        for r in res["batch_sizes"]:
            print(
                f"| {r['batch_size']} x {r['window'][0]} x {r['window'][1]} px | {r['cpu_s_per_window']:.3f} | "
                f"{r['wall_s_per_window']:.3f} |"
            )

    s = res["seams"]
    print(
        f"\nseams against one whole-image forward pass of a {s['shape'][0]} x {s['shape'][1]} px cube, valid "
        f"pixels > {s['margin']} px from the border ({next(iter(s['schemes'].values()))['pixels']:,} px):\n"
    )
    if max(s["shape"]) <= c["window"]:
        print(
            f"(the seam cube is not larger than the {c['window']} px window: ours and naive tiling at that window "
            "are a single window here; use a larger --seam-size)\n"
        )
    print("| scheme | window | stride | overhead | max abs diff (1/255) | pixels > 2/255 | mean diff | p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in s["schemes"].items():
        print(
            f"| {name} | {r['window']} | {r['stride']} | {r['overhead']:.2f} | {r['max']} | "
            f"{100 * r['share_gt_2']:.3f} % | {r['mean']:.3f} | {r['p99']:.0f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cube", required=True, help="cube to map (e.g. demo-out/cubes/haiti_like.zarr from `landslide-dask demo`)"
    )
    p.add_argument("--model", required=True, help="checkpoint (e.g. demo-out/model/best.pt)")
    p.add_argument("--window", type=int, help="window px (default: predict's DEFAULT_WINDOW)")
    p.add_argument("--overlap", type=int, help="overlap px (default: predict's DEFAULT_OVERLAP)")
    p.add_argument(
        "--batch-size", type=int, help="windows per forward pass (default: predict's for the device, 1 on CPU)"
    )
    p.add_argument("--threads", type=int, help="use this many of this process's CPUs (affinity; default all)")
    p.add_argument("--device", help="cpu, cuda, ... (default: predict's, cuda when available)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions, medians reported (default 3)")
    p.add_argument(
        "--seam-size",
        type=int,
        default=1024,
        help="side of the cube crop for the seam comparison, one forward pass (default 1024)",
    )
    p.add_argument("--seam-margin", type=int, default=64, help="border px excluded from seam figures (default 64)")
    p.add_argument(
        "--tile",
        type=int,
        default=1,
        help="measure throughput on the cube's arrays tiled K x K (a larger region; default 1: the cube)",
    )
    p.add_argument(
        "--memory-tiles",
        type=_ints,
        default=[1, 2, 4],
        help="regions of the memory runs: the cube tiled K x K for each K (default 1,2,4: 1x, 4x, 16x the area)",
    )
    p.add_argument("--skip-memory", action="store_true", help="skip the fresh-process memory runs")
    p.add_argument(
        "--batch-sizes",
        type=_ints,
        default=[1, 4],
        help="batch sizes whose cost per window is compared (default 1,4; empty to skip)",
    )
    p.add_argument("--workdir", help="keep derived cubes here (default: a temp dir, removed at the end)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument(
        "--small",
        action="store_true",
        help="CI mode: 128/32 px windows, one repeat, 1x and 4x memory runs, one batch size",
    )
    args = p.parse_args()
    if args.small:
        args.window = args.window or 128
        args.overlap = 32 if args.overlap is None else args.overlap
        args.repeat, args.seam_size, args.seam_margin, args.memory_tiles, args.batch_sizes = 1, 256, 32, [1, 2], [1]
    if (
        args.repeat < 1
        or (args.batch_size is not None and args.batch_size < 1)
        or args.tile < 1
        or min(args.memory_tiles, default=1) < 1
    ):
        p.error("--repeat, --batch-size, --tile and --memory-tiles must be >= 1")
    if args.threads:
        cpus = sorted(os.sched_getaffinity(0))
        if not 1 <= args.threads <= len(cpus):
            p.error(f"--threads must be in 1..{len(cpus)}")
        os.sched_setaffinity(0, cpus[: args.threads])  # inherited by the spawned processes

    import torch
    import zarr

    from landslide_dask.train.checkpoint import build_model, load_checkpoint
    from landslide_dask.train.model import count_parameters

    args.cube, args.model = str(Path(args.cube).resolve()), str(Path(args.model).resolve())
    args.window, args.overlap = P.resolve_window(args.window, args.overlap)
    if args.batch_size is None:
        args.batch_size = P.default_batch_size(args.device)
    load = os.getloadavg()[0]
    t_start = time.perf_counter()
    keep = bool(args.workdir)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-predict-"))
    work.mkdir(parents=True, exist_ok=True)

    def tiled(k: int) -> str:
        """The cube, or its arrays tiled k x k into a new zarr in the work dir (made once)."""
        if k == 1:
            return args.cube
        path = work / f"tiled-{k}x{k}.zarr"
        if not (path / "zarr.json").exists():
            t0 = time.perf_counter()
            derive_cube(args.cube, path, tile=k)
            print(f"[bench] {k} x {k} tiled cube written in {time.perf_counter() - t0:.1f}s", flush=True)
        return str(path)

    try:
        ckpt = load_checkpoint(args.model)
        params = count_parameters(build_model(ckpt["model_config"]))

        memory = None
        if not args.skip_memory:  # first: nothing in the fresh processes depends on this one's state anyway
            runs = []
            for k in args.memory_tiles:
                cube = tiled(k)
                r = fresh(
                    predict_fresh,
                    cube,
                    args.model,
                    str(work / "mem.zarr"),
                    args.window,
                    args.overlap,
                    args.batch_size,
                    args.device,
                )
                runs.append({"tile": k, "cube": cube, **r})
                print(
                    f"[bench] fresh process, cube x {k * k} area: {r['seconds']:.2f}s, peak {r['peak_mb']:.0f} MB",
                    flush=True,
                )
            for small, large in itertools.pairwise(runs):
                large["ratio_to_previous"] = large["peak_mb"] / small["peak_mb"]
                large["ratio_above_imports_to_previous"] = (large["peak_mb"] - large["rss_after_imports_mb"]) / max(
                    1e-9, small["peak_mb"] - small["rss_after_imports_mb"]
                )
            memory = {"runs": runs}
            if len(runs) > 1:
                memory["ratio"] = runs[-1]["ratio_to_previous"]

        thr = throughput(args, work, tiled(args.tile))
        paper_prob = thr.pop("_paper_prob")
        batches = None
        if args.batch_sizes:
            plan = engine.prepare(
                args.cube,
                args.model,
                window=args.window,
                overlap=args.overlap,
                batch_size=args.batch_size,
                device=args.device,
            ).plan
            model, meta = engine.load_model(plan)
            batches = batch_cost(plan, model, meta, args.batch_sizes, args.repeat)

        h, w = zarr.open_group(args.cube, mode="r")["valid"].shape
        size = (min(h, args.seam_size), min(w, args.seam_size))
        if size == (h, w):
            seam_cube, prob = args.cube, (paper_prob if args.tile == 1 else None)
        else:
            seam_cube, prob = str(work / f"crop-{size[0]}x{size[1]}.zarr"), None
            if not (Path(seam_cube) / "zarr.json").exists():
                derive_cube(args.cube, Path(seam_cube), size=size)
        del paper_prob
        sm = seams(args, work, seam_cube, prob)
        print("[bench] seam comparison done", flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    res = {
        "config": {
            "cube": args.cube,
            "model": args.model,
            "params": params,
            "window": args.window,
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "device": args.device,
            "threads": args.threads,
            "tile": args.tile,
            "memory_tiles": args.memory_tiles,
            "cores": cores(),
            "cpu_count": os.cpu_count(),
            "repeat": args.repeat,
            "seam_size": args.seam_size,
            "seam_margin": args.seam_margin,
            "load_avg_1m": load,
            "load_avg_1m_end": os.getloadavg()[0],
            "torch": torch.__version__,
            "scheduler": "dask local threaded (client=None)",
            "total_s": time.perf_counter() - t_start,
        },
        "throughput": thr,
        "memory": memory,
        "seams": sm,
        "batch_sizes": batches,
    }
    print_tables(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
