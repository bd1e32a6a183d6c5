"""The products a responder opens: COGs GDAL and QGIS read, styles, the STAC item, the offline web map."""

from __future__ import annotations

import json
import os
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from landslide_dask.cli import main
from landslide_dask.products import write_products
from landslide_dask.products.tiles import web_grid, zoom_for
from tests.helpers.browser import chromium, open_page, save_screenshot
from tests.helpers.predictions import write_prediction

needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
ARTEFACTS = Path(
    os.environ.get("LANDSLIDE_DASK_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts")
)
DISCS = [(50, 60), (150, 200), (250, 350), (100, 300)]


def _prediction(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Four landslide discs on low noise; a blind strip (no image) and a strip with no pre-event image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :400]
    prob = (rng.random((300, 400)) * 20).astype(np.uint8)
    for cy, cx in DISCS:
        prob[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = 220
    valid = np.ones_like(prob, bool)
    valid[:, :40] = False  # cloud: not mapped
    no_pre = np.zeros_like(valid)
    no_pre[:30, 100:] = True  # no pre-event image ...
    valid[:30, 100:250] = False  # ... not mapped here, mapped from post-event only beyond
    prob[~valid] = 0
    p = write_prediction(path, prob, valid=valid, no_pre=no_pre, event_date="2020-01-01", resolution=10.0)
    return p, prob, valid, no_pre


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    d = tmp_path_factory.mktemp("products")
    p, prob, valid, no_pre = _prediction(d / "pred.zarr")
    files = write_products(p, d / "out", attribution="Test data: synthetic")
    return files, prob, valid, no_pre


def test_probability_cog_holds_the_zarr_values_scale_and_mask(products):
    files, prob, valid, _ = products
    assert cog_validate(str(files["probability"]), quiet=True)[0]
    with rasterio.open(files["probability"]) as src:  # GDAL, as QGIS opens it
        np.testing.assert_array_equal(src.read(1), prob)
        np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
        assert src.scales[0] == pytest.approx(1 / 255) and src.crs.to_epsg() == 32618


def test_not_mapped_layer_says_why(products):
    files, _, valid, no_pre = products
    assert cog_validate(str(files["not_mapped"]), quiet=True)[0]
    with rasterio.open(files["not_mapped"]) as src:
        s = src.read(1)
        assert src.nodata == 0 and src.colormap(1)[3][:3] == (90, 90, 90)
        assert "not mapped" in src.tags()["code_3"]
    assert (s[:, :40] == 3).all()  # no image: not mapped
    assert (s[:30, 100:250] == 4).all()  # no pre-event image: not mapped
    assert (s[:30, 250:] == 2).all()  # mapped from post-event imagery only
    assert (s[100:, 50:] == 1).all()


def test_styles_are_qgis_xml_and_the_gpkg_carries_its_default_style(products):
    files = products[0]
    for key in ("probability_style", "not_mapped_style", "landslides_style"):
        root = ET.fromstring(files[key].read_text().split("\n", 1)[1])
        assert root.tag == "qgis"
    ramp = ET.fromstring(files["probability_style"].read_text().split("\n", 1)[1])
    values = [float(i.get("value")) for i in ramp.iter("item")]
    assert min(values) == 0 and max(values) == 1  # QGIS applies the band scale: 0..1
    with sqlite3.connect(files["landslides_gpkg"]) as con:
        rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert rows and rows[0][0] == "landslides" and rows[0][1] == 1 and "<qgis" in rows[0][2]


def test_stac_item_validates_offline_and_names_products_and_figures(products):
    files = products[0]
    d = json.loads(files["item"].read_text())
    item = pystac.Item.from_dict(d)
    item.validate()  # the core schema pystac carries: no network
    assert {"probability", "not_mapped", "landslides_gpkg", "landslides_parquet", "web_map"} <= set(item.assets)
    for a in item.assets.values():
        assert (files["item"].parent / a.href).exists(), a.href
    p = item.properties
    assert p["landslide:event_date"] == "2020-01-01" and p["landslide:landslides"] == len(DISCS)
    assert p["landslide:threshold"] == 0.5 and p["landslide:threshold_rule"] == "validation"
    assert p["landslide:not_mapped_km2"] == pytest.approx((300 * 40 + 30 * 150) * 100 / 1e6)
    assert p["landslide:mapped_without_pre_event_km2"] == pytest.approx(30 * 150 * 100 / 1e6)


def test_web_grid_and_zoom():
    assert zoom_for(10.0, 0.0) == 14 and zoom_for(10.0, 60.0) == 13
    g = web_grid((0.0, 0.0, 1000.0, 1000.0), 14)
    t = g.transform
    left, top = t * (0, 0)
    right, bottom = t * (g.width, g.height)
    # the grid covers the bounds, by less than one pixel more on each side
    assert 0.0 - g.res < left <= 0.0 and 1000.0 <= right < 1000.0 + g.res
    assert 0.0 - g.res < bottom <= 0.0 and 1000.0 <= top < 1000.0 + g.res
    xs, ys = g.tiles(14)  # 1 km at zoom 14 (2.4 km tiles): the one or two tiles around the origin
    assert len(xs) in (1, 2) and len(ys) in (1, 2) and xs.start == 2**13 - (1 if left < 0 else 0)


@needs_chromium
def test_web_map_opens_offline_and_draws_the_polygons(products):
    files = products[0]
    res = open_page(
        files["web_map"].as_uri(),
        ready="document.body.dataset.ready === '1'",
        values=(
            "document.body.dataset.polygons",
            "document.querySelectorAll('.leaflet-tile-loaded').length",
            "document.querySelector('.leaflet-control-attribution').textContent",
            "document.querySelectorAll('.leaflet-control-layers-overlays label').length",
        ),
    )
    save_screenshot(res, ARTEFACTS / "web-map.png")
    assert res.errors == []
    assert [u for u in res.requested if not u.startswith(("file:", "data:"))] == []  # nothing from a network
    v = res.values
    assert v["document.body.dataset.polygons"] == str(len(DISCS))
    assert v["document.querySelectorAll('.leaflet-tile-loaded').length"] > 0
    assert "Test data: synthetic" in v["document.querySelector('.leaflet-control-attribution').textContent"]
    assert v["document.querySelectorAll('.leaflet-control-layers-overlays label').length"] >= 3
    assert len(res.screenshot) > 10_000


@needs_chromium
def test_many_polygons_are_tiled_and_load_as_the_view_needs_them(tmp_path, monkeypatch):
    p, *_ = _prediction(tmp_path / "pred.zarr")
    from landslide_dask.products import page

    monkeypatch.setattr(page, "MAX_SINGLE_POLYGONS", 2)
    files = write_products(p, tmp_path / "out")
    web = files["web_map"].parent
    assert list((web / "vectors").rglob("*.js"))
    assert '"mode":"tiled"' in (web / "data.js").read_text()
    res = open_page(files["web_map"].as_uri(), ready=f"document.body.dataset.polygons === '{len(DISCS)}'")
    assert res.errors == []


def test_cli_predict_products_on_an_existing_prediction(products, tmp_path, capsys):
    p, *_ = _prediction(tmp_path / "pred.zarr")
    assert main(["products", "--prediction", p, "--threshold", "0.9"]) in (0, None)
    out = tmp_path / "pred-products"
    assert (out / "web" / "index.html").exists() and (out / "item.json").exists()
    item = json.loads((out / "item.json").read_text())
    assert item["properties"]["landslide:landslides"] == 0  # no pixel reaches 0.9
    assert item["properties"]["landslide:threshold"] == 0.9  # and the item, legend and styles say so
    assert '"threshold":0.9' in (out / "web" / "data.js").read_text()
    assert "offline web map" in capsys.readouterr().out


def test_cli_predict_writes_the_products_by_default_with_the_cube_s_imagery_and_sources(tmp_path, capsys):
    import zarr as _zarr

    from tests.helpers.cubes import make_arrays, write_test_cube
    from tests.helpers.models import OV, WIN, make_checkpoint

    cube = write_test_cube(tmp_path / "c.zarr", make_arrays((160, 200)))
    _zarr.open_group(str(cube), mode="a").attrs.update(
        event_date="2021-06-01",
        pre_dates=["2021-05-01"],
        post_dates=["2021-06-10", "2021-06-20"],
        stac_url="https://earth-search.aws.element84.com/v1",
        collection="sentinel-2-l2a",
        stac_items=["S2A_T33_20210501", "S2B_T33_20210610"],
    )
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main(
        [
            "predict",
            "--model",
            str(ckpt),
            "--cube",
            str(cube),
            "--out",
            str(tmp_path / "map.zarr"),
            "--window",
            str(WIN),
            "--overlap",
            str(OV),
            "--quiet",
        ]
    ) in (0, None)
    out = tmp_path / "map-products"
    assert "offline web map" in capsys.readouterr().out
    web = out / "web"
    assert (web / "tiles" / "post").is_dir() and (web / "tiles" / "pre").is_dir()  # the images as backgrounds
    item = pystac.Item.from_dict(json.loads((out / "item.json").read_text()))
    item.validate()
    links = [lk.href for lk in item.links if lk.rel == "derived_from"]
    assert "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2B_T33_20210610" in links
    assert item.properties["landslide:post_event_dates"] == ["2021-06-10", "2021-06-20"]
    assert item.properties["start_datetime"].startswith("2021-05-01")
    assert "Contains modified Copernicus Sentinel data 2021" in (web / "data.js").read_text()
    assert main(
        [
            "predict",
            "--model",
            str(ckpt),
            "--cube",
            str(cube),
            "--out",
            str(tmp_path / "b.zarr"),
            "--window",
            str(WIN),
            "--overlap",
            str(OV),
            "--quiet",
            "--no-products",
        ]
    ) in (0, None)
    assert not (tmp_path / "b-products").exists()
