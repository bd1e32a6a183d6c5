"""One radiometric convention per cube and one band naming across APIs: real Planetary Computer and
Earth Search items (tests/stac/fixtures), and a cube of scenes from both sides of processing
baseline 04.00 whose composites must agree."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from landslide_dask.cube.bands import resolve_asset, resolve_bands
from landslide_dask.cube.build import CubeSpec, build_cube, daily_mosaics, harmonisation
from landslide_dask.cube.grid import Grid
from landslide_dask.cube.radiometry import asset_radiometry, harmonise, is_sentinel2_l2a
from landslide_dask.cube.read import open_cube
from landslide_dask.errors import InputDataError, UsageError
from landslide_dask.stac.local import read_local_items
from landslide_dask.train.reader import radiometry as reader_radiometry

FIXTURES = Path(__file__).resolve().parents[1] / "stac" / "fixtures"
PC_2019 = "pc_sentinel-2-l2a_2019_baseline-02.12.json"
PC_2024 = "pc_sentinel-2-l2a_2024_baseline-05.10.json"
ES_L2A = "es_sentinel-2-l2a_2023_boa-offset-applied.json"
ES_C1 = "es_sentinel-2-c1-l2a_2025.json"
ALL = (PC_2019, PC_2024, ES_L2A, ES_C1)


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "asked", [("blue", "green", "red", "nir"), ("B02", "B03", "B04", "B08"), ("B2", "green", "B04", "nir")]
)
def test_real_items_of_both_apis_resolve_the_same_bands(name, asked):
    item = _fixture(name)
    res = resolve_bands([item], list(asked), ["scl"])
    assert res.labels == ["blue", "green", "red", "nir"]  # one naming for the cube, whatever the API
    got = res.items[0]["assets"]
    for band, code in zip(asked, ("B02", "B03", "B04", "B08")):
        assert got[band]["href"].endswith((f"{code}.tif", f"_{code}_10m.tif")), (name, band, got[band]["href"])
    assert "SCL" in got["scl"]["href"]  # PC's "SCL" and Earth Search's "scl"


def test_the_cog_is_preferred_over_the_jp2_of_one_band():
    item = _fixture(ES_L2A)  # blue and blue-jp2 carry the same eo:bands
    assert resolve_asset(item, "B02") == "blue"
    assert resolve_asset(item, "SCL") == "scl"


@pytest.mark.parametrize("name", (PC_2019, PC_2024))
def test_pc_b8a_is_nir08_whatever_its_common_name(name):
    res = resolve_bands([_fixture(name)], ["nir08"])
    assert res.labels == ["nir08"] and res.sources == {"nir08": ["B8A"]}


def test_a_band_no_asset_has_names_what_the_item_has():
    with pytest.raises(InputDataError) as err:
        resolve_bands([_fixture(PC_2024)], ["swir99"])
    msg = str(err.value)
    assert "swir99" in msg and "B02 (blue)" in msg and "SCL" in msg and "--bands" in msg
    with pytest.raises(UsageError, match="ambiguous.*B05.*B8A"):  # two red edges by common name
        resolve_bands([_fixture(PC_2024)], ["rededge"])


@pytest.mark.parametrize(
    "name, scale, offset, source",
    [
        (ES_C1, 1e-4, -0.1, "raster:bands"),
        (PC_2024, 1e-4, -0.1, "s2:processing_baseline 05.10"),
        (PC_2019, 1e-4, 0.0, "s2:processing_baseline 02.12"),
        (ES_L2A, 1e-4, 0.0, "earthsearch:boa_offset_applied"),  # its raster:bands say -0.1, the pixels do not
    ],
)
def test_per_item_scale_and_offset_of_real_items(name, scale, offset, source):
    item = resolve_bands([_fixture(name)], ["red"]).items[0]
    r = asset_radiometry(item, "red")
    assert r.scale == pytest.approx(scale) and r.offset == pytest.approx(offset) and source in r.source
    assert r.gain_bias == (1.0, -1000.0 if offset else 0.0)
    assert is_sentinel2_l2a(_fixture(name))


def test_without_a_baseline_the_date_decides_for_sentinel2_and_nothing_for_own_files():
    item = resolve_bands([_fixture(PC_2024)], ["red"]).items[0]
    del item["properties"]["s2:processing_baseline"]
    assert asset_radiometry(item, "red").gain_bias == (1.0, -1000.0)
    item["properties"]["datetime"] = "2022-01-24T10:00:00Z"
    assert asset_radiometry(item, "red").gain_bias == (1.0, 0.0)
    own = {
        "id": "tile",
        "properties": {"datetime": "2024-06-20T04:30:00Z"},
        "assets": {"red": {"href": "x.tif", "raster:bands": [{"data_type": "uint16"}]}},
    }
    r = asset_radiometry(own, "red")
    assert r.identity and "none recorded" in r.source
    own["assets"]["red"]["raster:bands"][0].update(scale=1e-4, offset=-0.1)  # catalog --dn-offset -0.1
    assert asset_radiometry(own, "red").gain_bias == (1.0, -1000.0)


def test_scl_is_never_rescaled():
    item = resolve_bands([_fixture(ES_C1)], ["red"], ["scl"]).items[0]
    conv, summary = harmonisation([item], ["red"])
    assert conv == {(item["id"], "red"): (1.0, -1000.0)}
    assert summary["items"][item["id"]]["offset"] == -0.1 and summary["items_converted"] == 1


def test_harmonise_keeps_nodata_and_valid_pixels():
    dn = np.array([0, 1, 999, 1000, 1001, 2500, 65535], dtype=np.uint16)
    assert harmonise(dn, 1.0, -1000.0).tolist() == [0, 1, 1, 1, 1, 1500, 64535]
    assert harmonise(dn, 2.0, 0.0).tolist() == [0, 2, 1998, 2000, 2002, 5000, 65535]
    assert harmonise(dn, 1.0, 0.0) is dn


# --- a cube of scenes from both sides of baseline 04.00 ------------------------------------------

EPSG = 32633
X0, Y0, N = 500_000.0, 5_100_000.0, 64  # a 640 m square in UTM 33N at 10 m
EVENT = date(2022, 1, 20)
# the same unchanged surface, reflectance x 10,000
SURFACE = np.random.default_rng(4).integers(150, 4000, (4, N, N)).astype(np.uint16)
CODES = ("B02", "B03", "B04", "B08")
EO = {it: a.get("eo:bands") for it, a in _fixture(PC_2024)["assets"].items()}  # PC's own eo:bands


def _tif(path: Path, data: np.ndarray, res: float, x0: float = X0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=f"EPSG:{EPSG}",
        transform=from_origin(x0, Y0, res, res),
        nodata=0,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(data, 1)


def _granule(root: Path, item_id: str, when: str, baseline: str, cols: slice) -> pystac.Item:
    """A Planetary Computer style item (keys B02.., SCL; s2:processing_baseline, no raster:bands) of
    the surface's columns ``cols``, in the DN of ``baseline``."""
    offset = 1000 if baseline >= "04.00" else 0
    assets = {}
    for b, code in enumerate(CODES):
        data = np.zeros((N, N), np.uint16)
        data[:, cols] = SURFACE[b][:, cols] + offset
        _tif(root / item_id / f"{code}.tif", data, 10.0)
        assets[code] = pystac.Asset(
            str(root / item_id / f"{code}.tif"),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            extra_fields={"eo:bands": EO[code], "proj:shape": [N, N], "proj:transform": [10.0, 0, X0, 0, -10.0, Y0]},
        )
    _tif(root / item_id / "SCL.tif", np.full((N // 2, N // 2), 4, np.uint8), 20.0)  # clear: vegetation
    assets["SCL"] = pystac.Asset(str(root / item_id / "SCL.tif"), media_type=pystac.MediaType.COG, roles=["data"])
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform([X0, X0 + 10 * N], [Y0 - 10 * N, Y0])
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    geom = {
        "type": "Polygon",
        "coordinates": [
            [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
        ],
    }
    from datetime import datetime

    item = pystac.Item(
        item_id,
        geom,
        bbox,
        datetime.fromisoformat(when),
        properties={
            "platform": "Sentinel-2A",
            "constellation": "Sentinel 2",
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": baseline,
            "proj:epsg": EPSG,
            "eo:cloud_cover": 1.0,
        },
    )
    for k, a in assets.items():
        item.add_asset(k, a)
    return item


@pytest.fixture(scope="module")
def two_baselines(tmp_path_factory) -> Path:
    """A static STAC catalog (catalog.json, relative hrefs; no server): pre-event 2021 at baseline
    03.01 as a mosaic of two granules, one of them reprocessed at 05.00 (+1000 DN), and post-event
    2022 at baseline 04.00 (+1000 DN), all of one unchanged surface."""
    root = tmp_path_factory.mktemp("baselines")
    items = [
        _granule(root / "data", "pre-west", "2021-12-20T10:00:00+00:00", "03.01", slice(0, 40)),
        _granule(root / "data", "pre-east", "2021-12-20T10:00:05+00:00", "05.00", slice(24, N)),
        _granule(root / "data", "post", "2022-02-10T10:00:00+00:00", "04.00", slice(0, N)),
    ]
    col = pystac.Collection(
        "sentinel-2-l2a",
        "two baselines",
        pystac.Extent(
            pystac.SpatialExtent([items[0].bbox]), pystac.TemporalExtent([[items[0].datetime, items[-1].datetime]])
        ),
    )
    col.add_items(items)
    cat = pystac.Catalog("events", "scenes of two processing baselines")
    cat.add_child(col)
    cat.normalize_hrefs(str(root / "stac"))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "stac"


def _aoi_gdf(aoi: str):
    from landslide_dask.cube.build import read_aoi

    return read_aoi(aoi)[0]


def _aoi_bbox() -> str:
    from pyproj import Transformer

    t = Transformer.from_crs(EPSG, 4326, always_xy=True)
    (w, e), (s, n) = t.transform([X0 + 40, X0 + 10 * N - 40], [Y0 - 10 * N + 40, Y0 - 40])
    return f"{w:.6f},{s:.6f},{e:.6f},{n:.6f}"


def test_pre_and_post_of_two_baselines_agree_in_one_cube(two_baselines, tmp_path):
    spec = CubeSpec(
        stac_url=str(two_baselines),
        event_date=EVENT,
        aoi=_aoi_bbox(),
        out=tmp_path / "c.zarr",
        bands=CODES,
        dem_collection=None,
        chunk=32,
    )
    ds = open_cube(build_cube(spec, progress=False, quicklook=False))
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"]  # PC's B02.. under the common names
    pre, post, valid = ds["pre"].values.astype(int), ds["post"].values.astype(int), ds["valid"].values
    assert valid.mean() > 0.8 and ds["pre_valid"].values[valid].all()
    assert np.abs(pre - post)[:, valid].max() <= 1  # one unchanged surface, one unit
    # and that unit is reflectance x 10,000 (the surface itself)
    grid = Grid.covering(_aoi_gdf(spec.aoi), 10.0, None)
    c0, r0 = int(round((grid.x0 - X0) / 10)), int(round((Y0 - grid.y0) / 10))
    truth = SURFACE[:, r0 : r0 + grid.height, c0 : c0 + grid.width].astype(int)
    assert np.abs(post - truth)[:, valid].max() <= 1
    assert ds.attrs["dn_scale_offset"] == [1e-4, 0.0]
    items = ds.attrs["radiometry"]["items"]
    assert items["post"]["offset"] == -0.1 and items["pre-east"]["offset"] == -0.1 and items["pre-west"]["offset"] == 0
    assert ds.attrs["band_assets"]["blue"] == ["B02"]
    assert reader_radiometry(tmp_path / "c.zarr") == (1.0, 0.0)  # what the models read: reflectance x 10,000


def test_without_the_correction_the_two_baselines_differ_by_1000(two_baselines):
    """What the cube would have held: the raw DN of the same surface, 1000 apart."""
    items = resolve_bands(read_local_items(two_baselines), list(CODES)).items
    grid = Grid.covering(_aoi_gdf(_aoi_bbox()), 10.0, None)
    raw, days = daily_mosaics(items, list(CODES), grid, 32)
    fixed, _ = daily_mosaics(items, list(CODES), grid, 32, harmonise=True)
    raw, fixed = raw.values.astype(int), fixed.values.astype(int)
    both = (raw > 0).all(axis=(0, 1))
    assert days == [date(2021, 12, 20), date(2022, 2, 10)]
    # raw, the pre-event mosaic mixes units (its west granule 1000 below the rest), and so does pre vs post
    assert set(np.unique((raw[1] - raw[0])[:, both]).tolist()) == {0, 1000}
    assert np.abs(fixed[1] - fixed[0])[:, both].max() <= 1


def test_a_missing_band_in_a_real_cube_build_names_the_assets(two_baselines, tmp_path):
    spec = CubeSpec(
        stac_url=str(two_baselines),
        event_date=EVENT,
        aoi=_aoi_bbox(),
        out=tmp_path / "m.zarr",
        bands=("blue", "swir16"),
        dem_collection=None,
        chunk=32,
    )
    with pytest.raises(InputDataError, match=r"no asset for band 'swir16'.*B02 \(blue\)"):
        build_cube(spec, progress=False, quicklook=False)
