"""Evaluation of a landslide map against a labelled cube: pixel and object metrics, report, PNG map.

Pixel metrics
-------------
``probability >= round(threshold * 255)`` against the cube's ``label`` (1 landslide, 0 not), over
the *evaluated area*: ``label != 255`` (inside the inventory's mapped area) and ``valid`` (the
cube's and, when present, the prediction's). Counts are summed chunk by chunk (Dask), so memory
does not grow with the region. Scores come from :class:`landslide_dask.train.metrics.Confusion`.

Object metrics
--------------
Predicted objects: the polygons of :func:`landslide_dask.predict.polygons.polygonize` (4-connected,
minimum area applied) or a given polygons file (filtered by the same minimum area). Reference
objects: the inventory file's polygons, reprojected to the prediction's CRS and clipped to the
cube's extent, or — without a file — the 4-connected objects of ``label == 1`` (valid pixels),
made by the same seamless routine as the predictions (touching inventory polygons then merge into
one object). Objects made from the label raster get the same minimum area as the predictions (smaller ones
are mostly rasterisation fragments, and a map equal to the labels must score 1); an inventory
file's polygons are all kept, whatever their size. All objects take part in the matching, but
only those whose ``point_on_surface`` lies in the evaluated area are *counted*: an object outside
the inventory's mapped area (or under clouds) can be neither right nor wrong, yet it can still be
the match of one inside.

A predicted object P and a reference object R **match** when their overlap is substantial in
either sense::

    IoU(P, R) = |P & R| / |P | R| >= min_iou (0.1)      # overlapping outlines, shifted or not
    or |P & R| / min(|P|, |R|) >= min_cover (0.5)       # one mostly inside the other

Matching is **many-to-many**: a predicted object is a true positive if it matches at least one
reference object, a reference object is detected if at least one predicted object matches it.
So one predicted blob covering three adjacent small slides detects all three (it is counted as a
*merge*), and a slide split into two predictions is detected once (counted as a *split*).
Object precision = true-positive predictions / predictions; object recall = detected references /
references; both also per size class (by each object's own area: < 1,000 m², 1,000-10,000 m²,
>= 10,000 m²).

The map
-------
``map.png`` (drawn by :mod:`.figure`): the post-event RGB composite (2-98 % stretch, toned down) with true-positive
pixels yellow,
false positives magenta, misses (false negatives) cyan, predictions outside the evaluated area
white, and the unevaluated area greyed. Regions larger than ``max_px`` are drawn at 1:step: the
image is read strided and the classes are counted per step x step block (Dask ``coarsen``), each
block showing its most frequent class, so small objects do not vanish and memory stays bounded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from affine import Affine

from ..common.files import write_text
from ..cube.tiles import sparse_labels
from ..errors import InputDataError
from ..train.metrics import IGNORE, Confusion, average_precision, best_level, defined, fmt
from .config import MIN_AREA_M2
from .figure import cell_pixels, class_image, coarse, draw, rgb_lazy, stretch_rgb
from .polygons import CONNECTIVITY, components, polygonize, read_polygons_file, resolve_threshold, threshold_level
from .store import open_prediction, transform_of

log = logging.getLogger(__name__)

SIZE_CLASSES = (
    (0.0, 1_000.0, "< 1,000 m²"),
    (1_000.0, 10_000.0, "1,000-10,000 m²"),
    (10_000.0, float("inf"), ">= 10,000 m²"),
)


# helpers


def _open_cube(cube) -> tuple[xr.Dataset, str]:
    if isinstance(cube, xr.Dataset):
        return cube, "the cube dataset"
    from ..cube.read import open_cube

    return open_cube(cube), str(cube)


def _check_same_grid(pred: xr.Dataset, cube: xr.Dataset, where: str) -> None:
    ps = (pred.sizes["y"], pred.sizes["x"])
    cs = (cube.sizes["y"], cube.sizes["x"])
    if ps != cs:
        raise InputDataError(
            f"The prediction ({ps[0]}x{ps[1]} px) and the cube {where} ({cs[0]}x{cs[1]} px) are "
            "not on the same grid: evaluate a prediction made from this cube."
        )
    pt = np.asarray(list(pred.attrs["transform"])[:6], dtype=float)
    ct = np.asarray(list(cube.attrs.get("transform", pt))[:6], dtype=float)
    same_crs = str(pred.attrs.get("crs")) == str(cube.attrs.get("crs", pred.attrs.get("crs")))
    if not np.allclose(pt, ct, rtol=0, atol=1e-6) or not same_crs:
        raise InputDataError(
            f"The prediction's grid ({pred.attrs.get('crs')}, {pt.tolist()}) differs from the cube "
            f"{where}'s ({cube.attrs.get('crs')}, {ct.tolist()}): evaluate a prediction made from "
            "this cube."
        )
    if "label" not in cube:
        raise InputDataError(
            f"The cube {where} has no 'label' layer: build it with an inventory (--inventory) to evaluate a map on it."
        )


def _compute(*objs, client=None):
    if client is not None:
        return tuple(client.gather(client.compute(list(objs))))
    return dask.compute(*objs)


def _sample(mask: da.Array, transform: Affine, points: np.ndarray, client=None) -> np.ndarray:
    """``mask`` at the pixels under ``points`` (shapely points in map coordinates); False outside."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    xy = shapely.get_coordinates(points)
    inv = ~transform
    cols = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
    rows = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
    rows = np.floor(rows).astype(np.int64)
    cols = np.floor(cols).astype(np.int64)
    h, w = mask.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.zeros(len(points), dtype=bool)
    if inside.any():
        (vals,) = _compute(mask.vindex[rows[inside], cols[inside]], client=client)
        out[inside] = np.asarray(vals, dtype=bool)
    return out


