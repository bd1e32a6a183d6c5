"""Training the generalized model: data-parallel over Dask workers, one rank per worker.

The client side builds the window index and normalisation statistics with dask; every rank then
reads its own shard of windows straight from the zarr cubes (nothing but file paths and the small
index travel through the task graph), trains a DistributedDataParallel copy of the model, and
rank 0 writes a checkpoint each epoch. A rerun with the same output folder resumes from it.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .chips import (BandStats, augment, build_index, check_splits, compute_stats, drop_pre, drop_streams, epoch_windows, haze, shift_windows,
                    split_summary)
from ..cube.build import open_cube
from ..cube.inventory import LABEL_UNKNOWN
from ..errors import InputDataError
from .config import TrainConfig
from .losses import deep_supervision_loss
from .config import INPUT_MULTIPLE
from .metrics import Confusion
from .reader import REFLECTANCE, TERRAIN, ChunkCache, WindowReader, select_bands
from ..common.files import atomic_write

__all__ = ["THRESHOLDS", "CHECKPOINT_FORMAT", "TrainConfig", "stream_channels", "maps_without_pre",
           "training_reader", "checkpoint_reader", "window_batches", "to_device", "confusion_by_threshold",
           "best_threshold", "save_checkpoint", "load_checkpoint", "build_model", "train_rank",
           "write_history", "prepare", "train", "finished", "predict_windows", "tiles", "evaluate"]

# the validation threshold search: 0.05 steps, and finer below 0.05, where under-confident models
# (few epochs, a new region) put their best MCC (Iburi's local model chose 0.05, the old floor)
THRESHOLDS = np.round(np.r_[np.arange(0.01, 0.05, 0.01), np.arange(0.05, 0.96, 0.05)], 2)
CHECKPOINT_FORMAT = 1


def stream_channels(cube: str | Path, streams: tuple[str, ...], bands: tuple[str, ...] | None = None,
                    droppable: tuple[str, ...] = ()) -> tuple[dict[str, int], list[str]]:
    """Input channels per stream and the model's bands (``bands``, or every band of the cube),
    checked against what the cube holds; a ``droppable`` stream (trained with its dropout) may be
    missing from the cube."""
    ds = open_cube(cube)
    have = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
    chosen = list(bands) if bands is not None else have
    channels = {}
    for s in streams:
        if s == "terrain":
            missing = [v for v in TERRAIN if v not in ds]
            if missing and s not in droppable:
                raise InputDataError(f"{cube} has no {' or '.join(missing)}: train without the terrain stream "
                                     "(--streams pre,post), with its dropout (--stream-dropout terrain=0.2) so the "
                                     "model learns to map without it, or rebuild the cube with a DEM.")
            channels[s] = len(TERRAIN)
        elif s in ds or s in droppable:
            if s in ds:
                select_bands(chosen, have, f"the cube {cube}")
            channels[s] = len(chosen)
        else:
            raise InputDataError(f"{cube} has no {s!r} composite: choose --streams from what the cube has, or "
                                 f"train with its dropout ({'--pre-dropout 0.1' if s == 'pre' else f'--stream-dropout {s}=0.2'}).")
    return channels, chosen


def stream_dropout_of(train_config: dict | None, stream: str) -> float:
    """The dropout a model's stream was trained with (pre: ``pre_dropout``; others: ``stream_dropout``)."""
    tc = train_config or {}
    if stream == "pre":
        return float(tc.get("pre_dropout") or 0)
    return float((tc.get("stream_dropout") or {}).get(stream) or 0)


def droppable_streams(cfg_or_ckpt) -> tuple[str, ...]:
    """Streams a run (TrainConfig) or checkpoint (dict) learnt to do without."""
    if isinstance(cfg_or_ckpt, dict):
        streams, tc = cfg_or_ckpt["streams"], cfg_or_ckpt.get("train_config")
    else:
        streams, tc = cfg_or_ckpt.streams, cfg_or_ckpt.to_dict()
    return tuple(s for s in streams if stream_dropout_of(tc, s) > 0)


