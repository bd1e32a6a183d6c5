"""The ``landslide-dask`` command line: one sub-command per pipeline stage, plus the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from .errors import LandslideDaskError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def cmd_make_demo_data(args: argparse.Namespace) -> None:
    from .synth import make_demo_data

    out = make_demo_data(args.dir, seed=args.seed, size_km=args.size_km, n_regions=args.regions)
    print(f"demo regions written to {out} (serve them with: landslide-dask serve-stac {out})")


def cmd_serve_stac(args: argparse.Namespace) -> None:
    from .stac_server import run_stac_server

    run_stac_server(Path(args.dir), args.port)


def cmd_catalog(args: argparse.Namespace) -> None:
    from .catalog import catalog_geotiffs

    out = catalog_geotiffs(Path(args.dir), Path(args.out), collection=args.collection,
                           bands=list(args.bands) if args.bands else None, datetime=args.datetime,
                           nodata=args.nodata, pattern=args.pattern)
    print(f"STAC collection {args.collection!r} written under {out}/stac "
          f"(serve it with: landslide-dask serve-stac {out})")


def cmd_cube(args: argparse.Namespace) -> None:
    from .cube import CubeSpec, build_cube

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


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(args.data), Path(args.out), workers=args.workers, size_km=args.size_km)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="landslide-dask", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("make-demo-data", help="generate the synthetic demo event regions (COGs + STAC)")
    s.add_argument("dir", help="folder to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-km", type=float, default=6.0, help="side of each region's area (default 6 km)")
    s.add_argument("--regions", type=int, default=4, help="number of regions (default 4)")
    s.set_defaults(func=cmd_make_demo_data)

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
    s.set_defaults(func=cmd_catalog)

    s = sub.add_parser("cube", help="build an analysis-ready cube (zarr) for an event and an area")
    s.add_argument("--stac", required=True, help="STAC API URL (e.g. a local serve-stac, Earth Search)")
    s.add_argument("--event-date", required=True, type=_date, help="YYYY-MM-DD")
    s.add_argument("--aoi", required=True, help="area of interest: GeoJSON / GeoPackage / Shapefile")
    s.add_argument("--out", required=True, help="output cube, e.g. region.zarr")
    s.add_argument("--inventory", help="landslide polygons for training/evaluation labels")
    s.add_argument("--inventory-area", help="polygon of the area the inventory covers (default: the AOI)")
    s.add_argument("--pre-days", type=int, default=90, help="pre-event window in days (default 90)")
    s.add_argument("--post-days", type=int, default=60, help="post-event window in days (default 60)")
    s.add_argument("--bands", type=_csv, default=("blue", "green", "red", "nir"),
                   help="imagery asset keys (default blue,green,red,nir)")
    s.add_argument("--collection", default="sentinel-2-l2a")
    s.add_argument("--scl-asset", default="scl", help="scene-classification asset used for cloud masking")
    s.add_argument("--no-cloud-mask", action="store_true", help="imagery has no SCL band (e.g. own GeoTIFFs)")
    s.add_argument("--dem-collection", default="cop-dem-glo-30")
    s.add_argument("--dem-asset", default="data")
    s.add_argument("--no-dem", action="store_true", help="build without slope/hillshade")
    s.add_argument("--max-cloud", type=float, help="skip scenes with eo:cloud_cover above this percent")
    s.add_argument("--resolution", type=float, default=10.0, help="pixel size in metres (default 10)")
    s.add_argument("--epsg", type=int, help="projected CRS of the cube (default: UTM zone of the AOI)")
    s.add_argument("--chunk", type=int, default=1024, help="spatial chunk size in pixels (default 1024)")
    s.add_argument("--post-only", action="store_true", help="no pre-event composite (none available)")
    s.add_argument("--sign", choices=["planetary-computer"], help="sign asset URLs (Planetary Computer)")
    s.add_argument("--exclude-item", action="append", help="STAC item id to leave out (repeatable)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_cube)

    s = sub.add_parser("demo", help="run the pipeline on the embedded synthetic regions")
    s.add_argument("--data", default="demo-data", help="demo data folder (made if absent)")
    s.add_argument("--out", default="demo-out", help="output folder")
    s.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    s.add_argument("--size-km", type=float, default=6.0, help="region size when the data is made")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except LandslideDaskError as exc:
        print(f"landslide-dask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
