"""The documents: STAC items and collections in the Earth Search conventions, and region vectors.

``s2_item`` describes one rendered granule date (assets, projection, MGRS and ``s2:`` class
percentages), ``dem_item`` one DEM tile; ``write_catalog`` writes both collections and item
collections under ``stac/``. ``region_vectors`` cuts a region's AOI, inventory area and inventory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from .dem import DemTask, dem_tile_transform
from .geo import feature_collection, rounded, write_json
from .regions import (
    BAND_INFO,
    BANDS,
    COG_TYPE,
    DEM_DATETIME,
    DEM_EXTENSIONS,
    DEM_NODATA,
    DEM_TILE_ARCSEC,
    RES,
    S2_EXTENSIONS,
    SCL_BARE,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MED,
    SCL_DARK,
    SCL_RES,
    SCL_SATURATED,
    SCL_SHADOW,
    SCL_SNOW,
    SCL_UNCLASSIFIED,
    SCL_VEG,
    SCL_WATER,
    RegionSpec,
)
from .render import Granule
from .world import Acquisition, Feature, World

__all__ = ["s2_item", "dem_item", "write_catalog", "region_vectors"]


def _bbox_of(geom_json: dict) -> list[float]:
    b = shapely.geometry.shape(geom_json).bounds
    return [rounded(v) for v in b]


def s2_item(region: RegionSpec, g: Granule, acq: Acquisition, res: dict) -> dict:
    """The STAC item of one granule date from its render result: what both drivers catalog."""
    tile = g.code(region.lat)
    mgrs_band, square = tile[2], tile[3:]
    t20 = Affine(SCL_RES, 0.0, g.left, 0.0, -SCL_RES, g.top)
    assets = {}
    for name in BANDS:
        band, wl, fwhm = BAND_INFO[name]
        assets[name] = {
            "href": f"../../sentinel-2-l2a/{res['id']}/{name}.tif",
            "type": COG_TYPE,
            "title": f"{name.capitalize()} ({band}) - 10m",
            "roles": ["data", "reflectance"],
            "proj:shape": [g.size, g.size],
            "proj:transform": list(g.transform)[:6],
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": RES,
                    "scale": 0.0001,
                    "offset": -0.1,
                }
            ],
            "eo:bands": [{"name": band, "common_name": name, "center_wavelength": wl, "full_width_half_max": fwhm}],
            "gsd": RES,
        }
    assets["scl"] = {
        "href": f"../../sentinel-2-l2a/{res['id']}/scl.tif",
        "type": COG_TYPE,
        "title": "Scene classification map (SCL)",
        "roles": ["data"],
        "proj:shape": [g.size // 2, g.size // 2],
        "proj:transform": list(t20)[:6],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": SCL_RES, "unit": "class"}],
    }
    pct = res["scl_pct"]
    props = {
        "datetime": acq.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "platform": acq.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": RES,
        "eo:cloud_cover": rounded(res["cloud_pct"], 6),
        "proj:code": f"EPSG:{g.epsg}",
        "proj:epsg": g.epsg,
        "proj:bbox": [rounded(v, 1) for v in g.bounds],
        "proj:shape": [g.size, g.size],
        "proj:transform": list(g.transform)[:6],
        "mgrs:utm_zone": g.zone,
        "mgrs:latitude_band": mgrs_band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{tile}",
        "view:sun_azimuth": acq.sun_azimuth,
        "view:sun_elevation": acq.sun_elevation,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.09",
        "s2:nodata_pixel_percentage": rounded(res["nodata_pct"], 6),
        "s2:saturated_defective_pixel_percentage": rounded(pct[SCL_SATURATED], 6),
        "s2:dark_features_percentage": rounded(pct[SCL_DARK], 6),
        "s2:cloud_shadow_percentage": rounded(pct[SCL_SHADOW], 6),
        "s2:vegetation_percentage": rounded(pct[SCL_VEG], 6),
        "s2:not_vegetated_percentage": rounded(pct[SCL_BARE], 6),
        "s2:water_percentage": rounded(pct[SCL_WATER], 6),
        "s2:unclassified_percentage": rounded(pct[SCL_UNCLASSIFIED], 6),
        "s2:medium_proba_clouds_percentage": rounded(pct[SCL_CLOUD_MED], 6),
        "s2:high_proba_clouds_percentage": rounded(pct[SCL_CLOUD_HIGH], 6),
        "s2:thin_cirrus_percentage": rounded(pct[SCL_CIRRUS], 6),
        "s2:snow_ice_percentage": rounded(pct[SCL_SNOW], 6),
        "earthsearch:boa_offset_applied": False,
        "synthetic:region": region.name,
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": S2_EXTENSIONS,
        "id": res["id"],
        "collection": "sentinel-2-l2a",
        "geometry": res["footprint"],
        "bbox": _bbox_of(res["footprint"]),
        "properties": props,
        "links": [],
        "assets": assets,
    }


def dem_item(task: DemTask) -> dict:
    """The STAC item of one DEM tile: what both drivers catalog."""
    tf = dem_tile_transform(task.ti, task.tj)
    n = DEM_TILE_ARCSEC
    w, n_ = tf.c, tf.f
    e, s = w + n * tf.a, n_ + n * tf.e
    geom = {
        "type": "Polygon",
        "coordinates": [
            [
                [rounded(w), rounded(s)],
                [rounded(e), rounded(s)],
                [rounded(e), rounded(n_)],
                [rounded(w), rounded(n_)],
                [rounded(w), rounded(s)],
            ]
        ],
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": DEM_EXTENSIONS,
        "id": task.item_id,
        "collection": "cop-dem-glo-30",
        "geometry": geom,
        "bbox": [rounded(w), rounded(s), rounded(e), rounded(n_)],
        "properties": {
            "datetime": DEM_DATETIME,
            "platform": "tandem-x",
            "gsd": 30,
            "proj:code": "EPSG:4326",
            "proj:epsg": 4326,
            "proj:shape": [n, n],
            "proj:transform": [rounded(v, 12) for v in list(tf)[:6]],
        },
        "links": [],
        "assets": {
            "data": {
                "href": f"../../cop-dem-glo-30/{task.item_id}/data.tif",
                "type": COG_TYPE,
                "title": "Digital surface model (synthetic)",
                "roles": ["data"],
                "proj:shape": [n, n],
                "proj:transform": [rounded(v, 12) for v in list(tf)[:6]],
                "raster:bands": [
                    {"nodata": DEM_NODATA, "data_type": "float32", "spatial_resolution": 30, "unit": "metre"}
                ],
            }
        },
    }


def _collection(cid: str, title: str, description: str, items: list[dict], extra: dict) -> dict:
    bbs = np.array([it["bbox"] for it in items])
    times = sorted(it["properties"]["datetime"] for it in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "title": title,
        "description": description,
        "license": "proprietary",
        "keywords": ["synthetic", "landslides", "demo"],
        "providers": [{"name": "landslide_dask synthetic generator", "roles": ["producer", "processor"]}],
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        rounded(bbs[:, 0].min()),
                        rounded(bbs[:, 1].min()),
                        rounded(bbs[:, 2].max()),
                        rounded(bbs[:, 3].max()),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
        **extra,
    }


def _s2_collection(items: list[dict]) -> dict:
    item_assets = {
        name: {
            "type": COG_TYPE,
            "roles": ["data", "reflectance"],
            "gsd": RES,
            "eo:bands": [{"name": BAND_INFO[name][0], "common_name": name, "center_wavelength": BAND_INFO[name][1]}],
            "raster:bands": [
                {"nodata": 0, "data_type": "uint16", "spatial_resolution": RES, "scale": 0.0001, "offset": -0.1}
            ],
        }
        for name in BANDS
    }
    item_assets["scl"] = {
        "type": COG_TYPE,
        "roles": ["data"],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": SCL_RES}],
    }
    return _collection(
        "sentinel-2-l2a",
        "Sentinel-2 Level-2A (synthetic)",
        "Synthetic Sentinel-2 L2A granules in the Earth Search conventions: one COG per band, DN = "
        "reflectance * 10000 + 1000 (scale 0.0001, offset -0.1), nodata 0, SCL at 20 m.",
        items,
        {
            "stac_extensions": ["https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"],
            "summaries": {
                "platform": ["sentinel-2a", "sentinel-2b"],
                "constellation": ["sentinel-2"],
                "instruments": ["msi"],
                "gsd": [RES],
            },
            "item_assets": item_assets,
        },
    )


def _dem_collection(items: list[dict]) -> dict:
    return _collection(
        "cop-dem-glo-30",
        "Copernicus DEM GLO-30 (synthetic)",
        "Synthetic elevation tiles in the Earth Search cop-dem-glo-30 conventions: float32 metres, "
        "EPSG:4326 at 1 arc-second, nodata -32767 outside the generated worlds.",
        items,
        {"item_assets": {"data": {"type": COG_TYPE, "roles": ["data"]}}},
    )


def write_catalog(out: Path, s2_items: list[dict], dem_items: list[dict]) -> None:
    """The STAC collections and item collections of the imagery and the DEM, sorted."""
    s2_items.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
    dem_items.sort(key=lambda it: it["id"])
    write_json(out / "stac" / "collections" / "sentinel-2-l2a.json", _s2_collection(s2_items))
    write_json(out / "stac" / "collections" / "cop-dem-glo-30.json", _dem_collection(dem_items))
    write_json(out / "stac" / "items" / "sentinel-2-l2a.json", feature_collection(s2_items))
    write_json(out / "stac" / "items" / "cop-dem-glo-30.json", feature_collection(dem_items))


def region_vectors(world: World) -> tuple[shapely.Polygon, shapely.Polygon, list[tuple[Feature, shapely.Polygon]]]:
    """AOI (a square with one corner cut), inventory area (the AOI less a side strip), inventory."""
    s = world.spec
    x0, y0, x1, y1 = world.aoi_box
    side = x1 - x0
    cut = 0.18 * side
    aoi = shapely.Polygon([(x0, y0), (x1 - cut, y0), (x1, y0 + cut), (x1, y1), (x0, y1)])
    strip = 0.15 * side
    keep = (
        shapely.box(x0 + strip, y0 - 1, x1 + 1, y1 + 1)
        if s.inventory_strip == "west"
        else shapely.box(x0 - 1, y0 - 1, x1 - strip, y1 + 1)
    )
    area = aoi.intersection(keep)
    slides = world.features("slide", area.bounds)
    inv = [(f, f.poly) for f in slides if f.poly.intersects(area)]
    inv.sort(key=lambda t: (t[0].key[1], t[0].key[0], t[0].key[2]))
    return aoi, area, inv
