"""The demo: the whole pipeline on the embedded synthetic regions, on a real local Dask cluster.

:func:`run_demo` builds the regions' cubes, trains the combined model and maps the held-out region;
:func:`run_demo_country` maps the synthetic demo country (``make-demo-data --country``: ~2,180 km²
across UTM 44N/45N, four event clusters) end to end as a country job with that model, and scores
the merged country polygons against the country's inventory.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from ..cube.spec import SCENE_CHUNK

__all__ = [
    "region_table",
    "DEMO_MODEL",
    "DEMO_EPOCHS",
    "DEMO_STEPS",
    "DEMO_BANDS",
    "DEMO_PRE_DROPOUT",
    "DEMO_HAZE",
    "DEMO_STREAM_DROPOUT",
    "demo_train_config",
    "local_client",
    "run_demo",
    "run_demo_real",
    "country_object_scores",
    "run_demo_country",
]

if TYPE_CHECKING:
    from ..train.config import TrainConfig


def region_table(regions: list[dict], cubes: dict[str, Path]) -> str:
    """A Markdown table a person can read at a glance: size, valid share, landslide share."""
    from ..cube.read import open_cube

    rows = [
        "| region | event | CRS | size (px) | valid | landslide px | pre dates | post dates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in regions:
        ds = open_cube(cubes[r["name"]])
        valid = float(ds["valid"].mean().compute())
        slides = int((ds["label"] == 1).sum().compute()) if "label" in ds else 0
        rows.append(
            f"| {r['name']} | {ds.attrs['event_date']} | {ds.attrs['crs']} | "
            f"{ds.sizes['x']}x{ds.sizes['y']} | {valid:.1%} | {slides} | "
            f"{len(ds.attrs['pre_dates'])} | {len(ds.attrs['post_dates'])} |"
        )
    return "\n".join(rows)


# The demo model: the paper's architecture at half width (the paper's widths train ~4x slower on a
# 2-core laptop); `landslide-dask train` defaults to the paper's widths.
DEMO_MODEL = {"encoder_widths": [32, 64, 128, 128], "stem_widths": {"pre": 16, "post": 16, "terrain": 16}}


# The demo's schedule: DEMO_EPOCHS x DEMO_STEPS steps of 8 windows per rank (2 ranks). On 2 cores a
# step is pure compute (benchmarks/train.py), so the schedule is the demo's time; fewer steps cost
# unseen-region MCC (the README's demo section has the figures of the current model).
DEMO_EPOCHS = 10
DEMO_STEPS = 40
# RGB, as the paper and as real scenes often are (Iburi 2018 has no NIR), so the demo's model maps
# real events too (`demo --real`); with pre-event dropout it also maps where a pre-event mosaic has gaps
DEMO_BANDS = ("blue", "green", "red")
DEMO_PRE_DROPOUT = 0.1
# haze on half the acquisitions (chips.haze): real downloads are often top-of-atmosphere or hazy;
# chosen by the transfer score on a real event, not by the synthetic one (README, "A real event,
# local, transfer, ..."; `python benchmarks/real_event.py --haze 0.5`)
DEMO_HAZE = 0.5
# terrain dropout: the model also maps post-only tiles (Chattogram's) and leans less on the synthetic
# terrain; on Iburi, unseen, it raised the synthetic-only model's MCC 0.327 -> 0.373 (AP 0.393 -> 0.439)
DEMO_STREAM_DROPOUT = {"terrain": 0.2}
#: The demo data's credit line: all of it is made by the package (imagery, DEM and inventory).
DEMO_ATTRIBUTION = "Synthetic demo imagery, DEM and inventory made by landslide-dask (no real place)"


def demo_train_config(cubes: list[str], out: Path, epochs: int = DEMO_EPOCHS) -> TrainConfig:
    from ..train.config import TrainConfig

    return TrainConfig(
        cubes=cubes,
        out=str(out),
        window=128,
        stride=64,
        block=384,
        batch_size=8,
        epochs=epochs,
        steps_per_epoch=DEMO_STEPS,
        lr=1e-3,
        patience=epochs,
        model=DEMO_MODEL,
        bands=DEMO_BANDS,
        pre_dropout=DEMO_PRE_DROPOUT,
        haze=DEMO_HAZE,
        stream_dropout=dict(DEMO_STREAM_DROPOUT),
    )


@contextlib.contextmanager
def local_client(workers: int):
    """A LocalCluster of ``workers`` single-threaded processes on loopback and its Client."""
    from distributed import Client

    from ..clusters.start import local_cluster
    from ..common.logs import quiet_distributed

    with local_cluster(workers, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        quiet_distributed(client)
        yield client


def run_demo(
    data: Path, out: Path, workers: int = 2, size_km: float = 10.0, epochs: int = DEMO_EPOCHS
) -> dict[str, Path]:
    """Make the demo data if absent, serve it as a STAC API, build every region's cube, train a
    combined model on all regions but the last with DDP over the workers, then map the last region,
    which it never saw: probability, polygons, metrics and a map."""
    import pandas as pd

    from ..cube.build import CubeSpec, build_cube
    from ..predict import predict
    from ..predict.polygons import polygonize
    from ..predict.report import evaluate_map
    from ..products import write_products
    from ..stac.server import serve_stac
    from ..train.experiment import markdown_table, region_name, score_row
    from ..train.loop import train
    from ..train.metrics import Confusion
    from .synth import make_demo_data

    t0 = time.perf_counter()
    if not (data / "regions.json").exists():
        print(f"[demo] generating synthetic event regions in {data} ...", flush=True)
        make_demo_data(data, size_km=size_km)
        print(f"[demo] demo data made in {time.perf_counter() - t0:.0f} s", flush=True)
    regions = json.loads((data / "regions.json").read_text())
    (out / "cubes").mkdir(parents=True, exist_ok=True)
    cubes: dict[str, Path] = {}
    with serve_stac(data) as url, local_client(workers) as client:
        print(
            f"[demo] STAC API at {url}; Dask cluster with {workers} workers, dashboard {client.dashboard_link}",
            flush=True,
        )
        for r in regions:
            done = out / "cubes" / f"{r['name']}.zarr"
            if (done / "zarr.json").exists():  # written atomically: it exists only when complete
                print(f"[demo] cube for {r['name']}: reusing {done} (delete it to rebuild)", flush=True)
                cubes[r["name"]] = done
                continue
            t_cube = time.perf_counter()
            print(f"[demo] cube for {r['name']} (event {r['event_date']}, EPSG:{r['epsg']})", flush=True)
            spec = CubeSpec(
                stac_url=url,
                event_date=date.fromisoformat(r["event_date"]),
                aoi=data / r["aoi"],
                out=out / "cubes" / f"{r['name']}.zarr",
                inventory=data / r["inventory"],
                inventory_area=data / r["inventory_area"],
                chunk=SCENE_CHUNK,
            )
            cubes[r["name"]] = build_cube(spec)
            print(f"[demo] cube for {r['name']} done in {time.perf_counter() - t_cube:.0f} s", flush=True)
        print()
        print(region_table(regions, cubes), flush=True)
        t_cubes = time.perf_counter() - t0

        *seen, unseen = [str(cubes[r["name"]]) for r in regions]
        print(
            f"\n[demo] training a combined model on {', '.join(region_name(c) for c in seen)} "
            f"with DDP over {workers} Dask workers; {region_name(unseen)} is held out",
            flush=True,
        )
        cfg = demo_train_config(seen, out / "model", epochs)
        res = train(client, cfg)
        t_train = time.perf_counter() - t0 - t_cubes

        name = region_name(unseen)
        print(f"\n[demo] mapping {name} with blended overlapping windows on the cluster", flush=True)
        maps = out / "map"
        maps.mkdir(exist_ok=True)
        pred = predict(unseen, res["best"], maps / f"{name}-probability.zarr", client=client)
    polys = polygonize(pred, maps / f"{name}-landslides")
    rep = evaluate_map(pred, unseen, maps, inventory=data / regions[-1]["inventory"], polygons=polys)
    products = write_products(
        pred,
        maps / f"{name}-products",
        polygons=polys,
        inventory=data / regions[-1]["inventory"],
        attribution=DEMO_ATTRIBUTION,
        credit_sources=False,
        title=f"Demo: landslides of {name} (synthetic)",
    )
    t_map = time.perf_counter() - t0 - t_cubes - t_train
    px, ob = rep["pixel"], rep["object"]
    table = pd.DataFrame(
        [
            score_row(
                name,
                "combined (unseen)",
                [region_name(c) for c in seen],
                Confusion(
                    px["tp"],
                    px["fp"],
                    px["fn"],
                    px["tn"],
                    threshold=rep["threshold"],
                    threshold_rule=rep["threshold_source"],
                ),
                res["best"],
            )
        ]
    )
    table.to_csv(out / "unseen_region.csv", index=False)
    print(
        f"\n[demo] the combined model on the unseen region {name} (pixels; threshold {rep['threshold']:.2f}: "
        f"{rep['threshold_source']}):\n"
    )
    print(markdown_table(table))
    print(
        f"\n[demo] {len(polys)} landslide polygons >= 400 m²; against the inventory: object precision "
        f"{ob['precision']:.2f}, recall {ob['recall']:.2f} ({ob['detected_reference']} of {ob['n_reference']} "
        f"landslides detected)"
    )
    print(f"[demo] cubes and quicklooks in {out / 'cubes'}; model, metrics and curves in {out / 'model'}")
    print(f"[demo] probability (zarr), polygons (GeoParquet + GeoPackage), report and map.png in {maps}")
    print(
        f"[demo] products (COGs with QGIS styles, polygons, STAC item) in {products['item'].parent}; "
        f"open the offline web map: {products['web_map']}"
    )
    print(
        f"[demo] done in {time.perf_counter() - t0:.0f} s (cubes {t_cubes:.0f} s, training {t_train:.0f} s, "
        f"mapping and evaluation {t_map:.0f} s)"
    )
    return cubes


def run_demo_real(
    folder: Path, data: Path, out: Path, workers: int = 2, size_km: float = 10.0, epochs: int = DEMO_EPOCHS
) -> dict:
    """Map a real event folder (``../shared/data/iburi_2018``) with the model the demo trained
    (training it first if ``OUT/model/best.pt`` is absent) and score the map against the event's
    inventory; the map PNG carries the inventory's attribution."""
    from ..events import event_of, map_event

    event = event_of(folder)  # a wrong folder fails before any training
    t0 = time.perf_counter()
    model = out / "model" / "best.pt"
    if not model.exists():
        print(f"[demo] no demo model at {model}: running the region demo first to train it", flush=True)
        run_demo(data, out, workers=workers, size_km=size_km, epochs=epochs)
    dest = out / "real" / event.name
    print(f"[demo] mapping the real event {event.title} from {folder} with {model} (never trained on it)", flush=True)
    with local_client(workers) as client:
        rep = map_event(folder, model, dest, client=client, name="demo-model")
    px, ob, cov = rep["pixel"], rep["object"], rep["coverage"]
    print(f"[demo] against the inventory ({event.labelled_note}), {rep['evaluated_km2']:.1f} km² scored:")
    from ..train.metrics import fmt

    print(
        "[demo] pixels:  "
        + " ".join(f"{k} {fmt(px[k])}" for k in ("mcc", "precision", "recall", "f1", "iou"))
        + f" (average precision {fmt(px.get('average_precision'))})"
    )
    print(f"[demo] threshold {rep['threshold']:.3f}: {rep['threshold_source']}")
    print(
        f"[demo] objects: precision {ob['precision']:.3f} recall {ob['recall']:.3f} ({ob['detected_reference']} "
        f"of {ob['n_reference']} landslides detected)"
    )
    if cov.get("no_pre"):
        how = "mapped from post-event imagery and terrain" if cov["no_pre_mapped"] else "NOT mapped"
        print(
            f"[demo] {cov['no_pre'] / max(cov['mapped'] + cov.get('no_pre_unmapped', 0), 1):.0%} of the scene "
            f"has no pre-event image: {how} (layer 'no_pre')"
        )
    print(f"[demo] map beside the post-event image: {rep['files']['map']}; report {rep['files']['report_md']}")
    print(
        "[demo] products (COGs with QGIS styles, polygons, STAC item) in "
        f"{Path(rep['files']['products_item']).parent}; "
        f"open the offline web map: {rep['files']['products_web_map']}"
    )
    print(f"[demo] data: {event.attribution}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s")
    return rep


