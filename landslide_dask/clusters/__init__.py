"""Dask clusters, for every stage: how the package starts one (or joins one) to build cubes, train
and map.

``definitions`` (cluster definition files, validated) with ``shipped`` (the example of each kind
in ``examples/``: ``local``, ``gpu-node``, ``slurm``, ``kubernetes``) -> ``start``
(:func:`start_cluster` starts a definition or connects to a running scheduler and always tears
down what it started; :func:`local_cluster`, the package's own cluster on this machine) with
``slurm`` (SLURM jobs and what went wrong with them), ``security`` (TLS with a certificate made for
each run: nobody else on the machine can use the cluster) and ``preload`` (workers import their
task modules before any task). It imports nothing of the pipeline stages, which all import it.
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "ClusterDef": ".definitions",
    "KINDS": ".definitions",
    "load_cluster_def": ".definitions",
    "EXAMPLES": ".shipped",
    "example_names": ".shipped",
    "resolve_cluster": ".shipped",
    "start_cluster": ".start",
    "local_cluster": ".start",
    "WORKER_CONFIG": ".start",
    "use_worker_config": ".start",
    "credentials_from_files": ".security",
    "write_credentials": ".security",
    "run_security": ".security",
    "TaskImports": ".preload",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
