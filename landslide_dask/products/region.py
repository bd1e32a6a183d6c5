"""All products of one region's map, in one folder a responder opens or hands on.

``probability.tif`` (+ ``.qml``), ``not-mapped.tif`` (+ ``.qml``), ``landslides.gpkg`` (style
inside) / ``.parquet`` / ``.qml``, ``web/index.html`` (offline map), ``item.json`` (STAC).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from ..predict.store import open_prediction, transform_of
from .cog import export_cog, export_status, status_block
from .item import products_item, write_item
from .page import RasterLayer, write_page
from .styles import embed_gpkg_style, polygons_qml, probability_qml, status_qml, write_qml
from .tiles import TILE, imagery_rgba, probability_rgba, status_rgba, warp_to_web, zoom_for

log = logging.getLogger(__name__)

__all__ = [
    "write_products",
    "MapSource",
    "gis_files",
    "web_map",
    "stac_item",
    "aoi_reader",
    "imagery_reader",
    "web_rasters",
    "zoom_range",
    "km2",
    "statistics",
    "source_credit",
]


def _cube_of(attrs: dict):
    """The cube a prediction was made from, opened with zarr, or None when it is gone."""
    import zarr

    path = attrs.get("cube")
    if not path or not Path(path).exists():
        return None
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception:  # a moved or deleted cube only loses the imagery layers
        return None


def aoi_reader(aoi_geoms, transform, crs):
    """``inside(y0, y1, x0, x1)``: the area of interest rasterised on one block of the grid."""
    from rasterio.features import rasterize

    if aoi_geoms is None:
        return None
    geoms = list(aoi_geoms.to_crs(crs).geometry.values) if hasattr(aoi_geoms, "to_crs") else list(aoi_geoms)

    def inside(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        t = transform * transform.translation(x0, y0)
        return rasterize(
            geoms, out_shape=(y1 - y0, x1 - x0), transform=t, fill=0, default_value=1, dtype="uint8"
        ).astype(bool)

    return inside


def _read_aoi(cube_attrs: dict):
    from ..cube.build import read_aoi

    src = cube_attrs.get("aoi_source")
    if not src:
        return None
    try:
        return read_aoi(src)[0]
    except InputDataError as exc:
        log.warning(
            "the cube's area of interest %s could not be read (%s): the not-mapped layer covers the whole grid",
            src,
            exc,
        )
        return None


def imagery_reader(group, var: str):
    """``read(rows, cols) -> (4, h, w)`` uint8: red, green, blue stretched 2-98 % over a sample of
    the valid pixels (one stretch for the whole scene, so tiles match), alpha where imaged."""
    arr = group[var]
    bands = [str(b) for b in group.attrs.get("bands", [])]
    try:
        idx = [bands.index(b) for b in ("red", "green", "blue")]
    except ValueError:
        idx = [2, 1, 0] if arr.shape[0] >= 3 else [0, 0, 0]
    h, w = arr.shape[1:]
    step = max(1, int(math.ceil(max(h, w) / 1500)))
    sample = np.stack([arr[i, ::step, ::step] for i in idx]).astype(np.float32)
    ok = (sample > 0).all(0)
    lo = np.array([np.percentile(s[ok], 2) if ok.any() else 0 for s in sample], np.float32)
    hi = np.array([np.percentile(s[ok], 98) if ok.any() else 1 for s in sample], np.float32)

    def read(rows: slice, cols: slice) -> np.ndarray:
        raw = np.stack([arr[i, rows, cols] for i in idx]).astype(np.float32)
        img = np.clip((raw - lo[:, None, None]) / np.maximum(hi - lo, 1)[:, None, None] * 254 + 1, 1, 255)
        alpha = np.where((raw > 0).all(0), 255, 0)
        return np.concatenate([img.astype(np.uint8), alpha[None].astype(np.uint8)])

    return read


def zoom_range(shape: tuple[int, int], res: float, lat: float) -> tuple[int, int]:
    """(zmin, zmax): zmax resolves the map's pixels; zmin shows the whole map in about 2 x 2 tiles."""
    zmax = zoom_for(res, lat)
    web_px = max(shape) * res / (2 * 20037508.342789244 * math.cos(math.radians(lat)) / (TILE * 2**zmax))
    return max(0, zmax - max(2, math.ceil(math.log2(max(web_px / TILE, 1))))), zmax


