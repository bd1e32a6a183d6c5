"""Landslide4Sense-style datasets (image_N.h5 / mask_N.h5 patches) written here, small and known."""

from __future__ import annotations

import h5py
import numpy as np

S = 32  # patch size of the synthetic datasets (Landslide4Sense uses 128)


def l4s_patch(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
    img = rng.uniform(0.0, 1.8, (S, S, 14)).astype(np.float32)
    yy, xx = np.mgrid[:S, :S]
    img[..., 12] = rng.uniform(0, 2, (S, S))  # slope / 20.29
    img[..., 13] = (1.0 + 0.002 * i + 0.0005 * xx + 0.0003 * yy).astype(np.float32)  # DEM / 772.8: a ramp
    mask = np.zeros((S, S), np.uint8)
    mask[4 + i : 12 + i, 6:14] = 1
    return img, mask


def write_l4s(root, n=5, seed=0, masks=True, names=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    if masks:
        (root / "mask").mkdir()
    out = {}
    for i in range(n):
        num = (names or list(range(1, n + 1)))[i]
        img, mask = l4s_patch(rng, i)
        with h5py.File(root / "img" / f"image_{num}.h5", "w") as f:
            f["img"] = img
        if masks:
            with h5py.File(root / "mask" / f"mask_{num}.h5", "w") as f:
                f["mask"] = mask
        out[f"img/image_{num}.h5"] = (img, mask)
    return out
