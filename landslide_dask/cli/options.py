"""Option parsers and helpers every sub-command shares: value types, config defaults, the Dask client of
``--workers``/``--scheduler``/``--cluster`` (TLS by default), the threshold-rule option."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import date

from ..errors import UsageError


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def parse_dropouts(v: str) -> dict[str, float]:
    """``terrain=0.2,post=0.1`` -> {"terrain": 0.2, "post": 0.1}."""
    out = {}
    for part in filter(None, v.split(",")):
        name, _, p = part.partition("=")
        try:
            out[name.strip()] = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: write STREAM=PROBABILITY, e.g. terrain=0.2") from None
    return out


def parse_csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in parse_csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def config_default(cls, name: str):
    """The default of dataclass field ``name`` of ``cls``: the one definition the CLI shows and uses."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def scheduler_security(args: argparse.Namespace):
    """The credentials for --scheduler (--tls-ca-file, --tls-cert, --tls-key; None: distributed's
    configuration), refusing security options that would do nothing."""
    files = (args.tls_ca_file, args.tls_cert, args.tls_key)
    if not args.scheduler:
        if any(files):
            raise UsageError(
                "--tls-ca-file, --tls-cert and --tls-key are the credentials of a running cluster "
                "(--scheduler tls://...); a cluster started here makes its own"
            )
        return None
    if args.insecure:
        raise UsageError(
            "--insecure starts a cluster on plain TCP; with --scheduler the address says how to "
            "connect (tls:// or tcp://)"
        )
    if not any(files):
        return None
    if not (args.tls_ca_file and args.tls_cert):
        raise UsageError(
            "give --tls-ca-file and --tls-cert (and --tls-key unless the key is in the certificate "
            "file): the CA of the cluster and this client's certificate"
        )
    from ..clusters.security import credentials_from_files

    return credentials_from_files(args.tls_ca_file, args.tls_cert, args.tls_key)


def client_for(args: argparse.Namespace):
    """A context manager yielding a client: --scheduler, a --cluster definition, or a LocalCluster of
    --workers processes on loopback; a cluster started here speaks TLS unless --insecure, and is
    torn down on exit."""
    from ..clusters.definitions import ClusterDef
    from ..clusters.start import start_cluster

    if getattr(args, "cluster", None) and args.scheduler:
        raise UsageError("--cluster and --scheduler exclude each other: give one")
    security = scheduler_security(args)
    if args.scheduler:
        return start_cluster(scheduler=args.scheduler, security=security)
    if getattr(args, "cluster", None):
        return start_cluster(args.cluster, overrides={"tls": False} if args.insecure else None)
    return start_cluster(
        ClusterDef.from_dict(
            {
                "kind": "local",
                "workers": args.workers or 2,
                "tls": not args.insecure,
                "options": {"dashboard_address": "127.0.0.1:0"},
            },
            "--workers",
        )
    )


def security_options(s: argparse.ArgumentParser) -> None:
    """Who may use the cluster: TLS with the run's own certificate unless --insecure; the
    credentials of a running tls:// cluster for --scheduler."""
    s.add_argument(
        "--insecure",
        action="store_true",
        help="start the cluster on plain TCP without TLS: anyone who can reach its scheduler can run code "
        "as you (default: TLS with a certificate made for this run)",
    )
    s.add_argument("--tls-ca-file", help="with --scheduler tls://...: the CA certificate of that cluster (PEM)")
    s.add_argument("--tls-cert", help="with --scheduler tls://...: this client's certificate (PEM)")
    s.add_argument("--tls-key", help="with --scheduler tls://...: this client's key (PEM; default: in --tls-cert)")


def threshold_rule_option(s: argparse.ArgumentParser) -> None:
    from ..predict.thresholds import RULES

    s.add_argument(
        "--threshold-rule",
        choices=RULES,
        default="auto",
        help="how the map's threshold is chosen: validation (the checkpoint's, chosen on its "
        "validation blocks), scene (Otsu on this map's log-odds, no labels), or auto (scene "
        "for a region the model never trained on, else validation; the default)",
    )
