"""landslide-dask: event landslide maps from STAC imagery and a DEM, one sub-command per pipeline stage
(in pipeline order), plus the demo."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LandslideDaskError, UsageError

__all__ = ["main", "build_parser"]

if TYPE_CHECKING:
    from .train.config import TrainConfig


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def _dropouts(v: str) -> dict[str, float]:
    """``terrain=0.2,post=0.1`` -> {"terrain": 0.2, "post": 0.1}."""
    out = {}
    for part in filter(None, v.split(",")):
        name, _, p = part.partition("=")
        try:
            out[name.strip()] = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: write STREAM=PROBABILITY, e.g. terrain=0.2") from None
    return out


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def cmd_make_demo_data(args: argparse.Namespace) -> None:
    from .demo.synth import make_demo_country, make_demo_data

    if args.country:
        try:
            bbox = tuple(float(v) for v in _csv(args.bbox)) if args.bbox else None
        except ValueError:
            bbox = ()
        if bbox is not None and len(bbox) != 4:
            raise UsageError(f"--bbox must be W,S,E,N in degrees, got {args.bbox!r}")
        out = make_demo_country(args.dir, seed=args.seed, bbox=bbox, echo=print)
        print(f"demo country written to {out} (serve it with: landslide-dask serve-stac {out}; "
              f"map it with: landslide-dask demo --country)")
        return
    out = make_demo_data(args.dir, seed=args.seed, size_km=args.size_km, n_regions=args.regions)
    print(f"demo regions written to {out} (serve them with: landslide-dask serve-stac {out})")


def cmd_serve_stac(args: argparse.Namespace) -> None:
    from .stac.server import run_stac_server

    run_stac_server(Path(args.dir), args.port)


def cmd_catalog(args: argparse.Namespace) -> None:
    from .stac.catalog import catalog_geotiffs

    dates = {}
    for kv in args.date or ():
        key, sep, value = kv.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--date {kv!r}: write ITEM=YYYY-MM-DD (ITEM: a folder or file name)")
        dates[key] = value
    out = catalog_geotiffs(Path(args.dir), Path(args.out), collection=args.collection,
                           bands=list(args.bands) if args.bands else None, datetime=args.datetime,
                           nodata=args.nodata, pattern=args.pattern, group=args.group, dates=dates,
                           date_pattern=args.date_pattern, static=args.static, replace=args.replace,
                           dn_scale=args.dn_scale, dn_offset=args.dn_offset)
    import json

    n = len(json.loads((out / "stac" / "items" / f"{args.collection}.json").read_text())["features"])
    print(f"STAC collection {args.collection!r} ({n} items) written under {out}/stac "
          f"(cube it with: landslide-dask cube --stac {out} --collection {args.collection} ...)")


def cmd_cube(args: argparse.Namespace) -> None:
    from .cube.build import CubeSpec, build_cube

    spec = CubeSpec(
        stac_url=args.stac, event_date=args.event_date, aoi=Path(args.aoi), out=Path(args.out),
        inventory=Path(args.inventory) if args.inventory else None,
        inventory_area=Path(args.inventory_area) if args.inventory_area else None,
        pre_days=args.pre_days, post_days=args.post_days, bands=args.bands, collection=args.collection,
        scl_asset=None if args.no_cloud_mask else args.scl_asset,
        dem_collection=None if args.no_dem else args.dem_collection, dem_asset=args.dem_asset,
        max_cloud=args.max_cloud, resolution=args.resolution, epsg=args.epsg, chunk=args.chunk,
        post_only=args.post_only, sign=args.sign, exclude_items=args.exclude_item or (),
    )
    out = build_cube(spec, progress=not args.quiet)
    print(f"cube written to {out} (quicklook {out.with_suffix('.png')})")


def _default(cls, name: str):
    """The default of dataclass field ``name`` of ``cls``: the one definition the CLI shows and uses."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _train_config(args: argparse.Namespace, cubes: list[str], out: str) -> "TrainConfig":
    """A TrainConfig of the options given; every other field keeps its dataclass default."""
    from .train.config import TrainConfig

    model = {}
    if args.widths:
        model["encoder_widths"] = list(args.widths)
    streams = tuple(args.streams) if args.streams else _default(TrainConfig, "streams")
    if args.stem_width:
        model["stem_widths"] = {s: args.stem_width for s in streams}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if f.name not in ("cubes", "out", "model") and getattr(args, f.name, None) is not None}
    given.update(streams=streams, bands=tuple(args.bands) if args.bands else None, model=model,
                 amp=not args.no_amp, progress=not args.quiet)
    return TrainConfig(cubes=cubes, out=out, **given)


def _scheduler_security(args: argparse.Namespace):
    """The credentials for --scheduler (--tls-ca-file, --tls-cert, --tls-key; None: distributed's
    configuration), refusing security options that would do nothing."""
    files = (args.tls_ca_file, args.tls_cert, args.tls_key)
    if not args.scheduler:
        if any(files):
            raise UsageError("--tls-ca-file, --tls-cert and --tls-key are the credentials of a running cluster "
                             "(--scheduler tls://...); a cluster started here makes its own")
        return None
    if args.insecure:
        raise UsageError("--insecure starts a cluster on plain TCP; with --scheduler the address says how to "
                         "connect (tls:// or tcp://)")
    if not any(files):
        return None
    if not (args.tls_ca_file and args.tls_cert):
        raise UsageError("give --tls-ca-file and --tls-cert (and --tls-key unless the key is in the certificate "
                         "file): the CA of the cluster and this client's certificate")
    from .clusters.security import credentials_from_files

    return credentials_from_files(args.tls_ca_file, args.tls_cert, args.tls_key)


