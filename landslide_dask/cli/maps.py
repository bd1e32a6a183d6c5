"""Sub-commands of stage 3, maps: predict, products, polygons, evaluate-map."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import client_for, security_options, threshold_rule_option


def cmd_predict(args: argparse.Namespace) -> None:
    from contextlib import nullcontext

    from ..predict import coverage, open_prediction, predict

    with client_for(args) if args.scheduler or args.workers or args.cluster else nullcontext() as client:
        out = predict(
            args.cube,
            args.model,
            args.out,
            client=client,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.quiet,
            overwrite=args.overwrite,
            threshold_rule=args.threshold_rule,
        )
    pred = open_prediction(out)
    a = pred.attrs
    print(f"probability written to {out} (window {a['window']}, overlap {a['overlap']}, overhead {a['overhead']:.2f})")
    print(f"threshold {a['threshold']:.3f}: {a.get('threshold_rule', 'validation')}")
    cov = coverage(pred)
    if cov.get("no_pre_mapped"):
        print(
            f"{cov['no_pre_mapped']} px ({cov['no_pre_mapped'] / max(cov['mapped'], 1):.1%} of the map) have "
            "no pre-event image and were mapped from post-event imagery and terrain (layer 'no_pre')"
        )
    if cov.get("no_pre_unmapped"):
        print(
            f"warning: {cov['no_pre_unmapped']} px with post-event imagery were NOT mapped: they have no "
            "pre-event image and the model was trained without --pre-dropout (layer 'no_pre')"
        )
    if not args.no_products:
        _write_products(out, Path(args.products) if args.products else products_dir(out), args)


def products_dir(prediction: Path) -> Path:
    """Where a prediction's products go by default: beside it, its name without ``.zarr``."""
    return prediction.with_name(prediction.name.removesuffix(".zarr") + "-products")


def _write_products(prediction: Path, out: Path, args: argparse.Namespace) -> None:
    from ..products import write_products

    files = write_products(
        prediction,
        out,
        threshold=getattr(args, "threshold", None),
        inventory=getattr(args, "inventory", None),
        attribution=getattr(args, "attribution", None) or "",
        title=getattr(args, "title", None),
    )
    print(
        f"products in {out}: probability.tif and not-mapped.tif (COGs with QGIS styles), landslides.gpkg / "
        f".parquet, item.json (STAC)"
    )
    print(f"offline web map: {files['web_map']} (open it in a browser; no network needed)")


def cmd_products(args: argparse.Namespace) -> None:
    out = Path(args.prediction)
    _write_products(out, Path(args.out) if args.out else products_dir(out), args)


def cmd_polygons(args: argparse.Namespace) -> None:
    from ..predict.polygons import output_paths, polygonize

    gdf = polygonize(
        args.prediction, args.out, threshold=args.threshold, min_area_m2=args.min_area, simplify_m=args.simplify
    )
    parquet, gpkg = output_paths(args.out)
    print(
        f"{len(gdf)} polygons (threshold {gdf.attrs['threshold']:.3f}, minimum area {args.min_area:g} m²) "
        f"written to {parquet} and {gpkg}"
    )


def cmd_evaluate_map(args: argparse.Namespace) -> None:
    from ..predict.report import evaluate_map

    rep = evaluate_map(
        args.prediction,
        args.cube,
        args.out,
        inventory=args.inventory,
        polygons=args.polygons,
        threshold=args.threshold,
        min_area_m2=args.min_area,
        attribution=args.attribution,
        beside=args.beside,
    )
    px, ob = rep["pixel"], rep["object"]
    from ..train.metrics import fmt

    print(
        "pixels:  "
        + " ".join(f"{k} {fmt(px[k])}" for k in ("mcc", "precision", "recall", "f1", "iou"))
        + f" average precision {fmt(px.get('average_precision'))}"
    )
    print(f"threshold {rep['threshold']:.3f}: {rep['threshold_source']}")
    if rep.get("blobs"):
        b = rep["blobs"]
        print(
            f"labelled blobs: {b['found']} of {b['landslide_blobs']} landslide samples found, {b['rejected']} of "
            f"{b['non_landslide_blobs']} non-landslide samples rejected (blob MCC {fmt(b['mcc'])})"
        )
    print(
        f"objects: precision {ob['precision']:.3f} recall {ob['recall']:.3f} "
        f"({ob['detected_reference']}/{ob['n_reference']} landslides detected, "
        f"{ob['fp_predicted']} of {ob['n_predicted']} predicted objects false)"
    )
    print(f"report {rep['files']['report_md']} (+ report.json), map {rep['files']['map']}")