def country_object_scores(polygons: Path, inventory: Path, aoi_bbox: list[float], epsg: int) -> dict:
    """Object precision/recall of country polygons (any CRS) against an inventory GeoJSON.

    Both are reprojected to ``epsg`` (the country's home UTM zone; the distortion across a
    neighbouring zone's part is far below what the overlap rules care about) and matched with
    :func:`landslide_dask.predict.report.object_metrics`; all take part in the matching, but predictions
    and inventory landslides are counted only when their ``point_on_surface`` lies inside
    ``aoi_bbox`` (EPSG:4326: the mapped area), as :func:`landslide_dask.predict.report.evaluate_map` does.
    """
    import geopandas as gpd
    import shapely

    from ..predict.report import object_metrics

    pred = gpd.read_parquet(polygons) if str(polygons).endswith(".parquet") else gpd.read_file(polygons)
    ref = gpd.read_file(inventory)
    box = shapely.box(*aoi_bbox)

    def counted(gdf):
        return shapely.within(shapely.point_on_surface(gdf.to_crs(4326).geometry.values), box) if len(gdf) else None

    crs = f"EPSG:{epsg}"
    p = pred.to_crs(crs).geometry.values if len(pred) else []
    r = ref.to_crs(crs).geometry.values if len(ref) else []
    res = object_metrics(p, r, pred_counted=counted(pred), ref_counted=counted(ref))
    res.pop("_flags", None)
    return res