def _client(args: argparse.Namespace):
    """A context manager yielding a client: --scheduler, a --cluster definition, or a LocalCluster of
    --workers processes on loopback; a cluster started here speaks TLS unless --insecure, and is
    torn down on exit."""
    from .clusters.definitions import ClusterDef
    from .clusters.start import start_cluster

    if getattr(args, "cluster", None) and args.scheduler:
        raise UsageError("--cluster and --scheduler exclude each other: give one")
    security = _scheduler_security(args)
    if args.scheduler:
        return start_cluster(scheduler=args.scheduler, security=security)
    if getattr(args, "cluster", None):
        return start_cluster(args.cluster, overrides={"tls": False} if args.insecure else None)
    return start_cluster(ClusterDef.from_dict({"kind": "local", "workers": args.workers or 2, "tls": not args.insecure,
                                              "options": {"dashboard_address": "127.0.0.1:0"}}, "--workers"))


def cmd_train(args: argparse.Namespace) -> None:
    from .train.experiment import train_strategy

    cfg = _train_config(args, list(args.cube), args.out)
    with _client(args) as client:
        res = train_strategy(client, args.strategy, list(args.cube), cfg)
    print(f"best checkpoint {res['best']} (validation MCC {res['best_mcc']:.3f} at threshold "
          f"{res['threshold']:.2f}); curves in {Path(res['best']).parent / 'curves.png'}")


def cmd_experiment(args: argparse.Namespace) -> None:
    from .train.experiment import leave_one_out, markdown_table

    cfg = _train_config(args, list(args.cube), args.out)
    with _client(args) as client:
        table = leave_one_out(client, list(args.cube), cfg, strategies=tuple(args.strategies),
                              local=not args.no_local)
    print(markdown_table(table))
    print(f"\ntable written to {Path(args.out) / 'results.csv'} and results.md")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .train.scoring import evaluate
    from .train.metrics import fmt

    conf = evaluate(args.model, args.cube, threshold_rule=args.threshold_rule)
    s = conf.scores()
    print(" ".join(f"{k} {fmt(s[k])}" for k in ("mcc", "precision", "recall", "f1", "iou")))
    if not conf.positives:
        print("the cube's labels hold no landslide pixel: MCC, recall, F1 and IoU are undefined here")
    how = ("the scene rule: Otsu on this cube's map, no labels; the model never trained on this region"
           if conf.threshold_rule == "scene" else "the checkpoint's validation threshold")
    print(f"tp {s['tp']} fp {s['fp']} fn {s['fn']} tn {s['tn']} (pixels; threshold {conf.threshold:.3f}, {how})")
    from .predict.thresholds import is_seen
    from .train.checkpoint import load_checkpoint

    regions = load_checkpoint(args.model).get("regions")
    if regions and is_seen(args.cube, regions):
        print("note: the model trained on this region, so these pixels include its training blocks and the score "
              "flatters it; a fair figure is on its test blocks only (`landslide-dask experiment`, or "
              "benchmarks/real_event.py for a real event)")


def cmd_model_info(args: argparse.Namespace) -> None:
    from .train.model import ModelConfig, describe
    from .train.checkpoint import load_checkpoint

    if args.model:
        ck = load_checkpoint(args.model)
        config = ModelConfig.from_dict(ck["model_config"])
        print(describe(config, args.size))
        print(f"  bands {ck['bands']}; threshold {ck['threshold']:.2f}; trained on "
              f"{', '.join(ck['provenance']['inventories'])} ({ck['provenance']['strategy']}, "
              f"{ck['provenance']['epochs']} epochs)")
        return
    channels = {"pre": args.bands, "post": args.bands, "terrain": 2}
    model = {"encoder_widths": tuple(args.widths)} if args.widths else {}
    print(describe(ModelConfig(streams={s: channels[s] for s in args.streams}, **model), args.size))


def cmd_import_tiles(args: argparse.Namespace) -> None:
    from .cube.read import open_cube
    from .cube.tiles import import_tiles

    out = import_tiles(Path(args.source), Path(args.out), bands=tuple(args.bands), region=args.region)
    a = open_cube(out).attrs
    b = a["blobs"]
    print(f"{a['source_tiles']} tiles -> {out} ({a['crs']}, {a['resolution']:g} m): {b['landslide']} landslide and "
          f"{b['non_landslide']} non-landslide sample blobs (source: {a['blobs_source']['landslide']} and "
          f"{a['blobs_source']['non_landslide']}); unlabelled pixels are unknown; streams: post only")


