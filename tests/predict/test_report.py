"""Map evaluation: exact pixel confusion, object matching and size classes, report files, PNG map."""

from __future__ import annotations

import json

import geopandas as gpd
import matplotlib.image as mpimg
import numpy as np
import pytest
import shapely
import xarray as xr

from landslide_dask.errors import InputDataError
from landslide_dask.predict.figure import COLOURS, class_image
from landslide_dask.predict.report import evaluate_map, object_metrics

from ..helpers.predictions import ATTRS, RES, X0, Y0, pixel_box, write_prediction

H = W = 120


def write_cube(path, label: np.ndarray, valid: np.ndarray, chunk: int = 40) -> str:
    h, w = label.shape
    rng = np.random.default_rng(0)
    post = (800 + rng.integers(0, 400, (4, h, w))).astype(np.uint16)
    ds = xr.Dataset(
        {
            "post": (("band", "y", "x"), post),
            "label": (("y", "x"), label.astype(np.uint8)),
            "valid": (("y", "x"), valid),
        },
        coords={
            "band": np.array(["blue", "green", "red", "nir"], dtype=object),
            "y": Y0 - (np.arange(h) + 0.5) * RES,
            "x": X0 + (np.arange(w) + 0.5) * RES,
        },
    )
    ds.attrs.update({k: ATTRS[k] for k in ("crs", "epsg", "transform")})
    ds.chunk({"y": chunk, "x": chunk}).to_zarr(path, mode="w", consolidated=False)
    return str(path)


# Reference (label) and predicted objects, as pixel boxes (r0, r1, c0, c1).
L1, L2, L3 = (10, 30, 10, 30), (60, 65, 10, 15), (90, 93, 90, 93)  # 40,000 / 2,500 / 900 m2
L_CLOUD = (112, 116, 40, 50)  # under clouds: not evaluated
L_TINY = (70, 71, 70, 72)  # 200 m2 label fragment: a pixel miss only
P1, P2 = (12, 30, 12, 30), (60, 65, 12, 17)  # TP: inside L1; shifted L2 (IoU 0.43)
P3, P4 = (40, 50, 60, 70), (80, 82, 40, 42)  # FP: 10,000 m2 and 400 m2
P_OUT = (10, 20, 105, 115)  # in the unmapped strip (label 255)


def _case(tmp_path, chunk: int = 40):
    label = np.zeros((H, W), np.uint8)
    for r0, r1, c0, c1 in (L1, L2, L3, L_CLOUD, L_TINY):
        label[r0:r1, c0:c1] = 1
    label[:, 100:] = 255
    valid = np.ones((H, W), bool)
    valid[110:, :] = False
    prob = np.full((H, W), 20, np.uint8)
    for r0, r1, c0, c1 in (P1, P2, P3, P4, P_OUT):
        prob[r0:r1, c0:c1] = 220
    prob[~valid] = 0
    pred = write_prediction(tmp_path / "pred.zarr", prob, chunk=chunk, valid=valid)
    cube = write_cube(tmp_path / "cube.zarr", label, valid, chunk=chunk)
    return pred, cube


EXPECTED_PIXELS = {"tp": 324 + 15, "fp": 453 - 339, "fn": 436 - 339, "tn": 110 * 100 - 339 - 114 - 97}


def _check_objects(ob: dict) -> None:
    assert (ob["n_predicted"], ob["tp_predicted"], ob["fp_predicted"]) == (4, 2, 2)
    assert (ob["n_reference"], ob["detected_reference"], ob["missed_reference"]) == (3, 2, 1)
    assert ob["precision"] == pytest.approx(0.5)
    assert ob["recall"] == pytest.approx(2 / 3)
    small, mid, large = ob["size_classes"]
    assert (small["n_reference"], small["detected"], small["recall"]) == (1, 0, 0.0)
    assert (mid["n_reference"], mid["detected"], mid["recall"]) == (1, 1, 1.0)
    assert (large["n_reference"], large["detected"], large["recall"]) == (1, 1, 1.0)
    assert (small["n_predicted"], small["tp_predicted"]) == (1, 0)  # P4
    assert (mid["n_predicted"], mid["tp_predicted"]) == (1, 1)  # P2
    assert (large["n_predicted"], large["tp_predicted"]) == (2, 1)  # P1, P3 (10,000 m2 is "large")


