"""How often a worker listing says a live worker is gone, under load: the cached listing vs a fresh RPC.

    python benchmarks/liveness.py [--seconds 60] [--interval 0.01] [--burners 2] [--workers 2]
                                  [--info-interval 2s] [--json out.json]

One run: a ``LocalCluster`` of --workers single-threaded worker processes on loopback, --burners
CPU-bound processes beside it (busy loops, ended with the run), and a loop that asks, every
--interval seconds for --seconds, which workers are connected, alternately through

* ``client.scheduler_info(n_workers=-1)["workers"]`` (what this package used to read: it refreshes
  the client's cache, then returns the cache, which the client's periodic callback overwrites with
  a worker-less identity), and
* ``landslide_dask.common.workers.worker_table`` (one ``Scheduler.identity`` RPC, read as answered).

Meanwhile every worker runs a task that computes with torch the whole time, as a training rank
does. It prints, for each listing, the number of replies and how many listed fewer workers than
are alive (none of them ever dies in this run), and the longest any worker went unheard by the
scheduler (the age of its last heartbeat), to set against the scheduler's worker-ttl. A nonzero count for the first
and zero for the second is
the evidence that the cache, not the workers, lost them. The 1-minute load average is printed
with the figures. The race is rare at distributed's default refresh of the cache (2 s, slowed to
5 s by the scheduler after the client's first heartbeat): a shorter ``--info-interval``
(``distributed.client.scheduler-info-interval``, the heartbeat then put off so that it holds) makes
the client's callback overwrite the cache more often: the same mechanism, frequent enough to count
in seconds. Small mode for CI: ``--seconds 3 --burners 1 --info-interval 5ms``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 1103515245 + 12345) % 2**31


def _busy_rank(seconds: float) -> int:
    """What a training rank does to its worker: torch compute on its task thread (the GIL released
    inside each op, held between them) for ``seconds``."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    t_end = time.time() + seconds
    n = 0
    while time.time() < t_end:
        a = torch.tanh(a @ a.T / 256)
        n += 1
    return n


def measure(
    seconds: float = 60.0, interval: float = 0.01, burners: int = 2, workers: int = 2, info_interval: str = "2s"
) -> dict:
    import dask
    from distributed import Client, LocalCluster

    from landslide_dask.common.workers import worker_table

    ctx = mp.get_context("spawn")
    # the scheduler answers the client's first heartbeat (5 s) by slowing the refresh to 5 s:
    # a chosen interval holds only with the heartbeat put off
    conf = {"distributed.client.scheduler-info-interval": info_interval}
    if info_interval != "2s":
        conf["distributed.client.heartbeat"] = "1h"
    with (
        dask.config.set(conf),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers, timeout=120)
        procs = [ctx.Process(target=_burn, args=(time.time() + seconds + 5,), daemon=True) for _ in range(burners)]
        for p in procs:
            p.start()
        counts = {"scheduler_info": [0, 0], "worker_table": [0, 0]}  # replies, short replies
        # every worker busy as a training rank makes it, so its heartbeats compete for the GIL
        ranks = [client.submit(_busy_rank, seconds, workers=[w], pure=False) for w in sorted(worker_table(client))]
        oldest = 0.0  # the longest a worker went unheard by the scheduler (its last heartbeat's age)
        load0 = os.getloadavg()[0]
        deadline = time.monotonic() + seconds
        i = 0
        try:
            while time.monotonic() < deadline:
                name = "scheduler_info" if i % 2 == 0 else "worker_table"
                table = (
                    client.scheduler_info(n_workers=-1)["workers"] if name == "scheduler_info" else worker_table(client)
                )
                counts[name][0] += 1
                counts[name][1] += len(table) < workers
                if name == "worker_table":
                    now = time.time()
                    oldest = max([oldest, *(now - w.get("last_seen", now) for w in table.values())])
                i += 1
                time.sleep(interval)
        finally:
            for p in procs:
                p.terminate()
                p.join(5)
        client.gather(ranks)
    return {
        "seconds": seconds,
        "interval": interval,
        "burners": burners,
        "workers": workers,
        "info_interval": info_interval,
        "load_start": load0,
        "load_end": os.getloadavg()[0],
        "max_heartbeat_age_s": oldest,
        **{f"{k}_replies": v[0] for k, v in counts.items()},
        **{f"{k}_short": v[1] for k, v in counts.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--burners", type=int, default=2, help="CPU-bound processes beside the cluster")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--info-interval", default="2s", help="distributed.client.scheduler-info-interval (distributed's default: 2s)"
    )
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    r = measure(args.seconds, args.interval, args.burners, args.workers, args.info_interval)
    print(
        f"{args.workers} live workers, {args.burners} CPU-bound processes beside them, {args.seconds:g} s, "
        f"cache refreshed every {args.info_interval}, "
        f"load average {r['load_start']:.1f} -> {r['load_end']:.1f}"
    )
    print("| listing | replies | replies missing a live worker |\n|---|---|---|")
    for k in ("scheduler_info", "worker_table"):
        print(f"| {k} | {r[f'{k}_replies']} | {r[f'{k}_short']} |")
    print(
        f"longest a busy worker went unheard by the scheduler: {r['max_heartbeat_age_s']:.1f} s "
        "(it removes a worker after distributed.scheduler.worker-ttl, 300 s by default)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == "__main__":
    main()
