"""STAC items for a user's existing GeoTIFFs, so real files take the same search-and-cube path.

Writes the STAC folder layout served by :mod:`landslide_dask.stac.server`::

    OUT/stac/collections/<collection>.json
    OUT/stac/items/<collection>.json
    OUT/assets/<item-id>/<band>.vrt     # one per band of each multi-band file

Why VRTs: a STAC asset is ONE band (the cube loader reads band 1, as stackstac and odc-stac
do by default), so each band of a multi-band file becomes its own
tiny VRT that points (by absolute path, so read-only source folders are fine) at the source band,
optionally declaring a nodata value the file itself lacks (e.g. 0 = "outside the area").
Single-band files are referenced directly unless a nodata value must be added.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from datetime import date, datetime, timezone
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

log = logging.getLogger(__name__)

__all__ = ["CatalogWarning", "catalog_geotiffs", "describe_geotiff"]

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
GEOTIFF_TYPE = "image/tiff; application=geotiff"
VRT_TYPE = "application/x-gdal-vrt+xml"

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64",
}


class CatalogWarning(UserWarning):
    """Some files were skipped while cataloguing."""


def _safe_name(text: str) -> str:
    """An id/asset key usable in URLs and file names."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_.")
    return s or "x"


def _parse_datetime(value: str | date | datetime, where: str) -> str:
    """RFC 3339 UTC string; accepts ISO dates/datetimes and TIFF's 'YYYY:MM:DD HH:MM:SS'."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
        if m:
            text = "{}-{}-{}T{}:{}:{}".format(*m.groups())
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as e:
            raise InputDataError(
                f"cannot read the date {value!r} ({where}): use ISO 8601, e.g. 2024-05-17 or 2024-05-17T04:30:00Z."
            ) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
            (src.width - 1) // bw * bw, (src.height - 1) // bh * bh,
            min(bw, src.width - (src.width - 1) // bw * bw), min(bh, src.height - (src.height - 1) // bh * bh),
        )
        for win in (Window(0, 0, min(bw, src.width), min(bh, src.height)), last):
            try:
                src.read(window=win)
            except rasterio.errors.RasterioError as e:
                raise ValueError(f"truncated or corrupt: reading pixel block at {win.col_off},{win.row_off} failed ({e})") from e
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


def _write_band_vrt(
    dst: Path, source: Path, band: int, info: dict[str, Any], nodata: float | None, name: str
) -> None:
    """A one-band VRT referencing ``band`` of ``source`` by absolute path; source pixels equal to
    the file's own nodata keep ``nodata`` where the two differ."""
    w, h = info["width"], info["height"]
    dtype = info["dtypes"][band - 1]
    gdal_type = _GDAL_TYPES.get(dtype)
    if gdal_type is None:
        raise InputDataError(f"{source}: band data type {dtype} is not supported.")
    src_nodata = info["nodata"]
    out_nodata = nodata if nodata is not None else src_nodata
    differs = src_nodata is not None and out_nodata is not None and not (
        src_nodata == out_nodata or (np.isnan(src_nodata) and np.isnan(out_nodata))
    )
    bh, bw = info["block"]
    src = VrtSource(filename=str(source), size=(w, h), block=(bw, bh), data_type=gdal_type, band=band,
                    nodata=src_nodata if differs else None)
    write_vrt_xml(dst, vrt_xml(w, h, info["crs"].to_wkt(), info["transform"].to_gdal(), gdal_type, [src],
                               description=name, nodata=out_nodata,
                               axis_mapping="1,2" if _xy_crs(info["crs"]) else "2,1"))


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


# Sentinel-2 band codes as they name per-band downloads (B02.tif, T54TWN_20180910_B04_10m.jp2, ...)
# -> the Earth Search asset keys the cube asks for.
S2_BAND_NAMES = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                 "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                 "B10": "cirrus", "B11": "swir16", "B12": "swir22", "SCL": "scl"}
_S2_CODE = re.compile(r"(?<![A-Za-z0-9])(B0?[1-9]|B1[0-2]|B8A|SCL)(?![A-Za-z0-9])", re.IGNORECASE)
# items with no acquisition date (a DEM): STAC needs datetime or a start/end range; an open range
# says "valid whenever", and the cube's DEM search does not filter on time
STATIC_RANGE = ("1900-01-01T00:00:00Z", "2100-01-01T00:00:00Z")


