"""The paper's experiment at demo scale: does one model map a region it never saw, and what does
each input stream contribute?

    python benchmarks/generalisation.py --cubes demo-out/cubes --out generalisation-out [--epochs 10] [--small]

On the demo's cubes (`landslide-dask demo` builds them), with the demo's model and training
settings (landslide_dask.demo.run.demo_train_config) and DDP over 2 local Dask workers:
1. leave-one-out: for each region, a combined model trained on the others, scored on every pixel
   of the held-out region; and a local model per region scored on its own test blocks;
2. ablation on the last region held out: the same combined training with inputs
   pre+post+terrain (the full model), pre+post (no terrain) and post only.
Writes results.csv/.md (leave-one-out) and ablation.csv/.md under --out and prints both.
Finished training runs are reused, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

#: --small: a tiny model and schedule, so CI runs every code path in seconds (not the figures)
SMALL_MODEL = {"encoder_widths": [8, 16, 16, 16], "stem_widths": {"pre": 4, "post": 4, "terrain": 4}}
ABLATION = {
    "pre+post+terrain": ("pre", "post", "terrain"),
    "pre+post (no terrain)": ("pre", "post"),
    "post only": ("post",),
}


def main() -> None:
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster
    from landslide_dask.demo.run import DEMO_MODEL, demo_train_config
    from landslide_dask.train.experiment import (
        leave_one_out,
        markdown_table,
        region_name,
        score_row,
        train_strategy,
        write_table,
    )
    from landslide_dask.train.scoring import evaluate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cubes", required=True, help="folder of region cubes (*.zarr), the last one is held out")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=None, help="default: the demo's (demo.DEMO_EPOCHS)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-loo", action="store_true", help="only the ablation")
    p.add_argument(
        "--small",
        action="store_true",
        help="CI mode: a tiny model, 1 epoch of 2 steps, the ablation only (leave-one-out is tested with the "
        "package's tests)",
    )
    args = p.parse_args()

    cubes = [str(c) for c in sorted(Path(args.cubes).glob("*.zarr"))]
    order = ["hokkaido_like", "gorkha_like", "kaikoura_like", "haiti_like"]  # the demo's order
    cubes.sort(key=lambda c: order.index(region_name(c)) if region_name(c) in order else len(order))
    out = Path(args.out)
    cfg = demo_train_config(cubes, out, args.epochs) if args.epochs else demo_train_config(cubes, out)
    base_model = DEMO_MODEL
    if args.small:
        base_model = SMALL_MODEL
        cfg = replace(
            cfg,
            window=64,
            stride=32,
            block=128,
            epochs=1,
            steps_per_epoch=2,
            batch_size=2,
            patience=1,
            model=SMALL_MODEL,
            threads=1,
            progress=False,
        )
    t0 = time.perf_counter()
    with local_cluster(args.workers, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        if not (args.skip_loo or args.small):
            loo = leave_one_out(client, cubes, cfg, strategies=("combined",), local=True)
            print(markdown_table(loo), flush=True)
        *seen, unseen = cubes
        rows = []
        for label, streams in ABLATION.items():
            model = {**base_model, "stem_widths": {s: base_model["stem_widths"][s] for s in streams}}
            run = replace(
                cfg,
                streams=streams,
                model=model,
                out=str(
                    out
                    / f"without-{region_name(unseen)}"
                    / ("combined" if len(streams) == 3 else "ablation-" + "-".join(streams))
                ),
            )
            res = train_strategy(client, "combined", seen, run)
            row = score_row(
                region_name(unseen), label, [region_name(c) for c in seen], evaluate(res["best"], unseen), res["best"]
            )
            rows.append(row)
            print(f"[ablation] {label}: MCC {row['mcc']:.3f}", flush=True)
    ablation = pd.DataFrame(rows)
    write_table(ablation, out, "ablation")
    print(markdown_table(ablation))
    print(f"\n{time.perf_counter() - t0:.0f} s; tables in {out}")


if __name__ == "__main__":
    main()
