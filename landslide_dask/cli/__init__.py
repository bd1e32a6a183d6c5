"""landslide-dask: event landslide maps from STAC imagery and a DEM, one sub-command per pipeline stage
(in pipeline order), plus the demo.

One module per stage (``data``, ``training``, ``maps``, ``jobs``, ``demo``), each with its sub-commands' parsers
and handlers; ``options`` holds what they share."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import LandslideDaskError, UsageError
from .data import cube_commands, demo_data_commands, stac_commands
from .demo import demo_commands
from .jobs import jobs_commands
from .maps import predict_commands
from .training import train_commands

__all__ = ["main", "build_parser"]

#: What ``landslide-dask --help`` says first.
DESCRIPTION = (
    "landslide-dask: event landslide maps from STAC imagery and a DEM, one sub-command per pipeline stage "
    "(in pipeline order), plus the demo."
)


#: Sub-commands whose ``--model``/``--init-from`` name a checkpoint file (a URL is fetched later).
_CHECKPOINT_COMMANDS = {"evaluate", "model-info", "predict", "train", "experiment"}


def _check_checkpoint_paths(args: argparse.Namespace) -> None:
    """A checkpoint option naming no file is an argument error that says what to pass (exit 2),
    before anything is read or started."""
    if getattr(args, "command", None) not in _CHECKPOINT_COMMANDS:
        return
    for attr, flag in (("model", "--model"), ("init_from", "--init-from")):
        value = getattr(args, attr, None)
        if not isinstance(value, str) or not value or "://" in value:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            inside = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), None)
            raise UsageError(
                f"{flag} {value} is a folder: pass the checkpoint file in it"
                + (f", e.g. {flag} {inside}" if inside else " (best.pt, as `landslide-dask train --out DIR` writes it)")
            )
        if not path.exists():
            raise UsageError(
                f"{flag} {value}: no such checkpoint. Pass the best.pt that `landslide-dask train "
                "--out DIR` wrote (DIR/best.pt; DIR/last.pt is the latest epoch), or train one first."
            )


def build_parser() -> argparse.ArgumentParser:
    """The ``landslide-dask`` parser: the sub-commands in pipeline order."""
    p = argparse.ArgumentParser(
        prog="landslide-dask",
        description=DESCRIPTION,
        epilog="exit status: 0 done; 1 bad input data or a failed run (the message names the "
        "file, item or cell); 2 bad arguments; 130 interrupted",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_data_commands(sub)
    stac_commands(sub)
    cube_commands(sub)
    train_commands(sub)
    predict_commands(sub)
    jobs_commands(sub)
    demo_commands(sub)
    for sp in sub.choices.values():
        sp.set_defaults(usage=sp.format_usage)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Exit status: 0 done, 2 bad arguments (argparse's, or a
    :class:`~landslide_dask.errors.UsageError`), 1 bad input data or a failed run, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # dask's own INFO chatter (scheduler/nanny start and stop) only with -v;
        # read by dask.config when distributed is first imported (lazily, below)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        _check_checkpoint_paths(args)
        rc = args.func(args)
    except UsageError as exc:  # like argparse's own errors: the usage line, then the message
        print(args.usage(), end="", file=sys.stderr)
        print(f"landslide-dask {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LandslideDaskError as exc:
        print(f"landslide-dask {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return rc or 0
