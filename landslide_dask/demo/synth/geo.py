"""Geometry as every document here writes it: lon/lat, rounded GeoJSON, JSON files.

Granule footprints, STAC items, AOIs and inventories are transformed to lon/lat, rounded (7
decimals unless told) and written by the same few helpers, so every document agrees with the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer

__all__ = ["rounded", "geojson_geometry", "to_lonlat", "feature_collection", "write_json"]


def rounded(v: float, nd: int = 7) -> float:
    """``v`` rounded to ``nd`` decimals as a plain float: every number written to a document."""
    return float(round(float(v), nd))


def geojson_geometry(geom: shapely.Geometry, nd: int = 7) -> dict:
    """A GeoJSON geometry with rounded coordinates: footprints, items, AOIs and inventories."""
    g = shapely.geometry.mapping(geom)

    def rnd(c):
        if isinstance(c[0], (int, float)):
            return [rounded(c[0], nd), rounded(c[1], nd)]
        return [rnd(x) for x in c]

    return {"type": g["type"], "coordinates": rnd(g["coordinates"])}


def to_lonlat(geom: shapely.Geometry, epsg: int) -> shapely.Geometry:
    """A geometry from UTM ``epsg`` to lon/lat: zone reach, DEM tiles and every vector written."""
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1))


def feature_collection(features: list[dict]) -> dict:
    """A GeoJSON FeatureCollection: the STAC item files and the region vectors."""
    return {"type": "FeatureCollection", "features": features}


def write_json(path: Path, obj) -> None:
    """Write a JSON document (indent 1): catalogs, region vectors and ``regions.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