def source_credit(cube_attrs: dict) -> str:
    """The credit line the sources' licences ask for, from what the cube records (Copernicus
    Sentinel-2 imagery and Copernicus DEM); empty when the cube names neither."""
    parts = []
    items = " ".join(cube_attrs.get("stac_items", []))
    if (
        "sentinel-2" in str(cube_attrs.get("collection", "")).lower()
        or "S2A" in items
        or "S2B" in items
        or "S2C" in items
    ):
        years = sorted({d[:4] for d in list(cube_attrs.get("pre_dates", [])) + list(cube_attrs.get("post_dates", []))})
        parts.append(f"Contains modified Copernicus Sentinel data {', '.join(years)}".strip())
    if "cop-dem" in str(cube_attrs.get("dem_collection", "")).lower():
        parts.append(
            "Copernicus DEM GLO-30 © DLR e.V. 2010-2014 and © Airbus Defence and Space GmbH 2014-2018, "
            "provided under COPERNICUS by the European Union and ESA"
        )
    return "; ".join(parts)


def km2(n_pixels: int, res: float) -> float:
    return round(n_pixels * res * res / 1e6, 3)


def _lonlat_bounds(transform, shape, crs) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    h, w = shape
    x0, y0 = transform * (0, 0)
    x1, y1 = transform * (w, h)
    return transform_bounds(crs, "EPSG:4326", min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), densify_pts=21)


@dataclass
class MapSource:
    """A finished prediction and what the products need of it and of its cube, opened once."""

    path: Path
    group: object  # the prediction's zarr group
    attrs: dict
    crs: str
    transform: object
    shape: tuple[int, int]
    cube: object  # the cube's zarr group, or None when it is gone
    cube_attrs: dict
    aoi: object  # GeoDataFrame of the area of interest, or None
    inside: object  # aoi_reader(...) or None

    @classmethod
    def open(cls, prediction: str | Path) -> MapSource:
        import zarr

        path = Path(prediction)
        ds = open_prediction(path, georeferenced=True)
        attrs = dict(ds.attrs)
        g = zarr.open_group(str(path), mode="r")
        transform = transform_of(ds)
        cube = _cube_of(attrs)
        cube_attrs = dict(cube.attrs) if cube is not None else {}
        aoi = _read_aoi(cube_attrs)
        return cls(
            path,
            g,
            attrs,
            attrs["crs"],
            transform,
            tuple(g["probability"].shape),
            cube,
            cube_attrs,
            aoi,
            aoi_reader(aoi, transform, attrs["crs"]),
        )

    @property
    def res(self) -> float:
        return abs(self.transform.a)

    @property
    def threshold(self) -> float:
        return float(self.attrs.get("threshold", 0.5))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """W, S, E, N of the map's grid in degrees."""
        return _lonlat_bounds(self.transform, self.shape, self.crs)

    @property
    def event(self) -> str:
        return self.attrs.get("event_date") or self.cube_attrs.get("event_date", "")


