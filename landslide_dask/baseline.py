"""The pixel baseline: gradient-boosted trees on simple per-pixel features, the floor that every CNN
figure on real data is read against.

A CNN that maps a scene worse than trees that see one pixel and its neighbourhood's brightness has
not yet learnt shape or context; the benchmark of real events trains this baseline on the CNN's
training blocks, chooses its threshold on the CNN's validation blocks, and scores its map on the
same test blocks, through the same ``evaluate_map``. LightGBM (a well-kept library, fast on 2
cores, NaN-aware: pixels without a pre-event image keep NaN pre-event features).

The features, in reflectance x 10,000 (each cube's DN scale and offset applied, as the model
sees them): the imagery bands before and after, their differences, each post-event band over the
post-event brightness, the local mean and standard deviation of post-event brightness and of its
change over 5 and 15 px, slope and hillshade. No DEM height: it would only learn where the
inventory was traced. The whole cube is read into memory: a benchmark tool for event scenes, not
for country cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cube.inventory import LABEL_UNKNOWN
from .errors import InputDataError

__all__ = ["FEATURE_WINDOWS", "pixel_features", "PixelBaseline", "train_pixel_baseline", "baseline_prediction"]

FEATURE_WINDOWS = (5, 15)  # px: local brightness statistics over these square neighbourhoods
#: LightGBM settings: 400 trees of up to 63 leaves; bagging and feature sampling against the
#: spatial correlation of neighbouring training pixels.
LGBM_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 100,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}
N_TREES = 400
#: At most this many training pixels (drawn at random from the training blocks' known pixels).
MAX_TRAIN_PIXELS = 400_000


def _local_stats(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import uniform_filter

    m = uniform_filter(x, size, mode="nearest")
    v = uniform_filter(x * x, size, mode="nearest") - m * m
    return m, np.sqrt(np.maximum(v, 0.0))


def pixel_features(cube: str | Path, bands: list[str] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Features ``(n, H, W)`` float32, their names and the cube's ``valid`` mask. Pre-event features
    are NaN where the cube has no pre-event image."""
    from .cube.read import model_bands, open_cube, select_bands
    from .train.reader import radiometry

    ds = open_cube(cube)
    if "post" not in ds:
        raise InputDataError(f"{cube} has no post-event composite: the pixel baseline needs one.")
    have = [str(b) for b in ds["band"].values]
    idx = list(select_bands(model_bands(bands, [ds]), have, f"the cube {cube}"))
    names_b = [have[i] for i in idx]
    gain, bias = radiometry(cube)
    valid = ds["valid"].values.astype(bool)

    def reflectance(var: str) -> np.ndarray:
        x = ds[var].values[idx].astype(np.float32) * np.float32(gain) + np.float32(bias)
        return np.where(valid[None], x, np.nan)

    post = reflectance("post")
    pre = reflectance("pre") if "pre" in ds else np.full_like(post, np.nan)
    if "pre_valid" in ds:
        pre[:, ~ds["pre_valid"].values.astype(bool)] = np.nan
    bright_post = post.mean(axis=0)
    bright_pre = pre.mean(axis=0)
    feats, names = [], []

    def add(x: np.ndarray, name: str) -> None:
        feats.append(x.astype(np.float32))
        names.append(name)

    for i, b in enumerate(names_b):
        add(pre[i], f"pre_{b}")
        add(post[i], f"post_{b}")
        add(post[i] - pre[i], f"diff_{b}")
        add(post[i] / np.maximum(bright_post, 1.0), f"ratio_{b}")
    change = bright_post - bright_pre
    for size in FEATURE_WINDOWS:
        for x, name in ((bright_post, "post_brightness"), (np.nan_to_num(change), "change")):
            m, s = _local_stats(np.nan_to_num(x), size)
            add(m, f"{name}_mean{size}")
            add(s, f"{name}_std{size}")
    for t in ("slope", "hillshade"):
        if t in ds:
            add(ds[t].values.astype(np.float32), t)
    return np.stack(feats), names, valid


