"""Sub-commands of stage 4, country jobs on clusters: submit, cluster-example."""

from __future__ import annotations

import argparse
import sys

from ..errors import LandslideDaskError
from .options import scheduler_security, security_options


def cmd_submit(args: argparse.Namespace) -> int:
    from ..clusters.start import start_cluster
    from ..jobs.country import check_output, run_job
    from ..jobs.spec import load_jobspec

    spec = load_jobspec(args.job)
    spec.check_paths()  # a bad spec or output fails here, before any cluster starts
    check_output(spec, args.scratch)
    cluster = args.cluster or spec.cluster
    if args.scheduler is None and cluster is None:
        raise LandslideDaskError(
            f"{args.job} names no cluster: pass --cluster NAME.yaml or a shipped example "
            "(local, slurm, ...; see `landslide-dask cluster-example`), --scheduler "
            "tls://HOST:PORT for a running one, or set `cluster:` in the job spec"
        )
    security = scheduler_security(args)
    overrides = ({"workers": args.workers} if args.workers else {}) | ({"tls": False} if args.insecure else {})
    with start_cluster(
        None if args.scheduler else cluster, scheduler=args.scheduler, security=security, overrides=overrides or None
    ) as client:
        result = run_job(
            spec, client, progress=not args.quiet, force=args.force, concurrency=args.concurrency, scratch=args.scratch
        )
    return 1 if result.failed else 0  # failed cells: non-zero exit (a rerun retries them)


def cmd_cluster_example(args: argparse.Namespace) -> None:
    """Print a shipped example cluster definition (to copy and edit), or list them."""
    from ..clusters.shipped import EXAMPLES, example_names

    if args.name is None:
        for name in example_names():
            first = (EXAMPLES / f"{name}.yaml").read_text().splitlines()[0].removeprefix("# Cluster definition: ")
            print(f"{name:<11} {first}")
        print(
            "\nrun one as shipped with --cluster NAME; copy one to edit: landslide-dask cluster-example NAME > my.yaml"
        )
        return
    sys.stdout.write((EXAMPLES / f"{args.name}.yaml").read_text())


def jobs_commands(sub) -> None:
    """Sub-commands of stage 4: country jobs on clusters."""
    s = sub.add_parser(
        "submit", help="map a whole area from a job spec on a cluster, resumably (cells, manifest, merge)"
    )
    s.add_argument("job", help="job spec (YAML; see cluster/jobs/*.yaml)")
    s.add_argument(
        "--cluster",
        help="cluster definition: a YAML file, or a shipped example by name (local, slurm, "
        "...); default: the spec's `cluster`",
    )
    s.add_argument("--scheduler", help="address of a running Dask scheduler (tls://HOST:PORT) instead of --cluster")
    security_options(s)
    s.add_argument("--workers", type=int, help="override the cluster definition's number of workers")
    s.add_argument("--concurrency", type=int, help="cells in flight at once (default: the number of workers, >= 2)")
    s.add_argument(
        "--force",
        action="store_true",
        help="start over if OUTPUT holds the manifest of another configuration (kept as a backup)",
    )
    s.add_argument(
        "--scratch",
        help="local working folder of a URL output (s3://...): cells are computed there, "
        "then uploaded; every worker must reach it (default: the spec's `scratch`, "
        "else a temp folder)",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar over cells")
    s.set_defaults(func=cmd_submit)

    from ..clusters.shipped import example_names

    s = sub.add_parser(
        "cluster-example",
        help="print a shipped cluster definition to copy and edit (no NAME: list "
        "them); --cluster NAME runs one as shipped",
    )
    s.add_argument(
        "name", nargs="?", choices=example_names(), metavar="NAME", help=f"one of {', '.join(example_names())}"
    )
    s.set_defaults(func=cmd_cluster_example)
