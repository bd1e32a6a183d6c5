"""The one window reader: the same window gives bit-identical model inputs in training,
evaluation and inference; bands are picked by name; pixels without a pre-event image are either
mapped from the other streams (a model trained with pre-event dropout) or reported unmapped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import landslide_dask.predict as P
from landslide_dask.errors import InputDataError
from landslide_dask.predict import engine
from landslide_dask.train.batches import training_reader, window_batches
from landslide_dask.train.checkpoint import checkpoint_reader, load_checkpoint
from landslide_dask.train.chips import BandStats, drop_pre
from landslide_dask.train.config import TrainConfig
from landslide_dask.train.reader import WindowReader

from ..helpers.cubes import make_arrays, write_test_cube
from ..helpers.models import OV, WIN, make_checkpoint

CUBE_BANDS = ["nir", "red", "green", "blue"]  # not the model's order on purpose
MODEL_BANDS = ["blue", "green", "red"]
STREAMS = ("pre", "post", "terrain")


def _gappy_arrays() -> dict[str, np.ndarray]:
    a = make_arrays((200, 232), seed=4)
    a["valid"][:, :20] = False  # outside the AOI
    a["slope"][50:53, 60:64] = np.nan  # float inputs may hold NaN ...
    a["slope"][70, 80] = np.inf  # ... and inf
    pre_valid = a["valid"].copy()
    pre_valid[:90, 120:] = False  # a pre-event mosaic gap
    a["pre"][:, ~pre_valid] = 0
    a["pre_valid"] = pre_valid
    return a


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    a = _gappy_arrays()
    return write_test_cube(tmp_path_factory.mktemp("gap") / "cube.zarr", a, chunk=64, bands=CUBE_BANDS), a


def _ckpt(path, pre_dropout: float):
    """A tiny RGB model; ``train_config`` says whether it was trained with pre-event dropout."""
    make_checkpoint(path, bands=MODEL_BANDS)
    ck = torch.load(path, weights_only=True)
    ck["train_config"] = {"pre_dropout": pre_dropout}
    torch.save(ck, path)
    return path


def _expected(a: dict, ck: dict, row: int, col: int, s: int, require_pre: bool) -> dict[str, np.ndarray]:
    """The reader's contract written out with numpy."""
    sl = (slice(row, row + s), slice(col, col + s))
    valid = a["valid"][sl] & (a["pre_valid"][sl] if require_pre else True)
    idx = [CUBE_BANDS.index(b) for b in ck["bands"]]
    out = {}
    for name in STREAMS:
        if name == "terrain":
            x = np.stack([a["hillshade"][sl], a["slope"][sl]]).astype(np.float32)
        else:
            x = a[name][idx][(slice(None),) + sl].astype(np.float32)
        x = (x - np.asarray(ck["stats"]["mean"][name], np.float32)[:, None, None]) / np.asarray(
            ck["stats"]["std"][name], np.float32
        )[:, None, None]
        x[~np.isfinite(x)] = 0
        keep = valid & a["pre_valid"][sl] if name == "pre" else valid
        x[:, ~keep] = 0
        out[name] = x
    return out


