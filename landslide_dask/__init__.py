"""landslide_dask: event landslide mapping at country scale on Dask.

The pipeline, one module per stage: ``synth`` (demo data) -> ``stac_server`` / ``catalog`` ->
``search`` -> ``cube`` (with ``terrain`` and ``inventory``) -> ``quicklook``.
"""

__version__ = "0.1.0"
