"""One small training as its own process, on its own 2-worker LocalCluster: what a second user's
job on the same machine looks like. Used by tests/test_shared_machine.py.

    python tests/helpers/train_job.py OUT CUBE [CUBE ...]

Writes OUT/job.json: the training summary (restarts included) and the wall time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TINY = {
    "encoder_blocks": [1, 1, 1, 1],
    "encoder_widths": [8, 16, 32, 32],
    "stem_widths": {"pre": 8, "post": 8, "terrain": 8},
}


def config(cubes: list[str], out: str):
    from landslide_dask.train.loop import TrainConfig

    return TrainConfig(
        cubes=cubes,
        out=out,
        window=64,
        stride=32,
        block=128,
        batch_size=4,
        epochs=2,
        steps_per_epoch=6,
        lr=3e-3,
        patience=10,
        model=TINY,
        progress=False,
        threads=1,
        restarts=2,
    )


def main(out: str, cubes: list[str]) -> dict:
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster
    from landslide_dask.common.logs import quiet_distributed
    from landslide_dask.train.loop import train

    t0 = time.monotonic()
    with local_cluster(2) as cluster, Client(cluster) as client:
        quiet_distributed(client)
        client.wait_for_workers(2, timeout=120)
        res = train(client, config(cubes, out), timeout_s=120)
    res["wall_s"] = time.monotonic() - t0
    (Path(out) / "job.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