def maps_without_pre(ckpt: dict) -> bool:
    """Whether a checkpoint's model was trained to map pixels that lack a pre-event image."""
    return "pre" not in ckpt["streams"] or stream_dropout_of(ckpt.get("train_config"), "pre") > 0


def training_reader(cfg: TrainConfig, stats: BandStats | dict, bands: list[str]) -> WindowReader:
    """The window reader of a training run (its own 512 MB chunk cache: a rank revisits chunks)."""
    return WindowReader(cfg.cubes, cfg.streams, stats, bands, require_pre=cfg.pre_dropout <= 0,
                        cache=ChunkCache(512))


def checkpoint_reader(ckpt: dict, cubes: list[str | Path]) -> WindowReader:
    """The window reader of a checkpoint's model over ``cubes`` (its bands, streams, statistics)."""
    return WindowReader(cubes, tuple(ckpt["streams"]), ckpt["stats"], [str(b) for b in ckpt["bands"]],
                        require_pre=not maps_without_pre(ckpt))


def window_batches(reader: WindowReader, windows: pd.DataFrame, size: int, batch_size: int, rng: np.random.Generator | None,
             streams: tuple[str, ...], drop_last: bool = True, jitter: float = 0.05, pre_dropout: float = 0.0,
             haze_p: float = 0.0, stream_dropout: dict[str, float] | None = None):
    """Batches of tensors, read one batch ahead on a background thread (I/O overlaps compute).
    Training drops a short last batch (equal steps on every rank); evaluation keeps it."""
    q: queue.Queue = queue.Queue(maxsize=2)
    n = len(windows) // batch_size if drop_last else -(-len(windows) // batch_size)

    def produce():
        try:
            rows = windows[["cube", "row", "col"]].to_numpy()
            # evaluation tiles shifted inward at the far edges skip what the previous tile counted
            skips = (windows[["skip_r", "skip_c"]].to_numpy() if "skip_r" in windows
                     else np.zeros((len(windows), 2), int))
            for b in range(n):
                samples = []
                for (cube, row, col), (sr, sc) in zip(rows[b * batch_size:(b + 1) * batch_size],
                                                      skips[b * batch_size:(b + 1) * batch_size]):
                    s = reader.sample(int(cube), int(row), int(col), size)
                    s["label"][:sr] = LABEL_UNKNOWN
                    s["label"][:, :sc] = LABEL_UNKNOWN
                    if sr or sc:
                        s["valid"] = s["valid"].copy()
                        s["valid"][:sr] = False
                        s["valid"][:, :sc] = False
                    if rng is not None:
                        s = augment(s, rng, jitter)
                        if haze_p > 0 and reader.std is not None and not reader.scene:
                            s = haze(s, rng, haze_p, reader.bands, reader.std)
                        s = drop_pre(s, rng, pre_dropout)
                        if stream_dropout:
                            s = drop_streams(s, rng, stream_dropout)
                    samples.append(s)
                batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in (*streams, "label", "valid")}
                q.put(batch)
        except BaseException as exc:  # surface reader errors in the training thread
            q.put(exc)
        q.put(None)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = q.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def to_device(batch: dict, device: torch.device, streams: tuple[str, ...]):
    inputs = {s: batch[s].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
              for s in streams}
    label = batch["label"].to(device)
    known = (label != LABEL_UNKNOWN).unsqueeze(1)
    target = (label == 1).float().unsqueeze(1)
    return inputs, target, known