def _ratio(num: int, den: int, other_empty: bool) -> float:
    if den == 0:
        return 1.0 if other_empty else 0.0
    return num / den


def match_objects(pred: np.ndarray, ref: np.ndarray, min_iou: float = 0.1, min_cover: float = 0.5) -> dict:
    """Many-to-many overlap matching of two polygon arrays (same CRS): see the module docstring.

    Returns per-object flags and match counts: ``pred_tp``, ``ref_detected`` (bool arrays),
    ``pred_matches``, ``ref_matches`` (int arrays).
    """
    pred = np.asarray(pred, dtype=object)
    ref = np.asarray(ref, dtype=object)
    pred_matches = np.zeros(len(pred), dtype=np.int64)
    ref_matches = np.zeros(len(ref), dtype=np.int64)
    if len(pred) and len(ref):
        tree = shapely.STRtree(ref)
        pi, ri = tree.query(pred, predicate="intersects")
        if len(pi):
            inter = shapely.area(shapely.intersection(pred[pi], ref[ri]))
            ap, ar = shapely.area(pred[pi]), shapely.area(ref[ri])
            union = ap + ar - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = np.where(union > 0, inter / union, 0.0)
                cover = np.where(np.minimum(ap, ar) > 0, inter / np.minimum(ap, ar), 0.0)
            ok = (inter > 0) & ((iou >= min_iou) | (cover >= min_cover))
            np.add.at(pred_matches, pi[ok], 1)
            np.add.at(ref_matches, ri[ok], 1)
    return {
        "pred_tp": pred_matches > 0,
        "ref_detected": ref_matches > 0,
        "pred_matches": pred_matches,
        "ref_matches": ref_matches,
    }


