"""Country job throughput end to end: km²/hour per worker, 1 vs N workers, seconds per stage, and a
projection (labelled as such) of the time to map Nepal on N workers from the measured rates.

    python benchmarks/country.py [--data DIR] [--size-km 6] [--cell-km 2] [--workers 1,2]
                                 [--model CKPT] [--out DIR]

What it runs: the synthetic ``gorkha_like`` region (it straddles the UTM 44N/45N boundary, so cells
run in two zones) is generated if ``--data`` has no ``regions.json``, served by a real STAC API, and
mapped as a country job (``landslide_dask.country.run_job``) on a fresh LocalCluster of 1 worker,
then of 2 (one thread each; ``concurrency`` = workers, so a cell has one worker to itself), each
into a fresh output folder. Reported per run: wall time, area of the cells (done + empty), km²/h,
km²/h per worker, the scaling efficiency against 1 worker, and the stage seconds summed over cells
(search, cube, predict, cog, polygons) plus the merge.

Without ``--model`` a tiny randomly initialised model is used (throughput of the plumbing, not of
the paper's network; pass the demo checkpoint, e.g. ``demo-out/model/best.pt``, for real numbers).
Until ``make-demo-data`` has a country mode (issue 5 item 7) the area is one demo region of
``--size-km``: the per-cell rates, not the area, are what the projection uses.

The projection: worker-seconds per km² of the 1-worker run (the sum of the cells' stage times over
their area; search runs on the driver and is included as it is per cell) x 147,000 km² / N; the
merge (driver) is reported, not extrapolated (at this size it is mostly fixed costs). It assumes linear scaling (the measured 2-worker
efficiency is printed beside it) and the same per-pixel costs as here (CPU unless a GPU is
present). It is an extrapolation, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

NEPAL_KM2 = 147_000.0
STAGES = ("search", "cube", "predict", "cog", "polygons")


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from landslide_dask.model import LandslideNet, ModelConfig

    bands = ["blue", "green", "red", "nir"]
    torch.manual_seed(0)
    cfg = ModelConfig(streams={"pre": 4, "post": 4, "terrain": 2}, encoder_blocks=(1, 1, 1, 1),
                      encoder_widths=(8, 16, 32, 32), stem_widths={"pre": 8, "post": 8, "terrain": 8},
                      dropout=0.0, prior=None, zero_init_residual=True)
    model = LandslideNet(cfg)
    stats = {"mean": {"pre": [1750.0] * 4, "post": [1750.0] * 4, "terrain": [128.0, 22.0]},
             "std": {"pre": [700.0] * 4, "post": [700.0] * 4, "terrain": [70.0, 12.0]}}
    torch.save({"format": 1, "state_dict": model.state_dict(), "model_config": cfg.to_dict(), "bands": bands,
                "streams": ["pre", "post", "terrain"], "stats": stats, "threshold": 0.5}, path)
    return path


def run_once(spec_path: Path, workers: int) -> dict:
    from distributed import Client, LocalCluster

    from landslide_dask.cells import make_cells
    from landslide_dask.country import run_job
    from landslide_dask.jobspec import load_jobspec

    spec = load_jobspec(spec_path)
    shutil.rmtree(spec.output_path, ignore_errors=True)
    cells = {c.id: c for c in make_cells(spec.area.geometry(), spec.cell_size_km)}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
        t0 = time.perf_counter()
        res = run_job(spec, client, progress=False, concurrency=workers, echo=None)
        wall = time.perf_counter() - t0
    manifest = json.loads((spec.output_path / "manifest.json").read_text())
    finished = [cid for cid, r in manifest["cells"].items() if r["status"] in ("done", "empty")]
    done = [cid for cid, r in manifest["cells"].items() if r["status"] == "done"]
    area = sum(cells[c].area_km2 for c in finished)
    stage_s = {s: round(sum(manifest["cells"][c]["timings"].get(s, 0.0) for c in finished), 3) for s in STAGES}
    return {"workers": workers, "wall_s": round(wall, 2), "cells": len(cells), "done": len(done),
            "empty": len(finished) - len(done), "failed": res.summary.n_failed, "area_km2": round(area, 3),
            "km2_per_hour": round(area / wall * 3600.0, 2), "km2_per_hour_per_worker": round(area / wall * 3600.0 / workers, 2),
            "stage_s": stage_s, "merge_s": res.seconds.get("merge", 0.0), "polygons": res.n_polygons}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="demo data folder (generated if it has no regions.json)")
    p.add_argument("--size-km", type=float, default=6.0, help="region size when the data is generated")
    p.add_argument("--cell-km", type=float, default=2.0, help="cell size of the job (default 2 km)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--model", default=None, help="checkpoint (default: a tiny random model)")
    p.add_argument("--out", default="benchmarks/results/country", help="output folder (results.json)")
    args = p.parse_args(argv)

    import yaml

    from landslide_dask.stac_server import serve_stac
    from landslide_dask.synth import make_demo_data

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else out / "data"
    if not (data / "regions.json").exists():
        t = time.perf_counter()
        make_demo_data(data, seed=0, size_km=args.size_km, n_regions=2)
        print(f"[bench] demo data generated in {time.perf_counter() - t:.0f}s", flush=True)
    region = next(r for r in json.loads((data / "regions.json").read_text()) if r["name"].startswith("gorkha_like"))
    model = Path(args.model).resolve() if args.model else _tiny_checkpoint(out / "tiny.pt")
    results = []
    with serve_stac(data) as url:
        for n in [int(v) for v in args.workers.split(",")]:
            job = {"name": f"bench-{n}w", "area": {"bbox": region["bbox"]}, "event": {"date": region["event_date"]},
                   "stac": {"url": url}, "model": str(model), "cell_size_km": args.cell_km,
                   "output": str(out / f"run-{n}w"), "retries": 0}
            spec_path = out / f"job-{n}w.yaml"
            spec_path.write_text(yaml.safe_dump(job))
            r = run_once(spec_path, n)
            results.append(r)
            print(f"[bench] {n} worker(s): {r['area_km2']:.1f} km² in {r['wall_s']:.1f}s = {r['km2_per_hour']:.0f} km²/h "
                  f"({r['km2_per_hour_per_worker']:.0f} per worker); cells {r['done']} done {r['empty']} empty "
                  f"{r['failed']} failed; stages {r['stage_s']}; merge {r['merge_s']:.2f}s", flush=True)
    base = results[0]
    for r in results[1:]:
        r["speedup"] = round(base["wall_s"] / r["wall_s"], 2)
        r["efficiency"] = round(r["speedup"] / (r["workers"] / base["workers"]), 2)
    s_per_km2 = sum(base["stage_s"].values()) / base["workers"] / max(base["area_km2"], 1e-9)
    projection = {n: round(NEPAL_KM2 * s_per_km2 / n / 3600.0, 1) for n in (1, 4, 8, 16, 32, 64)}
    device = "cuda" if _cuda() else "cpu"
    report = {"results": results, "seconds_per_km2_per_worker": round(s_per_km2, 3), "device": device,
              "model": str(model) if args.model else "tiny random model (plumbing throughput)",
              "projection_nepal_hours_by_workers": projection, "host_cpus": os.cpu_count()}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print("\n| workers | area km² | wall s | km²/h | km²/h/worker | efficiency |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['area_km2']:.1f} | {r['wall_s']:.1f} | {r['km2_per_hour']:.0f} | "
              f"{r['km2_per_hour_per_worker']:.0f} | {r.get('efficiency', 1.0):.2f} |")
    print(f"\nPROJECTION (extrapolated, not measured; linear scaling, {device} per-pixel costs of this run): "
          f"Nepal, {NEPAL_KM2:,.0f} km²: " + ", ".join(f"{n} workers {h:g} h" for n, h in projection.items()))
    print(f"(plus the merge on the driver, not extrapolated: {base['merge_s']:.2f}s here for {base['polygons']} polygons, "
          "mostly fixed costs at this size)")
    print(f"results in {out / 'results.json'}")
    return 0


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    sys.exit(main())
