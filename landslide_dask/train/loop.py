"""Training the generalized model: data-parallel over Dask workers, one rank per worker.

The client side builds the window index and normalisation statistics with dask; every rank then
reads its own shard of windows straight from the zarr cubes (nothing but file paths and the small
index travel through the task graph), trains a DistributedDataParallel copy of the model, and
rank 0 writes a checkpoint each epoch (:mod:`.checkpoint`). A rerun with the same output folder
resumes from it. Batches come from :mod:`.batches`; the threshold search and the scoring of a
checkpoint on a cube are :mod:`.scoring`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cube.read import TERRAIN, check_cube_for_model, model_bands, open_cube
from ..errors import InputDataError
from .batches import to_device, training_reader, window_batches
from .checkpoint import build_model, contract, droppable_streams, load_checkpoint, save_checkpoint, training_regions
from .chips import BandStats, build_index, check_splits, compute_stats, epoch_windows, shift_windows, split_summary
from .config import TrainConfig
from .losses import deep_supervision_loss
from .metrics import Confusion
from .reader import REFLECTANCE
from .scoring import THRESHOLDS, best_threshold, confusion_by_threshold

__all__ = ["TrainConfig", "stream_channels", "train_rank", "write_history", "prepare", "train", "finished"]


def stream_channels(
    cube: str | Path, streams: tuple[str, ...], bands: tuple[str, ...] | None = None, droppable: tuple[str, ...] = ()
) -> tuple[dict[str, int], list[str]]:
    """Input channels per stream and the model's bands (``bands``, or every band of the cube),
    after the one check of the cube against them (:func:`~landslide_dask.cube.read.check_cube_for_model`);
    a ``droppable`` stream (trained with its dropout) may be missing from the cube."""
    ds = open_cube(cube)
    chosen = list(model_bands(bands, [ds]))
    check_cube_for_model(ds, streams, chosen, droppable, cube=cube)
    return {s: len(TERRAIN) if s == "terrain" else len(chosen) for s in streams}, chosen


@dataclass
class _Progress:
    """Where a run stands between epochs: the first epoch to run and what earlier ones recorded."""

    start: int = 0
    history: list[dict] = field(default_factory=list)
    best_mcc: float = -1.0
    stale: int = 0
    threshold: float = 0.5

    def record(self, epoch: int, train_loss: float, th: float, conf: Confusion, lr: float, seconds: float) -> bool:
        """Add an epoch's validation; whether it improved on the best MCC so far."""
        improved = conf.mcc() > self.best_mcc
        if improved:
            self.best_mcc, self.stale, self.threshold = conf.mcc(), 0, th
        else:
            self.stale += 1
        self.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_threshold": th,
                **conf.scores(),
                "lr": lr,
                "seconds": seconds,
            }
        )
        return improved


