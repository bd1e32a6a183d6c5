"""Stage 3b, products: what a responder opens, from a finished prediction (``predict``).

``cog`` (probability and status COGs) -> ``styles`` (QGIS styles) -> ``tiles`` (Web Mercator
tiles) -> ``page`` (the offline web map) -> ``item`` (the STAC item naming sources and products);
:func:`write_products` makes all of them for one region, the country job (``jobs.merge``) for
many cells. The folder's layout is the product contract of ``docs/contracts.md``.
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "write_products": ".region",
    "export_cog": ".cog",
    "export_status": ".cog",
    "STATUS": ".cog",
    "write_page": ".page",
    "products_item": ".item",
    "write_item": ".item",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