def _s2_band(path: Path) -> str | None:
    """The Earth Search name of a single-band file named by its Sentinel-2 band code, if it is."""
    m = _S2_CODE.search(path.stem)
    if not m:
        return None
    code = m.group(1).upper()
    code = code if code in ("B8A", "SCL") or len(code) == 3 else f"B0{code[1:]}"
    return S2_BAND_NAMES.get(code)


def _group_key(path: Path, root: Path, group: str | None) -> str:
    """The item a file belongs to: itself, its folder, or a regex's ``item`` group on its relative path."""
    if group is None:
        return str(path.relative_to(root))  # one item per file (the id is its stem, made unique)
    if group == "folder":
        rel = path.parent.relative_to(root) if path.parent != root else Path(root.name)
        return str(rel).replace(os.sep, "_")
    m = re.search(group, str(path.relative_to(root)))
    if not m or "item" not in m.groupdict():
        raise UsageError(f"--group {group!r} does not match {path.relative_to(root)} with a named group "
                             "(?P<item>...): the regex must capture what files of one scene share")
    return m.group("item")


def _sidecar_datetime(path: Path) -> str | None:
    """A date from ``<file>.json`` beside the file: ``datetime``, or Earth Engine's
    ``system:time_start`` (milliseconds since 1970)."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise InputDataError(f"sidecar {side} is not readable JSON ({e}): fix or remove it") from None
    props = meta.get("properties", meta) if isinstance(meta, dict) else {}
    if props.get("datetime"):
        return str(props["datetime"])
    if props.get("system:time_start") is not None:
        return datetime.fromtimestamp(float(props["system:time_start"]) / 1000, tz=timezone.utc).isoformat()
    return None


def _item_datetime(key: str, files: list[tuple[Path, dict[str, Any]]], fixed: str | None, dates: dict[str, str],
                   date_pattern: str | None) -> str | None:
    """The acquisition time of one item: --date mapping, --datetime, a date in the path, a sidecar,
    the TIFF tag, in that order; None when nothing says it."""
    for k in (key, *(p.stem for p, _ in files), *(p.name for p, _ in files)):
        if k in dates:
            return _parse_datetime(dates[k], f"--date {k}")
    if fixed is not None:
        return fixed
    for path, info in files:
        if date_pattern:
            m = re.search(date_pattern, str(path))
            if m:
                text = m.groupdict().get("date", m.group(0))
                if re.fullmatch(r"\d{8}", text):
                    text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
                return _parse_datetime(text, f"the date in {path.name} (--date-pattern)")
        side = _sidecar_datetime(path)
        if side:
            return _parse_datetime(side, f"sidecar of {path.name}")
        if info["datetime_tag"]:
            return _parse_datetime(info["datetime_tag"], f"TIFFTAG_DATETIME of {path}")
    return None


def catalog_geotiffs(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    collection: str = "local-geotiffs",
    bands: list[str] | None = None,
    datetime: str | date | None = None,
    nodata: float | None = None,
    pattern: str = "**/*.tif",
    group: str | None = None,
    dates: dict[str, str] | None = None,
    date_pattern: str | None = None,
    static: bool = False,
    replace: bool = False,
    dn_scale: float | None = None,
    dn_offset: float | None = None,
) -> Path:
    """Catalogue the GeoTIFFs under ``src`` into the STAC collection ``collection`` in ``out``; returns ``out``.

    ``group``: None (one item per file), ``"folder"`` (the files of one folder are one scene, e.g.
    ``pre-event/B02.tif, B03.tif, B04.tif``) or a regex whose named group ``item`` is what the
    files of one scene share in their relative paths. A single-band file in a group is named by
    the Sentinel-2 band code in its name (B02 -> blue, as Earth Search names assets), else by its
    file stem; ``bands`` names the bands of multi-band files in file order (else band descriptions,
    else b1, b2, ...).
    Dates, first found: ``dates`` (item key, file stem or file name -> date), ``datetime`` (every
    item), ``date_pattern`` (a regex on the path; its ``date`` group, YYYYMMDD or ISO), a sidecar
    ``<file>.json`` (``datetime`` or Earth Engine's ``system:time_start``), the TIFF tag.
    ``static``: items without an acquisition date (a DEM). ``nodata`` is declared on every asset.
    Items are added to an existing collection (an item of the same id is replaced) unless ``replace``.
    ``dn_scale``/``dn_offset``: reflectance = DN x scale + offset, recorded on every asset
    (``raster:bands``) so cubes and models put scenes of different conventions on one scale
    (Sentinel-2 L2A: 0.0001 and -0.1 from 2022 on, 0.0001 and 0 before); unrecorded means 0.0001, 0.
    Unreadable files are skipped with a :class:`CatalogWarning`; none readable is an error.
    """
    src_path = Path(src).expanduser().resolve()
    out_path = Path(out).expanduser().resolve()
    if not src_path.exists():
        raise InputDataError(f"{src_path} does not exist.")
    if not collection or _safe_name(collection) != collection:
        raise UsageError(f"collection id {collection!r} must be non-empty and use only letters, digits, '.', '_' and '-'.")
    if src_path.is_file():
        files = [src_path]
        root = src_path.parent
    else:
        root = src_path
        files = sorted(
            p.resolve() for p in src_path.glob(pattern)
            if p.is_file() and out_path not in p.resolve().parents
        )
    if not files:
        raise InputDataError(f"no files match {pattern!r} under {src_path}.")
    fixed_dt = _parse_datetime(datetime, "the datetime argument") if datetime is not None else None
    dates = dict(dates or {})

    skipped: list[str] = []
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in files:
        try:
            info = describe_geotiff(path)
            info["geometry"], info["bbox"] = _footprint_wgs84(info["crs"], info["bounds"])
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, not fatal
            skipped.append(f"{path} ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})")
            continue
        groups.setdefault(_group_key(path, root, group), []).append((path, info))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} file(s) that are not readable georeferenced rasters: " + "; ".join(skipped),
            CatalogWarning,
            stacklevel=2,
        )
    if not groups:
        raise InputDataError(f"none of the {len(files)} file(s) matching {pattern!r} under {src_path} is a readable GeoTIFF.")

    assets_root = out_path / "assets"
    items_file = out_path / "stac" / "items" / f"{collection}.json"
    planned: list[tuple[str, list[tuple[Path, dict[str, Any]]], str | None]] = []
    no_date: list[str] = []
    used_ids: set[str] = set()
    for key, members in groups.items():
        dt = None if static else _item_datetime(key, members, fixed_dt, dates, date_pattern)
        if dt is None and not static:
            no_date.append(f"{key} ({members[0][0]})")
            continue
        base = _safe_name(members[0][0].stem if group is None else key)
        item_id, k = base, 2
        while item_id.lower() in used_ids:
            item_id, k = f"{base}-{k}", k + 1
        used_ids.add(item_id.lower())
        planned.append((item_id, members, dt))
    if no_date:
        raise InputDataError(
            f"{len(no_date)} item(s) carry no acquisition date, e.g. {no_date[0]}: give it per item with "
            "--date ITEM=YYYY-MM-DD (ITEM: the folder or file name), for all with --datetime, or by a regex on "
            "the file names with --date-pattern; catalogue a DEM with --static."
        )

    scaling = {k: float(v) for k, v in (("scale", dn_scale), ("offset", dn_offset)) if v is not None}
    if scaling and dn_scale is None:
        scaling["scale"] = 1e-4
    items = [_make_item(item_id, members, dt, collection, bands, nodata, group is not None, assets_root, items_file,
                        scaling) for item_id, members, dt in planned]
    existing: list[dict[str, Any]] = []
    if items_file.exists() and not replace:
        try:
            existing = json.loads(items_file.read_text()).get("features", [])
        except (OSError, ValueError) as e:
            raise InputDataError(f"{items_file} is not a readable item collection ({e}): catalogue with --replace "
                                 "to start it anew") from None
        new_ids = {i["id"] for i in items}
        existing = [i for i in existing if i.get("id") not in new_ids]
    all_items = existing + items
    _write_collection(out_path, collection, src_path, all_items)
    items_file.parent.mkdir(parents=True, exist_ok=True)
    items_file.write_text(json.dumps({"type": "FeatureCollection", "features": all_items}))
    log.info("catalogued %d item(s) from %s into %s (collection %s, %d items in all)", len(items), src_path,
             out_path, collection, len(all_items))
    return out_path


def _make_item(item_id: str, members: list[tuple[Path, dict[str, Any]]], dt: str | None, collection: str,
               bands: list[str] | None, nodata: float | None, grouped: bool, assets_root: Path,
               items_file: Path, scaling: dict[str, float] | None = None) -> dict[str, Any]:
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
            nodata is not None and not (info["nodata"] is not None and (
                info["nodata"] == nodata or (np.isnan(info["nodata"]) and np.isnan(nodata))))
        )
        for b, name in enumerate(names, start=1):
            if name in assets:
                raise InputDataError(f"two files of item {item_id} give band {name!r} ({assets[name]['file:source']} "
                                     f"and {path}): name the bands (--bands) or group the files differently")
            if need_vrt:
                vrt = item_assets_dir / f"{name}.vrt"
                _write_band_vrt(vrt, path, b, info, nodata, name)
                href, media = os.path.relpath(vrt, items_file.parent), VRT_TYPE
            else:
                href, media = str(path), GEOTIFF_TYPE
            band_nodata = nodata if nodata is not None else info["nodata"]
            # rio-stac's raster:bands (sampling, statistics, histogram from a <= 256 px overview);
            # scale/offset only where recorded: 1 and 0 from a plain file mean "not recorded"
            raster_band: dict[str, Any] = {k: v for k, v in raster_info[path][b - 1].items()
                                           if k not in ("scale", "offset", "nodata") and _finite(v)}
            raster_band.update({"data_type": info["dtypes"][b - 1], **(scaling or {})})
            if band_nodata is not None:
                raster_band["nodata"] = band_nodata if np.isfinite(band_nodata) else str(band_nodata)
            assets[name] = {
                "href": href, "type": media, "title": f"{name} (band {b} of {path.name})", "roles": ["data"],
                "eo:bands": [{"name": name}], "raster:bands": [raster_band], "file:source": str(path),
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
    geometry = first["geometry"] if len(members) == 1 else {
        "type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                            [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]}
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [PROJ_EXT, EO_EXT, RASTER_EXT],
        "id": item_id, "collection": collection, "geometry": geometry, "bbox": bbox, "properties": props,
        "assets": assets, "links": [],
    }


def _write_collection(out_path: Path, collection: str, src_path: Path, items: list[dict[str, Any]]) -> None:
    bb = np.array([i["bbox"] for i in items])
    times = sorted(t for i in items for t in (i["properties"].get("datetime"), i["properties"].get("start_datetime"),
                                                i["properties"].get("end_datetime")) if t)
    all_names = sorted({k for i in items for k in i["assets"]})
    col = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [EO_EXT, RASTER_EXT],
        "id": collection,
        "title": f"GeoTIFFs from {src_path.name}",
        "description": f"{len(items)} item(s) of GeoTIFFs catalogued by landslide-dask (latest from {src_path}).",
        "license": "other",
        "extent": {"spatial": {"bbox": [[float(bb[:, 0].min()), float(bb[:, 1].min()), float(bb[:, 2].max()),
                                         float(bb[:, 3].max())]]},
                   "temporal": {"interval": [[times[0], times[-1]]]}},
        "item_assets": {n: {"roles": ["data"], "eo:bands": [{"name": n}]} for n in all_names},
        "summaries": {"proj:code": sorted({i["properties"].get("proj:code", "custom") for i in items})},
        "links": [],
    }
    (out_path / "stac" / "collections").mkdir(parents=True, exist_ok=True)
    (out_path / "stac" / "collections" / f"{collection}.json").write_text(json.dumps(col, indent=1))
