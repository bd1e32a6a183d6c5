"""The demo: the whole pipeline on the embedded synthetic regions, on a real local Dask cluster."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .cube import CubeSpec, build_cube, open_cube

if TYPE_CHECKING:
    from .train import TrainConfig


def region_table(regions: list[dict], cubes: dict[str, Path]) -> str:
    """A Markdown table a person can read at a glance: size, valid share, landslide share."""
    rows = ["| region | event | CRS | size (px) | valid | landslide px | pre dates | post dates |",
            "|---|---|---|---|---|---|---|---|"]
    for r in regions:
        ds = open_cube(cubes[r["name"]])
        valid = float(ds["valid"].mean().compute())
        slides = int((ds["label"] == 1).sum().compute()) if "label" in ds else 0
        rows.append(f"| {r['name']} | {ds.attrs['event_date']} | {ds.attrs['crs']} | "
                    f"{ds.sizes['x']}x{ds.sizes['y']} | {valid:.1%} | {slides} | "
                    f"{len(ds.attrs['pre_dates'])} | {len(ds.attrs['post_dates'])} |")
    return "\n".join(rows)


# The demo model: the paper's architecture at half width (the paper's widths train ~4x slower on a
# 2-core laptop); `landslide-dask train` defaults to the paper's widths.
DEMO_MODEL = {"encoder_widths": [32, 64, 128, 128], "stem_widths": {"pre": 16, "post": 16, "terrain": 16}}


def demo_train_config(cubes: list[str], out: Path, epochs: int) -> "TrainConfig":
    from .train import TrainConfig

    return TrainConfig(cubes=cubes, out=str(out), size=128, stride=64, block=384, batch_size=8, epochs=epochs,
                       steps_per_epoch=40, lr=1e-3, patience=epochs, model=DEMO_MODEL)


def run_demo(data: Path, out: Path, workers: int = 2, size_km: float = 10.0, epochs: int = 10) -> dict[str, Path]:
    """Make the demo data if absent, serve it as a STAC API, build every region's cube, train a
    combined model on all regions but the last with DDP over the workers, then map the last region,
    which it never saw: probability, polygons, metrics and a map."""
    from distributed import Client, LocalCluster

    from .experiment import markdown_table, region_name, score_row
    from .stac_server import serve_stac
    from .synth import make_demo_data
    from .metrics import Confusion
    from .polygons import polygonize
    from .predict import export_cog, predict
    from .report import evaluate_map
    from .train import train

    t0 = time.perf_counter()
    if not (data / "regions.json").exists():
        print(f"[demo] generating synthetic event regions in {data} ...", flush=True)
        make_demo_data(data, size_km=size_km)
    regions = json.loads((data / "regions.json").read_text())
    (out / "cubes").mkdir(parents=True, exist_ok=True)
    cubes: dict[str, Path] = {}
    with serve_stac(data) as url, \
            LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print(f"[demo] STAC API at {url}; Dask cluster with {workers} workers, dashboard {client.dashboard_link}",
              flush=True)
        for r in regions:
            print(f"[demo] cube for {r['name']} (event {r['event_date']}, EPSG:{r['epsg']})", flush=True)
            spec = CubeSpec(stac_url=url, event_date=date.fromisoformat(r["event_date"]),
                            aoi=data / r["aoi"], out=out / "cubes" / f"{r['name']}.zarr",
                            inventory=data / r["inventory"], inventory_area=data / r["inventory_area"],
                            chunk=512)
            cubes[r["name"]] = build_cube(spec)
        print()
        print(region_table(regions, cubes), flush=True)
        t_cubes = time.perf_counter() - t0

        *seen, unseen = [str(cubes[r["name"]]) for r in regions]
        print(f"\n[demo] training a combined model on {', '.join(region_name(c) for c in seen)} "
              f"with DDP over {workers} Dask workers; {region_name(unseen)} is held out", flush=True)
        cfg = demo_train_config(seen, out / "model", epochs)
        res = train(client, cfg)
        t_train = time.perf_counter() - t0 - t_cubes

        name = region_name(unseen)
        print(f"\n[demo] mapping {name} with blended overlapping windows on the cluster", flush=True)
        maps = out / "map"
        maps.mkdir(exist_ok=True)
        pred = predict(unseen, res["best"], maps / f"{name}-probability.zarr", client=client)
    export_cog(pred, maps / f"{name}-probability.tif")
    polys = polygonize(pred, maps / f"{name}-landslides")
    rep = evaluate_map(pred, unseen, maps, inventory=data / regions[-1]["inventory"], polygons=polys)
    t_map = time.perf_counter() - t0 - t_cubes - t_train
    px, ob = rep["pixel"], rep["object"]
    table = pd.DataFrame([score_row(name, "combined (unseen)", [region_name(c) for c in seen],
                                    Confusion(px["tp"], px["fp"], px["fn"], px["tn"]), res["best"])])
    table.to_csv(out / "unseen_region.csv", index=False)
    print(f"\n[demo] the combined model on the unseen region {name} (pixels; threshold {res['threshold']:.2f}, "
          f"chosen on validation blocks of the training regions):\n")
    print(markdown_table(table))
    print(f"\n[demo] {len(polys)} landslide polygons >= 400 m²; against the inventory: object precision "
          f"{ob['precision']:.2f}, recall {ob['recall']:.2f} ({ob['detected_reference']} of {ob['n_reference']} "
          f"landslides detected)")
    print(f"[demo] cubes and quicklooks in {out / 'cubes'}; model, metrics and curves in {out / 'model'}")
    print(f"[demo] probability (zarr + COG), polygons (GeoParquet + GeoPackage), report and map.png in {maps}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s (cubes {t_cubes:.0f} s, training {t_train:.0f} s, "
          f"mapping and evaluation {t_map:.0f} s)")
    return cubes
