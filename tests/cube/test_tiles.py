"""Georeferenced tile exports as one labelled cube: merged on their own grid, labels mapped, blobs
counted, bad input refused; and the real Chattogram Sentinel-2 tiles with their blob counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from landslide_dask.cube.read import open_cube
from landslide_dask.cube.tiles import blob_counts, import_tiles
from landslide_dask.errors import InputDataError

from ..helpers import SHARED_DATA

CHATTOGRAM = SHARED_DATA / "chattogram_s2_tiles"


def _write(path: Path, a: np.ndarray, row: int, col: int, crs="EPSG:32646") -> None:
    t = from_origin(400_000 + col * 10, 2_500_000 - row * 10, 10, 10)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=a.shape[-2],
        width=a.shape[-1],
        count=a.shape[0],
        dtype=a.dtype,
        crs=crs,
        transform=t,
    ) as dst:
        dst.write(a)


def _export(root: Path, image: np.ndarray, label: np.ndarray, size: int = 32, step: int = 16) -> Path:
    """Overlapping tiles (half a tile apart, as ArcGIS exports them) cut from one scene."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    k = 0
    for r in range(0, image.shape[1] - size + 1, step):
        for c in range(0, image.shape[2] - size + 1, step):
            _write(root / "images" / f"{k:04d}.tif", image[:, r : r + size, c : c + size], r, c)
            _write(root / "labels" / f"{k:04d}.tif", label[None, r : r + size, c : c + size], r, c)
            k += 1
    return root


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.uniform(200, 3000, (4, 64, 80))
    image[:, :, :8] = 0  # outside the AOI
    label = np.zeros((64, 80), np.uint16)
    label[10:14, 20:24] = 2  # two landslide samples
    label[40:43, 60:63] = 2
    label[30:33, 30:33] = 1  # three non-landslide samples
    label[50:52, 10:13] = 1
    label[5:7, 70:72] = 1
    return image, label


def test_tiles_merge_back_onto_their_grid_with_labels_mapped(tmp_path, scene):
    image, label = scene
    out = import_tiles(_export(tmp_path / "export", image, label), tmp_path / "c.zarr", region="test")
    ds = open_cube(out)
    assert ds.attrs["crs"] == "EPSG:32646" and ds.attrs["source_tiles"] == 12
    assert "pre" not in ds and "slope" not in ds and list(ds["band"].values) == ["red", "green", "blue", "nir"]
    np.testing.assert_array_equal(ds["post"].values, np.round(image).astype(np.uint16))
    np.testing.assert_array_equal(ds["valid"].values, (image > 0).all(axis=0))
    lab = ds["label"].values
    assert (lab[label == 2] == 1).all() and (lab[label == 1] == 0).all() and (lab[label == 0] == 255).all()
    assert ds.attrs["blobs"] == ds.attrs["blobs_source"] == {"landslide": 2, "non_landslide": 3}


def test_overlapping_tiles_that_disagree_keep_the_landslide_sample(tmp_path, scene):
    image, label = scene
    root = _export(tmp_path / "export", image, label)
    # the second tile (cols 16..48) says "non-landslide" where the first one says "landslide"
    with rasterio.open(root / "labels" / "0001.tif", "r+") as dst:
        a = dst.read()
        a[0, 10:14, 4:8] = 1
        dst.write(a)
    lab = open_cube(import_tiles(root, tmp_path / "c.zarr"))["label"].values
    assert (lab[10:14, 20:24] == 1).all()


def test_bad_exports_are_refused_with_what_to_do(tmp_path, scene):
    image, label = scene
    root = _export(tmp_path / "a", image, label)
    with pytest.raises(InputDataError, match="4 bands but 3 band names"):
        import_tiles(root, tmp_path / "x.zarr", bands=("red", "green", "blue"))
    bad = label.copy()
    bad[0, 20] = 7
    with pytest.raises(InputDataError, match=r"label values \[7\]"):
        import_tiles(_export(tmp_path / "b", image, bad), tmp_path / "x.zarr")
    (root / "labels" / "0003.tif").unlink()
    with pytest.raises(InputDataError, match="no label tile"):
        import_tiles(root, tmp_path / "x.zarr")
    with pytest.raises(InputDataError, match="images/"):
        import_tiles(tmp_path / "b" / "images", tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_blob_counts_are_8_connected():
    a = np.zeros((6, 6), np.uint8)
    a[0, 0] = a[1, 1] = 1  # diagonal neighbours: one blob
    a[4, 4] = 1
    assert blob_counts(a, {"x": 1}) == {"x": 2}


@pytest.mark.skipif(not CHATTOGRAM.exists(), reason="../shared/data/chattogram_s2_tiles is not in this clone")
def test_the_chattogram_tiles_import_with_their_blob_counts(tmp_path):
    ds = open_cube(import_tiles(CHATTOGRAM, tmp_path / "chattogram.zarr", region="chattogram"))
    a = ds.attrs
    assert a["crs"] == "EPSG:32646" and a["source_tiles"] == 100  # UTM 46N, Bangladesh
    assert a["blobs_source"] == a["blobs"] == {"landslide": 120, "non_landslide": 214}
    lab, valid = ds["label"].values, ds["valid"].values
    assert set(np.unique(lab)) == {0, 1, 255} and (lab[~valid] == 255).all()
    assert (lab == 1).sum() > 1000 and (lab == 0).sum() > 1000 and 0.3 < valid.mean() < 0.5
    red = ds["post"].values[0][valid]
    assert 500 < np.median(red) < 800  # Sentinel-2 DN, reflectance x 10,000
