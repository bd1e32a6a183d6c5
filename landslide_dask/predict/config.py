"""What a map is made with: the defaults of inference and of its products, defined once.

Light on purpose (no torch, no dask): the CLI shows these in its help, and job specs validate
against them, without importing the inference stack.
"""

from __future__ import annotations

__all__ = ["DEFAULT_WINDOW", "DEFAULT_OVERLAP", "DEFAULT_BATCH_SIZE", "MIN_AREA_M2"]

#: Inference window and overlap in pixels (README, "Mapping a region": 768 / 64 gives the
#: asymptotic overhead 1.19 at <= 4/255 from a whole-image pass on CPU; larger windows suit GPUs).
DEFAULT_WINDOW = 768
DEFAULT_OVERLAP = 64
#: Windows per forward pass by device type. CPU: 1 -- batching costs CPU there (demo model, one
#: torch thread, 768 px windows: 0.72 CPU s per window in batches of 1, 0.96 in batches of 4;
#: ``benchmarks/predict.py --batch-sizes 1,4``) and forward-pass memory grows with the batch.
#: CUDA: 4 (not measured here: no GPU was lent; pass ``batch_size=``).
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 4}
#: Landslide polygons smaller than this (m²) are dropped: 4 pixels of 10 m, below what the
#: imagery resolves as an object.
MIN_AREA_M2 = 400.0
