"""Stage 3, inference: seamless, chunking-independent, resumable maps of whole regions.

``windows`` (the global window grid and its blending weights) -> ``engine`` (the checkpoint on a
device, the plan each task carries, a batch of windows through the model) -> ``run`` (windows
blended into output chunks, streamed strip by strip) -> ``store`` (the resumable prediction group)
-> ``thresholds`` (the map's threshold: the checkpoint's, or the label-free scene rule for a region
it never trained on) -> ``polygons`` (landslide objects), ``report`` (scores and
maps against an inventory, the map drawn by ``figure``).
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "predict": ".run",
    "lazy_probability": ".run",
    "open_prediction": ".store",
    "coverage": ".store",
    "prepare": ".engine",
    "Plan": ".engine",
    "Prepared": ".engine",
    "clear_caches": ".engine",
    "default_batch_size": ".engine",
    "DEFAULT_BATCH_SIZE": ".config",
    "MIN_AREA_M2": ".config",
    "DEFAULT_WINDOW": ".config",
    "DEFAULT_OVERLAP": ".config",
    "overhead": ".windows",
    "asymptotic_overhead": ".windows",
    "axis_windows": ".windows",
    "windows_of": ".windows",
    "grid_origin": ".windows",
    "blend_weights": ".windows",
    "resolve_window": ".windows",
    "polygonize": ".polygons",
    "evaluate_map": ".report",
    "scene_threshold": ".thresholds",
    "choose_threshold": ".thresholds",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
