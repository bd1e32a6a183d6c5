"""Country job throughput end to end on the demo country: km²/hour per worker, 1 vs N workers in
the same run, seconds per stage, and a projection (labelled as such) of the time to map Nepal on N
workers from the measured per-stage rates.

    python benchmarks/country.py [--data DIR] [--bbox W,S,E,N] [--cell-km 10] [--workers 1,2]
                                 [--model CKPT] [--out DIR] [--small]

What it runs: the synthetic demo country (``landslide-dask make-demo-data DIR --country``: ~2,180
km² of the ``gorkha_like`` look across the UTM 44N/45N boundary at 84 E, four event clusters) is
generated if ``--data`` has no ``regions.json``, served by a real STAC API, and mapped as a country
job (``landslide_dask.jobs.country.run_job``) on a fresh LocalCluster of 1 worker, then of 2 (one thread
each; ``concurrency`` = workers, so a cell has one worker to itself), each into a fresh output
folder. ``--bbox`` maps only part of the country (the area actually mapped, from the finished
cells, is what every rate uses and what is reported). Reported per run: wall time (end to end:
cells and merge), area of the cells (done + empty), km²/h, km²/h per worker, the scaling
efficiency against 1 worker, the stage seconds summed over cells (search, cube, predict, cog,
polygons) plus the merge, and the object precision/recall of the merged polygons against the
country's inventory.

Without ``--model`` a tiny randomly initialised model is used (throughput of the plumbing, not of
the paper's network); pass the demo checkpoint (``landslide-dask demo`` writes
``demo-out/model/best.pt``) for real numbers.

The projection: per stage, worker-seconds per km² of the 1-worker run (the stage's seconds summed
over cells / their area; search runs on the driver and is included as it is per cell) x 147,000
km² / N workers; the merge (driver) is reported, not extrapolated. It assumes linear scaling (the
measured 2-worker efficiency is printed beside it) and the same per-pixel costs as here (CPU
unless a GPU is present). It is an extrapolation, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from landslide_dask.jobs.cell import STAGES  # the stages a cell records

NEPAL_KM2 = 147_000.0
#: --small: a ~3 x 3 km country across 84 E, 4 km cells (4 cells, both UTM zones): the code paths in CI
SMALL_BBOX = (83.985, 28.195, 84.015, 28.222)


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from landslide_dask.train.model import LandslideNet, ModelConfig

    bands = ["blue", "green", "red", "nir"]
    torch.manual_seed(0)
    cfg = ModelConfig(
        streams={"pre": 4, "post": 4, "terrain": 2},
        encoder_blocks=(1, 1, 1, 1),
        encoder_widths=(8, 16, 32, 32),
        stem_widths={"pre": 8, "post": 8, "terrain": 8},
        dropout=0.0,
        prior=None,
        zero_init_residual=True,
    )
    model = LandslideNet(cfg)
    stats = {
        "mean": {"pre": [1750.0] * 4, "post": [1750.0] * 4, "terrain": [128.0, 22.0]},
        "std": {"pre": [700.0] * 4, "post": [700.0] * 4, "terrain": [70.0, 12.0]},
    }
    torch.save(
        {
            "format": 1,
            "state_dict": model.state_dict(),
            "model_config": cfg.to_dict(),
            "bands": bands,
            "streams": ["pre", "post", "terrain"],
            "stats": stats,
            "threshold": 0.5,
        },
        path,
    )
    return path


def run_once(spec_path: Path, workers: int) -> dict:
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster
    from landslide_dask.jobs.cells import make_cells
    from landslide_dask.jobs.country import run_job
    from landslide_dask.jobs.spec import load_jobspec

    spec = load_jobspec(spec_path)
    shutil.rmtree(spec.output_path, ignore_errors=True)
    cells = {c.id: c for c in make_cells(spec.area.geometry(), spec.cell_size_km)}
    with local_cluster(workers, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
        t0 = time.perf_counter()
        res = run_job(spec, client, progress=False, concurrency=workers, echo=None)
        wall = time.perf_counter() - t0
    manifest = json.loads((spec.output_path / "manifest.json").read_text())
    finished = [cid for cid, r in manifest["cells"].items() if r["status"] in ("done", "empty")]
    done = [cid for cid, r in manifest["cells"].items() if r["status"] == "done"]
    area = sum(cells[c].area_km2 for c in finished)
    stage_s = {s: round(sum(manifest["cells"][c]["timings"].get(s, 0.0) for c in finished), 3) for s in STAGES}
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "cells": len(cells),
        "done": len(done),
        "empty": len(finished) - len(done),
        "failed": res.summary.n_failed,
        "area_km2": round(area, 3),
        "km2_per_hour": round(area / wall * 3600.0, 2),
        "km2_per_hour_per_worker": round(area / wall * 3600.0 / workers, 2),
        "stage_s": stage_s,
        "merge_s": res.seconds.get("merge", 0.0),
        "polygons": res.n_polygons,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="demo country folder (generated if it has no regions.json)")
    p.add_argument("--bbox", default=None, help="W,S,E,N: map only this part of the country (default: all of it)")
    p.add_argument("--cell-km", type=float, default=10.0, help="cell size of the job (default 10 km)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--model", default=None, help="checkpoint (default: a tiny random model)")
    p.add_argument("--out", default="benchmarks/results/country", help="output folder (results.json)")
    p.add_argument(
        "--small",
        action="store_true",
        help="CI mode: a ~3 x 3 km demo country across the zone boundary, 4 km cells, 2 workers (seconds, not figures)",
    )
    args = p.parse_args(argv)
    if args.small:  # one cluster of 2 workers: the job's code paths; the 1-vs-2 ratio is the full run's
        args.cell_km = 4.0
        args.workers = "2" if args.workers == p.get_default("workers") else args.workers

    import yaml

    from landslide_dask.demo.run import country_object_scores
    from landslide_dask.demo.synth import make_demo_country
    from landslide_dask.stac.server import serve_stac

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else out / "data"
    gen_s = None
    if not (data / "regions.json").exists():
        t = time.perf_counter()
        make_demo_country(data, seed=0, bbox=SMALL_BBOX if args.small else None, echo=lambda m: print(m, flush=True))
        gen_s = round(time.perf_counter() - t, 1)
        print(f"[bench] demo country generated in {gen_s:.0f}s", flush=True)
    country = json.loads((data / "regions.json").read_text())[0]
    if country.get("kind") != "country":
        p.error(
            f"{data} holds demo regions, not the demo country: make it with "
            f"`landslide-dask make-demo-data DIR --country`"
        )
    bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else country["bbox"]
    if len(bbox) != 4:
        p.error("--bbox is W,S,E,N")
    model = Path(args.model).resolve() if args.model else _tiny_checkpoint(out / "tiny.pt")
    results = []
    with serve_stac(data) as url:
        for n in [int(v) for v in args.workers.split(",")]:
            job = {
                "name": f"bench-{n}w",
                "area": {"bbox": bbox},
                "event": {"date": country["event_date"]},
                "stac": {"url": url},
                "model": str(model),
                "cell_size_km": args.cell_km,
                "output": str(out / f"run-{n}w"),
                "retries": 0,
            }
            spec_path = out / f"job-{n}w.yaml"
            spec_path.write_text(yaml.safe_dump(job))
            r = run_once(spec_path, n)
            scores = country_object_scores(
                out / f"run-{n}w" / "landslides.parquet", data / country["inventory"], bbox, country["epsg"]
            )
            r["objects"] = {k: scores[k] for k in ("n_predicted", "n_reference", "precision", "recall", "f1")}
            results.append(r)
            print(
                f"[bench] {n} worker(s): {r['area_km2']:.1f} km² in {r['wall_s']:.1f}s = {r['km2_per_hour']:.0f} km²/h "
                f"({r['km2_per_hour_per_worker']:.0f} per worker); cells {r['done']} done {r['empty']} empty "
                f"{r['failed']} failed; stages {r['stage_s']}; merge {r['merge_s']:.2f}s; {r['polygons']} polygons, "
                f"object precision {scores['precision']:.2f} recall {scores['recall']:.2f} against "
                f"{scores['n_reference']} inventory landslides",
                flush=True,
            )
    base = results[0]
    for r in results[1:]:
        r["speedup"] = round(base["wall_s"] / r["wall_s"], 2)
        r["efficiency"] = round(r["speedup"] / (r["workers"] / base["workers"]), 2)
    area = max(base["area_km2"], 1e-9)
    stage_rate = {s: base["stage_s"][s] / base["workers"] / area for s in STAGES}  # worker-s per km²
    s_per_km2 = sum(stage_rate.values())
    ns = (1, 4, 8, 16, 32, 64)
    projection = {n: round(NEPAL_KM2 * s_per_km2 / n / 3600.0, 1) for n in ns}
    projection_stages = {s: {n: round(NEPAL_KM2 * r / n / 3600.0, 2) for n in ns} for s, r in stage_rate.items()}
    device = "cuda" if _cuda() else "cpu"
    report = {
        "country": {k: country.get(k) for k in ("name", "bbox", "area_km2", "imagery_epsg", "landslides")},
        "bbox_mapped": bbox,
        "cell_km": args.cell_km,
        "generation_s": gen_s,
        "results": results,
        "seconds_per_km2_per_worker": round(s_per_km2, 3),
        "seconds_per_km2_per_worker_by_stage": {s: round(r, 4) for s, r in stage_rate.items()},
        "device": device,
        "model": str(model) if args.model else "tiny random model (plumbing throughput)",
        "projection_nepal_hours_by_workers": projection,
        "projection_nepal_hours_by_stage_and_workers": projection_stages,
        "host_cpus": os.cpu_count(),
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print("\n| workers | area km² | cells (done/empty) | wall s | km²/h | km²/h/worker | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workers']} | {r['area_km2']:.1f} | {r['done']}/{r['empty']} | {r['wall_s']:.1f} | "
            f"{r['km2_per_hour']:.0f} | {r['km2_per_hour_per_worker']:.0f} | {r.get('efficiency', 1.0):.2f} |"
        )
    print("\n| stage | s summed over cells (1 worker) | worker-s per km² |")
    print("|---|---|---|")
    for s in STAGES:
        print(f"| {s} | {base['stage_s'][s]:.1f} | {stage_rate[s]:.3f} |")
    print(f"| merge (driver) | {base['merge_s']:.1f} | (not extrapolated) |")
    print(
        f"\nPROJECTION (extrapolated, not measured; linear scaling, {device} per-pixel costs of this run): "
        f"Nepal, {NEPAL_KM2:,.0f} km²: " + ", ".join(f"{n} workers {h:g} h" for n, h in projection.items())
    )
    print(
        "PROJECTION by stage (hours on 1 / 16 workers): "
        + ", ".join(f"{s} {projection_stages[s][1]:g} / {projection_stages[s][16]:g}" for s in STAGES)
    )
    if len(results) > 1:
        print(
            f"(measured here: {results[-1]['workers']} workers ran at efficiency {results[-1]['efficiency']:.2f} "
            f"of linear on {os.cpu_count()} cores)"
        )
    print(
        f"(plus the merge on the driver, not extrapolated: {base['merge_s']:.2f}s here for {base['polygons']} polygons)"
    )
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