def write_products(
    prediction: str | Path,
    out: str | Path,
    *,
    polygons=None,
    inventory: str | Path | None = None,
    attribution: str = "",
    title: str | None = None,
    client=None,
    imagery: bool = True,
    credit_sources: bool = True,
    threshold: float | None = None,
) -> dict[str, Path]:
    """Every product of a finished prediction into the folder ``out``; returns {name: path}.

    ``polygons``: landslide polygons already made (a GeoDataFrame); None makes them at
    ``threshold`` (0..1; default the prediction's, which the legend, styles and item then name). ``inventory``:
    reference polygons drawn on the
    web map. ``attribution``: the data's credit line (imagery, inventory), shown on the page;
    ``credit_sources``: add the credit the cube's sources ask for (Copernicus Sentinel-2 and DEM,
    :func:`source_credit`) unless ``attribution`` names Copernicus already (off for data that only
    mimics them, as the demo's). ``imagery``: tile the cube's post- and pre-event images as the
    page's backgrounds.
    """
    src = MapSource.open(prediction)
    if threshold is not None:
        src.attrs = {**src.attrs, "threshold": float(threshold), "threshold_rule": "given by the user"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"Landslides, event of {src.event}"
    files, polygons, counts = gis_files(src, out, polygons, client)
    stats = statistics(counts, src.res, polygons)
    credit = source_credit(src.cube_attrs) if credit_sources else ""
    if credit and "Copernicus" not in attribution:
        attribution = f"{attribution}. {credit}" if attribution else credit
    files["web_map"] = web_map(
        src, out / "web", polygons, stats, title=title, inventory=inventory, attribution=attribution, imagery=imagery
    )
    files["item"] = stac_item(src, out, files, stats, title)
    return files


def gis_files(src: MapSource, out: Path, polygons, client=None) -> tuple[dict[str, Path], object, np.ndarray]:
    """The COGs, the polygons and their QGIS styles; returns (files, polygons, pixels per status code)."""
    from ..predict.polygons import polygonize, write_polygons

    files = {"probability": export_cog(src.path, out / "probability.tif")}
    files["probability_style"] = write_qml(files["probability"], probability_qml(src.threshold))
    files["not_mapped"], counts = export_status(src.path, out / "not-mapped.tif", src.inside)
    files["not_mapped_style"] = write_qml(files["not_mapped"], status_qml())
    if polygons is None:
        polygons = polygonize(src.path, out / "landslides", threshold=src.threshold, client=client)
    else:
        write_polygons(polygons, out / "landslides")
    files["landslides_parquet"], files["landslides_gpkg"] = out / "landslides.parquet", out / "landslides.gpkg"
    embed_gpkg_style(files["landslides_gpkg"], "landslides", polygons_qml())
    files["landslides_style"] = write_qml(files["landslides_gpkg"], polygons_qml())
    return files, polygons, counts


def web_map(
    src: MapSource,
    out: Path,
    polygons,
    stats: dict,
    *,
    title: str,
    inventory=None,
    attribution: str = "",
    imagery: bool = True,
) -> Path:
    """The offline web map of one region in ``out`` (the products' ``web/``); returns its index.html."""
    import geopandas as gpd

    bounds = src.bounds
    zmin, zmax = zoom_range(src.shape, src.res, (bounds[1] + bounds[3]) / 2)
    work = out.parent / ".web-rasters"
    shutil.rmtree(work, ignore_errors=True)
    prob_web, status_web = web_rasters(src.group, src.crs, src.transform, src.inside, zmax, work)
    layers = [
        RasterLayer("probability", "landslide probability", prob_web, probability_rgba, "max"),
        RasterLayer("status", "not mapped", status_web, status_rgba, "max"),
    ]
    for var, name in (("post", "post-event image"), ("pre", "pre-event image")):
        if imagery and src.cube is not None and var in src.cube:
            path = warp_to_web(
                imagery_reader(src.cube, var),
                4,
                src.shape,
                src.crs,
                src.transform,
                zmax,
                work / f"{var}.tif",
                resampling="bilinear",
                nodata=None,
            )
            layers.insert(0, RasterLayer(var, name, path, imagery_rgba, "mean", base=True, on=var == "post"))
    inv_path = inventory or src.cube_attrs.get("inventory_source")
    inv = gpd.read_file(inv_path) if inv_path and Path(inv_path).exists() else None
    links = [
        ("probability (COG)", "../probability.tif"),
        ("not mapped (COG)", "../not-mapped.tif"),
        ("polygons (GPKG)", "../landslides.gpkg"),
        ("polygons (GeoParquet)", "../landslides.parquet"),
        ("STAC item", "../item.json"),
    ]
    try:
        return write_page(
            out,
            title=title,
            bounds=bounds,
            zmin=zmin,
            zmax=zmax,
            rasters=layers,
            polygons=polygons,
            outlines={"aoi": src.aoi, "inventory": inv},
            threshold=src.threshold,
            threshold_rule=str(src.attrs.get("threshold_rule", "validation")),
            facts=_facts(src.attrs, src.cube_attrs, stats),
            files=links,
            attribution=attribution,
            res_m=src.res,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stac_item(src: MapSource, out: Path, files: dict[str, Path], stats: dict, title: str) -> Path:
    """The products' STAC item (``out/item.json``): footprint = the area of interest, else the grid."""
    import shapely

    bounds = src.bounds
    footprint = src.aoi.to_crs(4326).union_all() if src.aoi is not None else shapely.box(*bounds)
    item = products_item(
        f"landslides-{src.event}-{src.path.stem}",
        geometry=shapely.geometry.mapping(footprint),
        bbox=[round(float(b), 6) for b in bounds],
        assets=files,
        base=out,
        pred_attrs=src.attrs,
        cube_attrs=src.cube_attrs,
        stats=stats,
        title=title,
    )
    return write_item(out / "item.json", item)


def web_rasters(g, crs, transform, inside, zoom: int, out: Path) -> tuple[Path, Path]:
    """The probability (with its mapped pixels as mask) and the status of a prediction group on
    the Web Mercator grid of ``zoom``: ``out/web_probability.tif``, ``out/web_status.tif``."""
    prob, valid = g["probability"], g["valid"]
    no_pre = g["no_pre"] if "no_pre" in g else None
    shape = tuple(prob.shape)

    def status(r: slice, c: slice) -> np.ndarray:
        return status_block(
            valid[r, c],
            None if no_pre is None else no_pre[r, c],
            None if inside is None else inside(r.start, r.stop, c.start, c.stop),
        )

    def prob_and_mask(r: slice, c: slice) -> np.ndarray:
        return np.stack([prob[r, c], np.where(valid[r, c], 255, 0).astype(np.uint8)])

    return (
        warp_to_web(prob_and_mask, 1, shape, crs, transform, zoom, out / "web_probability.tif", nodata=None, mask=True),
        warp_to_web(lambda r, c: status(r, c)[None], 1, shape, crs, transform, zoom, out / "web_status.tif"),
    )


def statistics(counts: np.ndarray, res: float, polygons) -> dict:
    """Mapped and not-mapped area (km²) from the pixels per status code, and the landslides found."""
    return {
        "mapped_km2": km2(int(counts[1] + counts[2]), res),
        "mapped_without_pre_event_km2": km2(int(counts[2]), res),
        "not_mapped_km2": km2(int(counts[3] + counts[4]), res),
        "not_mapped_no_pre_event_km2": km2(int(counts[4]), res),
        "landslides": int(len(polygons)) if polygons is not None else 0,
        "landslide_area_km2": round(float(polygons["area_m2"].sum()) / 1e6, 4)
        if polygons is not None and len(polygons)
        else 0.0,
    }


def _facts(attrs: dict, cube_attrs: dict, stats: dict) -> list[str]:
    pre, post = cube_attrs.get("pre_dates", []), cube_attrs.get("post_dates", [])
    lines = [f"event {attrs.get('event_date', cube_attrs.get('event_date', '?'))}"]
    if pre or post:
        lines.append(
            f"images: {len(pre)} pre-event ({pre[0] if pre else '–'} … {pre[-1] if pre else '–'}), "
            f"{len(post)} post-event ({post[0] if post else '–'} … {post[-1] if post else '–'})"
            + (f" from {cube_attrs.get('collection')}" if cube_attrs.get("collection") else "")
        )
    lines.append(
        f"model {Path(str(attrs.get('model', '?'))).name}; threshold {float(attrs.get('threshold', 0.5)):.2f} "
        f"({attrs.get('threshold_rule', 'validation')})"
    )
    lines.append(
        f"{stats['landslides']} landslides, {stats['landslide_area_km2']:.3f} km²; mapped "
        f"{stats['mapped_km2']:.1f} km², not mapped {stats['not_mapped_km2']:.1f} km²"
    )
    return lines
