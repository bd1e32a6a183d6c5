"""STAC items from files, searched here: no server to start for one's own data.

``cube --stac`` takes, besides an API URL:

- a folder written by ``landslide-dask catalog`` (``DIR/stac/collections/*.json`` and
  ``DIR/stac/items/*.json``, read by :func:`load_stac_dir`);
- a static STAC catalog: a folder with ``catalog.json`` (or ``collection.json``), or that file,
  walked with pystac (child catalogs, collections, relative links);
- an ItemCollection (a GeoJSON FeatureCollection of items; a single item or a list of items
  also do), e.g. what ``stac-client search --save`` or ``pystac_client`` writes.

Items come back as plain dicts, with relative asset hrefs made absolute, and are filtered as an
API would filter them (collection, bbox against the geometry, datetime ranges, cloud cover), so the
cube code cannot tell a folder from a server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import InputDataError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "STAC_SOURCES",
    "is_local_source",
    "local_path",
    "read_local_items",
    "filter_items",
    "collection_ids",
    "find_stac_folder",
    "load_stac_dir",
    "features_of",
]

#: What ``--stac`` accepts, for messages.
STAC_SOURCES = (
    "a STAC API URL (http(s)://...), a folder written by `landslide-dask catalog`, a static STAC "
    "catalog (a folder holding catalog.json), or an ItemCollection file (.json/.geojson)"
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_local_source(source: str | os.PathLike[str]) -> bool:
    """True for a path or ``file://`` URL, False for http(s); other schemes are refused."""
    text = str(source)
    if text.lower().startswith(("http://", "https://")):
        return False
    if _URL.match(text) and not text.lower().startswith("file://"):
        raise UsageError(f"--stac {text}: cannot read STAC from {text.split('://')[0]}://. It takes {STAC_SOURCES}.")
    return True


def local_path(source: str | os.PathLike[str]) -> Path:
    """The path of a local source (``file://`` URLs unwrapped); a missing path is an argument error."""
    text = str(source)
    path = Path(unquote(urlparse(text).path)) if text.lower().startswith("file://") else Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"--stac {text}: no such file or folder. --stac takes {STAC_SOURCES}.")
    return path


