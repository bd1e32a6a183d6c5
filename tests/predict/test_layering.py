"""Inference stands on the checkpoint and cube readers, never on the training loop or the cube builder."""

from __future__ import annotations

import subprocess
import sys


def test_inference_imports_neither_the_training_loop_nor_the_cube_builder():
    code = (
        "import sys, landslide_dask.predict.engine, landslide_dask.predict.run; "
        "print(sorted(m for m in sys.modules if m in ('landslide_dask.train.loop', 'landslide_dask.cube.build')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