def test_evaluation_exact_counts_reports_and_map(tmp_path):
    pred, cube = _case(tmp_path)
    rep = evaluate_map(pred, cube, tmp_path / "eval")
    px = rep["pixel"]
    assert {k: px[k] for k in EXPECTED_PIXELS} == EXPECTED_PIXELS
    assert px["precision"] == pytest.approx(339 / 453)
    assert px["recall"] == pytest.approx(339 / 436)
    assert rep["threshold"] == 0.5 and rep["threshold_level"] == 128
    assert rep["evaluated_km2"] == pytest.approx(1.1)
    # the best any threshold could do on these pixels, with their labels: never below the map's own
    assert px["mcc_best_threshold"] >= px["mcc"] and 0 <= px["best_threshold"] <= 1
    _check_objects(rep["object"])

    out = tmp_path / "eval"
    assert json.loads((out / "report.json").read_text())["pixel"]["tp"] == 339
    md = (out / "report.md").read_text()
    assert "| MCC |" in md and "1,000-10,000 m²" in md and "![map](map.png)" in md
    assert "the best threshold would be" in md
    assert sorted(p.name for p in out.iterdir()) == ["map.png", "report.json", "report.md"]

    png = mpimg.imread(out / "map.png")[..., :3]
    body = png[: int(png.shape[0] * 0.85)]  # above the legend: the map itself

    def n_close(rgb):
        return int((np.abs(body - np.asarray(rgb)).max(axis=-1) < 0.02).sum())

    for key in ("tp", "fp", "fn", "outside"):
        assert n_close(COLOURS[key]) > 100, key


def test_evaluation_with_inventory_file_and_given_polygons(tmp_path):
    pred, cube = _case(tmp_path, chunk=32)
    boxes = [pixel_box(*b) for b in (L1, L2, L3, L_CLOUD)]
    boxes += [
        pixel_box(10, 20, 105, 115),  # in the unmapped strip: not counted
        shapely.box(X0 - 5000, Y0 - 500, X0 - 4000, Y0),
    ]  # outside the cube
    inv = gpd.GeoDataFrame(geometry=boxes, crs="EPSG:32618").to_crs("EPSG:4326")
    inv.to_file(tmp_path / "inventory.geojson", driver="GeoJSON")
    from landslide_dask.predict.polygons import polygonize

    polygonize(pred, tmp_path / "polys")
    rep = evaluate_map(
        pred, cube, tmp_path / "eval", inventory=tmp_path / "inventory.geojson", polygons=tmp_path / "polys.parquet"
    )
    assert {k: rep["pixel"][k] for k in EXPECTED_PIXELS} == EXPECTED_PIXELS
    _check_objects(rep["object"])
    assert "inventory" in rep["object"]["reference_source"]


def test_threshold_and_min_area_change_the_objects(tmp_path):
    pred, cube = _case(tmp_path)
    rep = evaluate_map(pred, cube, tmp_path / "a", min_area_m2=500)  # drops P4 (400 m2)
    assert (rep["object"]["n_predicted"], rep["object"]["fp_predicted"]) == (3, 1)
    rep = evaluate_map(pred, cube, tmp_path / "b", threshold=0.9)  # 220 < 230: nothing predicted
    assert rep["pixel"]["tp"] == rep["pixel"]["fp"] == 0
    assert rep["object"]["n_predicted"] == 0 and rep["object"]["recall"] == 0.0


def test_big_region_map_is_drawn_coarsened(tmp_path):
    pred, cube = _case(tmp_path)
    rep = evaluate_map(pred, cube, tmp_path / "eval", max_px=40)
    assert rep["map_step"] == 3
    assert {k: rep["pixel"][k] for k in EXPECTED_PIXELS} == EXPECTED_PIXELS  # metrics at full resolution
    png = mpimg.imread(tmp_path / "eval" / "map.png")[..., :3]
    body = png[: int(png.shape[0] * 0.85)]
    for key in ("tp", "fp"):
        assert (np.abs(body - np.asarray(COLOURS[key])).max(axis=-1) < 0.02).sum() > 100, key