def polygon_threshold_option(s: argparse.ArgumentParser) -> None:
    """``--threshold`` of the commands that make polygons from a finished map."""
    s.add_argument(
        "--threshold",
        type=float,
        help="probability threshold 0..1 (default: the map's own, recorded by predict: the checkpoint's "
        "validation threshold, or the label-free scene rule's for a region the model never saw)",
    )


def products_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--inventory", help="reference landslide polygons to draw on the web map (any vector file)")
    s.add_argument("--attribution", help="the data's credit line (imagery, inventory), shown on the web map")
    s.add_argument("--title", help="title of the web map and the STAC item (default: from the event date)")


def predict_commands(sub) -> None:
    """Sub-commands of stage 3: maps, polygons and their scores."""
    from ..predict.config import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_WINDOW, MIN_AREA_M2
    from ..train.config import INPUT_MULTIPLE

    s = sub.add_parser("predict", help="map landslide probability over a whole cube (seamless blended windows)")
    s.add_argument("--model", required=True, help="checkpoint (best.pt)")
    s.add_argument("--cube", required=True, help="cube to map")
    s.add_argument("--out", required=True, help="output zarr, e.g. region-pred.zarr (a rerun resumes it)")
    s.add_argument(
        "--window",
        type=int,
        help=f"window in pixels, a multiple of the model's input ({INPUT_MULTIPLE}) (default {DEFAULT_WINDOW})",
    )
    s.add_argument("--overlap", type=int, help=f"overlap of neighbouring windows in pixels (default {DEFAULT_OVERLAP})")
    s.add_argument(
        "--batch-size",
        type=int,
        help="windows per forward pass (default: "
        + ", ".join(f"{n} on {d.upper()}" for d, n in DEFAULT_BATCH_SIZE.items())
        + ")",
    )
    s.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    s.add_argument(
        "--products",
        help="folder for the products: COGs, QGIS styles, polygons, offline web map, "
        "STAC item (default: beside --out, named OUT-products)",
    )
    s.add_argument("--no-products", action="store_true", help="write only the prediction zarr")
    products_options(s)
    threshold_rule_option(s)
    s.add_argument("--overwrite", action="store_true", help="replace an output made with other arguments")
    s.add_argument("--workers", type=int, help="run on a LocalCluster of this many processes")
    s.add_argument("--scheduler", help="address of a running Dask scheduler")
    s.add_argument(
        "--cluster", help="cluster definition: a YAML file, or a shipped example by name (local, slurm, ...)"
    )
    security_options(s)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser(
        "products",
        help="a finished prediction's products for GIS and the browser: COGs with "
        "QGIS styles, polygons, an offline web map, a STAC item",
    )
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--out", help="output folder (default: beside the prediction, named PREDICTION-products)")
    polygon_threshold_option(s)
    products_options(s)
    s.set_defaults(func=cmd_products)

    s = sub.add_parser("polygons", help="landslide polygons (GeoParquet + GeoPackage) from a finished prediction")
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--out", required=True, help="output stem: writes STEM.parquet and STEM.gpkg (a suffix is dropped)")
    polygon_threshold_option(s)
    s.add_argument(
        "--min-area",
        type=float,
        default=MIN_AREA_M2,
        help=f"drop objects smaller than this, in m² (default {MIN_AREA_M2:g})",
    )
    s.add_argument(
        "--simplify", type=float, help="topology-preserving simplification tolerance in metres (default: none)"
    )
    s.set_defaults(func=cmd_polygons)

    s = sub.add_parser(
        "evaluate-map",
        help="pixel and object metrics of a prediction against a labelled cube, "
        "with a Markdown/JSON report and a PNG map",
    )
    s.add_argument("--prediction", required=True, help="prediction zarr written by `landslide-dask predict`")
    s.add_argument("--cube", required=True, help="the labelled cube the prediction was made from")
    s.add_argument("--out", required=True, help="folder for report.md, report.json and map.png")
    s.add_argument("--inventory", help="inventory polygons for the object metrics (default: the cube's label layer)")
    s.add_argument("--polygons", help="predicted polygons, .parquet or .gpkg (default: made from the prediction)")
    polygon_threshold_option(s)
    s.add_argument(
        "--min-area",
        type=float,
        default=MIN_AREA_M2,
        help=f"minimum predicted object area in m² (default {MIN_AREA_M2:g})",
    )
    s.add_argument("--attribution", help="the data's credit line, printed under the map (as inventories' licences ask)")
    s.add_argument("--beside", action="store_true", help="draw the post-event image, untouched, left of the map")
    s.set_defaults(func=cmd_evaluate_map)