def find_stac_folder(stac_root: str | os.PathLike[str]) -> Path:
    """Return the folder holding ``collections/`` and ``items/``.

    Accepts either ``DIR`` (containing ``stac/``) or ``DIR/stac`` itself, because users type both.
    """
    root = Path(stac_root).expanduser()
    for cand in (root / "stac", root):
        if (cand / "collections").is_dir():
            return cand.resolve()
    if not root.exists():
        raise InputDataError(f"STAC folder {root} does not exist.")
    raise InputDataError(
        f"{root} is not a STAC folder: expected {root}/stac/collections/<id>.json and "
        f"{root}/stac/items/<id>.json (write one with `landslide-dask catalog` for your own "
        "GeoTIFFs, or generate the synthetic demo data)."
    )


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputDataError(f"cannot read {path}: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputDataError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from e


def _is_absolute_href(href: str) -> bool:
    return bool(_URL.match(href)) or os.path.isabs(href)


def _absolutise_assets(obj: dict[str, Any], base_dir: Path) -> None:
    """Make relative asset hrefs absolute paths (resolved against ``base_dir``), in place."""
    for asset in (obj.get("assets") or {}).values():
        href = asset.get("href") if isinstance(asset, dict) else None
        if isinstance(href, str) and href and not _is_absolute_href(href):
            asset["href"] = str((base_dir / href).resolve())


def _absolutised(item: dict[str, Any], base: Path) -> dict[str, Any]:
    """``item`` with relative asset hrefs made absolute against the folder of its file."""
    _absolutise_assets(item, base)
    return item


def _keep_absolute_links(obj: dict[str, Any]) -> None:
    """Drop relative links: the server writes its own self/root/parent links, and a relative
    link from the folder would point nowhere once served."""
    links = obj.get("links")
    if isinstance(links, list):
        obj["links"] = [
            ln
            for ln in links
            if isinstance(ln, dict)
            and isinstance(ln.get("href"), str)
            and _URL.match(ln["href"])
            and ln.get("rel") not in ("self", "root", "parent", "collection", "items", "item")
        ]


def load_stac_dir(stac_root: str | os.PathLike[str]) -> tuple[list[dict], list[dict]]:
    """Read a STAC folder: ``(collections, items)`` with asset hrefs made absolute.

    Errors name the offending file, so a user can fix a hand-edited catalogue.
    """
    folder = find_stac_folder(stac_root)
    col_files = sorted((folder / "collections").glob("*.json"))
    if not col_files:
        raise InputDataError(f"no collection files in {folder / 'collections'} (expected <id>.json).")

    collections: list[dict] = []
    col_ids: dict[str, Path] = {}
    for path in col_files:
        col = _read_json(path)
        if not isinstance(col, dict) or col.get("type") != "Collection" or not col.get("id"):
            raise InputDataError(f"{path} is not a STAC Collection (needs type 'Collection' and an id).")
        if col["id"] in col_ids:
            raise InputDataError(f"collection id {col['id']!r} is defined twice: {col_ids[col['id']]} and {path}.")
        col_ids[col["id"]] = path
        _absolutise_assets(col, path.parent)
        _keep_absolute_links(col)
        collections.append(col)

    items: list[dict] = []
    seen: dict[tuple[str, str], Path] = {}
    items_dir = folder / "items"
    item_files = sorted(items_dir.glob("*.json")) if items_dir.is_dir() else []
    for path in item_files:
        features = features_of(_read_json(path), path, f"{path} is not a FeatureCollection of STAC Items.")
        for item in features:
            cid = item.get("collection") or path.stem
            if cid not in col_ids:
                raise InputDataError(
                    f"{path}: item {item['id']!r} belongs to collection {cid!r}, which has no file "
                    f"{folder / 'collections' / (cid + '.json')} (collections present: "
                    f"{', '.join(sorted(col_ids))})."
                )
            key = (cid, item["id"])
            if key in seen:
                raise InputDataError(f"{path}: item id {item['id']!r} appears twice in collection {cid!r}.")
            seen[key] = path
            item["collection"] = cid
            _absolutise_assets(item, path.parent)
            _keep_absolute_links(item)
            items.append(item)

    missing = sorted(
        {
            a["href"]
            for it in items
            for a in (it.get("assets") or {}).values()
            if isinstance(a, dict)
            and isinstance(a.get("href"), str)
            and not _URL.match(a["href"])
            and not os.path.exists(a["href"])
        }
    )
    if missing:
        warnings.warn(
            f"{len(missing)} asset file(s) referenced in {items_dir} do not exist, e.g. {', '.join(missing[:3])}",
            stacklevel=2,
        )
    return collections, items


def features_of(data: Any, where: Path, expected: str | None = None) -> list[dict[str, Any]]:
    """The STAC items of a JSON document (ItemCollection, one item, or a list of items); anything
    else is an error naming ``where`` and what was ``expected`` (default: what --stac takes)."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        feats = [data]
    elif isinstance(data, list):
        feats = data
    else:
        feats = None
    if not isinstance(feats, list):
        raise InputDataError(
            expected
            or (
                f"{where} is neither a STAC ItemCollection (FeatureCollection of items), an "
                "item, nor a catalog or collection: --stac takes " + STAC_SOURCES + "."
            )
        )
    for n, f in enumerate(feats):
        if not isinstance(f, dict) or f.get("type") != "Feature" or not f.get("id"):
            raise InputDataError(f"{where}: feature #{n} is not a STAC item (needs type 'Feature' and an id).")
    return feats


def _static_catalog_items(root_file: Path) -> list[dict[str, Any]]:
    """Every item under a static catalog, walked by pystac; each read back as the JSON it is (pystac's
    objects drop ``proj:epsg`` beside ``proj:code``), with its collection and absolute hrefs."""
    import pystac

    try:
        root = pystac.read_file(str(root_file))
    except Exception as e:  # pystac raises several types for files that are not STAC
        raise InputDataError(f"{root_file} is not a readable STAC catalog or collection ({e}).") from e
    if not isinstance(root, pystac.Catalog):
        raise InputDataError(f"{root_file} is a STAC {type(root).__name__}, not a catalog or collection.")
    items = []
    for it in root.get_items(recursive=True):
        href = it.get_self_href()
        if href and not _URL.match(href) and Path(href).is_file():
            raw = _read_json(Path(href))
            raw.setdefault("collection", it.collection_id)
            items.append(_absolutised(raw, Path(href).parent))
        else:  # an item without a file of its own: pystac's view, hrefs made absolute by pystac
            it.make_asset_hrefs_absolute()
            items.append(it.to_dict(transform_hrefs=False))
    return items


def read_local_items(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All items of a local source (see the module), as dicts with absolute asset hrefs."""
    path = local_path(source)
    if path.is_dir():
        if (path / "stac" / "collections").is_dir() or (path / "collections").is_dir():
            log.info("reading the catalogue folder %s", path)
            return load_stac_dir(path)[1]
        for name in ("catalog.json", "collection.json"):
            if (path / name).is_file():
                log.info("walking the static STAC catalog %s", path / name)
                return _static_catalog_items(path / name)
        raise UsageError(
            f"--stac {source}: the folder holds neither stac/collections/ (a `landslide-dask catalog` "
            "folder) nor catalog.json (a static STAC catalog). Catalogue GeoTIFFs with `landslide-dask "
            f"catalog DIR --out {path}` first; --stac takes {STAC_SOURCES}."
        )
    if path.suffix.lower() not in (".json", ".geojson"):
        raise UsageError(f"--stac {source}: not a STAC file (.json or .geojson). --stac takes {STAC_SOURCES}.")
    data = _read_json(path)
    if isinstance(data, dict) and data.get("type") in ("Catalog", "Collection"):
        return _static_catalog_items(path)
    return [_absolutised(f, path.parent) for f in features_of(data, path)]


def collection_ids(items: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(it.get("collection")) for it in items if it.get("collection")})