def object_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    min_iou: float = 0.1,
    min_cover: float = 0.5,
    pred_counted: np.ndarray | None = None,
    ref_counted: np.ndarray | None = None,
) -> dict:
    """Object precision/recall, merges/splits and per-size-class counts for two polygon arrays.

    All objects take part in the matching; only those flagged in ``pred_counted`` / ``ref_counted``
    (default: all) are counted, so an object just outside the evaluated area still lets its
    counterpart inside be a match.
    """
    m = match_objects(pred, ref, min_iou, min_cover)
    pa = shapely.area(np.asarray(pred, dtype=object))
    ra = shapely.area(np.asarray(ref, dtype=object))
    pc = np.ones(len(pa), bool) if pred_counted is None else np.asarray(pred_counted, bool)
    rc = np.ones(len(ra), bool) if ref_counted is None else np.asarray(ref_counted, bool)
    m = {
        "pred_tp": m["pred_tp"][pc],
        "ref_detected": m["ref_detected"][rc],
        "pred_matches": m["pred_matches"][pc],
        "ref_matches": m["ref_matches"][rc],
    }
    pa, ra = pa[pc], ra[rc]
    n_pred, n_ref = len(pa), len(ra)
    tp_pred, det = int(m["pred_tp"].sum()), int(m["ref_detected"].sum())
    precision = _ratio(tp_pred, n_pred, n_ref == 0)
    recall = _ratio(det, n_ref, n_pred == 0)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    classes = []
    for lo, hi, name in SIZE_CLASSES:
        inp = (pa >= lo) & (pa < hi)
        inr = (ra >= lo) & (ra < hi)
        nr, nd = int(inr.sum()), int(m["ref_detected"][inr].sum())
        np_, nt = int(inp.sum()), int(m["pred_tp"][inp].sum())
        classes.append(
            {
                "class": name,
                "min_m2": lo,
                "max_m2": None if np.isinf(hi) else hi,
                "n_reference": nr,
                "detected": nd,
                "missed": nr - nd,
                "recall": (nd / nr) if nr else None,
                "n_predicted": np_,
                "tp_predicted": nt,
                "fp_predicted": np_ - nt,
                "precision": (nt / np_) if np_ else None,
            }
        )
    return {
        "n_predicted": n_pred,
        "n_reference": n_ref,
        "tp_predicted": tp_pred,
        "fp_predicted": n_pred - tp_pred,
        "detected_reference": det,
        "missed_reference": n_ref - det,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "merged_predictions": int((m["pred_matches"] > 1).sum()),
        "split_references": int((m["ref_matches"] > 1).sum()),
        "size_classes": classes,
        "_flags": m,
    }


# labelled samples


def blob_metrics(hit: np.ndarray, label: np.ndarray, evaluated: np.ndarray) -> dict:
    """Scores per labelled blob, for labels that are samples rather than outlines: a landslide blob
    (8-connected pixels of label 1) is *found* when at least half of its evaluated pixels are
    mapped, a non-landslide blob (label 0) *rejected* when fewer than half are; blob MCC from those
    four counts."""
    from scipy import ndimage

    out = {}
    for name, value in (("landslide", 1), ("non_landslide", 0)):
        lab, n = ndimage.label((label == value) & evaluated, structure=np.ones((3, 3)))
        if n:
            share = ndimage.mean(hit.astype(np.float64), lab, index=np.arange(1, n + 1))
            out[name] = (int(n), int((np.asarray(share) >= 0.5).sum()))
        else:
            out[name] = (0, 0)
    (n_pos, found), (n_neg, mapped_neg) = out["landslide"], out["non_landslide"]
    conf = Confusion(found, mapped_neg, n_pos - found, n_neg - mapped_neg)
    return {
        "landslide_blobs": n_pos,
        "found": found,
        "non_landslide_blobs": n_neg,
        "rejected": n_neg - mapped_neg,
        "recall": conf.recall(),
        "specificity": (n_neg - mapped_neg) / n_neg if n_neg else float("nan"),
        "precision": conf.precision(),
        "mcc": conf.mcc(),
        "rule": "a landslide blob is found when >= 50 % of its pixels are mapped; a non-landslide blob is "
        "rejected when < 50 % are",
    }


