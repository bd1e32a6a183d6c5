"""The STAC item of a map's products: what a Copernicus EMS delineation tells its reader.

Source scenes (ids, dates, collection, links back to them), the event date, the model and the
threshold, the area of interest, mapped and not-mapped area, the landslides found, and every
product file as an asset. Validated with pystac against the STAC core schema, which pystac
carries, so validation needs no network; the item uses no extension for the same reason (their
schemas live on the web), and its own fields are prefixed ``landslide:``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from .. import __version__
from ..common.files import write_text

__all__ = ["products_item", "write_item", "MEDIA_TYPES"]

MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".gpkg": "application/geopackage+sqlite3",
    ".parquet": "application/vnd.apache.parquet",
    ".html": "text/html",
    ".qml": "text/xml",
    ".json": "application/json",
    ".md": "text/markdown",
    ".png": "image/png",
    ".zarr": "application/vnd+zarr",
}
ROLES = {
    "probability": ["data"],
    "not_mapped": ["data", "quality"],
    "landslides_gpkg": ["data"],
    "landslides_parquet": ["data"],
    "web_map": ["overview"],
}


def _source_links(cube_attrs: dict) -> list[dict]:
    url, coll = str(cube_attrs.get("stac_url", "")), cube_attrs.get("collection", "")
    links = []
    if url.startswith(("http://", "https://")):
        for role, key, collection in (
            ("imagery", "stac_items", coll),
            ("dem", "dem_items", cube_attrs.get("dem_collection", "")),
        ):
            for iid in cube_attrs.get(key, []) or []:
                links.append(
                    {
                        "rel": "derived_from",
                        "type": "application/geo+json",
                        "title": f"{role} {iid}",
                        "href": f"{url.rstrip('/')}/collections/{quote(collection)}/items/{quote(iid)}",
                    }
                )
    return links


def products_item(
    item_id: str,
    *,
    geometry: dict,
    bbox: list[float],
    assets: dict[str, Path],
    base: Path,
    pred_attrs: dict,
    cube_attrs: dict | None = None,
    stats: dict | None = None,
    title: str | None = None,
) -> dict:
    """The item as a dict (pystac-validated by :func:`write_item`); ``assets`` are paths made
    relative to ``base`` (the item's folder) so the folder can move."""
    import pystac

    cube_attrs = cube_attrs or {}
    dates = sorted(list(cube_attrs.get("pre_dates", [])) + list(cube_attrs.get("post_dates", [])))
    event = pred_attrs.get("event_date") or cube_attrs.get("event_date")
    start = dates[0] if dates else event
    end = dates[-1] if dates else event
    props = {
        "title": title or f"Landslides {event}",
        "description": "Event landslides mapped from pre- and post-event imagery and terrain by a CNN "
        "(landslide-dask): probability, status (where the map is blind) and polygons.",
        "start_datetime": f"{start}T00:00:00Z",
        "end_datetime": f"{end}T23:59:59Z",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "providers": [{"name": "landslide-dask", "roles": ["processor"]}],
        "landslide:event_date": event,
        "landslide:pre_event_dates": list(cube_attrs.get("pre_dates", [])),
        "landslide:post_event_dates": list(cube_attrs.get("post_dates", [])),
        "landslide:source_collection": cube_attrs.get("collection"),
        "landslide:source_stac": cube_attrs.get("stac_url"),
        "landslide:source_items": list(cube_attrs.get("stac_items", [])),
        "landslide:dem_collection": cube_attrs.get("dem_collection") or None,
        "landslide:dem_items": list(cube_attrs.get("dem_items", [])),
        "landslide:model": Path(str(pred_attrs.get("model", ""))).name,
        "landslide:model_sha256": pred_attrs.get("model_sha256"),
        "landslide:threshold": pred_attrs.get("threshold"),
        "landslide:threshold_rule": pred_attrs.get("threshold_rule", "validation"),
        "landslide:crs": pred_attrs.get("crs"),
        "landslide:resolution_m": pred_attrs.get("resolution"),
        "landslide:software": f"landslide-dask {__version__}",
        **{f"landslide:{k}": v for k, v in (stats or {}).items()},
    }
    if "S2" in " ".join(props["landslide:source_items"]) or "sentinel-2" in str(props["landslide:source_collection"]):
        props["constellation"] = "sentinel-2"
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=None,
        properties=props,
        start_datetime=datetime.fromisoformat(f"{start}T00:00:00+00:00"),
        end_datetime=datetime.fromisoformat(f"{end}T23:59:59+00:00"),
    )
    for key, path in assets.items():
        path = Path(path)
        item.add_asset(
            key,
            pystac.Asset(
                href=Path(path).relative_to(base).as_posix(),
                title=key.replace("_", " "),
                media_type=MEDIA_TYPES.get(path.suffix),
                roles=ROLES.get(key, ["metadata"]),
            ),
        )
    for link in _source_links(cube_attrs):
        item.add_link(pystac.Link(rel=link["rel"], target=link["href"], media_type=link["type"], title=link["title"]))
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    return d


def write_item(path: str | Path, item: dict) -> Path:
    """Validate against the STAC core schema (offline: pystac carries it) and write."""
    import pystac

    pystac.Item.from_dict(item, preserve_dict=True).validate()
    return write_text(Path(path), json.dumps(item, indent=1, default=str) + "\n")