def test_mismatched_grid_or_unlabelled_cube_is_refused(tmp_path):
    pred, _ = _case(tmp_path)
    other = write_cube(tmp_path / "small.zarr", np.zeros((60, 60), np.uint8), np.ones((60, 60), bool))
    with pytest.raises(InputDataError, match="same grid"):
        evaluate_map(pred, other, tmp_path / "x")
    ds = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False).drop_vars("label")
    with pytest.raises(InputDataError, match="--inventory"):
        evaluate_map(pred, ds, tmp_path / "x")


def test_matching_rule_is_many_to_many():
    refs = np.array(
        [
            shapely.box(0, 0, 10, 10),
            shapely.box(20, 0, 30, 10),
            shapely.box(40, 0, 50, 10),
            shapely.box(100, 0, 200, 100),
        ],
        dtype=object,
    )
    preds = np.array(
        [
            shapely.box(-5, -5, 55, 15),  # covers the three small refs: a merge
            shapely.box(100, 0, 140, 100),  # two halves of the big ref: a split
            shapely.box(160, 0, 200, 100),
            shapely.box(300, 0, 310, 10),  # nothing there
            shapely.box(195, 95, 215, 115),
        ],  # grazes a corner: IoU 0.02, cover 0.06 -> no match
        dtype=object,
    )
    om = object_metrics(preds, refs)
    assert (om["tp_predicted"], om["detected_reference"]) == (3, 4)
    assert om["merged_predictions"] == 1 and om["split_references"] == 1
    assert om["precision"] == pytest.approx(3 / 5) and om["recall"] == 1.0
    # objects not counted (outside the evaluated area) still match those that are
    counted = object_metrics(
        preds, refs, pred_counted=[True, False, False, True, False], ref_counted=[False, False, True, False]
    )
    assert (counted["n_predicted"], counted["tp_predicted"]) == (2, 1)
    assert (counted["n_reference"], counted["detected_reference"]) == (1, 1)
    # nothing predicted, nothing there: perfect; nothing predicted but slides exist: recall 0
    empty = np.array([], dtype=object)
    assert object_metrics(empty, empty)["precision"] == 1.0
    assert object_metrics(empty, refs)["recall"] == 0.0


def test_class_image_colours_each_cell_by_its_majority():
    z = np.zeros((2, 2), np.int32)
    counts = {"tp": np.array([[3, 0], [0, 1]]), "fp": np.array([[1, 2], [0, 1]]), "fn": z.copy(), "outside": z.copy()}
    img = class_image(counts, np.array([[False, False], [True, False]]), np.zeros((2, 2, 3)), np.ones((2, 2), bool))
    assert tuple(img[0, 0]) == COLOURS["tp"] and tuple(img[0, 1]) == COLOURS["fp"]
    assert tuple(img[1, 1]) == COLOURS["tp"]  # a tie goes to the first class
    assert img[1, 0].max() > 0 and tuple(img[1, 0]) not in COLOURS.values()  # greyed, no class


def test_sparse_samples_are_scored_per_blob():
    """Labels that are samples: a landslide blob is found when half its pixels are mapped, a
    non-landslide blob rejected when fewer than half are."""
    from landslide_dask.predict.report import blob_metrics

    label = np.full((40, 40), 255, np.uint8)
    label[2:6, 2:6] = 1  # found (all mapped)
    label[10:14, 10:14] = 1  # missed (4 of 16 mapped)
    label[20:23, 20:23] = 0  # wrongly mapped (6 of 9)
    label[30:33, 30:33] = 0  # rejected
    label[30:33, 2:5] = 0  # rejected
    hit = np.zeros((40, 40), bool)
    hit[0:8, 0:8] = True
    hit[10, 10:14] = True
    hit[20:22, 20:23] = True
    b = blob_metrics(hit, label, np.ones((40, 40), bool))
    assert (b["landslide_blobs"], b["found"], b["non_landslide_blobs"], b["rejected"]) == (2, 1, 3, 2)
    assert b["recall"] == 0.5 and b["specificity"] == pytest.approx(2 / 3) and b["precision"] == 0.5
    # outside the evaluated area a blob does not count
    ev = np.ones((40, 40), bool)
    ev[:, 25:] = False
    assert blob_metrics(hit, label, ev)["non_landslide_blobs"] == 2
