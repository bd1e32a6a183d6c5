"""Benchmark patches (Landslide4Sense .h5, image/mask folders) -> one cube that training reads unchanged."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import rasterio

from landslide_dask.cube.patches import L4S_MEAN, PRESETS, BandMap, import_patches, parse_band_map, patch_windows, to_dn
from landslide_dask.cube.read import open_cube
from landslide_dask.errors import InputDataError, UsageError
from landslide_dask.train.chips import build_index, compute_stats
from landslide_dask.train.reader import WindowReader

from ..helpers.l4s import S, write_l4s


@pytest.fixture(scope="module")
def l4s(tmp_path_factory):
    root = tmp_path_factory.mktemp("l4s") / "TrainData"
    # numbers 1, 2, 10, 3, 4: natural order must put image_10 last
    data = write_l4s(root, n=5, names=[1, 2, 10, 3, 4])
    cube = import_patches(root, root.parent / "l4s.zarr", progress=False)
    return data, cube


@pytest.fixture(scope="module")
def l4s_gap(tmp_path_factory):
    root = tmp_path_factory.mktemp("l4sgap") / "TrainData"
    data = write_l4s(root, n=7, seed=1)
    cube = import_patches(root, root.parent / "gap.zarr", gap=16, chunk=100, progress=False)
    return data, cube


def test_to_dn_keeps_real_zeros_and_marks_nodata():
    v = np.array([0.0, 0.5, -3.0, 1e9, np.nan, np.inf])
    assert to_dn(v, 1000.0, 0.0).tolist() == [1, 500, 1, 65535, 0, 0]
    assert to_dn(np.array([0.0004, 0.0006]), 1000.0, 10.0).tolist() == [10, 11]


def test_l4s_values_land_in_their_slot(l4s):
    data, cube = l4s
    ds = open_cube(cube)
    a = ds.attrs
    assert a["patch_files"] == [
        "img/image_1.h5",
        "img/image_2.h5",
        "img/image_3.h5",
        "img/image_4.h5",
        "img/image_10.h5",
    ]
    assert (a["patch_count"], a["patch_size"], a["patch_pitch"], a["patch_rows"], a["patch_cols"]) == (5, S, S, 2, 3)
    assert 0 <= a["dn_saturated_fraction"] < 0.01 and a["band_map"]["dem"] == 13
    assert a["crs"] == "EPSG:3857" and a["event_date"] == "unknown" and a["transform"][:3] == [10.0, 0.0, 0.0]
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"] and "pre" not in ds
    assert ds["post"].dtype == np.uint16 and ds["slope"].dtype == np.float32 and ds["hillshade"].dtype == np.uint8
    post, slope, shade = ds["post"].values, ds["slope"].values, ds["hillshade"].values
    label, valid = ds["label"].values, ds["valid"].values
    for slot, name in enumerate(a["patch_files"]):
        img, mask = data[name]
        r, c = slot // 3 * S, slot % 3 * S
        win = (slice(r, r + S), slice(c, c + S))
        red = np.clip(np.rint(img[..., 3].astype(np.float64) * L4S_MEAN[3]), 1, 65535)  # B4 = channel 3
        np.testing.assert_array_equal(post[2][win], red)
        np.testing.assert_array_equal(post[3][win], np.clip(np.rint(img[..., 7] * np.float64(L4S_MEAN[7])), 1, 65535))
        np.testing.assert_allclose(slope[win], img[..., 12] * L4S_MEAN[12], rtol=1e-5)
        np.testing.assert_array_equal(label[win], mask)
        assert valid[win].all() and (shade[win] > 0).all()
    # the sixth slot is empty: invalid, unknown, nodata
    empty = (slice(S, 2 * S), slice(2 * S, 3 * S))
    assert not valid[empty].any() and (label[empty] == 255).all() and (post[:, empty[0], empty[1]] == 0).all()
    assert np.isnan(slope[empty]).all() and (shade[empty] == 0).all()


def test_hillshade_is_computed_per_patch_from_the_dem(l4s):
    import dask.array as da

    from landslide_dask.cube.terrain import hillshade

    data, cube = l4s
    shade = open_cube(cube)["hillshade"].values
    for slot, name in enumerate(open_cube(cube).attrs["patch_files"][:3]):
        dem = data[name][0][..., 13].astype(np.float64) * L4S_MEAN[13]
        alone = hillshade(da.from_array(dem), 10.0, 10.0).compute()
        np.testing.assert_array_equal(shade[:S, slot * S : (slot + 1) * S], alone)  # edges: no neighbour bleeds in
        assert np.unique(alone[1:-1, 1:-1]).size == 1  # a tilted plane: one shade inside


def test_one_window_per_patch_without_gap(l4s):
    data, cube = l4s
    rec = open_cube(cube).attrs["recommended_index"]
    assert rec == {"window": S, "stride": S, "block": S, "min_usable": 0.5}
    index = build_index([cube], rec["window"], rec["stride"], rec["block"], rec["min_usable"])
    assert len(index) == 5 and set(index["split"]) <= {"train", "val", "test"}
    pw = patch_windows(cube)
    assert sorted(zip(index["row"], index["col"])) == sorted(zip(pw["row"], pw["col"]))


def test_gap_is_invalid_and_unknown(l4s_gap):
    data, cube = l4s_gap
    ds = open_cube(cube)
    assert ds.attrs["patch_pitch"] == S + 16 and ds.attrs["patch_cols"] == 3
    assert ds.sizes["y"] == 3 * (S + 16) and ds["post"].data.chunks[1][0] == 2 * (S + 16)
    valid, label = ds["valid"].values, ds["label"].values
    gap_rows, gap_cols = slice(S, S + 16), slice(S, S + 16)
    assert not valid[gap_rows].any() and (label[gap_rows] == 255).all()
    assert not valid[:, gap_cols].any() and (label[:, gap_cols] == 255).all()
    assert int(valid.sum()) == 7 * S * S


def test_gap_index_and_reader_return_exactly_the_patches(l4s_gap):
    data, cube = l4s_gap
    ds = open_cube(cube)
    rec = ds.attrs["recommended_index"]
    assert rec["stride"] == 16 and rec["block"] == S + 16 and 0.5 < rec["min_usable"] < 1
    index = build_index([cube], rec["window"], rec["stride"], rec["block"], rec["min_usable"])
    pw = patch_windows(cube)
    assert len(index) == 7
    assert sorted(zip(index["row"], index["col"])) == sorted(zip(pw["row"], pw["col"]))
    # a plain index (stride 16, the default threshold) would also pick windows straddling the gap
    assert len(build_index([cube], window=S, stride=16, block=S + 16, min_usable=0.5)) > 7
    reader = WindowReader([str(cube)], streams=("post", "terrain"))
    for _, w in pw.iterrows():
        img, mask = data[w["name"]]
        s = reader.sample(0, int(w["row"]), int(w["col"]), S)
        np.testing.assert_array_equal(s["label"], mask)
        assert s["valid"].all() and s["post"].shape == (4, S, S) and s["terrain"].shape == (2, S, S)
        np.testing.assert_array_equal(s["post"][2], np.clip(np.rint(img[..., 3] * np.float64(L4S_MEAN[3])), 1, 65535))
    stats = compute_stats(index.assign(split="train"), ("post", "terrain"))
    assert len(stats.mean["post"]) == 4 and len(stats.mean["terrain"]) == 2


def test_training_sees_post_and_terrain_streams(l4s):
    from landslide_dask.train.loop import stream_channels

    channels, bands = stream_channels(l4s[1], ("post", "terrain"))
    assert channels == {"post": 4, "terrain": 2} and bands == ["blue", "green", "red", "nir"]


def test_test_data_without_masks_is_unknown(tmp_path):
    root = tmp_path / "TestData"
    write_l4s(root, n=3, masks=False)
    with pytest.raises(InputDataError, match="--no-masks"):
        import_patches(root, tmp_path / "t.zarr", progress=False)
    cube = import_patches(root, tmp_path / "t.zarr", require_masks=False, progress=False)
    ds = open_cube(cube)
    assert (ds["label"].values == 255).all() and ds["valid"].values.sum() == 3 * S * S
    assert ds.attrs["patch_unlabelled"] == 3


def test_negative_reflectance_clips_and_warns(tmp_path, caplog):
    root = tmp_path / "neg"
    write_l4s(root, n=2)
    with h5py.File(root / "img" / "image_1.h5", "r+") as f:
        f["img"][..., 1] = -0.5  # blue below zero: clipped to DN 1 with the preset's zero offset
    cube = import_patches(root, tmp_path / "n.zarr", progress=False)
    ds = open_cube(cube)
    assert (ds["post"].values[0, :S, :S] == 1).all() and ds["valid"].values[:S, :S].all()
    assert ds.attrs["dn_saturated_fraction"] == pytest.approx(0.5) and "clipped to 1 or 65535" in caplog.text
    shifted = import_patches(
        root, tmp_path / "s.zarr", bands=PRESETS["l4s"].to_dict() | {"offset": 1000}, progress=False
    )
    assert open_cube(shifted).attrs["dn_saturated_fraction"] < 0.01


def _write_tif(path, arr, dtype):
    with rasterio.open(
        path,
        "w",
        driver="GTiff" if path.suffix == ".tif" else "PNG",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=dtype,
    ) as dst:
        dst.write(arr.astype(dtype))


def test_folder_geotiff_images_with_png_masks_and_ignore_value(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    imgs, masks = {}, {}
    for name in ("a", "b", "c"):
        img = rng.uniform(0, 0.5, (5, S, S)).astype(np.float32)
        img[0, 0, 0] = 0.0  # a real zero stays valid data (DN 1)
        img[1, 5, 7] = np.nan  # nodata: DN 0 and not valid
        img[4] = 100 + rng.uniform(0, 5, (S, S))  # DEM in metres
        mask = np.zeros((1, S, S), np.uint8)
        mask[0, 3:9, 3:9] = 1
        mask[0, 20:, :] = 255
        _write_tif(tmp_path / "images" / f"{name}.tif", img, "float32")
        _write_tif(tmp_path / "masks" / f"{name}.png", mask, "uint8")
        imgs[name], masks[name] = img, mask[0]
    bands = {"post": {"red": 2, "green": 1, "blue": 0, "nir": 3}, "dem": 4, "scale": 10000, "offset": 1000}
    cube = import_patches(
        tmp_path, tmp_path / "f.zarr", fmt="folder", bands=json.dumps(bands), ignore_value=255, progress=False
    )
    ds = open_cube(cube)
    assert list(ds["band"].values) == ["red", "green", "blue", "nir"] and "slope" in ds
    post, label, valid = ds["post"].values, ds["label"].values, ds["valid"].values
    np.testing.assert_array_equal(post[0][:S, :S], np.rint(imgs["a"][2].astype(np.float64) * 10000 + 1000))
    assert post[2][0, 0] == 1000 and valid[0, 0]
    from dask.array import from_array

    from landslide_dask.cube.terrain import slope_degrees

    for _, w in patch_windows(cube).iterrows():  # slope from the DEM, each patch on its own
        dem = imgs[w["name"].removeprefix("images/").removesuffix(".tif")][4].astype(np.float64)
        alone = slope_degrees(from_array(dem), 10.0, 10.0).compute()
        np.testing.assert_allclose(
            ds["slope"].values[w["row"] : w["row"] + S, w["col"] : w["col"] + S], alone, rtol=1e-6
        )
    assert post[1][5, 7] == 0 and post[0][5, 7] > 0 and not valid[5, 7], (post[:, 5, 7], valid[5, 7])
    assert valid.sum() == 3 * S * S - 3, valid.sum()
    np.testing.assert_array_equal(label[:S, S : 2 * S], np.where(masks["b"] == 255, 255, masks["b"]))
    assert (label[20:S, :S] == 255).all() and (label[3:9, 3:9] == 1).all()


def test_folder_png_images_default_to_all_channels(tmp_path):
    (tmp_path / "img").mkdir()
    rgb = np.random.default_rng(4).integers(0, 256, (3, S, S))
    _write_tif(tmp_path / "img" / "x.png", rgb, "uint8")
    cube = import_patches(tmp_path, tmp_path / "p.zarr", fmt="folder", require_masks=False, progress=False)
    ds = open_cube(cube)
    assert list(ds["band"].values) == ["b1", "b2", "b3"] and "slope" not in ds
    np.testing.assert_array_equal(ds["post"].values[:, :S, :S], np.maximum(rgb, 1))


def test_band_map_parsing(tmp_path):
    assert parse_band_map("l4s") is PRESETS["l4s"] and parse_band_map(None, "l4s").dem == 13
    m = parse_band_map('{"post": {"red": 3}, "slope": 12, "dem": 13, "scale": [1, 2, 3, 4]}')
    assert m == BandMap(post={"red": 3}, slope=12, dem=13, scale=(1.0, 2.0, 3.0, 4.0))
    (tmp_path / "m.json").write_text(json.dumps(m.to_dict()))
    assert parse_band_map(str(tmp_path / "m.json")) == m
    for bad, msg in (
        ("{post: 1}", "not valid JSON"),
        ('{"post": {"red": -1}}', "0-based"),
        ('{"post": {"red": 3}, "slope": 12}', "no dem"),
        ('{"post": {"red": 1}, "pre": {"nir": 2}}', "pre bands"),
        ("nope", "preset"),
        ('{"post": {"red": 1}, "colour": 2}', "unknown keys"),
        ('{"post": {"red": 1}, "scale": "x"}', "must be numbers"),
    ):
        with pytest.raises(UsageError, match=msg):
            parse_band_map(bad)


def test_errors_say_which_file_and_what_to_do(tmp_path):
    def fresh(name, n=2, **kw):
        root = tmp_path / name
        write_l4s(root, n=n, **kw)
        return root

    with pytest.raises(InputDataError, match="no .*h5 images"):
        (tmp_path / "empty").mkdir()
        import_patches(tmp_path / "empty", tmp_path / "o.zarr", progress=False)

    root = fresh("nokey")
    with h5py.File(root / "img" / "image_2.h5", "w") as f:
        f["data"] = np.zeros((S, S, 14), np.float32)
    with pytest.raises(InputDataError, match=r"image_2\.h5 has no dataset 'img'"):
        import_patches(root, tmp_path / "o.zarr", progress=False)

    root = fresh("corrupt")
    (root / "img" / "image_1.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage, truncated")
    with pytest.raises(InputDataError, match=r"image_1\.h5 is not a readable HDF5 file"):
        import_patches(root, tmp_path / "o.zarr", progress=False)

    root = fresh("channels")
    with h5py.File(root / "img" / "image_2.h5", "w") as f:
        f["img"] = np.zeros((S, S, 10), np.float32)
    with pytest.raises(InputDataError, match=r"image_2\.h5 has 10 channels but the band mapping uses channel 13"):
        import_patches(root, tmp_path / "o.zarr", progress=False)

    root = fresh("flat")
    with h5py.File(root / "img" / "image_1.h5", "w") as f:
        f["img"] = np.zeros((S, S), np.float32)
    with pytest.raises(InputDataError, match=r"expected \(height, width, channels\)"):
        import_patches(root, tmp_path / "o.zarr", progress=False)

    with pytest.raises(UsageError, match="scale has 2 entries but channel 3"):
        import_patches(fresh("scale"), tmp_path / "o.zarr", bands={"post": {"red": 3}, "scale": [1, 2]}, progress=False)

    root = fresh("mismatch")
    with h5py.File(root / "mask" / "mask_2.h5", "w") as f:
        f["mask"] = np.zeros((S, S + 4), np.uint8)
    with pytest.raises(InputDataError, match=r"mask .*mask_2\.h5 is .* but image .*image_2\.h5"):
        import_patches(root, tmp_path / "o.zarr", progress=False)

    root = fresh("missing", n=3)
    (root / "mask" / "mask_2.h5").unlink()
    with pytest.raises(InputDataError, match=r"no mask for .*image_2\.h5 .*mask_2"):
        import_patches(root, tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.zarr.partial").exists()


def test_folder_dataset_of_mixed_non_square_sizes_is_packed_with_masks_in_0_255_or_0_1(tmp_path):
    # as benchmark datasets such as Bijie ship them: image/mask pairs of many sizes, masks 0/255 or 0/1
    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = {"p1": (61, 40), "p2": (20, 90), "p3": (33, 33), "p4": (100, 47), "p5": (64, 128)}
    imgs, masks = {}, {}
    for k, (name, (h, w)) in enumerate(sizes.items()):
        img = rng.uniform(0.01, 0.5, (3, h, w)).astype(np.float32)
        mask = np.zeros((1, h, w), np.uint8)
        mask[0, h // 4 : h // 2, w // 4 : w // 2] = 255 if k % 2 else 1
        _write_tif(tmp_path / "images" / f"{name}.tif", img, "float32")
        _write_tif(tmp_path / "masks" / f"{name}.{'png' if k % 2 else 'tif'}", mask, "uint8")
        imgs[name], masks[name] = img, mask[0]
    cube = import_patches(
        tmp_path,
        tmp_path / "mixed.zarr",
        fmt="folder",
        bands={"post": {"red": 0, "green": 1, "blue": 2}, "scale": 10000},
        chunk=64,
        progress=False,
    )
    ds = open_cube(cube)
    a = ds.attrs
    assert a["patch_layout"] == "packed" and a["patch_count"] == 5 and a["patch_gap"] >= 1
    post, label, valid = ds["post"].values, ds["label"].values, ds["valid"].values
    wins = patch_windows(cube)
    assert list(wins["name"]) == [f"images/{n}.tif" for n in sizes]
    inside = np.zeros(valid.shape, bool)
    for _, w in wins.iterrows():
        name = w["name"].removeprefix("images/").removesuffix(".tif")
        h, wd = sizes[name]
        assert (w["h"], w["w"]) == (h, wd)
        r, c = w["row"], w["col"]
        assert not inside[max(r - 1, 0) : r + h + 1, max(c - 1, 0) : c + wd + 1].any()  # apart, never touching
        inside[r : r + h, c : c + wd] = True
        np.testing.assert_array_equal(post[0, r : r + h, c : c + wd], np.rint(imgs[name][0].astype(np.float64) * 10000))
        np.testing.assert_array_equal(label[r : r + h, c : c + wd], (masks[name] > 0).astype(np.uint8))  # 255 or 1
        assert label[r : r + h, c : c + wd].sum() == masks[name].astype(bool).sum() > 0
    assert valid.sum() == sum(h * w for h, w in sizes.values()) and (valid == inside).all()
    assert (label[~inside] == 255).all() and (post[:, ~inside] == 0).all()
    # the stored index settings find windows on it, and the reader reads them
    rec = a["recommended_index"]
    index = build_index([str(cube)], rec["window"], rec["stride"], rec["block"], rec["min_usable"])
    assert len(index) > 0
    sample = WindowReader([str(cube)], ("post",)).sample(0, int(index["row"][0]), int(index["col"][0]), rec["window"])
    assert sample["post"].shape == (3, rec["window"], rec["window"]) and sample["valid"].mean() >= rec["min_usable"]
