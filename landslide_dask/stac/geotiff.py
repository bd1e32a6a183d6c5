"""One STAC item from GeoTIFF files: what each file holds (grid, bands, footprint, nodata, dates
in its tags) and the item with one asset per band, a VRT where a band needs one.

Why VRTs: a STAC asset is ONE band (the cube loader reads band 1, as stackstac and odc-stac
do by default), so each band of a multi-band file becomes its own tiny VRT that points (by
absolute path, so read-only source folders are fine) at the source band, optionally declaring a
nodata value the file itself lacks (e.g. 0 = "outside the area"). Single-band files are
referenced directly unless a nodata value must be added.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.windows import Window
from rio_stac.stac import get_raster_info

from ..common.vrt import VrtSource, vrt_xml, write_vrt_xml
from ..errors import InputDataError, UsageError

__all__ = ["describe_geotiff", "make_item", "S2_BAND_NAMES", "S2_CODE", "STATIC_RANGE", "GEOTIFF_TYPE", "VRT_TYPE"]

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
GEOTIFF_TYPE = "image/tiff; application=geotiff"
VRT_TYPE = "application/x-gdal-vrt+xml"

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


# items with no acquisition date (a DEM): STAC needs datetime or a start/end range; an open range
# says "valid whenever", and the cube's DEM search does not filter on time
STATIC_RANGE = ("1900-01-01T00:00:00Z", "2100-01-01T00:00:00Z")


# Sentinel-2 band codes as they name per-band downloads (B02.tif, T54TWN_20180910_B04_10m.jp2, ...)
# -> the Earth Search asset keys the cube asks for.
S2_BAND_NAMES = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
S2_CODE = re.compile(r"(?<![A-Za-z0-9])(B0?[1-9]|B1[0-2]|B8A|SCL)(?![A-Za-z0-9])", re.IGNORECASE)


def _safe_name(text: str) -> str:
    """An id/asset key usable in URLs and file names."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_.")
    return s or "x"