@pytest.mark.parametrize("pre_dropout", [0.0, 0.3])
def test_the_same_window_gives_identical_tensors_in_training_evaluation_and_inference(gappy, tmp_path, pre_dropout):
    cube, a = gappy
    ck = load_checkpoint(_ckpt(tmp_path / "m.pt", pre_dropout))
    cfg = TrainConfig(cubes=[str(cube)], out=str(tmp_path), bands=tuple(MODEL_BANDS), pre_dropout=pre_dropout)
    s = 64
    # windows over the gap's edge, the NaN/inf slope pixels and the invalid strip
    windows = pd.DataFrame({"cube": 0, "row": [0, 40, 60, 128], "col": [100, 50, 0, 160]})
    train_batches = list(
        window_batches(training_reader(cfg, ck["stats"], MODEL_BANDS), windows, s, 4, None, STREAMS, drop_last=False)
    )
    eval_batches = list(window_batches(checkpoint_reader(ck, [cube]), windows, s, 4, None, STREAMS, drop_last=False))
    plan = P.prepare(cube, tmp_path / "m.pt", window=WIN, overlap=OV, batch_size=1, device="cpu", threads=1).plan
    for k, (_, w) in enumerate(windows.iterrows()):
        x, ok = engine.window_inputs(plan, int(w["row"]), int(w["col"]), s, s)
        assert ok
        want = _expected(a, ck, int(w["row"]), int(w["col"]), s, require_pre=pre_dropout == 0)
        for name in STREAMS:
            assert torch.equal(train_batches[0][name][k], eval_batches[0][name][k]), name
            assert torch.equal(train_batches[0][name][k], torch.from_numpy(x[name])), name
            np.testing.assert_allclose(x[name], want[name], rtol=1e-6, atol=1e-6)
        assert torch.equal(train_batches[0]["label"][k], eval_batches[0]["label"][k])
    assert np.isfinite(x["terrain"]).all()


def test_a_cube_that_lacks_a_model_band_is_named(tmp_path):
    a = make_arrays((96, 96))
    cube = write_test_cube(
        tmp_path / "rgn.zarr", {**a, "pre": a["pre"][:3], "post": a["post"][:3]}, bands=["red", "green", "nir"]
    )
    make_checkpoint(tmp_path / "m.pt", bands=MODEL_BANDS)
    with pytest.raises(InputDataError, match=r"missing \['blue'\]"):
        P.predict(cube, tmp_path / "m.pt", tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False)
    with pytest.raises(InputDataError, match=r"missing \['blue'\]"):
        WindowReader([cube], bands=MODEL_BANDS)
    assert not (tmp_path / "p.zarr").exists()


def _map_gap(gappy, tmp_path, pre_dropout: float):
    """The gappy cube mapped by a model trained with or without pre-event dropout; the gap's mask."""
    cube, a = gappy
    out = P.predict(
        cube, _ckpt(tmp_path / "m.pt", pre_dropout), tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False
    )
    return P.open_prediction(out), a, a["valid"] & ~a["pre_valid"]


def test_a_model_trained_without_pre_dropout_leaves_the_gap_unmapped_and_says_so(gappy, tmp_path):
    pred, a, gap = _map_gap(gappy, tmp_path, 0.0)
    np.testing.assert_array_equal(pred["no_pre"].values, gap)
    np.testing.assert_array_equal(pred["valid"].values, a["pre_valid"])
    assert (pred["probability"].values[gap] == 0).all()
    assert "not mapped" in pred["no_pre"].attrs["long_name"]
    cov = P.coverage(pred)
    assert cov == {
        "mapped": int(a["pre_valid"].sum()),
        "no_pre": int(gap.sum()),
        "no_pre_mapped": 0,
        "no_pre_unmapped": int(gap.sum()),
    }


def test_a_model_trained_with_pre_dropout_maps_the_gap_and_records_it(gappy, tmp_path):
    pred, a, gap = _map_gap(gappy, tmp_path, 0.3)
    np.testing.assert_array_equal(pred["valid"].values, a["valid"])
    np.testing.assert_array_equal(pred["no_pre"].values, gap)
    prob = pred["probability"].values
    assert len(np.unique(prob[gap])) > 10  # a map there, not a constant
    assert P.coverage(pred)["no_pre_mapped"] == int(gap.sum())


def test_a_cube_with_no_pre_event_pixel_is_refused_for_a_model_that_needs_them(tmp_path):
    a = make_arrays((96, 96))
    a["pre"][:] = 0
    a["pre_valid"] = np.zeros((96, 96), bool)
    cube = write_test_cube(tmp_path / "c.zarr", a)
    make_checkpoint(tmp_path / "m.pt")
    with pytest.raises(InputDataError, match="pre-event dropout"):
        P.predict(cube, tmp_path / "m.pt", tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False)


