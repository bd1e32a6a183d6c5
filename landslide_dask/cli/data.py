"""Sub-commands of stage 1, the data: demo data, the loopback STAC API, catalogues of GeoTIFFs, cubes, and
imports of benchmark patches and tile exports."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cube.spec import CHUNK
from ..errors import UsageError
from .options import config_default, parse_csv, parse_date


def cmd_make_demo_data(args: argparse.Namespace) -> None:
    from ..demo.synth import make_demo_country, make_demo_data

    if args.country:
        try:
            bbox = tuple(float(v) for v in parse_csv(args.bbox)) if args.bbox else None
        except ValueError:
            bbox = ()
        if bbox is not None and len(bbox) != 4:
            raise UsageError(f"--bbox must be W,S,E,N in degrees, got {args.bbox!r}")
        out = make_demo_country(args.dir, seed=args.seed, bbox=bbox, echo=print)
        print(
            f"demo country written to {out} (serve it with: landslide-dask serve-stac {out}; "
            f"map it with: landslide-dask demo --country)"
        )
        return
    out = make_demo_data(args.dir, seed=args.seed, size_km=args.size_km, n_regions=args.regions)
    print(f"demo regions written to {out} (serve them with: landslide-dask serve-stac {out})")


def cmd_serve_stac(args: argparse.Namespace) -> None:
    from ..stac.server import run_stac_server

    run_stac_server(Path(args.dir), args.port)


def cmd_catalog(args: argparse.Namespace) -> None:
    from ..stac.catalog import catalog_geotiffs

    dates = {}
    for kv in args.date or ():
        key, sep, value = kv.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--date {kv!r}: write ITEM=YYYY-MM-DD (ITEM: a folder or file name)")
        dates[key] = value
    out = catalog_geotiffs(
        Path(args.dir),
        Path(args.out),
        collection=args.collection,
        bands=list(args.bands) if args.bands else None,
        datetime=args.datetime,
        nodata=args.nodata,
        pattern=args.pattern,
        group=args.group,
        dates=dates,
        date_pattern=args.date_pattern,
        static=args.static,
        replace=args.replace,
        dn_scale=args.dn_scale,
        dn_offset=args.dn_offset,
    )
    import json

    n = len(json.loads((out / "stac" / "items" / f"{args.collection}.json").read_text())["features"])
    print(
        f"STAC collection {args.collection!r} ({n} items) written under {out}/stac "
        f"(cube it with: landslide-dask cube --stac {out} --collection {args.collection} ...)"
    )


def cmd_cube(args: argparse.Namespace) -> None:
    from ..cube.build import CubeSpec, build_cube

    spec = CubeSpec(
        stac_url=args.stac,
        event_date=args.event_date,
        aoi=Path(args.aoi),
        out=Path(args.out),
        inventory=Path(args.inventory) if args.inventory else None,
        inventory_area=Path(args.inventory_area) if args.inventory_area else None,
        pre_days=args.pre_days,
        post_days=args.post_days,
        bands=args.bands,
        collection=args.collection,
        scl_asset=None if args.no_cloud_mask else args.scl_asset,
        dem_collection=None if args.no_dem else args.dem_collection,
        dem_asset=args.dem_asset,
        max_cloud=args.max_cloud,
        resolution=args.resolution,
        epsg=args.epsg,
        chunk=args.chunk,
        post_only=args.post_only,
        sign=args.sign,
        exclude_items=args.exclude_item or (),
    )
    out = build_cube(spec, progress=not args.quiet)
    print(f"cube written to {out} (quicklook {out.with_suffix('.png')})")


def cmd_import_tiles(args: argparse.Namespace) -> None:
    from ..cube.read import open_cube
    from ..cube.tiles import import_tiles

    out = import_tiles(Path(args.source), Path(args.out), bands=tuple(args.bands), region=args.region)
    a = open_cube(out).attrs
    b = a["blobs"]
    print(
        f"{a['source_tiles']} tiles -> {out} ({a['crs']}, {a['resolution']:g} m): {b['landslide']} landslide and "
        f"{b['non_landslide']} non-landslide sample blobs (source: {a['blobs_source']['landslide']} and "
        f"{a['blobs_source']['non_landslide']}); unlabelled pixels are unknown; streams: post only"
    )


def cmd_import_patches(args: argparse.Namespace) -> None:
    from ..cube.patches import import_patches
    from ..cube.read import open_cube

    out = import_patches(
        Path(args.source),
        Path(args.out),
        fmt=args.format,
        bands=args.bands,
        masks=Path(args.masks) if args.masks else None,
        require_masks=not args.no_masks,
        ignore_value=args.ignore_value,
        gap=args.gap,
        chunk=args.chunk,
        progress=not args.quiet,
        quicklook=not args.no_quicklook,
    )
    a = open_cube(out).attrs
    r = a["recommended_index"]
    ql = "" if args.no_quicklook else f" (quicklook {out.with_suffix('.png')})"
    print(f"{a['patch_count']} patches ({a['patch_unlabelled']} without a mask) written to {out}{ql}")
    print(
        f"train on it with --streams post,terrain --window {r['window']} --stride {r['stride']} "
        f"--block {r['block']} --min-usable {r['min_usable']:g}"
    )


def demo_data_commands(sub) -> None:
    """Sub-commands of synthetic demo data."""
    s = sub.add_parser("make-demo-data", help="generate the synthetic demo event regions (COGs + STAC)")
    s.add_argument("dir", help="folder to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-km", type=float, default=6.0, help="side of each region's area (default 6 km)")
    s.add_argument("--regions", type=int, default=4, help="number of regions (default 4)")
    s.add_argument(
        "--country",
        action="store_true",
        help="generate the demo country instead: ~2,180 km² across UTM 44N/45N, 4 event clusters",
    )
    s.add_argument(
        "--bbox",
        default=None,
        metavar="W,S,E,N",
        help="with --country: its extent in degrees (default 83.75,28.0,84.25,28.4)",
    )
    s.set_defaults(func=cmd_make_demo_data)


def stac_commands(sub) -> None:
    """Sub-commands of stage 1a: a STAC API over a folder, STAC items for your own GeoTIFFs."""
    s = sub.add_parser("serve-stac", help="serve a STAC folder (DIR/stac/...) as a STAC API on loopback")
    s.add_argument("dir", help="folder holding stac/collections/*.json and stac/items/*.json")
    s.add_argument("--port", type=int, default=7822)
    s.set_defaults(func=cmd_serve_stac)

    s = sub.add_parser("catalog", help="write STAC items for existing GeoTIFFs, so they can be searched and cubed")
    s.add_argument("dir", help="folder of GeoTIFFs (searched recursively)")
    s.add_argument("--out", required=True, help="folder for the STAC collection (and per-band VRTs)")
    s.add_argument("--collection", default="local-geotiffs", help="collection id (default local-geotiffs)")
    s.add_argument("--bands", type=parse_csv, help="band names in file order, e.g. red,green,blue,nir")
    s.add_argument("--datetime", help="acquisition time (ISO 8601) when the files carry none")
    s.add_argument("--nodata", type=float, help="value meaning 'no data' when the files declare none (e.g. 0)")
    s.add_argument("--pattern", default="**/*.tif", help="glob under DIR (default **/*.tif)")
    s.add_argument(
        "--group",
        help="one item per scene: 'folder' (the files of a folder, e.g. pre-event/B02.tif, "
        "B03.tif) or a regex whose group (?P<item>...) the files of a scene share; "
        "single-band files are named by their Sentinel-2 band code (B02 -> blue)",
    )
    s.add_argument(
        "--date",
        action="append",
        metavar="ITEM=DATE",
        help="acquisition date of one item (folder or file name); repeat for each",
    )
    s.add_argument("--date-pattern", help="regex finding the date in each path, e.g. '(?P<date>\\d{8})'")
    s.add_argument("--static", action="store_true", help="items without an acquisition date (a DEM)")
    s.add_argument(
        "--replace",
        action="store_true",
        help="start the collection anew (default: add to it, replacing items of the same id)",
    )
    s.add_argument(
        "--dn-scale",
        type=float,
        help="reflectance = DN x scale + offset, recorded on every asset (default: not recorded, read as 0.0001)",
    )
    s.add_argument(
        "--dn-offset",
        type=float,
        help="see --dn-scale; Sentinel-2 L2A from 2022 on: -0.1, before: 0 (default: not recorded, read as 0)",
    )
    s.set_defaults(func=cmd_catalog)


def cube_commands(sub) -> None:
    """Sub-commands of stage 1b: cubes from STAC, and from benchmark patch datasets."""
    s = sub.add_parser("cube", help="build an analysis-ready cube (zarr) for an event and an area")
    s.add_argument(
        "--stac",
        required=True,
        help="where the items are: a STAC API URL (Earth Search, Planetary Computer, a local serve-stac), "
        "or, with no server, a folder written by `landslide-dask catalog`, a static STAC catalog "
        "folder (catalog.json) or an ItemCollection file (.json/.geojson)",
    )
    s.add_argument("--event-date", required=True, type=parse_date, help="YYYY-MM-DD")
    s.add_argument(
        "--aoi", required=True, help="area of interest: GeoJSON / GeoPackage / Shapefile, or W,S,E,N in degrees"
    )
    s.add_argument("--out", required=True, help="output cube, e.g. region.zarr")
    s.add_argument("--inventory", help="landslide polygons for training/evaluation labels")
    s.add_argument("--inventory-area", help="polygon of the area the inventory covers (default: the AOI)")
    from ..cube.spec import CubeSpec

    def cube_opt(flag: str, field: str, help: str, **kw) -> None:
        d = config_default(CubeSpec, field)
        shown = ",".join(d) if isinstance(d, tuple) else d
        s.add_argument(flag, default=d, help=f"{help} (default {shown})", **kw)

    cube_opt("--pre-days", "pre_days", "pre-event window in days", type=int)
    cube_opt("--post-days", "post_days", "post-event window in days", type=int)
    cube_opt(
        "--bands",
        "bands",
        "imagery bands by asset key, Sentinel-2 code or common name (B02 and blue find "
        "the same band on Planetary Computer and Earth Search)",
        type=parse_csv,
    )
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
    s.add_argument(
        "--format",
        choices=["l4s", "folder"],
        default="l4s",
        help="l4s: Landslide4Sense image_N.h5/mask_N.h5; folder: PNG/GeoTIFF images + masks by file stem",
    )
    s.add_argument(
        "--bands",
        help="preset (l4s), JSON text or a JSON file mapping 0-based channels, e.g. "
        '\'{"post": {"blue": 1, "green": 2, "red": 3, "nir": 7}, "slope": 12, "dem": 13, '
        '"scale": 10000, "offset": 0}\' (default: the l4s preset; for folders every '
        "channel as post bands b1..bN)",
    )
    s.add_argument("--masks", help="mask folder (default: mask/ or masks/ beside the images)")
    s.add_argument(
        "--no-masks", action="store_true", help="unlabelled (test) data: patches without a mask get label 255"
    )
    s.add_argument(
        "--ignore-value", type=float, help="mask value meaning unknown, e.g. 255 (default: mask > 0 is landslide)"
    )
    s.add_argument(
        "--gap",
        type=int,
        default=0,
        help="invalid pixels between patches (default 0: one window per patch with --stride = patch size)",
    )
    s.add_argument(
        "--chunk",
        type=int,
        default=CHUNK,
        help=f"zarr chunk side in pixels, rounded down to whole patches (default {CHUNK})",
    )
    s.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNG")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_import_patches)

    s = sub.add_parser(
        "import-tiles",
        help="georeferenced image/label tiles (e.g. ArcGIS Classified Tiles, the Chattogram set) -> one labelled cube",
    )
    s.add_argument("source", help="export folder holding images/ and labels/ (or its parent)")
    s.add_argument("--out", required=True, help="output cube, e.g. chattogram.zarr")
    s.add_argument(
        "--bands",
        type=parse_csv,
        default=("red", "green", "blue", "nir"),
        help="names of the image channels in order (default red,green,blue,nir: Chattogram's)",
    )
    s.add_argument("--region", help="region name (default: the folder's name)")
    s.set_defaults(func=cmd_import_tiles)