def _footprint_wgs84(crs: Any, bounds: Sequence[float], n: int = 21) -> tuple[dict, list[float]]:
    """Polygon and bbox in EPSG:4326 of a raster's bounds, each edge densified to n points.

    Densifying keeps a UTM tile's curved edges (and its true extent) in lon/lat.
    """
    left, bottom, right, top = bounds
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([left + (right - left) * t, np.full(n, right), right - (right - left) * t, np.full(n, left)])
    ys = np.concatenate([np.full(n, bottom), bottom + (top - bottom) * t, np.full(n, top), top - (top - bottom) * t])
    src = ProjCRS.from_user_input(crs.to_wkt())
    if src.equals(ProjCRS.from_epsg(4326), ignore_axis_order=True):
        lon, lat = np.array([left, right, right, left]), np.array([bottom, bottom, top, top])
    else:
        tr = Transformer.from_crs(src, 4326, always_xy=True)
        lon, lat = tr.transform(xs, ys)
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("bounds do not transform to lon/lat")
    ring: list[list[float]] = []
    for x, y in zip(lon.tolist(), lat.tolist()):
        pt = [round(x, 9), round(y, 9)]
        if not ring or ring[-1] != pt:
            ring.append(pt)
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    bbox = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def describe_geotiff(path: Path) -> dict[str, Any]:
    """Open a raster and check it is readable end to end (first and last block of each band).

    Truncated files often open fine and fail only when their tail is read, hence the tail read.
    """
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError("no CRS (not georeferenced)")
        if src.transform.is_identity:
            raise ValueError("no geotransform (not georeferenced)")
        if src.transform.b != 0 or src.transform.d != 0:
            raise ValueError("rotated geotransform is not supported")
        bh, bw = src.block_shapes[0]
        last = Window(
            (src.width - 1) // bw * bw,
            (src.height - 1) // bh * bh,
            min(bw, src.width - (src.width - 1) // bw * bw),
            min(bh, src.height - (src.height - 1) // bh * bh),
        )
        for win in (Window(0, 0, min(bw, src.width), min(bh, src.height)), last):
            try:
                src.read(window=win)
            except rasterio.errors.RasterioError as e:
                raise ValueError(
                    f"truncated or corrupt: reading pixel block at {win.col_off},{win.row_off} failed ({e})"
                ) from e
        tags = src.tags()
        return {
            "count": src.count,
            "width": src.width,
            "height": src.height,
            "dtypes": list(src.dtypes),
            "crs": src.crs,
            "transform": src.transform,
            "bounds": tuple(src.bounds),
            "nodata": src.nodata,
            "descriptions": list(src.descriptions),
            "block": (bh, bw),
            "datetime_tag": tags.get("TIFFTAG_DATETIME"),
        }


def _band_names(info: dict[str, Any], bands: list[str] | None, path: Path) -> list[str]:
    count = info["count"]
    if bands is not None:
        if len(bands) != count:
            raise InputDataError(
                f"{path} has {count} band(s) but {len(bands)} band name(s) were given "
                f"({', '.join(bands)}): give exactly one name per band, in file order."
            )
        names = [_safe_name(b) for b in bands]
    else:
        desc = info["descriptions"]
        names = [_safe_name(d) for d in desc] if all(desc) else []
        if len(set(n.lower() for n in names)) != count:
            names = [f"b{i + 1}" for i in range(count)]
    if len(set(n.lower() for n in names)) != count:
        raise UsageError(f"band names for {path} must be distinct, got {names}.")
    return names


def _write_band_vrt(dst: Path, source: Path, band: int, info: dict[str, Any], nodata: float | None, name: str) -> None:
    """A one-band VRT referencing ``band`` of ``source`` by absolute path; source pixels equal to
    the file's own nodata keep ``nodata`` where the two differ."""
    w, h = info["width"], info["height"]
    dtype = info["dtypes"][band - 1]
    gdal_type = _GDAL_TYPES.get(dtype)
    if gdal_type is None:
        raise InputDataError(f"{source}: band data type {dtype} is not supported.")
    src_nodata = info["nodata"]
    out_nodata = nodata if nodata is not None else src_nodata
    differs = (
        src_nodata is not None
        and out_nodata is not None
        and not (src_nodata == out_nodata or (np.isnan(src_nodata) and np.isnan(out_nodata)))
    )
    bh, bw = info["block"]
    src = VrtSource(
        filename=str(source),
        size=(w, h),
        block=(bw, bh),
        data_type=gdal_type,
        band=band,
        nodata=src_nodata if differs else None,
    )
    write_vrt_xml(
        dst,
        vrt_xml(
            w,
            h,
            info["crs"].to_wkt(),
            info["transform"].to_gdal(),
            gdal_type,
            [src],
            description=name,
            nodata=out_nodata,
            axis_mapping="1,2" if _xy_crs(info["crs"]) else "2,1",
        ),
    )


def _xy_crs(crs: Any) -> bool:
    """Whether the CRS's own axis order is already easting/longitude first."""
    try:
        axes = ProjCRS.from_user_input(crs.to_wkt()).axis_info
        return bool(axes) and axes[0].direction.lower() in ("east", "west")
    except Exception:  # noqa: BLE001
        return True


def _finite(v: Any) -> bool:
    """JSON without NaN or inf (strict STAC readers refuse them): statistics of an empty band."""
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(_finite(x) for x in v)
    return not isinstance(v, float) or bool(np.isfinite(v))


def _proj_fields(info: dict[str, Any]) -> dict[str, Any]:
    crs = info["crs"]
    epsg = crs.to_epsg()
    out: dict[str, Any] = {}
    if epsg is not None:
        out["proj:code"] = f"EPSG:{epsg}"
        out["proj:epsg"] = int(epsg)  # projection v1 name, still what stackstac and older tools read
    else:
        out["proj:code"] = None
        out["proj:epsg"] = None
        out["proj:wkt2"] = crs.to_wkt()
    out["proj:shape"] = [info["height"], info["width"]]
    out["proj:transform"] = [float(v) for v in list(info["transform"])[:6]]
    out["proj:bbox"] = [float(v) for v in info["bounds"]]
    return out


def _s2_band(path: Path) -> str | None:
    """The Earth Search name of a single-band file named by its Sentinel-2 band code, if it is."""
    m = S2_CODE.search(path.stem)
    if not m:
        return None
    code = m.group(1).upper()
    code = code if code in ("B8A", "SCL") or len(code) == 3 else f"B0{code[1:]}"
    return S2_BAND_NAMES.get(code)


def make_item(
    item_id: str,
    members: list[tuple[Path, dict[str, Any]]],
    dt: str | None,
    collection: str,
    bands: list[str] | None,
    nodata: float | None,
    grouped: bool,
    assets_root: Path,
    items_file: Path,
    scaling: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One STAC item: an asset per band of each member file (a VRT where the file has several bands
    or needs a nodata value it lacks)."""
    item_assets_dir = assets_root / item_id
    if item_assets_dir.exists():
        shutil.rmtree(item_assets_dir)
    raster_info = {}
    for path, _ in members:
        with rasterio.open(path) as src:
            raster_info[path] = get_raster_info(src, max_size=256)
    assets: dict[str, Any] = {}
    grids = {(m[1]["crs"].to_wkt(), tuple(m[1]["transform"])[:6], m[1]["height"], m[1]["width"]) for m in members}
    for path, info in members:
        if grouped and info["count"] == 1:
            names = [_s2_band(path) or _safe_name(path.stem)]
        else:
            names = _band_names(info, bands, path)
        need_vrt = info["count"] > 1 or (
            nodata is not None
            and not (
                info["nodata"] is not None
                and (info["nodata"] == nodata or (np.isnan(info["nodata"]) and np.isnan(nodata)))
            )
        )
        for b, name in enumerate(names, start=1):
            if name in assets:
                raise InputDataError(
                    f"two files of item {item_id} give band {name!r} ({assets[name]['file:source']} "
                    f"and {path}): name the bands (--bands) or group the files differently"
                )
            if need_vrt:
                vrt = item_assets_dir / f"{name}.vrt"
                _write_band_vrt(vrt, path, b, info, nodata, name)
                href, media = os.path.relpath(vrt, items_file.parent), VRT_TYPE
            else:
                href, media = str(path), GEOTIFF_TYPE
            band_nodata = nodata if nodata is not None else info["nodata"]
            # rio-stac's raster:bands (sampling, statistics, histogram from a <= 256 px overview);
            # scale/offset only where recorded: 1 and 0 from a plain file mean "not recorded"
            raster_band: dict[str, Any] = {
                k: v
                for k, v in raster_info[path][b - 1].items()
                if k not in ("scale", "offset", "nodata") and _finite(v)
            }
            raster_band.update({"data_type": info["dtypes"][b - 1], **(scaling or {})})
            if band_nodata is not None:
                raster_band["nodata"] = band_nodata if np.isfinite(band_nodata) else str(band_nodata)
            assets[name] = {
                "href": href,
                "type": media,
                "title": f"{name} (band {b} of {path.name})",
                "roles": ["data"],
                "eo:bands": [{"name": name}],
                "raster:bands": [raster_band],
                "file:source": str(path),
            }
            if len(grids) > 1:  # bands on different grids (10/20/60 m): each asset says its own
                assets[name].update({k: v for k, v in _proj_fields(info).items() if v is not None})
    first = members[0][1]
    props: dict[str, Any] = {"datetime": dt, **_proj_fields(first)}
    if dt is None:
        props["start_datetime"], props["end_datetime"] = STATIC_RANGE
    props = {k: v for k, v in props.items() if v is not None or k == "datetime"}
    bboxes = np.array([m[1]["bbox"] for m in members])
    bbox = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()), float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]
    geometry = (
        first["geometry"]
        if len(members) == 1
        else {
            "type": "Polygon",
            "coordinates": [
                [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
            ],
        }
    )
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [PROJ_EXT, EO_EXT, RASTER_EXT],
        "id": item_id,
        "collection": collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "assets": assets,
        "links": [],
    }
