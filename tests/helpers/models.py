"""A tiny randomly initialised model as a real checkpoint: output that varies strongly with the
input, so seams and mistakes show, at a fraction of a second per window."""

from __future__ import annotations

from pathlib import Path

import torch

from landslide_dask.train.model import LandslideNet, ModelConfig

from .cubes import BANDS

WIN, OV = 128, 32  # inference windows of the tests: small and fast, the same code path as the defaults

TINY = dict(
    encoder_blocks=(1, 1, 1, 1),
    encoder_widths=(8, 16, 32, 32),
    stem_widths={"pre": 8, "post": 8, "terrain": 8},
    dropout=0.0,
    prior=None,
    zero_init_residual=True,
)


def make_checkpoint(path: Path, seed: int = 0, streams=("pre", "post", "terrain"), bands=BANDS) -> Path:
    """A tiny random model as a format-1 checkpoint; the head is scaled up so probabilities
    spread over (0, 1) and depend on the input."""
    torch.manual_seed(seed)
    ch = {"pre": len(bands), "post": len(bands), "terrain": 2}
    cfg = ModelConfig(streams={s: ch[s] for s in streams}, **{**TINY, "stem_widths": {s: 8 for s in streams}})
    model = LandslideNet(cfg)
    with torch.no_grad():
        model.head.weight.mul_(40.0)
    stats = {
        "mean": {"pre": [1750.0] * len(bands), "post": [1750.0] * len(bands), "terrain": [128.0, 22.0]},
        "std": {"pre": [700.0] * len(bands), "post": [700.0] * len(bands), "terrain": [70.0, 12.0]},
    }
    torch.save(
        {
            "format": 1,
            "state_dict": model.state_dict(),
            "model_config": cfg.to_dict(),
            "bands": list(bands),
            "streams": list(streams),
            "stats": {k: {s: v[s] for s in streams} for k, v in stats.items()},
            "threshold": 0.4,
        },
        path,
    )
    return path
