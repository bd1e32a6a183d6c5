"""Checkpoints: save, load, rebuild the model, and read what a model expects (its contract).

Training writes them; evaluation, inference and fine-tuning read them through here, so inference
never imports the training loop (layout: ``docs/contracts.md``, "Checkpoint"). Torch is imported
by the functions that need it: reading a checkpoint's contract costs no torch import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..common.files import atomic_write
from ..errors import InputDataError
from .reader import WindowReader

if TYPE_CHECKING:
    import torch

    from .chips import BandStats
    from .config import TrainConfig
    from .model import LandslideNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "Contract",
    "contract",
    "save_checkpoint",
    "load_checkpoint",
    "build_model",
    "rebuild_model",
    "training_regions",
    "stream_dropout_of",
    "droppable_streams",
    "checkpoint_reader",
]

#: Version of the checkpoint layout; :func:`load_checkpoint` refuses any other.
CHECKPOINT_FORMAT = 1


def stream_dropout_of(train_config: dict | None, stream: str) -> float:
    """The dropout a model's stream was trained with (pre: ``pre_dropout``; others: ``stream_dropout``)."""
    tc = train_config or {}
    if stream == "pre":
        return float(tc.get("pre_dropout") or 0)
    return float((tc.get("stream_dropout") or {}).get(stream) or 0)


def droppable_streams(streams: Sequence[str], train_config: dict | None) -> tuple[str, ...]:
    """The streams a model (of these streams, trained with this config dict) learnt to do without."""
    return tuple(str(s) for s in streams if stream_dropout_of(train_config, str(s)) > 0)


@dataclass(frozen=True)
class Contract:
    """What a checkpoint's model expects of a cube and tells a map: its streams and bands (in
    channel order), normalisation statistics, validation threshold, training window (None when
    not recorded), training regions (None when not recorded) and the streams it can do without."""

    streams: tuple[str, ...]
    bands: tuple[str, ...]
    stats: dict
    threshold: float
    window: int | None
    regions: list[dict] | None
    droppable: tuple[str, ...]

    @property
    def maps_without_pre(self) -> bool:
        """Whether the model maps pixels that lack a pre-event image."""
        return "pre" not in self.streams or "pre" in self.droppable


def _window_of(ckpt: dict) -> int | None:
    """The training window: the provenance's, else the stored config's (``size`` before the
    field was named ``window``)."""
    window = (ckpt.get("provenance") or {}).get("window")
    if window is None:
        tc = ckpt.get("train_config") or {}
        window = tc.get("window", tc.get("size"))
    return int(window) if window is not None else None


def contract(ckpt: dict) -> Contract:
    """The contract of a loaded checkpoint (a dict from :func:`load_checkpoint`)."""
    streams = tuple(str(s) for s in ckpt["streams"])
    return Contract(
        streams=streams,
        bands=tuple(str(b) for b in ckpt["bands"]),
        stats=ckpt["stats"],
        threshold=float(ckpt.get("threshold", 0.5)),
        window=_window_of(ckpt),
        regions=ckpt.get("regions"),
        droppable=droppable_streams(streams, ckpt.get("train_config")),
    )


def checkpoint_reader(ckpt: dict, cubes: list[str | Path]) -> WindowReader:
    """The window reader of a checkpoint's model over ``cubes`` (its bands, streams, statistics)."""
    c = contract(ckpt)
    return WindowReader(cubes, c.streams, c.stats, list(c.bands), require_pre=not c.maps_without_pre)


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    model_config: dict,
    bands: list[str],
    stats: BandStats,
    cfg: TrainConfig,
    epoch: int,
    threshold: float,
    history: list[dict],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    best_mcc: float = -1.0,
    stale: int = 0,
    regions: list[dict] | None = None,
) -> None:
    """A checkpoint of plain containers and tensors only: loadable with ``weights_only=True``.
    ``regions``: the training regions (``predict.thresholds.region_record``), so a map of another
    region takes the label-free threshold rule."""
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "model_config": model_config,
        "bands": bands,
        "streams": list(cfg.streams),
        "stats": stats.to_dict(),
        "threshold": threshold,
        "epoch": epoch,
        "history": history,
        "train_config": cfg.to_dict(),
        "best_mcc": best_mcc,
        "stale": stale,
        "provenance": {
            "inventories": [Path(c).stem for c in cfg.cubes],
            "strategy": cfg.strategy,
            "epochs": epoch + 1,
            "window": cfg.window,
        },
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
    import torch

    path = Path(path)
    if not path.exists():
        raise InputDataError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputDataError(
            f"{path} is not a landslide-dask checkpoint (it cannot be loaded safely with "
            f"weights_only=True: {exc}). Point --model at a checkpoint written by "
            "`landslide-dask train`."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise InputDataError(f"{path} is not a landslide-dask checkpoint (format {CHECKPOINT_FORMAT}).")
    return ckpt


def build_model(model_config: dict) -> LandslideNet:
    """A fresh model of a checkpoint's ``model_config``."""
    from .model import LandslideNet, ModelConfig

    return LandslideNet(ModelConfig.from_dict(model_config))


def rebuild_model(ckpt: dict, device) -> LandslideNet:
    """The checkpoint's model with its weights, channels-last on ``device``, in eval mode."""
    import torch

    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device, memory_format=torch.channels_last).eval()
