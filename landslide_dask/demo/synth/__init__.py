"""Synthetic event regions, written exactly like a user's real data.

Why this package exists: without an event inventory with matching imagery that every clone can
carry, the accuracy tests and the demo need regions where the learning problem is real:
landslides that are bright, vegetation-free scars *on steep ground* next to look-alikes that are
not landslides (harvested fields, old scars, cloud remnants, river sediment), under changing sun,
clouds and seasons, in several UTM zones. And the files must look like Earth Search's, so every
stage after this one runs unchanged on real data.

How: each region is a *procedural world* defined in its own "home" UTM CRS. Every field (terrain,
land cover, clouds, noise) is a pure function of position (and date), built from hashed integer
lattices, and vector features (landslides, old scars) are generated per 1 km cell from a
cell-keyed random stream. So every output tile -- a Sentinel-2 granule in any UTM zone, or a DEM
tile in EPSG:4326 -- is computed on its own from the world's description: overlapping granules of
one zone agree pixel for pixel, memory follows the tile, not the area, and a later "country" mode
(thousands of km², several epicentres, two zones) only needs a bigger world and more tiles.

Layout written (the contract other modules rely on)::

    out_dir/regions.json
    out_dir/regions/<name>/{aoi,inventory,inventory_area}.geojson      (EPSG:4326)
    out_dir/stac/collections/{sentinel-2-l2a,cop-dem-glo-30}.json
    out_dir/stac/items/{sentinel-2-l2a,cop-dem-glo-30}.json            (FeatureCollections)
    out_dir/sentinel-2-l2a/<item_id>/{blue,green,red,nir,scl}.tif      (COGs)
    out_dir/cop-dem-glo-30/<item_id>/data.tif                          (COG)

Imagery DN = surface reflectance * 10000 + 1000 (processing baseline >= 04.00), nodata 0; SCL at
20 m with the Sen2Cor classes; DEM float32 metres at 1 arc-second, nodata -32767.

The country mode (``make_demo_country``, ``make-demo-data DIR --country``): a ``CountrySpec`` (the
``gorkha_like`` look over a lon/lat bbox; by default that of ``cluster/jobs/demo-country.yaml``,
~2,180 km² across the UTM 44N/45N boundary at 84 E) makes a ``CountryWorld``: parallel main
valleys with their tributaries (each valley's influence ends smoothly at a finite distance, so a
tile evaluates only the valleys near it, still a pure function of position) and several
epicentres with their own decay and weight, so some cells have many landslides and some almost
none. The granule tasks are streamed through the process pool (a bounded number in flight: one
granule's arrays per process, never the country's), and the inventory is collected strip by strip
(``country_inventory``), each strip from a fresh world. The layout is the regions' (one
``regions.json`` entry with ``"kind": "country"``), so ``serve-stac`` and country jobs read it
unchanged.

The modules, in the order the data is made: ``noise`` (procedural noise), ``regions`` (the
conventions of the written data, the region specs and UTM zones), ``world`` (a region's terrain,
landslides and clouds; the acquisitions), ``country`` (the demo country's world), ``surface``
(what the satellite sees of a granule window on each date), ``render`` (the granule grid and the
granule COGs), ``dem`` (the DEM tiles), ``items`` (STAC items and collections, region vectors)
and ``make`` (the drivers ``make_demo_data`` and ``make_demo_country``); ``geo`` holds the lon/lat
and rounded-GeoJSON helpers that every writer shares.
"""

from .country import DEMO_COUNTRY_BBOX, CountrySpec, CountryWorld, country_area_km2, country_spec
from .make import make_demo_country, make_demo_data
from .regions import REGION_TEMPLATES, RegionSpec, region_specs, utm_epsg
from .render import zone_reach
from .world import World

__all__ = [
    "DEMO_COUNTRY_BBOX",
    "REGION_TEMPLATES",
    "CountrySpec",
    "CountryWorld",
    "RegionSpec",
    "World",
    "country_area_km2",
    "country_spec",
    "make_demo_country",
    "make_demo_data",
    "region_specs",
    "utm_epsg",
    "zone_reach",
]