def _parse_time(text: str, end: bool) -> datetime:
    """An ISO date or datetime; a bare date is the whole day (its start, or its last instant)."""
    t = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
        day = datetime.fromisoformat(t).replace(tzinfo=timezone.utc)
        return day + timedelta(days=1) - timedelta(microseconds=1) if end else day
    dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _interval(dt: Any) -> tuple[datetime | None, datetime | None]:
    """The search's (start, end), from ``search._datetime_arg``'s form: None, a string, or [start, end]."""
    if dt is None:
        return None, None
    if isinstance(dt, str):
        a, b = dt.split("/", 1) if "/" in dt else (dt, dt)
    else:
        a, b = dt
    return (
        None if a in (None, "", "..") else _parse_time(a, False),
        None if b in (None, "", "..") else _parse_time(b, True),
    )


def _item_interval(item: dict[str, Any]) -> tuple[datetime, datetime] | None:
    props = item.get("properties") or {}
    try:
        if props.get("datetime"):
            t = _parse_time(str(props["datetime"]), False)
            return t, t
        if props.get("start_datetime") and props.get("end_datetime"):
            return _parse_time(str(props["start_datetime"]), False), _parse_time(str(props["end_datetime"]), True)
    except ValueError:
        return None
    return None


def _footprint(item: dict[str, Any]):
    import shapely
    import shapely.geometry

    if item.get("geometry"):
        try:
            return shapely.geometry.shape(item["geometry"])
        except Exception:  # noqa: BLE001 - a broken geometry: fall back to the bbox
            pass
    b = item.get("bbox")
    if b and len(b) >= 4:
        return shapely.box(b[0], b[1], b[3], b[4]) if len(b) == 6 else shapely.box(*b[:4])
    return None


def filter_items(
    items: Sequence[dict[str, Any]], collections: Sequence[str], bbox: Sequence[float], dt: Any, max_cloud: float | None
) -> tuple[list[dict[str, Any]], tuple[int, int, float | None]]:
    """The items a STAC API search would return, and (cloudier, without eo:cloud_cover, least
    cloudy of those dropped) for the empty-search message. ``bbox`` W,S,E,N (W > E: across the
    antimeridian), ``dt`` as ``search._datetime_arg`` gives it (whole days inclusive)."""
    import shapely

    w, s, e, n = bbox
    area = shapely.box(w, s, e, n) if w <= e else shapely.union(shapely.box(w, s, 180, n), shapely.box(-180, s, e, n))
    start, end = _interval(dt)
    wanted = set(collections)
    kept: list[dict[str, Any]] = []
    n_over = n_unknown = 0
    lowest: float | None = None
    for item in items:
        if item.get("collection") not in wanted:
            continue
        geom = _footprint(item)
        if geom is None or not geom.intersects(area):
            continue
        if start is not None or end is not None:
            span = _item_interval(item)
            if span is None or (start is not None and span[1] < start) or (end is not None and span[0] > end):
                continue
        if max_cloud is not None:
            cc = (item.get("properties") or {}).get("eo:cloud_cover")
            if cc is None:
                n_unknown += 1
                continue
            if not float(cc) < float(max_cloud):
                n_over += 1
                lowest = float(cc) if lowest is None else min(lowest, float(cc))
                continue
        kept.append(item)
    return kept, (n_over, n_unknown, lowest)