@dataclass
class PixelBaseline:
    """A trained baseline: the booster, its feature names, bands and validation threshold."""

    model: object
    features: list[str]
    bands: list[str] | None
    threshold: float
    validation: dict = field(default_factory=dict)

    def probability(self, cube: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Landslide probability of every pixel of ``cube`` (0 where not valid) and its valid mask."""
        x, names, valid = pixel_features(cube, self.bands)
        if names != self.features:
            raise InputDataError(
                f"{cube} gives features {names}, the baseline was trained on {self.features}: "
                "map cubes with the same bands and layers."
            )
        prob = np.zeros(valid.shape, np.float32)
        prob[valid] = self.model.predict(x[:, valid].T)
        return prob, valid


def train_pixel_baseline(
    index: pd.DataFrame,
    cube: str | Path,
    bands: list[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
    max_pixels: int = MAX_TRAIN_PIXELS,
    trees: int = N_TREES,
) -> PixelBaseline:
    """Train on the known pixels of the index's training windows in ``cube`` and choose the threshold
    by MCC on its validation windows (the CNN's grid of thresholds and rule). ``trees`` and
    ``max_pixels`` are lowered only by the benchmark's small mode (CI time)."""
    import lightgbm as lgb
    import torch

    from .cube.read import open_cube
    from .train.chips import split_mask
    from .train.scoring import best_threshold, confusion_by_threshold

    x, names, valid = pixel_features(cube, bands)
    label = open_cube(cube)["label"].values
    known = valid & (label != LABEL_UNKNOWN)
    rng = np.random.default_rng(seed)

    def pixels(split: str, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
        where = np.flatnonzero((split_mask(index, cube, split, label.shape) & known).ravel())
        if cap is not None and len(where) > cap:
            where = rng.choice(where, cap, replace=False)
        return x.reshape(len(names), -1)[:, where].T, (label.ravel()[where] == 1).astype(np.int8)

    xt, yt = pixels("train", max_pixels)
    xv, yv = pixels("val", None)
    if yt.sum() == 0 or yv.sum() == 0:
        raise InputDataError(
            f"the training or validation windows of {cube} hold no landslide pixel: "
            "the baseline cannot learn or choose a threshold"
        )
    params = {**LGBM_PARAMS, "seed": seed, "num_threads": threads or 0}
    model = lgb.train(params, lgb.Dataset(xt, yt, feature_name=names), num_boost_round=trees)
    pv = torch.from_numpy(model.predict(xv).astype(np.float32))
    counts = confusion_by_threshold(pv, torch.from_numpy(yv.astype(np.float32)), torch.ones(len(yv), dtype=torch.bool))
    th, conf = best_threshold(counts)
    return PixelBaseline(
        model, names, bands, th, {"train_pixels": int(len(yt)), "val_pixels": int(len(yv)), **conf.scores()}
    )


def baseline_prediction(baseline: PixelBaseline, cube: str | Path):
    """The baseline's map of ``cube`` as an in-memory prediction (the prediction contract's
    ``probability`` x 255 and ``valid``, CRS, transform and threshold), which ``evaluate_map`` and
    ``polygonize`` take like ``predict``'s output."""
    import xarray as xr

    from .cube.read import open_cube

    prob, valid = baseline.probability(cube)
    ds = open_cube(cube)
    attrs = {k: ds.attrs[k] for k in ("crs", "epsg", "transform", "resolution") if k in ds.attrs}
    return xr.Dataset(
        {"probability": (("y", "x"), np.round(prob * 255).astype(np.uint8)), "valid": (("y", "x"), valid)},
        coords={"y": ds["y"], "x": ds["x"]},
        attrs={
            **attrs,
            "threshold": baseline.threshold,
            "complete": True,
            "model": "pixel baseline (LightGBM gradient-boosted trees)",
        },
    ).chunk({"y": 512, "x": 512})