def test_pre_dropout_hides_the_pre_stream_whole_or_beyond_an_edge():
    rng = np.random.default_rng(0)
    x = np.ones((3, 32, 32), np.float32)
    sample = {"pre": x, "post": x.copy(), "valid": np.ones((32, 32), bool), "pre_valid": np.ones((32, 32), bool)}
    kinds = {"kept": 0, "whole": 0, "part": 0}
    for _ in range(400):
        out = drop_pre(sample, rng, 0.2)
        gone = ~out["pre_valid"]
        assert (out["pre"][:, gone] == 0).all() and (out["pre"][:, ~gone] == 1).all()
        assert (out["post"] == 1).all()
        kinds["kept" if not gone.any() else "whole" if gone.all() else "part"] += 1
    assert 40 < kinds["whole"] < 120 and 40 < kinds["part"] < 120 and kinds["kept"] > 200
    assert drop_pre(sample, rng, 0.0) is sample


def test_statistics_of_the_pre_stream_skip_its_gap(gappy):
    from landslide_dask.train.chips import build_index, compute_stats

    cube, a = gappy
    index = build_index([cube], window=64, stride=32, block=64, min_usable=0.1).assign(split="train")
    stats = compute_stats(index, STREAMS, bands=tuple(MODEL_BANDS))
    assert isinstance(stats, BandStats)
    covered = np.zeros(a["valid"].shape, bool)
    for r, c in zip(index["row"], index["col"]):
        covered[r : r + 64, c : c + 64] = True
    m = covered & a["pre_valid"]
    idx = [CUBE_BANDS.index(b) for b in MODEL_BANDS]
    np.testing.assert_allclose(stats.mean["pre"], a["pre"][idx][:, m].mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.mean["post"], a["post"][idx][:, covered & a["valid"]].mean(axis=1), rtol=1e-9)


def test_reflectance_units_put_scenes_with_and_without_the_dn_offset_on_one_scale(tmp_path):
    import zarr

    from landslide_dask.train.chips import build_index, compute_stats
    from landslide_dask.train.reader import DN, REFLECTANCE, radiometry

    a = make_arrays((96, 96), seed=2)
    old = write_test_cube(tmp_path / "old.zarr", a)  # reflectance x 10,000
    shifted = {**a, "pre": a["pre"] + 1000, "post": a["post"] + 1000}  # the 2022+ +1000 offset
    new = write_test_cube(tmp_path / "new.zarr", shifted)
    zarr.open_group(str(old), mode="r+").attrs["dn_scale_offset"] = [1e-4, 0.0]
    zarr.open_group(str(new), mode="r+").attrs["dn_scale_offset"] = [1e-4, -0.1]
    assert radiometry(old) == (1.0, 0.0) and radiometry(new) == (1.0, -1000.0)
    index = build_index([old], window=64, stride=32, block=64, min_usable=0.5).assign(split="train")
    stats = compute_stats(index, STREAMS, units=REFLECTANCE)
    assert stats.units == REFLECTANCE
    reader = WindowReader([old, new], STREAMS, stats)
    x_old, x_new = reader.inputs(0, 0, 0, 64, 64)[0], reader.inputs(1, 0, 0, 64, 64)[0]
    for name in STREAMS:
        np.testing.assert_allclose(x_old[name], x_new[name], atol=1e-5)
    # the same statistics in DN leave the offset in: 1000 DN apart
    dn = WindowReader([old, new], STREAMS, {**stats.to_dict(), "units": DN})
    d = dn.inputs(1, 0, 0, 64, 64)[0]["post"] - dn.inputs(0, 0, 0, 64, 64)[0]["post"]
    np.testing.assert_allclose(
        d, np.broadcast_to(1000 / np.asarray(stats.std["post"], np.float32)[:, None, None], d.shape), rtol=1e-4
    )
    # and statistics computed on the shifted cube in reflectance equal those of the other
    s_new = compute_stats(
        build_index([new], window=64, stride=32, block=64, min_usable=0.5).assign(split="train"),
        STREAMS,
        units=REFLECTANCE,
    )
    np.testing.assert_allclose(s_new.mean["post"], stats.mean["post"], rtol=1e-9)