def confusion_by_threshold(prob: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(len(THRESHOLDS), 4) counts tp, fp, fn, tn — summable across batches and ranks."""
    p = prob[known]
    t = target[known].bool()
    out = torch.zeros(len(THRESHOLDS), 4, dtype=torch.float64)
    for i, th in enumerate(THRESHOLDS):
        pred = p >= float(th)
        tp = int((pred & t).sum())
        fp = int((pred & ~t).sum())
        fn = int((~pred & t).sum())
        out[i] = torch.tensor([tp, fp, fn, p.numel() - tp - fp - fn], dtype=torch.float64)
    return out


def best_threshold(counts: torch.Tensor) -> tuple[float, Confusion]:
    """The threshold with the highest MCC (ties: the lower threshold). Refuses pixels that lack a
    class: every threshold would score an undefined MCC, and any choice would be arbitrary."""
    confs = [Confusion(*(int(v) for v in row)) for row in counts.tolist()]
    if not confs[0].positives or not confs[0].negatives:
        raise InputDataError(f"the validation pixels hold {confs[0].positives} landslide and {confs[0].negatives} "
                             "other pixels: a threshold cannot be chosen on a single class. Use a smaller --block "
                             "or --window so that validation blocks hold landslides, or add inventories.")
    i = int(np.argmax([c.mcc() for c in confs]))
    return float(THRESHOLDS[i]), confs[i]


def save_checkpoint(path: Path, model: torch.nn.Module, model_config: dict, bands: list[str], stats: BandStats,
                    cfg: TrainConfig, epoch: int, threshold: float, history: list[dict],
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, best_mcc: float = -1.0,
                    stale: int = 0, regions: list[dict] | None = None) -> None:
    """A checkpoint of plain containers and tensors only: loadable with ``weights_only=True``.
    ``regions``: the training regions (``predict.thresholds.region_record``), so a map of another
    region takes the label-free threshold rule."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT, "state_dict": state, "model_config": model_config, "bands": bands,
        "streams": list(cfg.streams), "stats": stats.to_dict(), "threshold": threshold, "epoch": epoch,
        "history": history, "train_config": cfg.to_dict(), "best_mcc": best_mcc, "stale": stale,
        "provenance": {"inventories": [Path(c).stem for c in cfg.cubes], "strategy": cfg.strategy,
                       "epochs": epoch + 1, "window": cfg.size},
        "regions": regions if regions is not None else training_regions(cfg),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))  # a killed save never leaves a half checkpoint


def training_regions(cfg: TrainConfig) -> list[dict]:
    """The regions a model has seen: its training cubes' and, when fine-tuned, its parent's."""
    from ..predict.thresholds import region_record

    seen = [region_record(c) for c in cfg.cubes]
    if cfg.init_from:
        seen += [r for r in load_checkpoint(cfg.init_from).get("regions") or [] if r not in seen]
    return seen


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Load a checkpoint without unpickling arbitrary objects; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputDataError(f"{path} is not a landslide-dask checkpoint (it cannot be loaded safely with "
                             f"weights_only=True: {exc}). Point --model at a checkpoint written by "
                             "`landslide-dask train`.") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise InputDataError(f"{path} is not a landslide-dask checkpoint (format {CHECKPOINT_FORMAT}).")
    return ckpt


def build_model(model_config: dict):
    from .model import LandslideNet, ModelConfig

    return LandslideNet(ModelConfig.from_dict(model_config))