# reports


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown_report(rep: dict) -> str:
    px, ob = rep["pixel"], rep["object"]
    lines = [
        f"# Landslide map evaluation — {rep['region']}",
        "",
        f"Prediction `{rep['prediction']}` (model `{rep.get('model', '?')}`) against cube `{rep['cube']}`; "
        f"threshold {rep['threshold']:.3f} (probability ≥ {rep['threshold_level']}/255, "
        f"{rep['threshold_source']}); evaluated area {rep['evaluated_km2']:.2f} km².",
        "",
        "## Pixels",
        "",
        "| MCC | precision | recall | F1 | IoU | average precision | TP | FP | FN | TN |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| "
        + " | ".join(
            _fmt(px.get(k))
            for k in ("mcc", "precision", "recall", "f1", "iou", "average_precision", "tp", "fp", "fn", "tn")
        )
        + " |",
        "",
        (
            f"With these labels the best threshold would be {px['best_threshold']:.3f} (MCC "
            f"{_fmt(px['mcc_best_threshold'])}): what the map's ranking allows; no rule can pick it "
            "without the labels, so the gap to the MCC above is what the threshold rule lost."
            if px.get("best_threshold") is not None
            else "No best threshold: the scored pixels lack a class."
        ),
        "",
        "## Objects",
        "",
        f"Predicted objects: {ob['predicted_source']}; minimum area {rep['min_area_m2']:.0f} m². "
        f"Reference objects: {ob['reference_source']}. {ob['rule']}",
        "",
        "| objects | predicted | true positive | false positive | reference | detected | missed | "
        "precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| all | "
        + " | ".join(
            _fmt(ob[k])
            for k in (
                "n_predicted",
                "tp_predicted",
                "fp_predicted",
                "n_reference",
                "detected_reference",
                "missed_reference",
                "precision",
                "recall",
                "f1",
            )
        )
        + " |",
    ]
    for c in ob["size_classes"]:
        lines.append(
            f"| {c['class']} | "
            + " | ".join(
                _fmt(c[k])
                for k in (
                    "n_predicted",
                    "tp_predicted",
                    "fp_predicted",
                    "n_reference",
                    "detected",
                    "missed",
                    "precision",
                    "recall",
                )
            )
            + " | – |"
        )
    if rep.get("blobs"):
        b = rep["blobs"]
        lines += [
            "",
            "## Labelled samples (blobs)",
            "",
            f"The labels are samples, not outlines: {b['rule']}.",
            "",
            "| landslide blobs | found | non-landslide blobs | rejected | recall | specificity | precision | MCC |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            "| "
            + " | ".join(
                _fmt(b[k])
                for k in (
                    "landslide_blobs",
                    "found",
                    "non_landslide_blobs",
                    "rejected",
                    "recall",
                    "specificity",
                    "precision",
                    "mcc",
                )
            )
            + " |",
        ]
    lines += [
        "",
        f"Predictions matching several references (merges): {ob['merged_predictions']}; "
        f"references matched by several predictions (splits): {ob['split_references']}.",
        "",
        "## Map",
        "",
        f"![map]({Path(rep['files']['map']).name})",
        "",
        "Yellow: true positives; magenta: false positives; cyan: missed landslides; white: predicted "
        "outside the inventory area; grey: not evaluated."
        + (f" Drawn at 1:{rep['map_step']}, each cell showing its most frequent class." if rep["map_step"] > 1 else ""),
        "",
    ]
    if rep.get("attribution"):
        lines += ["## Data", "", rep["attribution"], ""]
    return "\n".join(lines)


@dataclass
class _Pixels:
    """One read of a prediction and its cube: the lazy layers the objects need, the pixel
    confusion and average precision, and the map's cells at 1:``step``."""

    hit: da.Array
    truth: da.Array
    valid: da.Array
    evaluated: da.Array
    conf: Confusion
    ap: float
    best: tuple[float, int]
    step: int
    counts: dict[str, np.ndarray]
    unevaluated: np.ndarray
    rgb: np.ndarray
    rgb_valid: np.ndarray


