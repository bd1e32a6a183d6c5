"""Which threshold turns a probability map into landslides: the model's own, or the scene's.

A checkpoint's threshold was chosen by MCC on its validation blocks, in the regions it trained
on. Applied to another region it may mean nothing: a model trained on other imagery ranks the new
scene's pixels well (landslides above the rest) but on another scale, and a threshold from its
validation world can map almost nothing. The label-free rule below looks only at the new map:

**scene rule** (Otsu in logit space): the probability level that best splits this map's valid
pixels into two groups (largest between-group variance of the log-odds). Landslides and the rest
form the two modes of a map from a model that ranks them apart, whatever its scale; log-odds
spread the crowded low end of the probabilities where an under-confident model puts its
landslides. It uses no label of the scene.

The default (``rule="auto"``) is the scene rule for a cube whose footprint lies outside every
region the checkpoint trained on, and the validation threshold inside them. Checkpoints record
their training regions (``regions``: name, event date and lon/lat bounds; a region the model only
saw through its own pseudo-labels, ``train.selftrain``, is marked ``pseudo`` and still unseen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError

__all__ = ["RULES", "otsu_level", "scene_threshold", "region_record", "is_seen", "resolve_rule", "choose_threshold"]

RULES = ("auto", "validation", "scene")
LEVELS = 256  # the prediction stores probability x 255 as uint8


def otsu_level(hist: np.ndarray) -> int:
    """The uint8 level ``k`` (pixels ``>= k`` are landslides) with the largest between-class
    variance of the levels' log-odds, from a 256-bin histogram of probability x 255."""
    h = np.asarray(hist, np.float64)[:LEVELS]
    if h.sum() <= 0:
        raise ValueError("an empty histogram has no threshold")
    p = np.clip((np.arange(LEVELS) + 0.5) / LEVELS, 1e-4, 1 - 1e-4)
    x = np.log(p / (1 - p))
    w0 = np.cumsum(h)[:-1]  # pixels below level k = 1..255
    s0 = np.cumsum(h * x)[:-1]
    n, s = h.sum(), (h * x).sum()
    w1 = n - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s - s0) / w1) ** 2
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between)) + 1


def scene_threshold(prediction) -> float:
    """The scene rule's threshold of a prediction (zarr path or Dataset): Otsu on the log-odds of
    its valid pixels' probabilities."""
    import dask.array as da

    from .store import open_prediction

    ds = open_prediction(prediction)
    prob = ds["probability"].data
    valid = ds["valid"].data.astype(bool) if "valid" in ds else da.ones(prob.shape, bool, chunks=prob.chunks)
    hist = da.bincount(da.where(valid, prob.astype(np.int64), LEVELS).ravel(), minlength=LEVELS + 1)
    hist = np.asarray(hist.compute())[:LEVELS]
    if hist.sum() == 0:
        raise UsageError("the prediction has no valid pixel: there is no scene to choose a threshold from")
    return otsu_level(hist) / 255.0


def region_record(cube: str | Path) -> dict:
    """Name, event date and lon/lat bounds of a cube: what a checkpoint keeps of its training regions."""
    import json

    import zarr
    from pyproj import Transformer

    g = zarr.open_group(str(cube), mode="r")
    a = dict(g.attrs)
    t = a.get("transform")
    t = json.loads(t) if isinstance(t, str) else t
    ny, nx = g["valid"].shape
    x0, y0 = float(t[2]), float(t[5])
    x1, y1 = x0 + float(t[0]) * nx, y0 + float(t[4]) * ny
    tr = Transformer.from_crs(str(a["crs"]), "EPSG:4326", always_xy=True)
    w, s, e, n = tr.transform_bounds(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    rec = {
        "name": Path(str(cube)).name.removesuffix(".zarr"),
        "event_date": str(a.get("event_date", "")),
        "bounds": [w, s, e, n],
    }
    if a.get("pseudo_labels_from"):
        rec["pseudo"] = True  # labelled by a model's own map (train.selftrain): not a seen region
    return rec


def is_seen(cube: str | Path, regions: list[dict]) -> bool:
    """Whether a cube overlaps a training region of the same event (its footprint meets the region's
    bounds and the event dates agree, where both are known)."""
    me = region_record(cube)
    w, s, e, n = me["bounds"]
    for r in regions:
        if r.get("pseudo"):
            continue
        rw, rs, re, rn = r["bounds"]
        same_event = not me["event_date"] or not r.get("event_date") or me["event_date"] == r["event_date"]
        if same_event and w < re and rw < e and s < rn and rs < n:
            return True
    return False


def resolve_rule(cube: str | Path, ckpt: dict, rule: str = "auto") -> str:
    """``validation`` or ``scene``: ``auto`` is the scene rule for a cube outside every region the
    checkpoint trained on, else (or when it records no regions) the validation threshold."""
    if rule not in RULES:
        raise UsageError(f"unknown threshold rule {rule!r}: use one of {', '.join(RULES)}")
    if rule != "auto":
        return rule
    from ..train.checkpoint import contract

    regions = contract(ckpt).regions
    return "validation" if regions is None or is_seen(cube, regions) else "scene"


def choose_threshold(prediction, cube: str | Path, ckpt: dict, rule: str = "auto") -> tuple[float, str]:
    """The threshold a map uses and the rule that gave it (a sentence for reports)."""
    from ..train.checkpoint import contract

    c = contract(ckpt)
    validation = c.threshold
    if resolve_rule(cube, ckpt, rule) == "validation":
        note = "" if c.regions is not None else "; it records no training regions"
        return validation, f"validation (the checkpoint's, chosen on its validation blocks{note})"
    t = scene_threshold(prediction)
    return t, (
        f"scene (Otsu on this map's log-odds, no labels; the checkpoint's validation threshold "
        f"{validation:.2f} was chosen in other regions)"
    )
