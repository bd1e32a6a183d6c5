"""The demo: synthetic regions, a real event or the demo country, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError


def cmd_demo(args: argparse.Namespace) -> int | None:
    from ..demo.run import run_demo, run_demo_country, run_demo_real

    if args.country and args.real:
        raise UsageError("--country and --real exclude each other: give one")
    if args.real:
        run_demo_real(
            Path(args.real),
            Path(args.data),
            Path(args.out),
            workers=args.workers,
            size_km=args.size_km,
            epochs=args.epochs,
        )
        return None
    if args.country:
        res = run_demo_country(
            Path(args.data),
            Path(args.out),
            workers=args.workers,
            size_km=args.size_km,
            epochs=args.epochs,
            country_data=Path(args.country_data) if args.country_data else None,
        )
        return 1 if res["failed"] else 0
    run_demo(Path(args.data), Path(args.out), workers=args.workers, size_km=args.size_km, epochs=args.epochs)
    return None


def demo_commands(sub) -> None:
    """Sub-commands of the demo runs."""
    s = sub.add_parser("demo", help="run the pipeline on the embedded synthetic regions")
    s.add_argument("--data", default="demo-data", help="demo data folder (made if absent)")
    s.add_argument("--out", default="demo-out", help="output folder")
    s.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    s.add_argument("--size-km", type=float, default=10.0, help="region size when the data is made (default 10 km)")
    from ..demo.run import DEMO_EPOCHS

    s.add_argument(
        "--epochs", type=int, default=DEMO_EPOCHS, help=f"training epochs of the demo model (default {DEMO_EPOCHS})"
    )
    s.add_argument(
        "--country",
        action="store_true",
        help="map the demo country end to end as a country job with the demo's model "
        "(OUT/model/best.pt, trained first by the region demo if absent)",
    )
    s.add_argument(
        "--country-data",
        default=None,
        help="with --country: the demo country's folder (default DATA/country; made if absent)",
    )
    s.add_argument(
        "--real",
        metavar="FOLDER",
        help="map a real event folder as shipped (e.g. ../shared/data/iburi_2018) with the demo's model "
        "(OUT/model/best.pt, trained first if absent) and score it against the event's inventory",
    )
    s.set_defaults(func=cmd_demo)