def _pixels(pred: xr.Dataset, cb: xr.Dataset, level: int, max_px: int, client=None) -> _Pixels:
    """Pixel counts, per-level histograms and the map's coarse cells, in one pass over both inputs."""
    prob = pred["probability"].data
    chunks = prob.chunks
    label = cb["label"].data.rechunk(chunks)
    valid = cb["valid"].data.rechunk(chunks).astype(bool) if "valid" in cb else da.ones(prob.shape, bool, chunks=chunks)
    if "valid" in pred:
        valid = valid & pred["valid"].data.rechunk(chunks).astype(bool)
    hit = prob >= np.uint8(level)
    truth = label == 1
    evaluated = (label != IGNORE) & valid
    layers = {
        "tp": hit & truth & evaluated,
        "fp": hit & ~truth & evaluated,
        "fn": ~hit & truth & evaluated,
        "outside": hit & ~evaluated,
    }
    tn = ~hit & ~truth & evaluated
    sums = [layers[k].sum(dtype=np.int64) for k in ("tp", "fp", "fn")] + [tn.sum(dtype=np.int64)]
    # per-level counts of landslide and other pixels: average precision, whatever the threshold
    level_of = prob.astype(np.int16)
    hists = [
        da.bincount(da.where(evaluated & cls, level_of, 256).ravel(), minlength=257)[:256] for cls in (truth, ~truth)
    ]
    step = max(1, int(np.ceil(max(prob.shape) / max_px)))
    cells = {k: coarse(v, step) for k, v in layers.items()}
    computed = _compute(
        *sums,
        *cells.values(),
        coarse(~evaluated, step),
        rgb_lazy(cb, step),
        valid[::step, ::step],
        *hists,
        client=client,
    )
    return _Pixels(
        hit=hit,
        truth=truth,
        valid=valid,
        evaluated=evaluated,
        conf=Confusion(*(int(v) for v in computed[:4])),
        ap=average_precision(computed[11], computed[12]),
        best=best_level(computed[11], computed[12]),
        step=step,
        counts=dict(zip(cells, computed[4:8])),
        unevaluated=computed[8],
        rgb=computed[9],
        rgb_valid=np.asarray(computed[10], dtype=bool),
    )


def _predicted_objects(pred: xr.Dataset, polygons, t: float, min_area_m2: float, client=None) -> tuple[np.ndarray, str]:
    """The predicted polygons (made at ``t``, or the given ones at least ``min_area_m2``) and their source."""
    if polygons is None:
        pg = polygonize(pred, None, threshold=t, min_area_m2=min_area_m2, client=client)
        source = f"polygonised at this threshold ({CONNECTIVITY}-connected)"
    else:
        crs = pred.attrs["crs"]
        given = isinstance(polygons, gpd.GeoDataFrame)
        pg = polygons.to_crs(crs) if given else read_polygons_file(polygons, crs)
        source = "the given GeoDataFrame" if given else f"`{polygons}`"
        area = pg["area_m2"].to_numpy(float) if "area_m2" in pg else pg.geometry.area.to_numpy()
        pg = pg[area >= min_area_m2]
    return np.asarray(pg.geometry.values, dtype=object), source


def _reference_objects(
    pred: xr.Dataset, px: _Pixels, inventory, min_area_m2: float, client=None
) -> tuple[np.ndarray, str]:
    """The reference polygons (the inventory file's clipped to the cube, or the label's objects)
    and their source."""
    transform = transform_of(pred)
    if inventory is not None:
        from ..cube.inventory import read_polygons

        inv, _ = read_polygons(inventory, "inventory")
        h, w = px.hit.shape
        box = shapely.box(*_bounds(transform, h, w))
        rgeoms = shapely.intersection(np.asarray(inv.to_crs(pred.attrs["crs"]).geometry.values, dtype=object), box)
        rgeoms = rgeoms[~shapely.is_empty(rgeoms) & (shapely.area(rgeoms) > 0)]
        return rgeoms, f"inventory `{inventory}` ({len(inv)} polygons, clipped to the cube)"
    rgeoms, *_ = components(px.truth & px.valid, None, transform, min_area_m2, client)
    return rgeoms, (
        f"the cube's label layer ({CONNECTIVITY}-connected objects of label 1 on valid pixels, "
        f"at least {min_area_m2:.0f} m² like the predictions)"
    )


