"""Stage 1b, the cube: lazy, chunked, cloud-masked pre/post composites, slope, hillshade and the
rasterised inventory on one grid, written as zarr (layout: ``docs/contracts.md``, "Cube").

``grid`` (the output pixel grid) -> ``bands`` (which asset of each item is a band, by key, code or
common name) and ``radiometry`` (each item's scale and offset into the cube's one convention) ->
``load`` (STAC assets onto the grid, one task per block, converted as they are read) ->
``build`` (search, per-day mosaics, ``composite`` medians, ``terrain``, ``inventory`` labels, the
zarr write) -> ``quicklook`` (a PNG to look at); ``read`` opens a finished cube and checks it
against a model's streams and bands (what training and inference read through);
``patches`` turns folders of pre-cut patches (Landslide4Sense-style) into the same cube layout;
``tiles`` merges georeferenced image/label tile exports (the Chattogram set) back into one cube.
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "CubeSpec": ".spec",
    "event_windows": ".spec",
    "build_cube": ".build",
    "assemble": ".build",
    "write_cube": ".build",
    "CHUNK": ".spec",
    "open_cube": ".read",
    "check_cube_for_model": ".read",
    "Grid": ".grid",
    "resolve_bands": ".bands",
    "asset_radiometry": ".radiometry",
    "LABEL_UNKNOWN": ".inventory",
    "read_polygons": ".inventory",
    "import_patches": ".patches",
    "import_tiles": ".tiles",
    "cube_quicklook": ".quicklook",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
