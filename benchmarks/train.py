"""Training throughput: DDP over 1 and 2 Dask workers, and the chip loader against the model step.

    python benchmarks/train.py [--size-km 6] [--regions 2] [--window 128] [--batch-size 8] [--steps 30]
                               [--warmup 3] [--widths 32,64,128,128] [--cubes a.zarr b.zarr] [--json out.json]
                               [--threads N] [--omp-passive] [--small]

Everything below is measured in one run, on real cubes (built from the synthetic demo data served as
a STAC API, as the demo does, unless --cubes names existing ones), with the training index and the
normalisation statistics computed as ``landslide_dask.train.loop.prepare`` does (window --window px,
stride half of it):

1. DDP training throughput with 1 and then 2 workers, each a fresh
   ``landslide_dask.clusters.start.local_cluster(k)`` on loopback (the demo's cluster). A rank function started with
   ``run_ddp`` repeats train_rank's step: ``build_model`` in channels_last, DistributedDataParallel,
   AdamW + OneCycleLR, ``deep_supervision_loss``, batches from the same ``window_batches`` loader (its
   background read-ahead thread, augmentation on) over ``epoch_windows`` of the train split. The
   per-rank batch size is fixed, so 2 workers process 2x the samples per step; torch threads per
   rank are ``os.cpu_count() // world_size`` (TrainConfig.threads' default). --warmup steps are
   run and excluded, then --steps steps are timed (wall time of the slowest rank, between two
   barriers). Each step is split into: waiting for the loader (blocked on its queue), forward
   (batch to device + model + loss), backward (including DDP's gradient all-reduce, which overlaps
   it) and optimizer (AdamW + scheduler). Then --nosync-steps more steps run under
   ``ddp.no_sync()`` (same work, no gradient all-reduce): their step time minus the normal one is
   the all-reduce's cost as the step sees it.
   Scaling efficiency = samples/s(2) / (2 x samples/s(1)). Both runs use the same machine, so
   when the 1-worker run already has every core (as here: threads = cpu_count), the 2-worker run
   adds no compute and the efficiency cannot exceed ~0.5; the figure to read on one machine is
   samples/s(2) / samples/s(1) (ideal 1.0), whose shortfall is the DDP/gloo overhead (see the
   all-reduce column) plus any difference between 1 rank x N threads and 2 ranks x N/2 threads.
   Real scaling needs workers on separate machines (or separate core sets).
2. In this process, with no cluster running: the chip loader alone (``WindowReader.sample`` +
   ``augment`` + stacking, i.e. the ``window_batches`` generator, consumed as fast as it produces, from a
   cold chunk cache) in samples/s, and the model's training step alone on batches already in
   memory (no loading, no DDP, all cores) in samples/s. loader/model > 1 means the loader keeps
   ahead of the compute (the target); < 1 means loading is the bottleneck. Also: zarr chunks
   decoded per sample (``WindowReader.decoded``) against chunk look-ups per sample (what it would
   decode without its cache).

Timings are wall-clock: other processes on the machine slow them; the 1-minute load average at the
start and end is printed with the results. Beware of OpenMP's spin-waiting on a machine shared with
other CPU-heavy jobs: with more torch threads than idle cores, every parallel region waits for a
descheduled thread, and a 2-thread step was seen 10-30x slower than a 1-thread one on a loaded
2-core machine (OMP_WAIT_POLICY=PASSIVE removed that). The default keeps the environment that
training gets; --omp-passive sets OMP_WAIT_POLICY=PASSIVE for this process and the workers, and
--threads fixes the torch threads per rank (TrainConfig.threads) instead of cores // workers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(model, opt, sched, batch, device, streams) -> tuple[float, float, float]:
    """One training step as train_rank runs it (fp32); returns (forward, backward, optimizer) seconds."""
    from landslide_dask.train.batches import to_device
    from landslide_dask.train.losses import deep_supervision_loss

    t0 = time.perf_counter()
    inputs, target, known = to_device(batch, device, streams)
    loss = deep_supervision_loss(model(inputs), target, known)
    _sync(device)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    opt.step()
    sched.step()
    float(loss.detach())
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def _optimizer(model, total_steps: int):
    import torch

    from landslide_dask.train.config import TrainConfig

    d = TrainConfig(cubes=[], out="")
    opt = torch.optim.AdamW(model.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=d.lr, total_steps=total_steps, pct_start=0.15)
    return opt, sched


def _counting_reader(cubes, size, streams, stats):
    """The training window reader, also counting chunk look-ups (what it would decode with no cache)."""
    from landslide_dask.train.reader import ChunkCache, WindowReader

    class Counting(WindowReader):
        lookups = 0

        def _chunk(self, cube, var, iy, ix):
            self.lookups += 1
            return super()._chunk(cube, var, iy, ix)

    return Counting(list(cubes), streams, stats, cache=ChunkCache(512))


def rank_bench(
    ctx, cubes, index, stats_d, model_config, streams, batch_size, steps, warmup, nosync_steps, seed, threads=None
) -> dict:
    """Runs on every worker: warm-up, timed DDP steps, then no_sync steps; returns every rank's numbers."""
    import numpy as np
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from landslide_dask.train.batches import window_batches
    from landslide_dask.train.checkpoint import build_model
    from landslide_dask.train.chips import BandStats, epoch_windows

    device = ctx.device
    threads = threads or max(1, (os.cpu_count() or 1) // ctx.world_size)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(model_config).to(device, memory_format=torch.channels_last)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    total = warmup + steps + nosync_steps
    opt, sched = _optimizer(model, total)
    reader = _counting_reader(cubes, int(index.attrs["window"]), streams, BandStats.from_dict(stats_d))
    windows = epoch_windows(
        index, "train", 0, ctx.rank, ctx.world_size, seed, n=total * batch_size * ctx.world_size, positive_boost=3.0
    )
    rng = np.random.default_rng([seed, 0, ctx.rank, 7])
    batches = window_batches(reader, windows, int(index.attrs["window"]), batch_size, rng, streams)
    ddp.train()

    def run(n: int) -> list[float]:
        """n steps; [wall, loader wait, forward, backward, optimizer] seconds summed."""
        sums = [0.0] * 4
        t_start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            batch = next(batches)
            sums[0] += time.perf_counter() - t0
            for i, t in enumerate(timed_step(ddp, opt, sched, batch, device, streams)):
                sums[1 + i] += t
        return [time.perf_counter() - t_start, *sums]

    run(warmup)
    ctx.barrier()
    timed = run(steps)
    ctx.barrier()
    with ddp.no_sync():
        nosync = run(nosync_steps) if nosync_steps else [0.0] * 5
    ctx.barrier()
    for _ in batches:  # the loader is exhausted by now; this ends its thread
        pass
    mine = torch.tensor(
        [*timed, *nosync, reader.decoded, reader.lookups, total * batch_size, threads], dtype=torch.float64
    )
    return {"per_rank": [t.tolist() for t in ctx.all_gather(mine)], "world_size": ctx.world_size}


def ddp_run(k: int, cubes, index, stats, model_config, streams, args) -> dict:
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster
    from landslide_dask.train.ddp import run_ddp

    t0 = time.perf_counter()
    with local_cluster(k, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(k, timeout=120)
        res = run_ddp(
            client,
            rank_bench,
            cubes,
            index,
            stats.to_dict(),
            model_config,
            streams,
            args.batch_size,
            args.steps,
            args.warmup,
            args.nosync_steps,
            args.seed,
            args.threads,
            timeout_s=600.0,
        )
    ranks = []
    for v in res["per_rank"]:
        ranks.append(
            {
                "wall_s": v[0],
                "wait_s": v[1],
                "forward_s": v[2],
                "backward_s": v[3],
                "optimizer_s": v[4],
                "nosync_wall_s": v[5],
                "nosync_wait_s": v[6],
                "nosync_forward_s": v[7],
                "nosync_backward_s": v[8],
                "nosync_optimizer_s": v[9],
                "decoded": v[10],
                "lookups": v[11],
                "samples_read": v[12],
                "threads": int(v[13]),
            }
        )
    wall = max(r["wall_s"] for r in ranks)
    mean = {key: sum(r[key] for r in ranks) / k for key in ranks[0]}
    n, m = args.steps, max(args.nosync_steps, 1)
    samples = args.steps * args.batch_size * k
    out = {
        "workers": k,
        "threads_per_rank": ranks[0]["threads"],
        "steps": n,
        "batch_per_rank": args.batch_size,
        "samples": samples,
        "wall_s": wall,
        "samples_per_s": samples / wall,
        "step_ms": 1e3 * wall / n,
        # per step, mean over ranks
        "wait_ms": 1e3 * mean["wait_s"] / n,
        "forward_ms": 1e3 * mean["forward_s"] / n,
        "backward_ms": 1e3 * mean["backward_s"] / n,
        "optimizer_ms": 1e3 * mean["optimizer_s"] / n,
        "nosync_steps": args.nosync_steps,
        "nosync_step_ms": 1e3 * max(r["nosync_wall_s"] for r in ranks) / m if args.nosync_steps else None,
        "nosync_backward_ms": 1e3 * mean["nosync_backward_s"] / m if args.nosync_steps else None,
        "decoded_per_sample": sum(r["decoded"] for r in ranks) / sum(r["samples_read"] for r in ranks),
        "lookups_per_sample": sum(r["lookups"] for r in ranks) / sum(r["samples_read"] for r in ranks),
        "ranks": ranks,
        "total_s_incl_cluster": time.perf_counter() - t0,
    }
    out["allreduce_ms"] = out["step_ms"] - out["nosync_step_ms"] if args.nosync_steps else None
    return out


def local_bench(cubes, index, stats, model_config, streams, args) -> dict:
    """Loader alone and model step alone, in this process."""
    import numpy as np
    import torch

    from landslide_dask.train.batches import window_batches
    from landslide_dask.train.checkpoint import build_model
    from landslide_dask.train.chips import epoch_windows

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    n_batches = args.warmup + args.steps
    windows = epoch_windows(index, "train", 0, 0, 1, args.seed, n=n_batches * args.batch_size, positive_boost=3.0)

    # the loader alone, cold chunk cache, consumed as fast as it produces
    reader = _counting_reader(cubes, args.window, streams, stats)
    rng = np.random.default_rng([args.seed, 0, 0, 7])
    stamps, kept = [], []
    t0 = time.perf_counter()
    for i, batch in enumerate(window_batches(reader, windows, args.window, args.batch_size, rng, streams)):
        stamps.append(time.perf_counter())
        if i < 2:
            kept.append(batch)
    total_s = stamps[-1] - t0
    timed_s = stamps[-1] - stamps[args.warmup - 1] if args.warmup else total_s
    loader = {
        "batches": len(stamps),
        "samples": len(stamps) * args.batch_size,
        "cold_pass_s": total_s,
        "cold_pass_samples_per_s": len(stamps) * args.batch_size / total_s,
        "samples_per_s": args.steps * args.batch_size / timed_s,
        "decoded": reader.decoded,
        "lookups": reader.lookups,
        "decoded_per_sample": reader.decoded / (len(stamps) * args.batch_size),
        "lookups_per_sample": reader.lookups / (len(stamps) * args.batch_size),
    }

    # the model step alone, on batches already in memory
    device = torch.device("cpu")
    torch.manual_seed(args.seed)
    model = build_model(model_config).to(device, memory_format=torch.channels_last).train()
    opt, sched = _optimizer(model, n_batches)
    for i in range(args.warmup):
        timed_step(model, opt, sched, kept[i % len(kept)], device, streams)
    sums = [0.0, 0.0, 0.0]
    t0 = time.perf_counter()
    for i in range(args.steps):
        for j, t in enumerate(timed_step(model, opt, sched, kept[i % len(kept)], device, streams)):
            sums[j] += t
    wall = time.perf_counter() - t0
    n = args.steps
    step = {
        "threads": torch.get_num_threads(),
        "steps": n,
        "samples": n * args.batch_size,
        "wall_s": wall,
        "samples_per_s": n * args.batch_size / wall,
        "step_ms": 1e3 * wall / n,
        "forward_ms": 1e3 * sums[0] / n,
        "backward_ms": 1e3 * sums[1] / n,
        "optimizer_ms": 1e3 * sums[2] / n,
    }
    return {"loader": loader, "model_step": step, "loader_over_model": loader["samples_per_s"] / step["samples_per_s"]}


def make_cubes(work: Path, size_km: float, regions: int, chunk: int) -> list[str]:
    """The demo's synthetic regions served as a STAC API and built into cubes (reused if present)."""
    from landslide_dask.cube.build import CubeSpec, build_cube
    from landslide_dask.demo.synth import make_demo_data
    from landslide_dask.stac.server import serve_stac

    data = work / f"data-{size_km:g}km-{regions}"
    if not (data / "regions.json").exists():
        make_demo_data(data, seed=0, size_km=size_km, n_regions=regions)
    out = []
    with serve_stac(data) as url:
        for r in json.loads((data / "regions.json").read_text()):
            path = work / f"{r['name']}-{size_km:g}km-c{chunk}.zarr"
            if not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
                spec = CubeSpec(
                    stac_url=url,
                    event_date=date.fromisoformat(r["event_date"]),
                    aoi=data / r["aoi"],
                    out=path,
                    inventory=data / r["inventory"],
                    inventory_area=data / r["inventory_area"],
                    chunk=chunk,
                )
                build_cube(spec, progress=False, quicklook=False)
            out.append(str(path))
    return out


def prepare(cubes, window: int, streams, widths) -> tuple:
    """Index, statistics and model config exactly as landslide_dask.train.loop.prepare builds them."""
    from landslide_dask.train.chips import build_index, compute_stats
    from landslide_dask.train.loop import stream_channels
    from landslide_dask.train.model import ModelConfig

    channels, _ = stream_channels(cubes[0], streams)
    index = build_index(cubes, window, window // 2)
    if not (index["split"] == "train").any():
        raise SystemExit(f"no train windows of {window} px in {cubes}: use larger cubes or a smaller --window")
    stats = compute_stats(index, streams)
    model_config = ModelConfig(streams=channels, encoder_widths=tuple(widths)).to_dict()
    return index, stats, model_config


def scaling(one: dict, two: dict, cores: int) -> dict:
    """Efficiency as asked, plus its ceiling on this machine: both runs share its cores."""
    used1 = min(cores, one["threads_per_rank"])
    used2 = min(cores, 2 * two["threads_per_rank"])
    ceiling = used2 / (2 * used1)  # if compute scaled linearly with cores and DDP cost nothing
    eff = two["samples_per_s"] / (2 * one["samples_per_s"])
    note = (
        f"both runs ran on this machine's {cores} cores: 1 worker x {one['threads_per_rank']} threads "
        f"vs 2 x {two['threads_per_rank']}, i.e. {used1} vs {used2} cores busy with compute, so the efficiency's "
        f"ceiling here is ~{ceiling:.2f}, not 1.0; efficiency / ceiling = {eff / ceiling:.2f} is what is left "
        "after DDP/gloo overhead (all-reduce column), the loader and DDP threads competing for the same cores, "
        "and the difference between few processes x many threads and many x few. Separate machines would "
        "add cores with the workers."
    )
    return {
        "efficiency": eff,
        "speedup": two["samples_per_s"] / one["samples_per_s"],
        "ceiling": ceiling,
        "efficiency_over_ceiling": eff / ceiling,
        "note": note,
    }


def print_tables(res: dict) -> None:
    c = res["config"]
    print(
        f"\ntraining benchmark: window {c['window']} px, batch {c['batch_size']}/rank, encoder widths "
        f"{c['widths']}, {c['steps']} timed steps after {c['warmup']} warm-up; {c['params']:,} parameters; "
        f"{c['cpu_count']} CPU cores, load average {c['load_avg_1m']:.2f} at start, {c['load_avg_1m_end']:.2f} at "
        f"end; OMP_WAIT_POLICY {c['omp_wait_policy'] or 'unset'}; torch {c['torch']}\n"
    )
    print(
        "| workers | threads/rank | samples/step | step ms | samples/s | loader wait ms | forward ms "
        "| backward ms (incl. all-reduce) | optimizer ms | step ms, no grad sync | all-reduce ms "
        "| chunks decoded/sample |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["ddp"]:
        ns = "-" if r["nosync_step_ms"] is None else f"{r['nosync_step_ms']:.0f}"
        ar = "-" if r["allreduce_ms"] is None else f"{r['allreduce_ms']:.0f}"
        print(
            f"| {r['workers']} | {r['threads_per_rank']} | {r['batch_per_rank'] * r['workers']} | {r['step_ms']:.0f} "
            f"| {r['samples_per_s']:.2f} | {r['wait_ms']:.1f} | {r['forward_ms']:.0f} | {r['backward_ms']:.0f} "
            f"| {r['optimizer_ms']:.0f} | {ns} | {ar} | {r['decoded_per_sample']:.3f} |"
        )
    s = res["scaling"]
    print(
        f"\nscaling efficiency samples/s(2) / (2 x samples/s(1)) = {s['efficiency']:.2f}; "
        f"samples/s(2) / samples/s(1) = {s['speedup']:.2f}"
    )
    print(f"note: {s['note']}")
    lo, st = res["local"]["loader"], res["local"]["model_step"]
    print("\n| in one process | samples | seconds | samples/s | notes |")
    print("|---|---|---|---|---|")
    print(
        f"| chip loader (read + augment + batch), steady | {c['steps'] * c['batch_size']} | "
        f"{c['steps'] * c['batch_size'] / lo['samples_per_s']:.2f} | {lo['samples_per_s']:.1f} | "
        f"1 background thread, after {c['warmup']} warm-up batches |"
    )
    print(
        f"| chip loader, whole pass from a cold cache | {lo['samples']} | {lo['cold_pass_s']:.2f} | "
        f"{lo['cold_pass_samples_per_s']:.1f} | {lo['decoded_per_sample']:.3f} chunks decoded/sample vs "
        f"{lo['lookups_per_sample']:.1f} look-ups/sample ({lo['decoded']} of {lo['lookups']}) |"
    )
    print(
        f"| model train step, data in memory | {st['samples']} | {st['wall_s']:.2f} | {st['samples_per_s']:.2f} | "
        f"{st['threads']} threads; forward {st['forward_ms']:.0f} / backward {st['backward_ms']:.0f} / "
        f"optimizer {st['optimizer_ms']:.0f} ms per step |"
    )
    ratio = res["local"]["loader_over_model"]
    verdict = "the loader keeps ahead of the model step" if ratio > 1 else "loading is the bottleneck"
    print(f"\nloader / model step throughput = {ratio:.1f}x: {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-km", type=float, default=6.0, help="side of each synthetic region (default 6)")
    p.add_argument("--regions", type=int, default=2, help="synthetic regions = cubes (default 2)")
    p.add_argument("--chunk", type=int, default=512, help="zarr chunk of the built cubes (default 512, the demo's)")
    p.add_argument("--cubes", nargs="+", help="use these cubes instead of building them")
    p.add_argument("--workdir", help="keep data and cubes here and reuse them (default: a temp dir)")
    p.add_argument("--window", type=int, default=128, help="training window, px (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="batch per rank (default 8)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--nosync-steps", type=int, help="steps under ddp.no_sync() (default steps // 3, at least 1)")
    p.add_argument(
        "--widths",
        type=_ints,
        default=[32, 64, 128, 128],
        help="encoder widths (default 32,64,128,128, the demo model; 64,128,256,256 is the paper's)",
    )
    p.add_argument("--streams", default="pre,post,terrain", help="model streams (default pre,post,terrain)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per rank (default: cores // workers; in-process model step: all cores)",
    )
    p.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE here and in the workers (no spin-waiting; see above)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument(
        "--small",
        action="store_true",
        help="CI mode: 64 px windows, batch 2, 2 timed steps, a tiny model (the code paths, not the figures)",
    )
    args = p.parse_args()
    if args.small:
        args.window, args.batch_size, args.steps, args.warmup, args.widths = 64, 2, 2, 1, [8, 16, 16, 16]
        args.size_km = min(args.size_km, 2.0)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.nosync_steps is None:
        args.nosync_steps = max(1, args.steps // 3)
    streams = tuple(s.strip() for s in args.streams.split(",") if s.strip())
    if args.omp_passive:  # read once when libgomp loads (with torch): set before that, workers inherit it
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    import torch

    from landslide_dask.train.checkpoint import build_model
    from landslide_dask.train.model import count_parameters

    load = os.getloadavg()[0]
    if args.cubes:
        cubes = [str(c) for c in args.cubes]
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cubes = make_cubes(work, args.size_km, args.regions, args.chunk)
        print(f"[bench] cubes ready in {time.perf_counter() - t0:.0f}s: {', '.join(cubes)}", flush=True)
    index, stats, model_config = prepare(cubes, args.window, streams, args.widths)
    params = count_parameters(build_model(model_config))
    print(
        f"[bench] {int((index['split'] == 'train').sum())} train windows of {args.window} px; {params:,} parameters",
        flush=True,
    )

    local = local_bench(cubes, index, stats, model_config, streams, args)
    print(
        f"[bench] loader {local['loader']['samples_per_s']:.1f} samples/s, model step "
        f"{local['model_step']['samples_per_s']:.2f} samples/s",
        flush=True,
    )
    ddp = []
    for k in (1, 2):
        ddp.append(ddp_run(k, cubes, index, stats, model_config, streams, args))
        print(f"[bench] {k} worker(s): {ddp[-1]['samples_per_s']:.2f} samples/s", flush=True)
    one, two = ddp
    res = {
        "config": {
            "window": args.window,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "nosync_steps": args.nosync_steps,
            "widths": args.widths,
            "streams": list(streams),
            "cubes": cubes,
            "size_km": None if args.cubes else args.size_km,
            "regions": len(cubes),
            "train_windows": int((index["split"] == "train").sum()),
            "params": params,
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_avg_1m": load,
            "load_avg_1m_end": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "local": local,
        "ddp": ddp,
        "scaling": scaling(one, two, os.cpu_count() or 1),
    }
    print_tables(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
