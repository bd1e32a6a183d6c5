"""The worker process environment: distributed's default ``MALLOC_TRIM_THRESHOLD_`` vs this package's.

    python benchmarks/worker_env.py [--steps 12] [--repeat 2] [--window 128] [--batch-size 8]

Each run is a fresh process that starts a one-worker ``LocalCluster`` (single-threaded, one torch
thread) either with distributed's defaults (its nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every
worker) or with ``landslide_dask.clusters.start.WORKER_CONFIG`` (the variable unset, as the demo, the CLI's
local clusters, the benchmarks and the tests start workers), and times --steps training steps of the
demo model (``demo.DEMO_MODEL``, channels_last, AdamW, ``deep_supervision_loss``) on random batches
in that worker: median step time after two warm-up steps and the worker's minor page faults over
the steps. Runs alternate between the two settings --repeat times. Wall-clock: other processes on
the machine slow both alike; the 1-minute load average is printed. Small mode: ``--steps 3 --repeat 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def steps(n: int, window: int, batch: int) -> dict:
    """Runs in the worker: n training steps; step times (ms) and minor page faults."""
    import resource
    import time

    import torch

    from landslide_dask.demo.run import DEMO_MODEL
    from landslide_dask.train.losses import deep_supervision_loss
    from landslide_dask.train.model import LandslideNet, ModelConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LandslideNet(ModelConfig(streams={"pre": 4, "post": 4, "terrain": 2}, **DEMO_MODEL))
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    x = {
        k: torch.randn(batch, c, window, window).contiguous(memory_format=torch.channels_last)
        for k, c in (("pre", 4), ("post", 4), ("terrain", 2))
    }
    target = (torch.rand(batch, 1, window, window) > 0.9).float()
    known = torch.ones_like(target, dtype=torch.bool)
    ms, faults = [], 0
    for i in range(n + 2):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        loss = deep_supervision_loss(model(x), target, known)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            ms.append((time.perf_counter() - t0) * 1000)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {"ms": statistics.median(ms), "faults": faults, "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def one_run(setting: str, n: int, window: int, batch: int) -> dict:
    """In a fresh process: a one-worker cluster with the given setting, and the steps in it."""
    from distributed import Client, LocalCluster

    from landslide_dask.clusters.start import local_cluster

    if setting == "ours":
        cluster = local_cluster(1)
    else:
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
    with cluster, Client(cluster) as client:
        return client.submit(steps, n, window, batch, pure=False).result()


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--one", choices=["default", "ours"], help=argparse.SUPPRESS)  # a child run
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.steps, args.window, args.batch_size)))
        return []
    rows = []
    load0 = os.getloadavg()[0]
    for _ in range(args.repeat):
        for setting in ("default", "ours"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    setting,
                    "--steps",
                    str(args.steps),
                    "--window",
                    str(args.window),
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append({"setting": setting, **json.loads(out.strip().splitlines()[-1])})
    print(
        f"demo model, batch {args.batch_size} x {args.window} px, 1 worker x 1 torch thread, {args.steps} steps "
        f"per run; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| worker environment | MALLOC_TRIM_THRESHOLD_ | median step ms | minor page faults |\n|---|---|---|---|")
    for r in rows:
        name = "distributed's default" if r["setting"] == "default" else "landslide_dask (WORKER_CONFIG)"
        print(f"| {name} | {r['trim'] or 'unset'} | {r['ms']:.0f} | {r['faults']:,} |")
    for s in ("default", "ours"):
        med = statistics.median(r["ms"] for r in rows if r["setting"] == s)
        print(f"{s}: median of runs {med:.0f} ms/step")
    return rows


if __name__ == "__main__":
    main()