def _object_report(
    pred: xr.Dataset,
    px: _Pixels,
    polygons,
    inventory,
    t: float,
    min_area_m2: float,
    min_iou: float,
    min_cover: float,
    client=None,
) -> dict:
    """Object metrics of the predicted against the reference objects, counting those whose interior
    point lies in the evaluated area, with the rule and sources in words."""
    transform = transform_of(pred)
    pgeoms, predicted_source = _predicted_objects(pred, polygons, t, min_area_m2, client)
    rgeoms, reference_source = _reference_objects(pred, px, inventory, min_area_m2, client)
    pred_in = _sample(px.evaluated, transform, shapely.point_on_surface(pgeoms), client)
    ref_in = (
        _sample(px.evaluated, transform, shapely.point_on_surface(rgeoms), client)
        if len(rgeoms)
        else np.zeros(0, dtype=bool)
    )
    om = object_metrics(pgeoms, rgeoms, min_iou, min_cover, pred_in, ref_in)
    om.pop("_flags")
    om.update(
        {
            "rule": (
                f"A predicted and a reference object match when IoU ≥ {min_iou:g} or the overlap covers "
                f"≥ {min_cover:.0%} of the smaller one; matching is many-to-many; only objects whose "
                "interior point lies in the evaluated area are counted."
            ),
            "min_iou": min_iou,
            "min_cover": min_cover,
            "connectivity": CONNECTIVITY,
            "reference_source": reference_source,
            "predicted_source": predicted_source,
        }
    )
    return om


