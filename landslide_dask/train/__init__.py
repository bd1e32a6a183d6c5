"""Stage 2, training: one generalized model from many event inventories, data-parallel on Dask.

``chips`` (the index of training windows, splits, band statistics, augmentations) -> ``reader``
(the one path from cube windows to model inputs, shared with inference) -> ``model`` (the
multi-stream U-Net) with ``losses`` -> ``loop`` (the training loop, checkpoints, evaluation) on
``ddp`` (torch DDP ranks on Dask workers) -> ``experiment`` (local, combined and progressive
strategies, leave-one-region-out) scored by ``metrics``; ``selftrain`` continues a model on a new
scene's own pseudo-labelled map (no label of that scene).
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "TRAIN_WINDOW": ".config",
    "TRAIN_STRIDE": ".config",
    "INPUT_MULTIPLE": ".config",
    "train": ".loop",
    "evaluate": ".loop",
    "load_checkpoint": ".loop",
    "save_checkpoint": ".loop",
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
