"""Training windows: index, split without overlap, statistics, chunk-cached reading, epoch order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from landslide_dask.cube.build import write_cube
from landslide_dask.errors import InputDataError
from landslide_dask.train.chips import (
    MIN_SPLIT_POSITIVES,
    augment,
    build_index,
    check_splits,
    compute_stats,
    epoch_windows,
    sampling_weights,
    shift_windows,
)
from landslide_dask.train.reader import ChunkCache, WindowReader


def _cube(path, h=700, w=900, seed=0, chunk=256):
    rng = np.random.default_rng(seed)
    valid = np.ones((h, w), bool)
    valid[:40, :] = False
    valid[300:320, 100:700] = False
    label = (rng.random((h, w)) < 0.02).astype(np.uint8)
    label[h // 2 :, :] = 0  # the lower half has no landslides
    label[200:260, 300:380] = 1
    label[:, 800:] = 255
    ds = xr.Dataset(
        {
            "pre": (("band", "y", "x"), rng.integers(1, 4000, (4, h, w), dtype=np.uint16)),
            "post": (("band", "y", "x"), rng.integers(1, 4000, (4, h, w), dtype=np.uint16)),
            "slope": (("y", "x"), rng.uniform(0, 60, (h, w)).astype(np.float32)),
            "hillshade": (("y", "x"), rng.integers(1, 255, (h, w), dtype=np.uint8)),
            "valid": (("y", "x"), valid),
            "label": (("y", "x"), label),
        },
        coords={"band": np.array(["blue", "green", "red", "nir"], dtype=object)},
    ).chunk({"band": -1, "y": chunk, "x": chunk})
    write_cube(ds, path, progress=False)
    return ds.compute()


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    d = tmp_path_factory.mktemp("chips")
    return [(str(d / f"c{i}.zarr"), _cube(d / f"c{i}.zarr", seed=i)) for i in range(2)]


@pytest.fixture(scope="module")
def index(cubes):
    return build_index([p for p, _ in cubes], window=128, stride=64, block=256, min_usable=0.5)


def test_windows_meet_the_usable_threshold(index, cubes):
    assert len(index) > 20 and set(index["split"]) <= {"train", "val", "test", "gap"}
    for _, w in index.sample(15, random_state=0).iterrows():
        ds = cubes[w["cube"]][1]
        v = ds["valid"].values[w["row"] : w["row"] + 128, w["col"] : w["col"] + 128]
        lab = ds["label"].values[w["row"] : w["row"] + 128, w["col"] : w["col"] + 128]
        usable = (v & (lab != 255)).mean()
        assert usable >= 0.5 and usable == pytest.approx(w["usable"])
        assert ((lab == 1) & v).mean() == pytest.approx(w["slide"])


def test_windows_of_different_splits_never_overlap(index):
    assert {"train", "val", "test"} <= set(index["split"])
    for _, per_cube in index[index["split"] != "gap"].groupby("cube"):
        r, c, s = per_cube["row"].to_numpy(), per_cube["col"].to_numpy(), per_cube["split"].to_numpy()
        overlap = (np.abs(r[:, None] - r[None]) < 128) & (np.abs(c[:, None] - c[None]) < 128)
        assert not (overlap & (s[:, None] != s[None])).any()


def test_normalisation_statistics_equal_numpy(index, cubes):
    stats = compute_stats(index)
    train = index[index["split"] == "train"]
    vals = {"pre": [], "post": [], "terrain": []}
    for ci, windows in train.groupby("cube"):
        ds = cubes[ci][1]
        mask = np.zeros(ds["valid"].shape, bool)
        for r, c in zip(windows["row"], windows["col"]):
            mask[r : r + 128, c : c + 128] = True
        mask &= ds["valid"].values
        vals["pre"].append(ds["pre"].values[:, mask])
        vals["post"].append(ds["post"].values[:, mask])
        vals["terrain"].append(np.stack([ds["hillshade"].values[mask], ds["slope"].values[mask]]))
    for s, parts in vals.items():
        x = np.concatenate(parts, axis=1).astype(np.float64)
        np.testing.assert_allclose(stats.mean[s], x.mean(axis=1), rtol=1e-9)
        np.testing.assert_allclose(stats.std[s], x.std(axis=1), rtol=1e-6)


def test_reader_matches_direct_slicing_and_decodes_each_chunk_once(index, cubes):
    stats = compute_stats(index)
    reader = WindowReader([p for p, _ in cubes], stats=stats, cache=ChunkCache(512))
    order = epoch_windows(index, "train", epoch=0, chunk=256)
    for _, w in order.head(25).iterrows():
        got = reader.sample(w["cube"], w["row"], w["col"], 128)
        ds = cubes[w["cube"]][1]
        sl = (slice(w["row"], w["row"] + 128), slice(w["col"], w["col"] + 128))
        valid = ds["valid"].values[sl]
        assert (got["valid"] == valid).all()
        expected = (ds["post"].values[(slice(None),) + sl] - np.array(stats.mean["post"])[:, None, None]) / np.array(
            stats.std["post"]
        )[:, None, None]
        np.testing.assert_allclose(got["post"][:, valid], expected[:, valid], rtol=1e-5, atol=1e-5)
        assert (got["post"][:, ~valid] == 0).all()
        assert (got["label"][~valid] == 255).all()
        assert got["terrain"].shape == (2, 128, 128)
    # 25 windows read through the cache decode far fewer chunks than 25 x 1..4 per variable.
    assert reader.decoded < 25 * 6


def test_epoch_shards_are_equal_disjoint_and_reshuffled(index):
    world = 2
    e0 = [epoch_windows(index, "train", 0, rank=r, world=world) for r in range(world)]
    assert len(e0[0]) == len(e0[1]) > 0
    key = lambda df: set(zip(df["cube"], df["row"], df["col"]))  # noqa: E731
    assert not key(e0[0]) & key(e0[1])
    again = epoch_windows(index, "train", 0, rank=0, world=world)
    pd.testing.assert_frame_equal(again, e0[0])
    e1 = epoch_windows(index, "train", 1, rank=0, world=world)
    assert list(zip(e1["row"], e1["col"])) != list(zip(e0[0]["row"], e0[0]["col"]))


def test_positive_oversampling_draws_landslide_windows_more_often(index):
    w = sampling_weights(index, positive_boost=4.0)
    pos = index["slide"].to_numpy() > 0
    assert pos.any() and (~pos).any()
    assert w[pos][0] == pytest.approx(4 * w[~pos][0])
    drawn = epoch_windows(index, "train", 0, n=2000, positive_boost=4.0)
    train = index[index["split"] == "train"]
    assert (drawn["slide"] > 0).mean() > (train["slide"] > 0).mean()


def test_augment_moves_every_layer_together():
    rng = np.random.default_rng(0)
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    sample = {"post": x.copy(), "terrain": x.copy(), "label": x[0].astype(np.uint8), "valid": np.ones((4, 4), bool)}
    for _ in range(8):
        out = augment(sample, rng, jitter=0.0)
        np.testing.assert_array_equal(out["post"], out["terrain"])
        np.testing.assert_array_equal(out["post"][0].astype(np.uint8), out["label"])


def test_a_region_keeps_its_split_blocks_whichever_regions_it_is_indexed_with(cubes):
    paths = [p for p, _ in cubes]
    key = ["path", "row", "col"]
    both = build_index(paths, window=128, stride=64, block=256).sort_values(key).reset_index(drop=True)
    swapped = build_index(paths[::-1], window=128, stride=64, block=256).sort_values(key).reset_index(drop=True)
    alone = build_index(paths[1:], window=128, stride=64, block=256)
    pd.testing.assert_series_equal(both["split"], swapped["split"])
    mine = both[both["path"] == str(paths[1])].reset_index(drop=True)
    assert mine["split"].tolist() == alone.sort_values(key)["split"].tolist()
    assert set(mine["split"]) >= {"train", "val", "test"}


def _few_slides_cube(path, blocks_with_slides: list[tuple[int, int]], h=768, w=768, block=128):
    """Landslides in the named split blocks only, none elsewhere."""
    rng = np.random.default_rng(3)
    label = np.zeros((h, w), np.uint8)
    for by, bx in blocks_with_slides:
        label[by * block + 20 : by * block + 60, bx * block + 20 : bx * block + 70] = 1
    ds = xr.Dataset(
        {
            "post": (("band", "y", "x"), rng.integers(1, 4000, (3, h, w), dtype=np.uint16)),
            "slope": (("y", "x"), rng.uniform(0, 60, (h, w)).astype(np.float32)),
            "hillshade": (("y", "x"), rng.integers(1, 255, (h, w), dtype=np.uint8)),
            "valid": (("y", "x"), np.ones((h, w), bool)),
            "label": (("y", "x"), label),
        },
        coords={"band": np.array(["blue", "green", "red"], dtype=object)},
    ).chunk({"band": -1, "y": 256, "x": 256})
    write_cube(ds, path, progress=False)
    return str(path)


def test_every_split_holds_landslides_when_three_blocks_do(tmp_path):
    """Blocks are dealt stratified: 4 of 36 blocks hold landslides, and validation and test each get
    landslide pixels (an unstratified deal of 15 % + 15 % of blocks leaves them empty most seeds)."""
    cube = _few_slides_cube(tmp_path / "few.zarr", [(0, 0), (2, 3), (4, 1), (5, 5)])
    for seed in range(5):
        index = build_index([cube], window=64, stride=64, block=128, seed=seed)
        splits = index.attrs["splits"]
        assert all(splits[s]["landslide_px"] >= MIN_SPLIT_POSITIVES for s in ("train", "val", "test")), splits
        check_splits(index)
        # the counted pixels are those of the split's windows
        for s in ("val", "test"):
            assert splits[s]["landslide_px"] == pytest.approx(index[index["split"] == s]["slide"].sum() * 64 * 64)


def test_a_validation_part_without_landslides_is_refused_never_scored(tmp_path):
    cube = _few_slides_cube(tmp_path / "one.zarr", [(1, 1)])
    index = build_index([cube], window=64, stride=64, block=128)
    assert index.attrs["splits"]["val"]["landslide_px"] == 0
    with pytest.raises(InputDataError, match="val split holds 0 landslide pixels.*--block|val split holds 0"):
        check_splits(index)
    from landslide_dask.train.loop import TrainConfig, prepare

    with pytest.raises(InputDataError, match="it needs at least"):
        prepare(
            TrainConfig(
                cubes=[cube], out=str(tmp_path / "run"), streams=("post", "terrain"), window=64, stride=64, block=128
            )
        )


def test_windows_may_span_blocks_of_one_split_and_the_default_block_fits_small_regions(tmp_path):
    cube = _few_slides_cube(tmp_path / "span.zarr", [(0, 0), (2, 3), (4, 1), (5, 5)])
    index = build_index([cube], window=128, stride=64, block=128)
    spanning = index[(index["row"] % 128 != 0) & (index["split"] != "gap")]
    assert len(spanning) > 0  # windows across two blocks of the same split are kept
    # a 768 px region has 36 blocks of 128 px but only 9 of 256: the default takes the largest
    # multiple of the window with at least MIN_BLOCKS blocks
    assert build_index([cube], window=128, stride=64).attrs["block"] == 128
    assert build_index([cube], window=64, stride=32).attrs["block"] == 192


def test_random_crops_stay_inside_their_split_and_vary(index):
    """Shifted training windows never read a pixel of another split's windows (no leak into val or
    test), and they do move: off the index's grid in both directions."""
    size = int(index.attrs["window"])
    rng = np.random.default_rng(0)
    train = epoch_windows(index, "train", 0, n=2000, positive_boost=3.0)
    moved = shift_windows(train, index, rng)
    assert (moved["row"] % 64 != 0).mean() > 0.3 and (moved["col"] % 64 != 0).mean() > 0.3
    assert (moved["row"] < train["row"]).any() and (moved["row"] > train["row"]).any()
    for ci, mine in moved.groupby("cube"):
        shape = (700, 900)
        own = np.zeros(shape, bool)
        for r, c in index[(index["cube"] == ci) & (index["split"] == "train")][["row", "col"]].to_numpy():
            own[r : r + size, c : c + size] = True
        for r, c in mine[["row", "col"]].to_numpy():
            assert r >= 0 and c >= 0 and own[r : r + size, c : c + size].all()


def test_stream_dropout_hides_whole_streams_at_their_rate():
    from landslide_dask.train.chips import drop_streams

    rng = np.random.default_rng(0)
    sample = {"post": np.ones((3, 8, 8), np.float32), "terrain": np.ones((2, 8, 8), np.float32)}
    hidden = 0
    for _ in range(2000):
        out = drop_streams(sample, rng, {"terrain": 0.25})
        assert out["post"].all() and (out["terrain"].all() or not out["terrain"].any())
        hidden += not out["terrain"].any()
    assert 400 < hidden < 600 and sample["terrain"].all()  # the input itself is never changed