def _draw_map(rep: dict, px: _Pixels, beside: bool, attribution_latin: str | None) -> None:
    """``map.png``: the classes over the image (the image alone on the left with ``beside``)."""
    h, w = px.hit.shape
    step, conf, om = px.step, px.conf, rep["object"]
    rgb = stretch_rgb(px.rgb, px.rgb_valid)
    img = class_image(px.counts, np.asarray(px.unevaluated) * 2 > cell_pixels(h, w, step), rgb, px.rgb_valid)
    if beside:
        plain = np.where(px.rgb_valid[..., None], rgb, 0.25)
        img = np.concatenate([plain, np.ones((img.shape[0], max(4, img.shape[1] // 50), 3)), img], axis=1)
    present = {k for k, v in px.counts.items() if np.any(v)}
    drawn = f" (drawn at 1:{step})" if step > 1 else ""
    title = (
        f"{rep['region']}{drawn} — pixels: MCC {fmt(conf.mcc(), 2)}, F1 {fmt(conf.f1(), 2)}, "
        f"precision {fmt(conf.precision(), 2)}, recall {fmt(conf.recall(), 2)}\n"
        f"objects: precision {om['precision']:.2f}, recall {om['recall']:.2f} "
        f"({om['detected_reference']}/{om['n_reference']} detected, {om['fp_predicted']} false) · "
        f"threshold {rep['threshold']:.2f}, min area {rep['min_area_m2']:.0f} m²"
    )
    draw(
        img,
        Path(rep["files"]["map"]),
        title,
        present,
        attribution=rep["attribution"],
        attribution_latin=attribution_latin,
    )


def evaluate_map(
    prediction,
    cube,
    out_dir,
    inventory=None,
    polygons=None,
    threshold: float | None = None,
    min_area_m2: float = MIN_AREA_M2,
    *,
    name: str | None = None,
    min_iou: float = 0.1,
    min_cover: float = 0.5,
    max_px: int = 1600,
    client=None,
    attribution: str | None = None,
    attribution_latin: str | None = None,
    beside: bool = False,
) -> dict:
    """Evaluate a finished prediction against a labelled cube; write report.md, report.json, map.png.

    ``prediction``: prediction zarr (or Dataset); ``cube``: the cube it was made from (with labels);
    ``inventory``: optional inventory polygons file (any CRS) for the reference objects, else the
    cube's label layer is polygonised; ``polygons``: optional predicted polygons (GeoParquet,
    GeoPackage or GeoDataFrame), else made by :func:`polygonize` (not written); ``threshold``:
    default the prediction's attribute; ``min_area_m2``: predicted objects smaller are ignored;
    ``min_iou``/``min_cover``: the matching rule (module docstring); ``max_px``: longest side of the
    map in cells before it is drawn at 1:step; ``attribution``: the data's credit line, printed under
    the map (inventories' licences ask for it), in ``attribution_latin`` where no font has its
    script, and in full in report.md and the PNG's metadata; ``beside``: the post-event image, untouched, left of
    the map. Returns the report as a dict (also in report.json).
    """
    pred = open_prediction(prediction, georeferenced=True)
    cb, cube_where = _open_cube(cube)
    _check_same_grid(pred, cb, cube_where)
    threshold_source = (
        "given"
        if threshold is not None
        else pred.attrs.get("threshold_rule", "the checkpoint's validation-chosen threshold")
    )
    t = resolve_threshold(pred, threshold)
    level = threshold_level(t)
    transform = transform_of(pred)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        name = cb.attrs.get("region") or (
            Path(str(cube)).name.removesuffix(".zarr") if not isinstance(cube, xr.Dataset) else "region"
        )
    px = _pixels(pred, cb, level, max_px, client)
    om = _object_report(pred, px, polygons, inventory, t, min_area_m2, min_iou, min_cover, client)
    blobs = None
    if sparse_labels(cb):  # labelled samples (sparse blobs, not outlines): found / rejected per blob
        hit_np, lab_np, ev_np = _compute(px.hit, cb["label"].data.rechunk(px.hit.chunks), px.evaluated, client=client)
        blobs = blob_metrics(np.asarray(hit_np) & np.asarray(ev_np), np.asarray(lab_np), np.asarray(ev_np))
    conf = px.conf
    rep = {
        "region": name,
        "prediction": str(prediction) if not isinstance(prediction, xr.Dataset) else "dataset",
        "cube": str(cube) if not isinstance(cube, xr.Dataset) else "dataset",
        "model": pred.attrs.get("model"),
        "crs": pred.attrs["crs"],
        "threshold": t,
        "threshold_level": level,
        "threshold_source": threshold_source,
        "min_area_m2": float(min_area_m2),
        "evaluated_km2": conf.total * pixel_area / 1e6,
        "attribution": attribution,
        "pixel": {
            **conf.scores(),
            "average_precision": px.ap if defined(px.ap) else None,
            # with the labels: the best any threshold could do on these pixels (not a usable threshold)
            "mcc_best_threshold": px.best[0] if defined(px.best[0]) else None,
            "best_threshold": px.best[1] / 255 if px.best[1] >= 0 else None,
        },
        "object": om,
        "map_step": px.step,
        **({"blobs": blobs} if blobs is not None else {}),
        "files": {
            "report_md": str(out_dir / "report.md"),
            "report_json": str(out_dir / "report.json"),
            "map": str(out_dir / "map.png"),
        },
    }
    _draw_map(rep, px, beside, attribution_latin)
    write_text(out_dir / "report.json", json.dumps(rep, indent=2, default=_json_default) + "\n")
    write_text(out_dir / "report.md", markdown_report(rep))
    return rep


def _bounds(t: Affine, h: int, w: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(t @ c for c in ((0, 0), (w, 0), (0, h), (w, h))))
    return min(xs), min(ys), max(xs), max(ys)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


__all__ = ["evaluate_map", "object_metrics", "match_objects", "blob_metrics", "markdown_report", "SIZE_CLASSES"]
