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
import warnings
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError, UsageError
from .geotiff import EO_EXT, RASTER_EXT, _footprint_wgs84, _safe_name, describe_geotiff, make_item

log = logging.getLogger(__name__)

__all__ = ["CatalogWarning", "catalog_geotiffs", "describe_geotiff"]


class CatalogWarning(UserWarning):
    """Some files were skipped while cataloguing."""


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


def _group_key(path: Path, root: Path, group: str | None) -> str:
    """The item a file belongs to: itself, its folder, or a regex's ``item`` group on its relative path."""
    if group is None:
        return str(path.relative_to(root))  # one item per file (the id is its stem, made unique)
    if group == "folder":
        rel = path.parent.relative_to(root) if path.parent != root else Path(root.name)
        return str(rel).replace(os.sep, "_")
    m = re.search(group, str(path.relative_to(root)))
    if not m or "item" not in m.groupdict():
        raise UsageError(
            f"--group {group!r} does not match {path.relative_to(root)} with a named group "
            "(?P<item>...): the regex must capture what files of one scene share"
        )
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


def _item_datetime(
    key: str,
    files: list[tuple[Path, dict[str, Any]]],
    fixed: str | None,
    dates: dict[str, str],
    date_pattern: str | None,
) -> str | None:
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
        raise UsageError(
            f"collection id {collection!r} must be non-empty and use only letters, digits, '.', '_' and '-'."
        )
    files, root = _source_files(src_path, out_path, pattern)
    groups = _read_groups(files, root, group, f"{len(files)} file(s) matching {pattern!r} under {src_path}")
    fixed_dt = _parse_datetime(datetime, "the datetime argument") if datetime is not None else None
    planned = _plan_items(groups, group, static, fixed_dt, dict(dates or {}), date_pattern)
    items_file = out_path / "stac" / "items" / f"{collection}.json"
    scaling = {k: float(v) for k, v in (("scale", dn_scale), ("offset", dn_offset)) if v is not None}
    if scaling and dn_scale is None:
        scaling["scale"] = 1e-4
    items = [
        make_item(
            item_id, members, dt, collection, bands, nodata, group is not None, out_path / "assets", items_file, scaling
        )
        for item_id, members, dt in planned
    ]
    existing = [] if replace else _existing_items(items_file, {i["id"] for i in items})
    all_items = existing + items
    _write_collection(out_path, collection, src_path, all_items)
    items_file.parent.mkdir(parents=True, exist_ok=True)
    items_file.write_text(json.dumps({"type": "FeatureCollection", "features": all_items}))
    log.info(
        "catalogued %d item(s) from %s into %s (collection %s, %d items in all)",
        len(items),
        src_path,
        out_path,
        collection,
        len(all_items),
    )
    return out_path


Members = list[tuple[Path, dict[str, Any]]]


def _source_files(src_path: Path, out_path: Path, pattern: str) -> tuple[list[Path], Path]:
    """The files to catalogue (one file, or ``pattern`` under a folder, minus the output) and their root."""
    if src_path.is_file():
        return [src_path], src_path.parent
    files = sorted(p.resolve() for p in src_path.glob(pattern) if p.is_file() and out_path not in p.resolve().parents)
    if not files:
        raise InputDataError(f"no files match {pattern!r} under {src_path}.")
    return files, src_path


def _read_groups(files: list[Path], root: Path, group: str | None, what: str) -> dict[str, Members]:
    """Each readable file described and grouped into its item; unreadable ones skipped with a warning."""
    skipped: list[str] = []
    groups: dict[str, Members] = {}
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
            stacklevel=3,
        )
    if not groups:
        raise InputDataError(f"none of the {what} is a readable GeoTIFF.")
    return groups


def _plan_items(
    groups: dict[str, Members],
    group: str | None,
    static: bool,
    fixed_dt: str | None,
    dates: dict[str, str],
    date_pattern: str | None,
) -> list[tuple[str, Members, str | None]]:
    """(item id, member files, datetime) per item: unique ids, every item dated unless ``static``."""
    planned: list[tuple[str, Members, str | None]] = []
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
    return planned


def _existing_items(items_file: Path, replaced: set[str]) -> list[dict[str, Any]]:
    """The collection's items already catalogued, less those being replaced (same id)."""
    if not items_file.exists():
        return []
    try:
        existing = json.loads(items_file.read_text()).get("features", [])
    except (OSError, ValueError) as e:
        raise InputDataError(
            f"{items_file} is not a readable item collection ({e}): catalogue with --replace to start it anew"
        ) from None
    return [i for i in existing if i.get("id") not in replaced]


def _write_collection(out_path: Path, collection: str, src_path: Path, items: list[dict[str, Any]]) -> None:
    bb = np.array([i["bbox"] for i in items])
    times = sorted(
        t
        for i in items
        for t in (
            i["properties"].get("datetime"),
            i["properties"].get("start_datetime"),
            i["properties"].get("end_datetime"),
        )
        if t
    )
    all_names = sorted({k for i in items for k in i["assets"]})
    col = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [EO_EXT, RASTER_EXT],
        "id": collection,
        "title": f"GeoTIFFs from {src_path.name}",
        "description": f"{len(items)} item(s) of GeoTIFFs catalogued by landslide-dask (latest from {src_path}).",
        "license": "other",
        "extent": {
            "spatial": {
                "bbox": [[float(bb[:, 0].min()), float(bb[:, 1].min()), float(bb[:, 2].max()), float(bb[:, 3].max())]]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "item_assets": {n: {"roles": ["data"], "eo:bands": [{"name": n}]} for n in all_names},
        "summaries": {"proj:code": sorted({i["properties"].get("proj:code", "custom") for i in items})},
        "links": [],
    }
    (out_path / "stac" / "collections").mkdir(parents=True, exist_ok=True)
    (out_path / "stac" / "collections" / f"{collection}.json").write_text(json.dumps(col, indent=1))