def cmd_import_patches(args: argparse.Namespace) -> None:
    from .cube.read import open_cube
    from .cube.patches import import_patches

    out = import_patches(Path(args.source), Path(args.out), fmt=args.format, bands=args.bands,
                         masks=Path(args.masks) if args.masks else None, require_masks=not args.no_masks,
                         ignore_value=args.ignore_value, gap=args.gap, chunk=args.chunk,
                         progress=not args.quiet, quicklook=not args.no_quicklook)
    a = open_cube(out).attrs
    r = a["recommended_index"]
    ql = "" if args.no_quicklook else f" (quicklook {out.with_suffix('.png')})"
    print(f"{a['patch_count']} patches ({a['patch_unlabelled']} without a mask) written to {out}{ql}")
    print(f"train on it with --streams post,terrain --window {r['size']} --stride {r['stride']} "
          f"--block {r['block']} --min-usable {r['min_usable']:g}")


def cmd_predict(args: argparse.Namespace) -> None:
    from contextlib import nullcontext

    from .predict import coverage, open_prediction, predict

    with (_client(args) if args.scheduler or args.workers or args.cluster else nullcontext()) as client:
        out = predict(args.cube, args.model, args.out, client=client, window=args.window, overlap=args.overlap,
                      batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                      overwrite=args.overwrite, threshold_rule=args.threshold_rule)
    pred = open_prediction(out)
    a = pred.attrs
    print(f"probability written to {out} (window {a['window']}, overlap {a['overlap']}, "
          f"overhead {a['overhead']:.2f})")
    print(f"threshold {a['threshold']:.3f}: {a.get('threshold_rule', 'validation')}")
    cov = coverage(pred)
    if cov.get("no_pre_mapped"):
        print(f"{cov['no_pre_mapped']} px ({cov['no_pre_mapped'] / max(cov['mapped'], 1):.1%} of the map) have "
              "no pre-event image and were mapped from post-event imagery and terrain (layer 'no_pre')")
    if cov.get("no_pre_unmapped"):
        print(f"warning: {cov['no_pre_unmapped']} px with post-event imagery were NOT mapped: they have no "
              "pre-event image and the model was trained without --pre-dropout (layer 'no_pre')")
    if not args.no_products:
        _write_products(out, Path(args.products) if args.products else products_dir(out), args)


def products_dir(prediction: Path) -> Path:
    """Where a prediction's products go by default: beside it, its name without ``.zarr``."""
    return prediction.with_name(prediction.name.removesuffix(".zarr") + "-products")


def _write_products(prediction: Path, out: Path, args: argparse.Namespace) -> None:
    from .products import write_products

    files = write_products(prediction, out, threshold=getattr(args, "threshold", None),
                           inventory=getattr(args, "inventory", None),
                           attribution=getattr(args, "attribution", None) or "", title=getattr(args, "title", None))
    print(f"products in {out}: probability.tif and not-mapped.tif (COGs with QGIS styles), landslides.gpkg / "
          f".parquet, item.json (STAC)")
    print(f"offline web map: {files['web_map']} (open it in a browser; no network needed)")


def cmd_products(args: argparse.Namespace) -> None:
    out = Path(args.prediction)
    _write_products(out, Path(args.out) if args.out else products_dir(out), args)


def cmd_polygons(args: argparse.Namespace) -> None:
    from .predict.polygons import output_paths, polygonize

    gdf = polygonize(args.prediction, args.out, threshold=args.threshold, min_area_m2=args.min_area,
                     simplify_m=args.simplify)
    parquet, gpkg = output_paths(args.out)
    print(f"{len(gdf)} polygons (threshold {gdf.attrs['threshold']:.3f}, minimum area {args.min_area:g} m²) "
          f"written to {parquet} and {gpkg}")


def cmd_evaluate_map(args: argparse.Namespace) -> None:
    from .predict.report import evaluate_map

    rep = evaluate_map(args.prediction, args.cube, args.out, inventory=args.inventory, polygons=args.polygons,
                       threshold=args.threshold, min_area_m2=args.min_area, attribution=args.attribution,
                       beside=args.beside)
    px, ob = rep["pixel"], rep["object"]
    from .train.metrics import fmt

    print("pixels:  " + " ".join(f"{k} {fmt(px[k])}" for k in ("mcc", "precision", "recall", "f1", "iou"))
          + f" average precision {fmt(px.get('average_precision'))}")
    print(f"threshold {rep['threshold']:.3f}: {rep['threshold_source']}")
    if rep.get("blobs"):
        b = rep["blobs"]
        print(f"labelled blobs: {b['found']} of {b['landslide_blobs']} landslide samples found, {b['rejected']} of "
              f"{b['non_landslide_blobs']} non-landslide samples rejected (blob MCC {fmt(b['mcc'])})")
    print(f"objects: precision {ob['precision']:.3f} recall {ob['recall']:.3f} "
          f"({ob['detected_reference']}/{ob['n_reference']} landslides detected, "
          f"{ob['fp_predicted']} of {ob['n_predicted']} predicted objects false)")
    print(f"report {rep['files']['report_md']} (+ report.json), map {rep['files']['map']}")


def cmd_submit(args: argparse.Namespace) -> int:
    from .clusters.start import start_cluster
    from .jobs.country import check_output, run_job
    from .jobs.spec import load_jobspec

    spec = load_jobspec(args.job)
    spec.check_paths()  # a bad spec or output fails here, before any cluster starts
    check_output(spec, args.scratch)
    cluster = args.cluster or spec.cluster
    if args.scheduler is None and cluster is None:
        raise LandslideDaskError(f"{args.job} names no cluster: pass --cluster NAME.yaml or a shipped example "
                                 "(local, slurm, ...; see `landslide-dask cluster-example`), --scheduler "
                                 "tls://HOST:PORT for a running one, or set `cluster:` in the job spec")
    security = _scheduler_security(args)
    overrides = ({"workers": args.workers} if args.workers else {}) | ({"tls": False} if args.insecure else {})
    with start_cluster(None if args.scheduler else cluster, scheduler=args.scheduler, security=security,
                       overrides=overrides or None) as client:
        result = run_job(spec, client, progress=not args.quiet, force=args.force, concurrency=args.concurrency,
                         scratch=args.scratch)
    return 1 if result.failed else 0  # failed cells: non-zero exit (a rerun retries them)


