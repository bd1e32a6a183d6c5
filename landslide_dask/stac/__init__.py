"""Stage 1a, finding the data: a loopback STAC API over local folders (``server``), STAC
collections made from GeoTIFF folders as shipped (``catalog``, items from files in ``geotiff``),
and searches of any STAC API with retries and signing (``search``), or of local catalogues and
ItemCollection files without a server (``local``)."""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "catalog_geotiffs": ".catalog",
    "describe_geotiff": ".geotiff",
    "load_stac_dir": ".local",
    "search_items": ".search",
    "read_local_items": ".local",
    "EARTH_SEARCH": ".search",
    "PLANETARY_COMPUTER": ".search",
    "StacServer": ".server",
    "serve_stac": ".server",
    "run_stac_server": ".server",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