def run_demo_country(
    data: Path,
    out: Path,
    workers: int = 2,
    size_km: float = 10.0,
    epochs: int = DEMO_EPOCHS,
    country_data: Path | None = None,
    cell_km: float = 10.0,
) -> dict:
    """Map the demo country end to end with the demo's model: train it (the region demo) if
    ``OUT/model/best.pt`` is absent, generate the country (``DATA/country``) if absent, serve it
    as a STAC API, run it as a country job on a LocalCluster and score the merged polygons
    against the country's inventory. Returns the outputs, the job summary and the scores."""
    from ..jobs.country import run_job
    from ..jobs.spec import parse_jobspec
    from ..stac.server import serve_stac
    from .synth import make_demo_country

    t0 = time.perf_counter()
    model = out / "model" / "best.pt"
    if not model.exists():
        print(f"[demo] no demo model at {model}: running the region demo first to train it", flush=True)
        run_demo(data, out, workers=workers, size_km=size_km, epochs=epochs)
    cdata = Path(country_data) if country_data is not None else data / "country"
    if not (cdata / "regions.json").exists():
        print(f"[demo] generating the demo country in {cdata} ...", flush=True)
        make_demo_country(cdata, echo=lambda m: print(m, flush=True))
    country = json.loads((cdata / "regions.json").read_text())[0]
    if country.get("kind") != "country":
        raise SystemExit(
            f"{cdata / 'regions.json'} describes regions, not a country: "
            f"make one with `landslide-dask make-demo-data {cdata} --country`"
        )
    t_data = time.perf_counter() - t0
    job_out = out / "country"
    print(
        f"[demo] mapping the country {country['name']}: {country['area_km2']:,.0f} km², bbox {country['bbox']}, "
        f"imagery in {', '.join(f'EPSG:{e}' for e in country['imagery_epsg'])}, "
        f"{len(country.get('epicentres', []))} event clusters, with {model}",
        flush=True,
    )
    with serve_stac(cdata) as url, local_client(workers) as client:
        print(
            f"[demo] STAC API at {url}; Dask cluster with {workers} workers, dashboard {client.dashboard_link}",
            flush=True,
        )
        spec = parse_jobspec(
            {
                "name": "demo-country",
                "area": {"bbox": country["bbox"]},
                "event": {"date": country["event_date"]},
                "stac": {"url": url},
                "model": str(model.resolve()),
                "cell_size_km": cell_km,
                "output": str(job_out.resolve()),
                "retries": 1,
            },
            base_dir=out,
        )
        # The STAC URL (a free port) is part of the job's fingerprint: a rerun starts over.
        res = run_job(spec, client, progress=True, force=True, concurrency=workers)
    t_job = time.perf_counter() - t0 - t_data
    print(f"\n[demo] {res.summary}")
    sec = res.seconds
    print(
        "[demo] stage seconds summed over cells: "
        + ", ".join(f"{k} {sec.get(k, 0.0):.0f}" for k in ("search", "cube", "predict", "cog", "polygons"))
        + f"; merge {sec.get('merge', 0.0):.1f} s; job wall {sec.get('wall', t_job):.0f} s "
        f"= {country['area_km2'] / max(sec.get('wall', t_job), 1e-9) * 3600:,.0f} km²/h on {workers} workers"
    )
    scores = None
    inv = cdata / country["inventory"]
    poly = res.outputs.get("polygons_parquet")
    if inv.exists() and poly and Path(poly).exists():
        scores = country_object_scores(Path(poly), inv, country["bbox"], country["epsg"])
        print(
            f"[demo] {res.n_polygons} merged landslide polygons >= 400 m²; against the country inventory: "
            f"object precision {scores['precision']:.2f}, recall {scores['recall']:.2f} "
            f"({scores['detected_reference']} of {scores['n_reference']} landslides detected, "
            f"{scores['tp_predicted']} of {scores['n_predicted']} polygons match one)"
        )
        (job_out / "scores.json").write_text(json.dumps(scores, indent=1, default=float))
    print(f"[demo] country polygons (GeoParquet + GeoPackage, EPSG:4326): {res.outputs.get('polygons_parquet')}")
    print(
        f"[demo] per-zone probability mosaics: {res.outputs.get('mosaic_index')}; "
        f"per-cell summary: {res.outputs.get('summary_csv')}"
    )
    print(f"[demo] overview map: {res.outputs.get('overview_png')}")
    print(
        f"[demo] the country as one mosaic (COGs, EPSG:3857): {res.outputs.get('country_probability')}, "
        f"{res.outputs.get('country_not_mapped')}; STAC item {res.outputs.get('item')}"
    )
    print(f"[demo] open the offline web map: {res.outputs.get('web_map')}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s (model and data {t_data:.0f} s, country job {t_job:.0f} s)")
    return {
        "outputs": res.outputs,
        "summary": res.summary,
        "seconds": res.seconds,
        "scores": scores,
        "failed": res.failed,
    }