def cmd_cluster_example(args: argparse.Namespace) -> None:
    """Print a shipped example cluster definition (to copy and edit), or list them."""
    from .clusters.shipped import EXAMPLES, example_names

    if args.name is None:
        for name in example_names():
            first = (EXAMPLES / f"{name}.yaml").read_text().splitlines()[0].removeprefix("# Cluster definition: ")
            print(f"{name:<11} {first}")
        print("\nrun one as shipped with --cluster NAME; copy one to edit: "
              "landslide-dask cluster-example NAME > my.yaml")
        return
    sys.stdout.write((EXAMPLES / f"{args.name}.yaml").read_text())


def cmd_demo(args: argparse.Namespace) -> int | None:
    from .demo.run import run_demo, run_demo_country, run_demo_real

    if args.country and args.real:
        raise UsageError("--country and --real exclude each other: give one")
    if args.real:
        run_demo_real(Path(args.real), Path(args.data), Path(args.out), workers=args.workers, size_km=args.size_km,
                      epochs=args.epochs)
        return None
    if args.country:
        res = run_demo_country(Path(args.data), Path(args.out), workers=args.workers, size_km=args.size_km,
                               epochs=args.epochs, country_data=Path(args.country_data) if args.country_data else None)
        return 1 if res["failed"] else 0
    run_demo(Path(args.data), Path(args.out), workers=args.workers, size_km=args.size_km, epochs=args.epochs)
    return None


def _demo_data_commands(sub) -> None:
    """Sub-commands of synthetic demo data."""
    s = sub.add_parser("make-demo-data", help="generate the synthetic demo event regions (COGs + STAC)")
    s.add_argument("dir", help="folder to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-km", type=float, default=6.0, help="side of each region's area (default 6 km)")
    s.add_argument("--regions", type=int, default=4, help="number of regions (default 4)")
    s.add_argument("--country", action="store_true",
                   help="generate the demo country instead: ~2,180 km² across UTM 44N/45N, 4 event clusters")
    s.add_argument("--bbox", default=None, metavar="W,S,E,N",
                   help="with --country: its extent in degrees (default 83.75,28.0,84.25,28.4)")
    s.set_defaults(func=cmd_make_demo_data)


def _stac_commands(sub) -> None:
    """Sub-commands of stage 1a: a STAC API over a folder, STAC items for your own GeoTIFFs."""
    s = sub.add_parser("serve-stac", help="serve a STAC folder (DIR/stac/...) as a STAC API on loopback")
    s.add_argument("dir", help="folder holding stac/collections/*.json and stac/items/*.json")
    s.add_argument("--port", type=int, default=7822)
    s.set_defaults(func=cmd_serve_stac)

    s = sub.add_parser("catalog", help="write STAC items for existing GeoTIFFs, so they can be searched and cubed")
    s.add_argument("dir", help="folder of GeoTIFFs (searched recursively)")
    s.add_argument("--out", required=True, help="folder for the STAC collection (and per-band VRTs)")
    s.add_argument("--collection", default="local-geotiffs", help="collection id (default local-geotiffs)")
    s.add_argument("--bands", type=_csv, help="band names in file order, e.g. red,green,blue,nir")
    s.add_argument("--datetime", help="acquisition time (ISO 8601) when the files carry none")
    s.add_argument("--nodata", type=float, help="value meaning 'no data' when the files declare none (e.g. 0)")
    s.add_argument("--pattern", default="**/*.tif", help="glob under DIR (default **/*.tif)")
    s.add_argument("--group", help="one item per scene: 'folder' (the files of a folder, e.g. pre-event/B02.tif, "
                                   "B03.tif) or a regex whose group (?P<item>...) the files of a scene share; "
                                   "single-band files are named by their Sentinel-2 band code (B02 -> blue)")
    s.add_argument("--date", action="append", metavar="ITEM=DATE",
                   help="acquisition date of one item (folder or file name); repeat for each")
    s.add_argument("--date-pattern", help="regex finding the date in each path, e.g. '(?P<date>\\d{8})'")
    s.add_argument("--static", action="store_true", help="items without an acquisition date (a DEM)")
    s.add_argument("--replace", action="store_true",
                   help="start the collection anew (default: add to it, replacing items of the same id)")
    s.add_argument("--dn-scale", type=float,
                   help="reflectance = DN x scale + offset, recorded on every asset (default: not recorded, read "
                        "as 0.0001)")
    s.add_argument("--dn-offset", type=float,
                   help="see --dn-scale; Sentinel-2 L2A from 2022 on: -0.1, before: 0 (default: not recorded, read as 0)")
    s.set_defaults(func=cmd_catalog)


