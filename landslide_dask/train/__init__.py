"""Stage 2, training: one generalized model from many event inventories, data-parallel on Dask.

``chips`` (the index of training windows, splits, band statistics, augmentations) -> ``reader``
(the one path from cube windows to model inputs, shared with inference) -> ``batches`` (windows
as tensors) -> ``model`` (the multi-stream U-Net) with ``losses`` -> ``loop`` (the training loop)
on ``ddp`` (torch DDP ranks on Dask workers), writing ``checkpoint`` (save, load, rebuild the
model, read its contract: what inference imports) -> ``scoring`` (the threshold search, a
checkpoint scored on a cube) -> ``experiment`` (local, combined and progressive strategies,
leave-one-region-out) scored by ``metrics``; ``selftrain`` continues a model on a new scene's own
pseudo-labelled map (no label of that scene).
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "PAPER_WINDOW": ".config",
    "INPUT_MULTIPLE": ".config",
    "train": ".loop",
    "evaluate": ".scoring",
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "contract": ".checkpoint",
    "BandStats": ".chips",
    "build_index": ".chips",
    "compute_stats": ".chips",
    "STRATEGIES": ".experiment",
    "train_strategy": ".experiment",
    "leave_one_out": ".experiment",
    "Confusion": ".metrics",
    "ModelConfig": ".model",
    "LandslideNet": ".model",
    "WindowReader": ".reader",
    "self_train": ".selftrain",
    "pseudo_label_cube": ".selftrain",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
