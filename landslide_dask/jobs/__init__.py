"""Stage 4, jobs: mapping whole areas on clusters, resumably.

``spec`` (the job spec: ``area``, ``sections``, validated by ``common.validation``) -> ``cells``
(the area cut into UTM cells) -> ``manifest`` (what is done, per cell, for one fingerprint) ->
``cell`` (one cell end to end) run by ``country`` (the driver: cells in flight on a shared client,
retries, resume) -> ``merge`` (the country outputs); ``storage`` (object-store outputs). The
clusters jobs run on are started by :mod:`landslide_dask.clusters`.
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "JobSpec": ".spec",
    "load_jobspec": ".spec",
    "parse_jobspec": ".spec",
    "make_cells": ".cells",
    "Cell": ".cells",
    "Manifest": ".manifest",
    "run_job": ".country",
    "run_cell": ".cell",
    "JobResult": ".country",
    "check_output": ".country",
    "merge_cell_polygons": ".merge",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
