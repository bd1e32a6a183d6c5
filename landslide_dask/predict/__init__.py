"""Stage 3, inference: seamless, chunking-independent, resumable maps of whole regions.

``windows`` (the global window grid and its blending weights) -> ``engine`` (the checkpoint on a
device, the plan each task carries, a batch of windows through the model) -> ``run`` (windows
blended into output chunks, streamed strip by strip) -> ``store`` (the resumable prediction group)
-> ``export`` (COG), ``polygons`` (landslide objects), ``report`` (scores and maps against an
inventory).
"""

from .engine import DEFAULT_BATCH_SIZE, Plan, Prepared, clear_caches, default_batch_size, prepare
from .export import export_cog
from .run import lazy_probability, predict
from .store import coverage, open_prediction
from .windows import (DEFAULT_OVERLAP, DEFAULT_WINDOW, asymptotic_overhead, axis_windows, blend_weights, grid_origin,
                      overhead, resolve_window, windows_of)

__all__ = ["predict", "lazy_probability", "open_prediction", "coverage", "export_cog", "prepare", "Plan",
           "Prepared", "clear_caches", "default_batch_size", "DEFAULT_BATCH_SIZE", "DEFAULT_WINDOW",
           "DEFAULT_OVERLAP", "overhead", "asymptotic_overhead", "axis_windows", "windows_of", "grid_origin",
           "blend_weights", "resolve_window"]