class _RankTrainer:
    """One rank's model, optimiser, schedule and reader, and the steps of an epoch."""

    def __init__(
        self, ctx, cfg: TrainConfig, index: pd.DataFrame, stats: BandStats, model_config: dict, bands: list[str]
    ) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.ctx, self.cfg, self.index, self.stats = ctx, cfg, index, stats
        self.model_config, self.bands = model_config, bands
        self.device = device = ctx.device
        if device.type == "cpu":
            # ranks on one machine share its cores; cfg.threads overrides for multi-machine CPU runs
            torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // ctx.world_size))
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.last = self.out / "last.pt"
        # channels_last: ~2.5x faster convolutions on CPU (measured in tests/test_model.py's notes)
        self.model = build_model(model_config).to(device, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_train = int((index["split"] == "train").sum())
        self.steps = cfg.steps_per_epoch or max(1, n_train // (cfg.batch_size * ctx.world_size))
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=cfg.lr, total_steps=cfg.epochs * self.steps, pct_start=0.15
        )
        self.progress = self._resume()
        self.ddp = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.reader = training_reader(cfg, stats, bands)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.val = index[index["split"] == "val"].iloc[ctx.rank :: ctx.world_size]  # every window, once
        self.regions = training_regions(cfg)

    def _resume(self) -> _Progress:
        """The state of ``last.pt`` when there is one; else the parent's weights when fine-tuning."""
        if self.last.exists():
            ck = load_checkpoint(self.last)
            self.model.load_state_dict(ck["state_dict"])
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            return _Progress(ck["epoch"] + 1, ck["history"], ck["best_mcc"], ck["stale"], ck["threshold"])
        if self.cfg.init_from:
            self.model.load_state_dict(load_checkpoint(self.cfg.init_from)["state_dict"])
        return _Progress()

    def _batches(self, epoch: int):
        """This rank's training batches of an epoch: its share of the draw, randomly cropped and augmented."""
        cfg, ctx = self.cfg, self.ctx
        windows = epoch_windows(
            self.index,
            "train",
            epoch,
            ctx.rank,
            ctx.world_size,
            cfg.seed,
            n=self.steps * cfg.batch_size * ctx.world_size,
            positive_boost=cfg.positive_boost,
        )
        rng = np.random.default_rng([cfg.seed, epoch, ctx.rank, 7])
        if cfg.crop_shift:
            windows = shift_windows(windows, self.index, rng)
        batches = window_batches(
            self.reader,
            windows,
            cfg.window,
            cfg.batch_size,
            rng,
            cfg.streams,
            jitter=cfg.jitter,
            pre_dropout=cfg.pre_dropout,
            haze_p=cfg.haze,
            stream_dropout=cfg.stream_dropout,
        )
        if ctx.is_main and cfg.progress:
            from ..common.logs import progress_bar

            batches = progress_bar(
                batches,
                total=self.steps,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step",
                leave=False,
                mininterval=2.0,
            )
        return batches

    def train_epoch(self, epoch: int) -> float:
        """One epoch of optimiser steps; the training loss averaged over every rank."""
        self.ddp.train()
        loss_sum, n_batches = 0.0, 0
        for batch in self._batches(epoch):
            inputs, target, known = to_device(batch, self.device, self.cfg.streams)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                loss = deep_supervision_loss(self.ddp(inputs), target, known)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            loss_sum += float(loss.detach())
            n_batches += 1
        return float(self.ctx.all_reduce_mean(torch.tensor([loss_sum / max(n_batches, 1)]))[0])

    def validate(self) -> torch.Tensor:
        """Confusion counts per threshold over every validation window, summed over the ranks."""
        self.ddp.eval()
        # each rank's last forward updated its own BatchNorm running stats; validate every rank with
        # rank 0's, the ones the checkpoint keeps
        for buf in self.model.buffers():
            torch.distributed.broadcast(buf, 0)
        counts = torch.zeros(len(THRESHOLDS), 4, dtype=torch.float64)
        cfg = self.cfg
        with torch.inference_mode():
            for batch in window_batches(
                self.reader, self.val, cfg.window, cfg.batch_size, None, cfg.streams, drop_last=False
            ):
                inputs, target, known = to_device(batch, self.device, cfg.streams)
                with torch.autocast(self.device.type, enabled=self.use_amp):
                    prob = torch.sigmoid(self.model(inputs)["logits"].float())
                counts += confusion_by_threshold(prob.cpu(), target.cpu(), known.cpu())
        counts = self.ctx.all_reduce_sum(counts)
        if counts[0].sum() == 0:
            raise InputDataError(
                "the validation windows hold no usable pixel: use larger cubes or a smaller "
                "--block so that every inventory has validation blocks"
            )
        return counts

    def save(self, epoch: int, th: float, conf: Confusion, improved: bool) -> None:
        """Rank 0: ``best.pt`` when the epoch improved, ``last.pt`` always, metrics and a log line."""
        p, out = self.progress, self.out
        out.mkdir(parents=True, exist_ok=True)
        args = (self.model, self.model_config, self.bands, self.stats, self.cfg)
        if improved:
            save_checkpoint(out / "best.pt", *args, epoch, th, p.history, best_mcc=p.best_mcc, regions=self.regions)
        save_checkpoint(
            self.last,
            *args,
            epoch,
            p.threshold,
            p.history,
            self.opt,
            self.sched,
            p.best_mcc,
            p.stale,
            regions=self.regions,
        )
        write_history(p.history, out)
        print(
            f"[train] epoch {epoch + 1}/{self.cfg.epochs} loss {p.history[-1]['train_loss']:.4f} val MCC "
            f"{conf.mcc():.3f} (P {conf.precision():.2f} R {conf.recall():.2f} @ {th:.2f}) "
            f"{p.history[-1]['seconds']:.0f}s",
            flush=True,
        )

    def summary(self) -> dict:
        """Rank 0's result: the checkpoints, the history and the best validation score."""
        p = self.progress
        return {
            "best": str(self.out / "best.pt"),
            "last": str(self.last),
            "history": p.history,
            "best_mcc": p.best_mcc,
            "threshold": p.threshold,
            "resumed_from": p.start,
        }


def train_rank(
    ctx, cfg: TrainConfig, index: pd.DataFrame, stats_d: dict, model_config: dict, bands: list[str]
) -> dict | None:
    """The per-rank training loop (runs inside a Dask worker process): each epoch trains, validates
    on every rank, picks the threshold and (rank 0) checkpoints, until ``cfg.epochs`` or
    ``cfg.patience`` epochs without a better validation MCC."""
    rank = _RankTrainer(ctx, cfg, index, BandStats.from_dict(stats_d), model_config, bands)
    progress = rank.progress
    for epoch in range(progress.start, cfg.epochs):
        if progress.stale >= cfg.patience:
            break
        t0 = time.perf_counter()
        train_loss = rank.train_epoch(epoch)
        th, conf = best_threshold(rank.validate())
        improved = progress.record(epoch, train_loss, th, conf, rank.sched.get_last_lr()[0], time.perf_counter() - t0)
        if ctx.is_main:
            rank.save(epoch, th, conf, improved)
        ctx.barrier()
    return rank.summary() if ctx.is_main else None


def write_history(history: list[dict], out: Path) -> None:
    """metrics.csv, metrics.json and curves.png beside the checkpoints."""
    if not history:
        return
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    (out / "metrics.json").write_text(json.dumps(history, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], "o-")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    for k in ("mcc", "precision", "recall", "f1"):
        b.plot(ep, [h[k] for h in history], "o-", label=k)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.set_title("validation (best threshold)")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def prepare(cfg: TrainConfig) -> tuple[pd.DataFrame, BandStats, dict, list[str]]:
    """Index and statistics on the client side (dask), plus the model config from the cubes' bands."""
    if cfg.normalise not in ("global", "scene"):
        raise InputDataError(f"normalise must be 'global' or 'scene', not {cfg.normalise!r}")
    if "pre" in (cfg.stream_dropout or {}):
        raise InputDataError(
            "the pre-event stream's dropout is --pre-dropout (it also hides parts of windows), "
            "not --stream-dropout pre=..."
        )
    # a stream the model does not have needs no dropout (e.g. the demo's terrain dropout in a run
    # without terrain); a name that is no stream at all is a typo
    unknown = set(cfg.stream_dropout or {}) - set(cfg.streams) - {"post", "terrain"}
    if unknown:
        raise InputDataError(
            f"--stream-dropout names {sorted(unknown)}, which are not streams: use "
            f"{', '.join(s for s in cfg.streams if s != 'pre')}"
        )
    droppable = droppable_streams(cfg.streams, cfg.to_dict())
    channels, bands = stream_channels(cfg.cubes[0], cfg.streams, cfg.bands, droppable)
    for c in cfg.cubes[1:]:
        stream_channels(c, cfg.streams, tuple(bands), droppable)  # every cube must hold the model's bands
    if cfg.init_from:
        parent = list(contract(load_checkpoint(cfg.init_from)).bands)
        if parent != list(bands):
            raise InputDataError(
                f"{cfg.init_from} was trained on bands {parent}, not {list(bands)}: continue "
                f"it with --bands {','.join(parent)}."
            )
    index = build_index(cfg.cubes, cfg.window, cfg.stride, cfg.block, cfg.min_usable, seed=cfg.seed)
    print(f"[train] {index.attrs['block']} px split blocks; {split_summary(index)}", flush=True)
    check_splits(index)
    if cfg.init_from:
        ck = load_checkpoint(cfg.init_from)
        stats = BandStats.from_dict(ck["stats"])  # keep the parent's normalisation when continuing
        model_config = ck["model_config"]
    else:
        stats = compute_stats(index, cfg.streams, bands=tuple(bands), units=REFLECTANCE, normalise=cfg.normalise)
        from .model import ModelConfig

        model_config = ModelConfig(streams=channels, **cfg.model).to_dict()
    return index, stats, model_config, bands


def train(client, cfg: TrainConfig, workers: list[str] | None = None, timeout_s: float = 300.0) -> dict:
    """Train on every worker of ``client`` (one rank each); returns rank 0's summary.

    ``cfg.restarts``: when worker processes are lost (killed, or removed by the scheduler; not when
    a rank raises, which would only repeat), wait for the cluster to replace them and run again up
    to this many times: from ``last.pt`` if an epoch was checkpointed, from scratch otherwise (only
    with ``workers=None``: the replacements have new addresses). A restart never uses a worker
    whose earlier rank may still be running: the lost ones are excluded, and ``run_ddp`` refuses
    any worker that still executes a rank. A failure that is not retried says how to resume."""
    from ..common.workers import wait_for_workers, worker_addresses
    from .ddp import DistributedTrainingError, run_ddp

    index, stats, model_config, bands = prepare(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    index.to_csv(out / "windows.csv", index=False)
    ranks = list(workers) if workers else worker_addresses(client)
    n_ranks = len(ranks)
    restarts = max(0, int(cfg.restarts))
    suspect: set[str] = set()  # workers lost by an earlier attempt: never given a rank again
    for attempt in range(restarts + 1):
        try:
            result = run_ddp(
                client, train_rank, cfg, index, stats.to_dict(), model_config, bands, workers=ranks, timeout_s=timeout_s
            )
            break
        except DistributedTrainingError as exc:
            # lost workers (the cause) and what follows from them (peers' broken collectives), not a
            # rank whose own code raised: that would only raise again
            lost = (
                exc.primary is not None
                and exc.primary.kind in ("died", "hung")
                and all(f.kind != "raised" for f in exc.failures)
            )
            done = _checkpointed_epochs(out / "last.pt")
            where = (
                f"epoch {done} of {cfg.epochs} is checkpointed in {out / 'last.pt'}: rerun the same command "
                "to resume from it."
                if done
                else "no epoch was checkpointed yet: rerun the same command to start again."
            )
            if not lost or attempt == restarts or workers is not None:  # named workers: their replacements differ
                raise DistributedTrainingError(f"{exc}\n{where}", exc.failures) from exc
            suspect |= {f.worker for f in exc.failures if f.kind in ("died", "hung")}
            since = (
                f"after epoch {done}; resuming from {out / 'last.pt'}"
                if done
                else "before the first checkpoint; starting again from scratch"
            )
            print(
                f"[train] {exc.primary.describe()} {since} once {n_ranks} workers are ready "
                f"(restart {attempt + 1} of {restarts})",
                flush=True,
            )
            try:
                ranks = wait_for_workers(client, n_ranks, max(120.0, timeout_s), exclude=suspect)[:n_ranks]
            except TimeoutError as gone:
                raise DistributedTrainingError(
                    f"{exc}\nthe cluster did not get back to {n_ranks} workers ({gone}); {where}", exc.failures
                ) from gone
    result["restarts"] = attempt
    # written last: its presence says this run finished (experiments skip finished runs)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _checkpointed_epochs(last: Path) -> int:
    """How many epochs ``last.pt`` holds (0 when there is none)."""
    if not last.exists():
        return 0
    return int(torch.load(last, weights_only=True, map_location="cpu")["epoch"]) + 1


def finished(out: str | Path) -> dict | None:
    """The summary of a finished training run in ``out``, or None if it has not finished."""
    f = Path(out) / "result.json"
    return json.loads(f.read_text()) if f.exists() else None
