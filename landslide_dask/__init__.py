"""landslide_dask: event landslide mapping at country scale on Dask.

The pipeline, one subpackage per stage, in order: ``stac`` (find imagery and DEMs) -> ``cube``
(composites, terrain, labels as zarr) -> ``train`` (the generalized model, data-parallel) ->
``predict`` (seamless maps, COGs, polygons, scores) -> ``jobs`` (whole countries on clusters,
resumably). ``events`` describes real event folders, ``demo`` makes synthetic ones and runs the
pipeline on them, ``cli`` is the ``landslide-dask`` command, ``clusters`` starts the Dask clusters
every stage runs on, ``common`` is what every stage shares and ``errors`` every error it raises.
The data contracts are in ``docs/contracts.md``.
"""

__version__ = "0.1.0"