def test_haze_adds_more_to_blue_than_to_red_per_acquisition_on_valid_pixels_only():
    from landslide_dask.train.chips import haze

    rng = np.random.default_rng(1)
    valid = np.ones((8, 8), bool)
    valid[:2] = False
    std = {"pre": np.full((3, 1, 1), 300.0), "post": np.full((3, 1, 1), 300.0)}
    sample = {"pre": np.zeros((3, 8, 8), np.float32), "post": np.zeros((3, 8, 8), np.float32), "valid": valid}
    seen_pre_only = False
    for _ in range(50):
        out = haze(sample, rng, 0.5, ("blue", "green", "red"), std)
        for s in ("pre", "post"):
            v = out[s][:, 4, 4]
            assert v[0] >= v[1] >= v[2] >= 0 and v[0] <= 800 / 300 + 1e-6
            assert (out[s][:, ~valid] == 0).all()
            assert (out[s][:, valid] == out[s][:, 4, 4][:, None]).all()  # one offset per band and acquisition
        seen_pre_only |= bool(out["pre"][0, 4, 4] > 0 and out["post"][0, 4, 4] == 0)
    assert seen_pre_only  # acquisitions get their own atmosphere
    assert haze(sample, rng, 0.0, ("blue", "green", "red"), std) is sample


def test_scene_normalisation_makes_a_hazy_brighter_scene_look_like_the_clear_one(tmp_path):
    """Each acquisition standardised by its own median and spread: a scene with a per-band gain and
    haze offset (top-of-atmosphere against surface reflectance) gives the same model inputs as the
    clear one, where the training set's statistics leave them apart; terrain keeps those."""
    from landslide_dask.train.chips import build_index, compute_stats
    from landslide_dask.train.reader import REFLECTANCE, SCENE, scene_statistics

    a = make_arrays((128, 128), seed=5)
    clear = write_test_cube(tmp_path / "clear.zarr", a)
    gain = np.array([1.3, 1.15, 1.05, 1.0])[:, None, None]
    offset = np.array([900, 500, 250, 100])[:, None, None]  # haze: most in blue (the first band)
    hazy = {**a, **{s: np.clip(np.round(a[s] * gain + offset), 1, 65535).astype(a[s].dtype) for s in ("pre", "post")}}
    hazy_cube = write_test_cube(tmp_path / "hazy.zarr", hazy)
    index = build_index([clear], window=64, stride=32, block=64, min_usable=0.5).assign(split="train")
    stats = compute_stats(index, STREAMS, units=REFLECTANCE, normalise=SCENE)
    assert stats.normalise == SCENE and BandStats.from_dict(stats.to_dict()).normalise == SCENE
    scene = WindowReader([clear, hazy_cube], STREAMS, stats)
    glob = WindowReader([clear, hazy_cube], STREAMS, {**stats.to_dict(), "normalise": "global"})
    x0, x1 = scene.inputs(0, 0, 0, 128, 128)[0], scene.inputs(1, 0, 0, 128, 128)[0]
    g0, g1 = glob.inputs(0, 0, 0, 128, 128)[0], glob.inputs(1, 0, 0, 128, 128)[0]
    for s in ("pre", "post"):
        assert np.abs(x1[s] - x0[s]).mean() < 0.02  # alike, up to rounding to whole DN
        assert np.abs(g1[s] - g0[s]).mean() > 0.3  # apart with the training set's statistics
        assert abs(float(np.median(x0[s]))) < 0.05  # centred on the scene's median
    np.testing.assert_array_equal(x0["terrain"], g0["terrain"])
    med, spread = scene_statistics(clear, "post", (0, 1, 2, 3))
    np.testing.assert_allclose(med, np.median(a["post"].reshape(4, -1), axis=1), rtol=1e-6)
    assert (spread > 1).all()