def train_rank(ctx, cfg: TrainConfig, index: pd.DataFrame, stats_d: dict, model_config: dict,
               bands: list[str]) -> dict | None:
    """The per-rank training loop (runs inside a Dask worker process)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = ctx.device
    if device.type == "cpu":
        # ranks on one machine share its cores; cfg.threads overrides for multi-machine CPU runs
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // ctx.world_size))
    torch.manual_seed(cfg.seed)
    stats = BandStats.from_dict(stats_d)
    out = Path(cfg.out)
    last = out / "last.pt"
    # channels_last: ~2.5x faster convolutions on CPU (measured in tests/test_model.py's notes)
    model = build_model(model_config).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = int((index["split"] == "train").sum())
    steps = cfg.steps_per_epoch or max(1, n_train // (cfg.batch_size * ctx.world_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.15)
    start, history, best_mcc, stale, threshold = 0, [], -1.0, 0, 0.5
    if last.exists():
        ck = load_checkpoint(last)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, history = ck["epoch"] + 1, ck["history"]
        best_mcc, stale, threshold = ck["best_mcc"], ck["stale"], ck["threshold"]
    elif cfg.init_from:
        model.load_state_dict(load_checkpoint(cfg.init_from)["state_dict"])
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    reader = training_reader(cfg, stats, bands)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    val = index[index["split"] == "val"].iloc[ctx.rank::ctx.world_size]  # every window, once
    regions = training_regions(cfg)

    for epoch in range(start, cfg.epochs):
        if stale >= cfg.patience:
            break
        t0 = time.perf_counter()
        ddp.train()
        windows = epoch_windows(index, "train", epoch, ctx.rank, ctx.world_size, cfg.seed,
                                n=steps * cfg.batch_size * ctx.world_size, positive_boost=cfg.positive_boost)
        rng = np.random.default_rng([cfg.seed, epoch, ctx.rank, 7])
        if cfg.crop_shift:
            windows = shift_windows(windows, index, rng)
        loss_sum, n_batches = 0.0, 0
        batches = window_batches(reader, windows, cfg.size, cfg.batch_size, rng, cfg.streams, jitter=cfg.jitter,
                           pre_dropout=cfg.pre_dropout, haze_p=cfg.haze, stream_dropout=cfg.stream_dropout)
        if ctx.is_main and cfg.progress:
            from ..common.logs import progress_bar

            batches = progress_bar(batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                                   leave=False, mininterval=2.0)
        for batch in batches:
            inputs, target, known = to_device(batch, device, cfg.streams)
            with torch.autocast(device.type, enabled=use_amp):
                loss = deep_supervision_loss(ddp(inputs), target, known)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += float(loss.detach())
            n_batches += 1
        ddp.eval()
        # each rank's last forward updated its own BatchNorm running stats; validate every rank with
        # rank 0's, the ones the checkpoint keeps
        for buf in model.buffers():
            torch.distributed.broadcast(buf, 0)
        counts = torch.zeros(len(THRESHOLDS), 4, dtype=torch.float64)
        with torch.inference_mode():
            for batch in window_batches(reader, val, cfg.size, cfg.batch_size, None, cfg.streams, drop_last=False):
                inputs, target, known = to_device(batch, device, cfg.streams)
                with torch.autocast(device.type, enabled=use_amp):
                    prob = torch.sigmoid(model(inputs)["logits"].float())
                counts += confusion_by_threshold(prob.cpu(), target.cpu(), known.cpu())
        counts = ctx.all_reduce_sum(counts)
        if counts[0].sum() == 0:
            raise InputDataError("the validation windows hold no usable pixel: use larger cubes or a smaller "
                                 "--block so that every inventory has validation blocks")
        train_loss = float(ctx.all_reduce_mean(torch.tensor([loss_sum / max(n_batches, 1)]))[0])
        th, conf = best_threshold(counts)
        improved = conf.mcc() > best_mcc
        if improved:
            best_mcc, stale, threshold = conf.mcc(), 0, th
        else:
            stale += 1
        history.append({"epoch": epoch, "train_loss": train_loss, "val_threshold": th, **conf.scores(),
                        "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0})
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            args = (model, model_config, bands, stats, cfg)
            if improved:
                save_checkpoint(out / "best.pt", *args, epoch, th, history, best_mcc=best_mcc, regions=regions)
            save_checkpoint(last, *args, epoch, threshold, history, opt, sched, best_mcc, stale, regions=regions)
            write_history(history, out)
            print(f"[train] epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f} val MCC {conf.mcc():.3f} "
                  f"(P {conf.precision():.2f} R {conf.recall():.2f} @ {th:.2f}) {history[-1]['seconds']:.0f}s",
                  flush=True)
        ctx.barrier()
    if not ctx.is_main:
        return None
    return {"best": str(out / "best.pt"), "last": str(last), "history": history, "best_mcc": best_mcc,
            "threshold": threshold, "resumed_from": start}


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
        raise InputDataError("the pre-event stream's dropout is --pre-dropout (it also hides parts of windows), "
                             "not --stream-dropout pre=...")
    # a stream the model does not have needs no dropout (e.g. the demo's terrain dropout in a run
    # without terrain); a name that is no stream at all is a typo
    unknown = set(cfg.stream_dropout or {}) - set(cfg.streams) - {"post", "terrain"}
    if unknown:
        raise InputDataError(f"--stream-dropout names {sorted(unknown)}, which are not streams: use "
                             f"{', '.join(s for s in cfg.streams if s != 'pre')}")
    droppable = droppable_streams(cfg)
    channels, bands = stream_channels(cfg.cubes[0], cfg.streams, cfg.bands, droppable)
    for c in cfg.cubes[1:]:
        stream_channels(c, cfg.streams, tuple(bands), droppable)  # every cube must hold the model's bands
    if cfg.init_from:
        parent = [str(b) for b in load_checkpoint(cfg.init_from)["bands"]]
        if parent != list(bands):
            raise InputDataError(f"{cfg.init_from} was trained on bands {parent}, not {list(bands)}: continue "
                                 f"it with --bands {','.join(parent)}.")
    index = build_index(cfg.cubes, cfg.size, cfg.stride, cfg.block, cfg.min_usable, seed=cfg.seed)
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
    from .ddp import DistributedTrainingError, run_ddp
    from ..common.workers import wait_for_workers, worker_addresses

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
            result = run_ddp(client, train_rank, cfg, index, stats.to_dict(), model_config, bands,
                             workers=ranks, timeout_s=timeout_s)
            break
        except DistributedTrainingError as exc:
            # lost workers (the cause) and what follows from them (peers' broken collectives), not a
            # rank whose own code raised: that would only raise again
            lost = (exc.primary is not None and exc.primary.kind in ("died", "hung")
                    and all(f.kind != "raised" for f in exc.failures))
            done = _checkpointed_epochs(out / "last.pt")
            where = (f"epoch {done} of {cfg.epochs} is checkpointed in {out / 'last.pt'}: rerun the same command "
                     "to resume from it." if done else "no epoch was checkpointed yet: rerun the same command to "
                     "start again.")
            if not lost or attempt == restarts or workers is not None:  # named workers: their replacements differ
                raise DistributedTrainingError(f"{exc}\n{where}", exc.failures) from exc
            suspect |= {f.worker for f in exc.failures if f.kind in ("died", "hung")}
            since = f"after epoch {done}; resuming from {out / 'last.pt'}" if done else \
                "before the first checkpoint; starting again from scratch"
            print(f"[train] {exc.primary.describe()} {since} once {n_ranks} workers are ready "
                  f"(restart {attempt + 1} of {restarts})", flush=True)
            try:
                ranks = wait_for_workers(client, n_ranks, max(120.0, timeout_s), exclude=suspect)[:n_ranks]
            except TimeoutError as gone:
                raise DistributedTrainingError(
                    f"{exc}\nthe cluster did not get back to {n_ranks} workers ({gone}); {where}",
                    exc.failures) from gone
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


def predict_windows(ckpt: dict, cube: str, windows: pd.DataFrame, size: int, batch_size: int = 8,
                    device: str = "cpu", levels: bool = False):
    """Confusion counts per threshold of a checkpoint over the given windows of one cube; with
    ``levels``, also ``(3, 256)`` histograms of probability x 255 (rounded, as maps store it) of
    the landslide, the other labelled and all valid pixels: any threshold's confusion and the
    label-free scene threshold come from them."""
    model = build_model(ckpt["model_config"]).to(device, memory_format=torch.channels_last).eval()
    model.load_state_dict(ckpt["state_dict"])
    streams = tuple(ckpt["streams"])
    reader = checkpoint_reader(ckpt, [cube])
    counts = torch.zeros(len(THRESHOLDS), 4, dtype=torch.float64)
    hists = torch.zeros(3, 256, dtype=torch.int64)
    w = windows.assign(cube=0)
    with torch.inference_mode():
        for batch in window_batches(reader, w, size, batch_size, None, streams, drop_last=False):
            inputs, target, known = to_device(batch, torch.device(device), streams)
            prob = torch.sigmoid(model(inputs)["logits"].float())
            counts += confusion_by_threshold(prob.cpu(), target.cpu(), known.cpu())
            if levels:
                level = torch.round(prob.cpu() * 255).long().clamp(0, 255)
                t, k, v = target.cpu().bool(), known.cpu(), batch["valid"].unsqueeze(1)
                for i, m in enumerate((k & t, k & ~t, v)):
                    hists[i] += torch.bincount(level[m], minlength=256)
    return (counts, hists.numpy()) if levels else counts


def tiles(cube: str, size: int = 512, multiple: int = INPUT_MULTIPLE) -> pd.DataFrame:
    """Windows covering every pixel of a cube exactly once for scoring: ``size`` px tiles (at most
    the cube, a multiple of the model's input multiple); the last row and column of tiles is shifted
    inward and ``skip_r``/``skip_c`` say how many of its leading rows/columns were already counted."""
    ds = open_cube(cube)
    h, w = ds.sizes["y"], ds.sizes["x"]
    size = min(size, h // multiple * multiple, w // multiple * multiple)
    if size < multiple:
        raise InputDataError(f"{cube} ({w}x{h} px) is smaller than the model's {multiple} px input multiple")

    def starts(n: int) -> list[tuple[int, int]]:
        out = [(s, 0) for s in range(0, n - size + 1, size)]
        if out[-1][0] + size < n:
            out.append((n - size, out[-1][0] + size - (n - size)))
        return out

    df = pd.DataFrame([(0, r, c, sr, sc) for r, sr in starts(h) for c, sc in starts(w)],
                      columns=["cube", "row", "col", "skip_r", "skip_c"])
    df.attrs["size"] = size
    return df


def evaluate(ckpt_path: str | Path, cube: str | Path, split: str | None = None,
             index: pd.DataFrame | None = None, tile: int = 512, threshold_rule: str = "auto") -> Confusion:
    """Pixel confusion of a checkpoint on a cube: every pixel of the cube once (an unseen region),
    or one split of a training index. ``threshold_rule`` (``predict.thresholds``): ``auto`` scores
    a region the model never trained on at the label-free scene threshold, others at the
    checkpoint's validation threshold; the Confusion's ``threshold`` says which was used."""
    from ..predict.thresholds import otsu_level, resolve_rule

    ckpt = load_checkpoint(ckpt_path)
    rule = resolve_rule(cube, ckpt, threshold_rule)
    cube = str(cube)
    if split is None:
        from .model import ModelConfig

        windows = tiles(cube, tile, ModelConfig.from_dict(ckpt["model_config"]).size_multiple)
        size = windows.attrs["size"]
    else:
        size = ckpt["train_config"]["size"]
        windows = index[(index["path"] == cube) & (index["split"] == split)]
        if not len(windows):
            raise InputDataError(f"no {split} windows for {cube}")
    _, hists = predict_windows(ckpt, cube, windows, size, levels=True)
    if rule == "scene":
        if hists[2].sum() == 0:
            raise InputDataError(f"{cube} has no valid pixel in these windows: no scene threshold")
        level = otsu_level(hists[2])
    else:
        level = int(round(float(ckpt["threshold"]) * 255))
    pos, neg = hists[0], hists[1]
    tp, fp = int(pos[level:].sum()), int(neg[level:].sum())
    return Confusion(tp, fp, int(pos.sum()) - tp, int(neg.sum()) - fp, threshold=level / 255.0, threshold_rule=rule)
