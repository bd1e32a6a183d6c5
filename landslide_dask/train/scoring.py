"""Scoring a model on labelled pixels: the validation threshold search, and a checkpoint's
confusion on a cube (every pixel once, or one split of a training index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cube.read import check_cube_for_model, open_cube
from ..errors import InputDataError
from .batches import to_device, window_batches
from .checkpoint import checkpoint_reader, contract, load_checkpoint, rebuild_model
from .config import INPUT_MULTIPLE, TrainConfig
from .metrics import Confusion

__all__ = [
    "THRESHOLDS",
    "SCORING_TILE",
    "confusion_by_threshold",
    "best_threshold",
    "predict_windows",
    "tiles",
    "evaluate",
]

# the validation threshold search: 0.05 steps, and finer below 0.05, where under-confident models
# (few epochs, a new region) put their best MCC (Iburi's local model chose 0.05, the old floor)
THRESHOLDS = np.round(np.r_[np.arange(0.01, 0.05, 0.01), np.arange(0.05, 0.96, 0.05)], 2)
#: Side of the tiles :func:`evaluate` scores a whole cube in (px).
SCORING_TILE = 512


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
        raise InputDataError(
            f"the validation pixels hold {confs[0].positives} landslide and {confs[0].negatives} "
            "other pixels: a threshold cannot be chosen on a single class. Use a smaller --block "
            "or --window so that validation blocks hold landslides, or add inventories."
        )
    i = int(np.argmax([c.mcc() for c in confs]))
    return float(THRESHOLDS[i]), confs[i]


def predict_windows(
    ckpt: dict,
    cube: str,
    windows: pd.DataFrame,
    window: int,
    batch_size: int = TrainConfig.batch_size,
    device: str = "cpu",
    levels: bool = False,
):
    """Confusion counts per threshold of a checkpoint over the given windows of one cube; with
    ``levels``, also ``(3, 256)`` histograms of probability x 255 (rounded, as maps store it) of
    the landslide, the other labelled and all valid pixels: any threshold's confusion and the
    label-free scene threshold come from them."""
    model = rebuild_model(ckpt, device)
    streams = contract(ckpt).streams
    reader = checkpoint_reader(ckpt, [cube])
    counts = torch.zeros(len(THRESHOLDS), 4, dtype=torch.float64)
    hists = torch.zeros(3, 256, dtype=torch.int64)
    w = windows.assign(cube=0)
    with torch.inference_mode():
        for batch in window_batches(reader, w, window, batch_size, None, streams, drop_last=False):
            inputs, target, known = to_device(batch, torch.device(device), streams)
            prob = torch.sigmoid(model(inputs)["logits"].float())
            counts += confusion_by_threshold(prob.cpu(), target.cpu(), known.cpu())
            if levels:
                level = torch.round(prob.cpu() * 255).long().clamp(0, 255)
                t, k, v = target.cpu().bool(), known.cpu(), batch["valid"].unsqueeze(1)
                for i, m in enumerate((k & t, k & ~t, v)):
                    hists[i] += torch.bincount(level[m], minlength=256)
    return (counts, hists.numpy()) if levels else counts


def tiles(cube: str, window: int = SCORING_TILE, multiple: int = INPUT_MULTIPLE) -> pd.DataFrame:
    """Windows covering every pixel of a cube exactly once for scoring: ``window`` px tiles (at most
    the cube, a multiple of the model's input multiple); the last row and column of tiles is shifted
    inward and ``skip_r``/``skip_c`` say how many of its leading rows/columns were already counted."""
    ds = open_cube(cube)
    h, w = ds.sizes["y"], ds.sizes["x"]
    window = min(window, h // multiple * multiple, w // multiple * multiple)
    if window < multiple:
        raise InputDataError(f"{cube} ({w}x{h} px) is smaller than the model's {multiple} px input multiple")

    def starts(n: int) -> list[tuple[int, int]]:
        out = [(s, 0) for s in range(0, n - window + 1, window)]
        if out[-1][0] + window < n:
            out.append((n - window, out[-1][0] + window - (n - window)))
        return out

    df = pd.DataFrame(
        [(0, r, c, sr, sc) for r, sr in starts(h) for c, sc in starts(w)],
        columns=["cube", "row", "col", "skip_r", "skip_c"],
    )
    df.attrs["window"] = window
    return df


def evaluate(
    ckpt_path: str | Path,
    cube: str | Path,
    split: str | None = None,
    index: pd.DataFrame | None = None,
    tile: int = SCORING_TILE,
    threshold_rule: str = "auto",
) -> Confusion:
    """Pixel confusion of a checkpoint on a cube: every pixel of the cube once (an unseen region),
    or one split of a training index. ``threshold_rule`` (``predict.thresholds``): ``auto`` scores
    a region the model never trained on at the label-free scene threshold, others at the
    checkpoint's validation threshold; the Confusion's ``threshold`` says which was used."""
    from ..predict.thresholds import otsu_level, resolve_rule

    ckpt = load_checkpoint(ckpt_path)
    c = contract(ckpt)
    check_cube_for_model(open_cube(cube), c.streams, c.bands, c.droppable, cube=cube, model=ckpt_path)
    rule = resolve_rule(cube, ckpt, threshold_rule)
    cube = str(cube)
    if split is None:
        from .model import ModelConfig

        windows = tiles(cube, tile, ModelConfig.from_dict(ckpt["model_config"]).size_multiple)
        window = windows.attrs["window"]
    else:
        if c.window is None:
            raise InputDataError(f"{ckpt_path} records no training window: score it on a whole cube (no split)")
        window = c.window
        windows = index[(index["path"] == cube) & (index["split"] == split)]
        if not len(windows):
            raise InputDataError(f"no {split} windows for {cube}")
    _, hists = predict_windows(ckpt, cube, windows, window, levels=True)
    if rule == "scene":
        if hists[2].sum() == 0:
            raise InputDataError(f"{cube} has no valid pixel in these windows: no scene threshold")
        level = otsu_level(hists[2])
    else:
        level = int(round(c.threshold * 255))
    pos, neg = hists[0], hists[1]
    tp, fp = int(pos[level:].sum()), int(neg[level:].sum())
    return Confusion(tp, fp, int(pos.sum()) - tp, int(neg.sum()) - fp, threshold=level / 255.0, threshold_rule=rule)
