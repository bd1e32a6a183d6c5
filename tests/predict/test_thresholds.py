"""The label-free threshold rule: a map of a region the model never trained on takes the scene's own
threshold (Otsu on its log-odds) by default; a map of a training region keeps the validation one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import landslide_dask.predict as P
from landslide_dask.errors import UsageError
from landslide_dask.predict.thresholds import otsu_level, region_record, scene_threshold
from landslide_dask.train.scoring import evaluate

from ..helpers.cubes import make_arrays, write_test_cube
from ..helpers.models import OV, WIN, make_checkpoint

FAR_AWAY = {"name": "elsewhere", "event_date": "2018-09-06", "bounds": [141.8, 42.6, 142.1, 42.8]}


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    a = make_arrays()
    a["label"][50:90, 60:120] = 1
    return write_test_cube(tmp_path_factory.mktemp("cube") / "cube.zarr", a, chunk=64)


def _ckpt(folder: Path, regions: list[dict] | None) -> Path:
    path = make_checkpoint(folder / "m.pt")
    ck = torch.load(path, weights_only=True)
    if regions is not None:
        ck["regions"] = regions
    torch.save(ck, path)
    return path


def test_otsu_level_splits_two_modes_in_log_odds():
    hist = np.zeros(256)
    hist[2:6] = 10_000  # most pixels: probability ~0.01-0.02
    hist[25:45] = 400  # an under-confident model's landslides: ~0.1-0.18
    k = otsu_level(hist)
    assert 6 <= k <= 25  # between the modes
    with pytest.raises(ValueError):
        otsu_level(np.zeros(256))


def test_a_region_the_model_never_saw_takes_the_scene_threshold(tmp_path, cube):
    (tmp_path / "a").mkdir()
    unseen = _ckpt(tmp_path / "a", [FAR_AWAY])
    out = P.predict(cube, unseen, tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False)
    a = P.open_prediction(out).attrs
    prob = P.open_prediction(out)["probability"].values
    valid = P.open_prediction(out)["valid"].values
    expected = otsu_level(np.bincount(prob[valid], minlength=256)) / 255.0
    assert a["threshold"] == pytest.approx(expected) and a["threshold_rule"].startswith("scene")
    assert a["validation_threshold"] == pytest.approx(0.4) and a["threshold"] != pytest.approx(0.4)
    assert scene_threshold(out) == pytest.approx(expected)
    # the same model on a region it trained on keeps its validation threshold
    (tmp_path / "b").mkdir()
    seen = _ckpt(tmp_path / "b", [region_record(cube)])
    out = P.predict(cube, seen, tmp_path / "q.zarr", window=WIN, overlap=OV, progress=False)
    a = P.open_prediction(out).attrs
    assert a["threshold"] == pytest.approx(0.4) and a["threshold_rule"].startswith("validation")
    # asked for explicitly, either rule; an unknown one is refused before any work
    out = P.predict(
        cube, unseen, tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False, threshold_rule="validation"
    )
    assert P.open_prediction(out).attrs["threshold"] == pytest.approx(0.4)
    with pytest.raises(UsageError, match="threshold rule"):
        P.predict(cube, unseen, tmp_path / "r.zarr", threshold_rule="otsu", progress=False)
    assert not (tmp_path / "r.zarr").exists()


def test_evaluate_scores_an_unseen_region_at_its_scene_threshold(tmp_path, cube):
    unseen = _ckpt(tmp_path, [FAR_AWAY])
    auto = evaluate(unseen, cube, tile=128)
    assert auto.threshold_rule == "scene" and 0 < auto.threshold < 1
    val = evaluate(unseen, cube, tile=128, threshold_rule="validation")
    assert val.threshold == pytest.approx(round(0.4 * 255) / 255) and val.threshold_rule == "validation"
    assert auto.positives == val.positives == 40 * 60  # the same pixels, another threshold
    # an old checkpoint that records no training regions keeps its validation threshold
    (tmp_path / "old").mkdir()
    old = _ckpt(tmp_path / "old", None)
    assert evaluate(old, cube, tile=128).threshold_rule == "validation"


def test_pseudo_labels_come_from_the_map_alone_and_leave_the_region_unseen(tmp_path, cube):
    """Self-training's pseudo-labels: landslide at or above the map's threshold, other below a share
    of it, unknown between; the cube's own labels are never read, and a model that trained on the
    pseudo-labelled copy still treats the region as unseen (scene rule)."""
    from landslide_dask.cube.read import open_cube
    from landslide_dask.predict.thresholds import is_seen
    from landslide_dask.train.selftrain import pseudo_label_cube

    (tmp_path / "a").mkdir()
    out = P.predict(
        cube, _ckpt(tmp_path / "a", [FAR_AWAY]), tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False
    )
    pred = P.open_prediction(out)
    t, prob, valid = pred.attrs["threshold"], pred["probability"].values, pred["valid"].values
    pseudo = pseudo_label_cube(out, cube, tmp_path / "pseudo.zarr", low=0.5)
    lab = open_cube(pseudo)["label"].values
    np.testing.assert_array_equal(lab == 1, valid & (prob >= round(t * 255)))
    np.testing.assert_array_equal(lab == 0, valid & (prob < round(t * 0.5 * 255)))
    assert (lab == 255).any() and (lab == 1).any() and (lab == 0).any()
    rec = region_record(pseudo)
    assert rec["pseudo"] and not is_seen(cube, [rec]) and is_seen(cube, [region_record(cube)])


def test_evaluate_command_says_which_threshold_and_warns_on_a_training_region(tmp_path, cube, capsys):
    from landslide_dask.cli import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    main(["evaluate", "--model", str(_ckpt(tmp_path / "a", [FAR_AWAY])), "--cube", str(cube)])
    out = capsys.readouterr().out
    assert "the scene rule" in out and "include its training blocks" not in out
    main(["evaluate", "--model", str(_ckpt(tmp_path / "b", [region_record(cube)])), "--cube", str(cube)])
    out = capsys.readouterr().out
    assert "validation threshold" in out and "include its training blocks" in out
