"""Training and scoring windows as batches of tensors: the window reader's samples, augmented
for training, stacked and read one batch ahead, then moved to the device.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pandas as pd
import torch

from ..cube.inventory import LABEL_UNKNOWN
from .chips import BandStats, augment, drop_pre, drop_streams, haze
from .config import TrainConfig
from .reader import ChunkCache, WindowReader

__all__ = ["training_reader", "window_batches", "to_device"]


def training_reader(cfg: TrainConfig, stats: BandStats | dict, bands: list[str]) -> WindowReader:
    """The window reader of a training run (its own 512 MB chunk cache: a rank revisits chunks)."""
    return WindowReader(cfg.cubes, cfg.streams, stats, bands, require_pre=cfg.pre_dropout <= 0, cache=ChunkCache(512))


def _window_sample(
    reader: WindowReader,
    cube: int,
    row: int,
    col: int,
    skip: tuple[int, int],
    window: int,
    rng: np.random.Generator | None,
    aug: dict,
) -> dict[str, np.ndarray]:
    """One window's sample: its leading ``skip`` rows and columns unknown (evaluation tiles shifted
    inward at the far edges skip what the previous tile counted), augmented when ``rng`` is given."""
    sr, sc = skip
    s = reader.sample(cube, row, col, window)
    s["label"][:sr] = LABEL_UNKNOWN
    s["label"][:, :sc] = LABEL_UNKNOWN
    if sr or sc:
        s["valid"] = s["valid"].copy()
        s["valid"][:sr] = False
        s["valid"][:, :sc] = False
    if rng is None:
        return s
    s = augment(s, rng, aug["jitter"])
    if aug["haze_p"] > 0 and reader.std is not None and not reader.scene:
        s = haze(s, rng, aug["haze_p"], reader.bands, reader.std)
    s = drop_pre(s, rng, aug["pre_dropout"])
    if aug["stream_dropout"]:
        s = drop_streams(s, rng, aug["stream_dropout"])
    return s


def window_batches(
    reader: WindowReader,
    windows: pd.DataFrame,
    window: int,
    batch_size: int,
    rng: np.random.Generator | None,
    streams: tuple[str, ...],
    drop_last: bool = True,
    jitter: float = TrainConfig.jitter,
    pre_dropout: float = TrainConfig.pre_dropout,
    haze_p: float = TrainConfig.haze,
    stream_dropout: dict[str, float] | None = None,
):
    """Batches of tensors of ``window`` px samples, read one batch ahead on a background thread (I/O
    overlaps compute); augmented when ``rng`` is given. Training drops a short last batch (equal
    steps on every rank); evaluation keeps it."""
    q: queue.Queue = queue.Queue(maxsize=2)
    n = len(windows) // batch_size if drop_last else -(-len(windows) // batch_size)
    aug = {"jitter": jitter, "haze_p": haze_p, "pre_dropout": pre_dropout, "stream_dropout": stream_dropout}

    def produce():
        try:
            rows = windows[["cube", "row", "col"]].to_numpy()
            skips = (
                windows[["skip_r", "skip_c"]].to_numpy() if "skip_r" in windows else np.zeros((len(windows), 2), int)
            )
            for b in range(n):
                part = slice(b * batch_size, (b + 1) * batch_size)
                samples = [
                    _window_sample(reader, int(cube), int(row), int(col), (int(sr), int(sc)), window, rng, aug)
                    for (cube, row, col), (sr, sc) in zip(rows[part], skips[part])
                ]
                q.put({k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in (*streams, "label", "valid")})
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
    """A batch's inputs (channels-last), its landslide target and where the label is known, on ``device``."""
    inputs = {s: batch[s].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last) for s in streams}
    label = batch["label"].to(device)
    known = (label != LABEL_UNKNOWN).unsqueeze(1)
    target = (label == 1).float().unsqueeze(1)
    return inputs, target, known