def _cube_commands(sub) -> None:
    """Sub-commands of stage 1b: cubes from STAC, and from benchmark patch datasets."""
    s = sub.add_parser("cube", help="build an analysis-ready cube (zarr) for an event and an area")
    s.add_argument("--stac", required=True,
                   help="where the items are: a STAC API URL (Earth Search, Planetary Computer, a local serve-stac), "
                        "or, with no server, a folder written by `landslide-dask catalog`, a static STAC catalog "
                        "folder (catalog.json) or an ItemCollection file (.json/.geojson)")
    s.add_argument("--event-date", required=True, type=_date, help="YYYY-MM-DD")
    s.add_argument("--aoi", required=True, help="area of interest: GeoJSON / GeoPackage / Shapefile, or W,S,E,N "
                                              "in degrees")
    s.add_argument("--out", required=True, help="output cube, e.g. region.zarr")
    s.add_argument("--inventory", help="landslide polygons for training/evaluation labels")
    s.add_argument("--inventory-area", help="polygon of the area the inventory covers (default: the AOI)")
    from .cube.spec import CubeSpec

    def cube_opt(flag: str, field: str, help: str, **kw) -> None:
        d = _default(CubeSpec, field)
        shown = ",".join(d) if isinstance(d, tuple) else d
        s.add_argument(flag, default=d, help=f"{help} (default {shown})", **kw)

    cube_opt("--pre-days", "pre_days", "pre-event window in days", type=int)
    cube_opt("--post-days", "post_days", "post-event window in days", type=int)
    cube_opt("--bands", "bands", "imagery bands by asset key, Sentinel-2 code or common name (B02 and blue find "
             "the same band on Planetary Computer and Earth Search)", type=_csv)
    cube_opt("--collection", "collection", "imagery collection")
    cube_opt("--scl-asset", "scl_asset", "scene-classification asset used for cloud masking")
    s.add_argument("--no-cloud-mask", action="store_true", help="imagery has no SCL band (e.g. own GeoTIFFs)")
    cube_opt("--dem-collection", "dem_collection", "DEM collection")
    cube_opt("--dem-asset", "dem_asset", "DEM asset key")
    s.add_argument("--no-dem", action="store_true", help="build without slope/hillshade")
    s.add_argument("--max-cloud", type=float, help="skip scenes with eo:cloud_cover above this percent")
    cube_opt("--resolution", "resolution", "pixel size in metres", type=float)
    s.add_argument("--epsg", type=int, help="projected CRS of the cube (default: UTM zone of the AOI)")
    cube_opt("--chunk", "chunk", "spatial chunk size in pixels", type=int)
    s.add_argument("--post-only", action="store_true", help="no pre-event composite (none available)")
    s.add_argument("--sign", choices=["planetary-computer"], help="sign asset URLs (Planetary Computer)")
    s.add_argument("--exclude-item", action="append", help="STAC item id to leave out (repeatable)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_cube)

    s = sub.add_parser("import-patches", help="benchmark patches (Landslide4Sense .h5, image/mask folders) -> one cube")
    s.add_argument("source", help="dataset folder holding img/ and mask/ (e.g. TrainData), or a folder of images")
    s.add_argument("--out", required=True, help="output cube, e.g. l4s-train.zarr")
    s.add_argument("--format", choices=["l4s", "folder"], default="l4s",
                   help="l4s: Landslide4Sense image_N.h5/mask_N.h5; folder: PNG/GeoTIFF images + masks by file stem")
    s.add_argument("--bands", help='preset (l4s), JSON text or a JSON file mapping 0-based channels, e.g. '
                                   '\'{"post": {"blue": 1, "green": 2, "red": 3, "nir": 7}, "slope": 12, "dem": 13, '
                                   '"scale": 10000, "offset": 0}\' (default: the l4s preset; for folders every '
                                   'channel as post bands b1..bN)')
    s.add_argument("--masks", help="mask folder (default: mask/ or masks/ beside the images)")
    s.add_argument("--no-masks", action="store_true", help="unlabelled (test) data: patches without a mask get label 255")
    s.add_argument("--ignore-value", type=float, help="mask value meaning unknown, e.g. 255 (default: mask > 0 is landslide)")
    s.add_argument("--gap", type=int, default=0, help="invalid pixels between patches (default 0: one window per patch "
                                                      "with --stride = patch size)")
    s.add_argument("--chunk", type=int, default=1024, help="zarr chunk side in pixels, rounded down to whole patches")
    s.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNG")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_import_patches)

    s = sub.add_parser("import-tiles", help="georeferenced image/label tiles (e.g. ArcGIS Classified Tiles, the "
                                            "Chattogram set) -> one labelled cube")
    s.add_argument("source", help="export folder holding images/ and labels/ (or its parent)")
    s.add_argument("--out", required=True, help="output cube, e.g. chattogram.zarr")
    s.add_argument("--bands", type=_csv, default=("red", "green", "blue", "nir"),
                   help="names of the image channels in order (default red,green,blue,nir: Chattogram's)")
    s.add_argument("--region", help="region name (default: the folder's name)")
    s.set_defaults(func=cmd_import_tiles)


def _train_commands(sub) -> None:
    """Sub-commands of stage 2: training, the leave-one-out experiment, evaluation, the model's size."""
    from .train.config import DEFAULT_STEM_WIDTHS, PAPER_WINDOW, ModelConfig, TrainConfig

    widths = ",".join(str(w) for w in _default(ModelConfig, "encoder_widths"))
    stems = "/".join(str(w) for w in DEFAULT_STEM_WIDTHS.values())

    def training_options(s: argparse.ArgumentParser) -> None:
        """The ``train`` and ``experiment`` options: one per TrainConfig field, its default read there."""
        def opt(flag: str, field: str, help: str, **kw) -> None:
            shown = _default(TrainConfig, field)
            shown = ",".join(shown) if isinstance(shown, tuple) else shown
            kw.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
            s.add_argument(flag, dest=field, default=None, help=f"{help} (default {shown})", **kw)

        s.add_argument("--cube", action="append", required=True, help="training cube (repeat for each inventory)")
        s.add_argument("--out", required=True, help="folder for checkpoints, metrics and curves")
        opt("--streams", "streams", "input streams, e.g. post,terrain", type=_csv)
        s.add_argument("--bands", type=_csv,
                       help="imagery bands the model sees, by name, e.g. blue,green,red (default: every band "
                            "of the first cube); every cube must hold them")
        opt("--pre-dropout", "pre_dropout", "probability per window of hiding its pre-event image (whole, and "
            "again beyond a random edge), so the model maps gaps in the pre-event mosaic from post-event "
            "imagery and terrain (0: such pixels are left unmapped)", type=float)
        s.add_argument("--stream-dropout", type=_dropouts, default=None, metavar="STREAM=P,...",
                       help="probability per window of hiding other whole streams, e.g. terrain=0.2, so the "
                            "model maps cubes without them (post-only tiles) and trains on inventories with and "
                            "without them (default none)")
        opt("--haze", "haze", "probability per acquisition of added haze (path radiance falling with "
            "wavelength), for scenes delivered top-of-atmosphere or hazy", type=float)
        opt("--normalise", "normalise", "imagery standardised by the training set's statistics (global) or by "
            "each acquisition's own median and spread (scene: hazy, top-of-atmosphere and surface-reflectance "
            "scenes look alike)", choices=["global", "scene"])
        opt("--window", "window", "training window in pixels", type=int)
        opt("--stride", "stride", "window spacing in the index", type=int)
        s.add_argument("--block", type=int, help="side of the split blocks in pixels (default: the largest of 4, 3, "
                                                 "2, 1 windows giving every inventory 12 blocks)")
        opt("--min-usable", "min_usable", "share of valid, inventoried pixels a window needs", type=float)
        opt("--batch-size", "batch_size", "windows per rank and step", type=int)
        opt("--epochs", "epochs", "training epochs", type=int)
        s.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training windows")
        opt("--lr", "lr", "peak learning rate (one-cycle schedule)", type=float)
        opt("--positive-boost", "positive_boost", "draw windows with landslides this many times as often",
            type=float)
        opt("--jitter", "jitter", "radiometric augmentation: sd of per-band gain/offset", type=float)
        opt("--patience", "patience", "epochs without a better val MCC before stopping", type=int)
        s.add_argument("--widths", type=_ints, help=f"encoder widths (default {widths}, the paper's)")
        s.add_argument("--stem-width", type=int, help=f"width of every stream's stem (default {stems})")
        s.add_argument("--init-from", help="checkpoint to continue from (fine-tuning)")
        opt("--seed", "seed", "random seed of sampling, augmentation and initialisation", type=int)
        s.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
        opt("--restarts", "restarts", "times to resume from the last checkpoint when worker processes are lost",
            type=int)
        s.add_argument("--workers", type=int, default=2, help="local Dask worker processes, one rank each")
        s.add_argument("--scheduler", help="address of a running Dask scheduler (one rank per worker)")
        s.add_argument("--cluster", help="cluster definition: a YAML file, or a shipped example by name: local, "
                                         "gpu-node, slurm, kubernetes (one rank per worker)")
        _security_options(s)
        s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("train", help="train the landslide model with data parallelism on Dask workers")
    training_options(s)
    s.add_argument("--strategy", choices=["local", "combined", "progressive"], default="combined",
                   help="one inventory, all at once, or added one at a time (default combined)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("experiment", help="leave-one-region-out test of generalisation (the paper's table)")
    s.add_argument("design", choices=["leave-one-out"])
    training_options(s)
    s.add_argument("--strategies", type=_csv, default=("combined",),
                   help="models trained without the held-out region: combined and/or progressive")
    s.add_argument("--no-local", action="store_true", help="skip the local models used for comparison")
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("evaluate", help="pixel MCC, precision, recall, F1, IoU of a checkpoint on a labelled cube")
    s.add_argument("--model", required=True, help="checkpoint (best.pt)")
    s.add_argument("--cube", required=True, help="cube with labels")
    _threshold_rule_option(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("model-info", help="parameters, FLOPs per pixel and receptive field of the model")
    s.add_argument("--model", help="a checkpoint to describe (default: a fresh model from the options)")
    s.add_argument("--streams", type=_csv, default=_default(TrainConfig, "streams"))
    s.add_argument("--bands", type=int, default=4, help="bands per imagery stream (default 4)")
    s.add_argument("--widths", type=_ints, help=f"encoder widths (default {widths})")
    s.add_argument("--size", type=int, default=PAPER_WINDOW, help=f"tile size for the FLOP count (default {PAPER_WINDOW})")
    s.set_defaults(func=cmd_model_info)


def _threshold_rule_option(s: argparse.ArgumentParser) -> None:
    from .predict.thresholds import RULES

    s.add_argument("--threshold-rule", choices=RULES, default="auto",
                   help="how the map's threshold is chosen: validation (the checkpoint's, chosen on its "
                        "validation blocks), scene (Otsu on this map's log-odds, no labels), or auto (scene "
                        "for a region the model never trained on, else validation; the default)")


def _products_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--inventory", help="reference landslide polygons to draw on the web map (any vector file)")
    s.add_argument("--attribution", help="the data's credit line (imagery, inventory), shown on the web map")
    s.add_argument("--title", help="title of the web map and the STAC item (default: from the event date)")


def _predict_commands(sub) -> None:
    """Sub-commands of stage 3: maps, polygons and their scores."""
    from .predict.config import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_WINDOW, MIN_AREA_M2
    from .train.config import INPUT_MULTIPLE

    s = sub.add_parser("predict", help="map landslide probability over a whole cube (seamless blended windows)")
    s.add_argument("--model", required=True, help="checkpoint (best.pt)")
    s.add_argument("--cube", required=True, help="cube to map")
    s.add_argument("--out", required=True, help="output zarr, e.g. region-pred.zarr (a rerun resumes it)")
    s.add_argument("--window", type=int,
                   help=f"window in pixels, a multiple of the model's input ({INPUT_MULTIPLE}) (default {DEFAULT_WINDOW})")
    s.add_argument("--overlap", type=int,
                   help=f"overlap of neighbouring windows in pixels (default {DEFAULT_OVERLAP})")
    s.add_argument("--batch-size", type=int,
                   help="windows per forward pass (default: "
                        + ", ".join(f"{n} on {d.upper()}" for d, n in DEFAULT_BATCH_SIZE.items()) + ")")
    s.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    s.add_argument("--products", help="folder for the products: COGs, QGIS styles, polygons, offline web map, "
                                      "STAC item (default: beside --out, named OUT-products)")
    s.add_argument("--no-products", action="store_true", help="write only the prediction zarr")
    _products_options(s)
    _threshold_rule_option(s)
    s.add_argument("--overwrite", action="store_true", help="replace an output made with other arguments")
    s.add_argument("--workers", type=int, help="run on a LocalCluster of this many processes")
    s.add_argument("--scheduler", help="address of a running Dask scheduler")
    s.add_argument("--cluster", help="cluster definition: a YAML file, or a shipped example by name (local, slurm, ...)")
    _security_options(s)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("products", help="a finished prediction's products for GIS and the browser: COGs with "
                                        "QGIS styles, polygons, an offline web map, a STAC item")
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--out", help="output folder (default: beside the prediction, named PREDICTION-products)")
    s.add_argument("--threshold", type=float,
                   help="probability threshold 0..1 of the polygons (default: the prediction's threshold)")
    _products_options(s)
    s.set_defaults(func=cmd_products)

    s = sub.add_parser("polygons", help="landslide polygons (GeoParquet + GeoPackage) from a finished prediction")
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--out", required=True, help="output stem: writes STEM.parquet and STEM.gpkg (a suffix is dropped)")
    s.add_argument("--threshold", type=float,
                   help="probability threshold 0..1 (default: the checkpoint's validation-chosen threshold)")
    s.add_argument("--min-area", type=float, default=MIN_AREA_M2,
                   help=f"drop objects smaller than this, in m² (default {MIN_AREA_M2:g})")
    s.add_argument("--simplify", type=float, help="topology-preserving simplification tolerance in metres (default: none)")
    s.set_defaults(func=cmd_polygons)

    s = sub.add_parser("evaluate-map", help="pixel and object metrics of a prediction against a labelled cube, "
                                            "with a Markdown/JSON report and a PNG map")
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--cube", required=True, help="the labelled cube the prediction was made from")
    s.add_argument("--out", required=True, help="folder for report.md, report.json and map.png")
    s.add_argument("--inventory", help="inventory polygons for the object metrics (default: the cube's label layer)")
    s.add_argument("--polygons", help="predicted polygons, .parquet or .gpkg (default: made from the prediction)")
    s.add_argument("--threshold", type=float,
                   help="probability threshold 0..1 (default: the checkpoint's validation-chosen threshold)")
    s.add_argument("--min-area", type=float, default=MIN_AREA_M2,
                   help=f"minimum predicted object area in m² (default {MIN_AREA_M2:g})")
    s.add_argument("--attribution", help="the data's credit line, printed under the map (as inventories' licences ask)")
    s.add_argument("--beside", action="store_true", help="draw the post-event image, untouched, left of the map")
    s.set_defaults(func=cmd_evaluate_map)


def _jobs_commands(sub) -> None:
    """Sub-commands of stage 4: country jobs on clusters."""
    s = sub.add_parser("submit", help="map a whole area from a job spec on a cluster, resumably (cells, manifest, merge)")
    s.add_argument("job", help="job spec (YAML; see cluster/jobs/*.yaml)")
    s.add_argument("--cluster", help="cluster definition: a YAML file, or a shipped example by name (local, slurm, "
                                     "...); default: the spec's `cluster`")
    s.add_argument("--scheduler", help="address of a running Dask scheduler (tls://HOST:PORT) instead of --cluster")
    _security_options(s)
    s.add_argument("--workers", type=int, help="override the cluster definition's number of workers")
    s.add_argument("--concurrency", type=int, help="cells in flight at once (default: the number of workers, >= 2)")
    s.add_argument("--force", action="store_true",
                   help="start over if OUTPUT holds the manifest of another configuration (kept as a backup)")
    s.add_argument("--scratch", help="local working folder of a URL output (s3://...): cells are computed there, "
                                      "then uploaded; every worker must reach it (default: the spec's `scratch`, "
                                      "else a temp folder)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar over cells")
    s.set_defaults(func=cmd_submit)

    from .clusters.shipped import example_names

    s = sub.add_parser("cluster-example", help="print a shipped cluster definition to copy and edit (no NAME: list "
                                               "them); --cluster NAME runs one as shipped")
    s.add_argument("name", nargs="?", choices=example_names(), metavar="NAME",
                   help=f"one of {', '.join(example_names())}")
    s.set_defaults(func=cmd_cluster_example)


def _security_options(s: argparse.ArgumentParser) -> None:
    """Who may use the cluster: TLS with the run's own certificate unless --insecure; the
    credentials of a running tls:// cluster for --scheduler."""
    s.add_argument("--insecure", action="store_true",
                   help="start the cluster on plain TCP without TLS: anyone who can reach its scheduler can run code "
                        "as you (default: TLS with a certificate made for this run)")
    s.add_argument("--tls-ca-file", help="with --scheduler tls://...: the CA certificate of that cluster (PEM)")
    s.add_argument("--tls-cert", help="with --scheduler tls://...: this client's certificate (PEM)")
    s.add_argument("--tls-key", help="with --scheduler tls://...: this client's key (PEM; default: in --tls-cert)")


def _demo_commands(sub) -> None:
    """Sub-commands of the demo runs."""
    s = sub.add_parser("demo", help="run the pipeline on the embedded synthetic regions")
    s.add_argument("--data", default="demo-data", help="demo data folder (made if absent)")
    s.add_argument("--out", default="demo-out", help="output folder")
    s.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    s.add_argument("--size-km", type=float, default=10.0, help="region size when the data is made (default 10 km)")
    from .demo.run import DEMO_EPOCHS

    s.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"training epochs of the demo model (default {DEMO_EPOCHS})")
    s.add_argument("--country", action="store_true",
                   help="map the demo country end to end as a country job with the demo's model "
                        "(OUT/model/best.pt, trained first by the region demo if absent)")
    s.add_argument("--country-data", default=None,
                   help="with --country: the demo country's folder (default DATA/country; made if absent)")
    s.add_argument("--real", metavar="FOLDER",
                   help="map a real event folder as shipped (e.g. ../shared/data/iburi_2018) with the demo's model "
                        "(OUT/model/best.pt, trained first if absent) and score it against the event's inventory")
    s.set_defaults(func=cmd_demo)


#: Sub-commands whose ``--model``/``--init-from`` name a checkpoint file (a URL is fetched later).
_CHECKPOINT_COMMANDS = {"evaluate", "model-info", "predict", "train", "experiment"}


def _check_checkpoint_paths(args: argparse.Namespace) -> None:
    """A checkpoint option naming no file is an argument error that says what to pass (exit 2),
    before anything is read or started."""
    if getattr(args, "command", None) not in _CHECKPOINT_COMMANDS:
        return
    for attr, flag in (("model", "--model"), ("init_from", "--init-from")):
        value = getattr(args, attr, None)
        if not isinstance(value, str) or not value or "://" in value:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            inside = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), None)
            raise UsageError(f"{flag} {value} is a folder: pass the checkpoint file in it"
                             + (f", e.g. {flag} {inside}" if inside else
                                " (best.pt, as `landslide-dask train --out DIR` writes it)"))
        if not path.exists():
            raise UsageError(f"{flag} {value}: no such checkpoint. Pass the best.pt that `landslide-dask train "
                             "--out DIR` wrote (DIR/best.pt; DIR/last.pt is the latest epoch), or train one first.")


def build_parser() -> argparse.ArgumentParser:
    """The ``landslide-dask`` parser: the sub-commands in pipeline order."""
    p = argparse.ArgumentParser(prog="landslide-dask", description=__doc__,
                                epilog="exit status: 0 done; 1 bad input data or a failed run (the message names the "
                                       "file, item or cell); 2 bad arguments; 130 interrupted")
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo_data_commands(sub)
    _stac_commands(sub)
    _cube_commands(sub)
    _train_commands(sub)
    _predict_commands(sub)
    _jobs_commands(sub)
    _demo_commands(sub)
    for sp in sub.choices.values():
        sp.set_defaults(usage=sp.format_usage)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Exit status: 0 done, 2 bad arguments (argparse's, or a
    :class:`~landslide_dask.errors.UsageError`), 1 bad input data or a failed run, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # dask's own INFO chatter (scheduler/nanny start and stop) only with -v;
        # read by dask.config when distributed is first imported (lazily, below)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        _check_checkpoint_paths(args)
        rc = args.func(args)
    except UsageError as exc:  # like argparse's own errors: the usage line, then the message
        print(args.usage(), end="", file=sys.stderr)
        print(f"landslide-dask {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LandslideDaskError as exc:
        print(f"landslide-dask {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
