"""Sub-commands of stage 2, training: train, experiment, evaluate, model-info."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from .options import (
    client_for,
    config_default,
    parse_csv,
    parse_dropouts,
    parse_ints,
    security_options,
    threshold_rule_option,
)

if TYPE_CHECKING:
    from ..train.config import TrainConfig


def _train_config(args: argparse.Namespace, cubes: list[str], out: str) -> TrainConfig:
    """A TrainConfig of the options given; every other field keeps its dataclass default."""
    from ..train.config import TrainConfig

    model = {}
    if args.widths:
        model["encoder_widths"] = list(args.widths)
    streams = tuple(args.streams) if args.streams else config_default(TrainConfig, "streams")
    if args.stem_width:
        model["stem_widths"] = {s: args.stem_width for s in streams}
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("cubes", "out", "model") and getattr(args, f.name, None) is not None
    }
    given.update(
        streams=streams,
        bands=tuple(args.bands) if args.bands else None,
        model=model,
        amp=not args.no_amp,
        progress=not args.quiet,
    )
    return TrainConfig(cubes=cubes, out=out, **given)


def cmd_train(args: argparse.Namespace) -> None:
    from ..train.experiment import train_strategy

    cfg = _train_config(args, list(args.cube), args.out)
    with client_for(args) as client:
        res = train_strategy(client, args.strategy, list(args.cube), cfg)
    print(
        f"best checkpoint {res['best']} (validation MCC {res['best_mcc']:.3f} at threshold "
        f"{res['threshold']:.2f}); curves in {Path(res['best']).parent / 'curves.png'}"
    )


def cmd_experiment(args: argparse.Namespace) -> None:
    from ..train.experiment import leave_one_out, markdown_table

    cfg = _train_config(args, list(args.cube), args.out)
    with client_for(args) as client:
        table = leave_one_out(client, list(args.cube), cfg, strategies=tuple(args.strategies), local=not args.no_local)
    print(markdown_table(table))
    print(f"\ntable written to {Path(args.out) / 'results.csv'} and results.md")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..train.metrics import fmt
    from ..train.scoring import evaluate

    conf = evaluate(args.model, args.cube, threshold_rule=args.threshold_rule)
    s = conf.scores()
    print(" ".join(f"{k} {fmt(s[k])}" for k in ("mcc", "precision", "recall", "f1", "iou")))
    if not conf.positives:
        print("the cube's labels hold no landslide pixel: MCC, recall, F1 and IoU are undefined here")
    how = (
        "the scene rule: Otsu on this cube's map, no labels; the model never trained on this region"
        if conf.threshold_rule == "scene"
        else "the checkpoint's validation threshold"
    )
    print(f"tp {s['tp']} fp {s['fp']} fn {s['fn']} tn {s['tn']} (pixels; threshold {conf.threshold:.3f}, {how})")
    from ..predict.thresholds import is_seen
    from ..train.checkpoint import load_checkpoint

    regions = load_checkpoint(args.model).get("regions")
    if regions and is_seen(args.cube, regions):
        print(
            "note: the model trained on this region, so these pixels include its training blocks and the score "
            "flatters it; a fair figure is on its test blocks only (`landslide-dask experiment`, or "
            "benchmarks/real_event.py for a real event)"
        )


def cmd_model_info(args: argparse.Namespace) -> None:
    from ..train.checkpoint import load_checkpoint
    from ..train.model import ModelConfig, describe

    if args.model:
        ck = load_checkpoint(args.model)
        config = ModelConfig.from_dict(ck["model_config"])
        print(describe(config, args.size))
        print(
            f"  bands {ck['bands']}; threshold {ck['threshold']:.2f}; trained on "
            f"{', '.join(ck['provenance']['inventories'])} ({ck['provenance']['strategy']}, "
            f"{ck['provenance']['epochs']} epochs)"
        )
        return
    channels = {"pre": args.bands, "post": args.bands, "terrain": 2}
    model = {"encoder_widths": tuple(args.widths)} if args.widths else {}
    print(describe(ModelConfig(streams={s: channels[s] for s in args.streams}, **model), args.size))


def train_commands(sub) -> None:
    """Sub-commands of stage 2: training, the leave-one-out experiment, evaluation, the model's size."""
    from ..train.config import DEFAULT_STEM_WIDTHS, PAPER_WINDOW, ModelConfig, TrainConfig

    widths = ",".join(str(w) for w in config_default(ModelConfig, "encoder_widths"))
    stems = "/".join(str(w) for w in DEFAULT_STEM_WIDTHS.values())

    def training_options(s: argparse.ArgumentParser) -> None:
        """The ``train`` and ``experiment`` options: one per TrainConfig field, its default read there."""

        def opt(flag: str, field: str, help: str, **kw) -> None:
            shown = config_default(TrainConfig, field)
            shown = ",".join(shown) if isinstance(shown, tuple) else shown
            kw.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
            s.add_argument(flag, dest=field, default=None, help=f"{help} (default {shown})", **kw)

        s.add_argument("--cube", action="append", required=True, help="training cube (repeat for each inventory)")
        s.add_argument("--out", required=True, help="folder for checkpoints, metrics and curves")
        opt("--streams", "streams", "input streams, e.g. post,terrain", type=parse_csv)
        s.add_argument(
            "--bands",
            type=parse_csv,
            help="imagery bands the model sees, by name, e.g. blue,green,red (default: every band "
            "of the first cube); every cube must hold them",
        )
        opt(
            "--pre-dropout",
            "pre_dropout",
            "probability per window of hiding its pre-event image (whole, and "
            "again beyond a random edge), so the model maps gaps in the pre-event mosaic from post-event "
            "imagery and terrain (0: such pixels are left unmapped)",
            type=float,
        )
        s.add_argument(
            "--stream-dropout",
            type=parse_dropouts,
            default=None,
            metavar="STREAM=P,...",
            help="probability per window of hiding other whole streams, e.g. terrain=0.2, so the "
            "model maps cubes without them (post-only tiles) and trains on inventories with and "
            "without them (default none)",
        )
        opt(
            "--haze",
            "haze",
            "probability per acquisition of added haze (path radiance falling with "
            "wavelength), for scenes delivered top-of-atmosphere or hazy",
            type=float,
        )
        opt(
            "--normalise",
            "normalise",
            "imagery standardised by the training set's statistics (global) or by "
            "each acquisition's own median and spread (scene: hazy, top-of-atmosphere and surface-reflectance "
            "scenes look alike)",
            choices=["global", "scene"],
        )
        opt("--window", "window", "training window in pixels", type=int)
        opt("--stride", "stride", "window spacing in the index", type=int)
        s.add_argument(
            "--block",
            type=int,
            help="side of the split blocks in pixels (default: the largest of 4, 3, "
            "2, 1 windows giving every inventory 12 blocks)",
        )
        opt("--min-usable", "min_usable", "share of valid, inventoried pixels a window needs", type=float)
        opt("--batch-size", "batch_size", "windows per rank and step", type=int)
        opt("--epochs", "epochs", "training epochs", type=int)
        s.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training windows")
        opt("--lr", "lr", "peak learning rate (one-cycle schedule)", type=float)
        opt("--positive-boost", "positive_boost", "draw windows with landslides this many times as often", type=float)
        opt("--jitter", "jitter", "radiometric augmentation: sd of per-band gain/offset", type=float)
        opt("--patience", "patience", "epochs without a better val MCC before stopping", type=int)
        s.add_argument("--widths", type=parse_ints, help=f"encoder widths (default {widths}, the paper's)")
        s.add_argument("--stem-width", type=int, help=f"width of every stream's stem (default {stems})")
        s.add_argument("--init-from", help="checkpoint to continue from (fine-tuning)")
        opt("--seed", "seed", "random seed of sampling, augmentation and initialisation", type=int)
        s.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
        opt(
            "--restarts",
            "restarts",
            "times to resume from the last checkpoint when worker processes are lost",
            type=int,
        )
        s.add_argument("--workers", type=int, default=2, help="local Dask worker processes, one rank each")
        s.add_argument("--scheduler", help="address of a running Dask scheduler (one rank per worker)")
        s.add_argument(
            "--cluster",
            help="cluster definition: a YAML file, or a shipped example by name: local, "
            "gpu-node, slurm, kubernetes (one rank per worker)",
        )
        security_options(s)
        s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("train", help="train the landslide model with data parallelism on Dask workers")
    training_options(s)
    s.add_argument(
        "--strategy",
        choices=["local", "combined", "progressive"],
        default="combined",
        help="one inventory, all at once, or added one at a time (default combined)",
    )
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("experiment", help="leave-one-region-out test of generalisation (the paper's table)")
    s.add_argument("design", choices=["leave-one-out"])
    training_options(s)
    s.add_argument(
        "--strategies",
        type=parse_csv,
        default=("combined",),
        help="models trained without the held-out region: combined and/or progressive",
    )
    s.add_argument("--no-local", action="store_true", help="skip the local models used for comparison")
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("evaluate", help="pixel MCC, precision, recall, F1, IoU of a checkpoint on a labelled cube")
    s.add_argument("--model", required=True, help="checkpoint (best.pt)")
    s.add_argument("--cube", required=True, help="cube with labels")
    threshold_rule_option(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("model-info", help="parameters, FLOPs per pixel and receptive field of the model")
    s.add_argument("--model", help="a checkpoint to describe (default: a fresh model from the options)")
    s.add_argument("--streams", type=parse_csv, default=config_default(TrainConfig, "streams"))
    s.add_argument("--bands", type=int, default=4, help="bands per imagery stream (default 4)")
    s.add_argument("--widths", type=parse_ints, help=f"encoder widths (default {widths})")
    s.add_argument(
        "--size", type=int, default=PAPER_WINDOW, help=f"tile size for the FLOP count (default {PAPER_WINDOW})"
    )
    s.set_defaults(func=cmd_model_info)
