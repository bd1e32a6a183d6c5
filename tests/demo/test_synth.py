"""The synthetic regions: deterministic, laid out like Earth Search data, and a real learning problem.

The data are read back the way a user's data would be (COGs through rasterio, JSON as written),
never through the generator's own objects, so these tests check what other stages will see.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from landslide_dask.demo.synth import make_demo_data

SEED = 3
NOT_CLEAR = (0, 1, 3, 8, 9, 10)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("synth") / "a", seed=SEED, size_km=2.0)


@pytest.fixture(scope="module")
def regions(data) -> list[dict]:
    return json.loads((data / "regions.json").read_text())


@pytest.fixture(scope="module")
def s2_items(data) -> list[dict]:
    return json.loads((data / "stac" / "items" / "sentinel-2-l2a.json").read_text())["features"]


@pytest.fixture(scope="module")
def dem_items(data) -> list[dict]:
    return json.loads((data / "stac" / "items" / "cop-dem-glo-30.json").read_text())["features"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _href(data: Path, href: str) -> Path:
    return (data / "stac" / "items" / href).resolve()


def _geojson_union(path: Path) -> shapely.Geometry:
    fc = json.loads(path.read_text())
    return shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in fc["features"]])


def _to_crs(geom: shapely.Geometry, epsg: int) -> shapely.Geometry:
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    return shapely.transform(geom, lambda xy: np.stack(tr.transform(xy[:, 0], xy[:, 1]), axis=1))


def _epsg(item: dict) -> int:
    return int(item["properties"]["proj:code"].split(":")[1])


def _region_items(s2_items: list[dict], region: dict, data: Path) -> list[dict]:
    aoi = _geojson_union(data / region["aoi"])
    return [it for it in s2_items if shapely.geometry.shape(it["geometry"]).intersects(aoi)]


def _aoi_grid(data: Path, region: dict) -> tuple[Affine, tuple[int, int]]:
    aoi = _to_crs(_geojson_union(data / region["aoi"]), region["epsg"])
    x0, y0, x1, y1 = aoi.bounds
    x0, y1 = np.floor(x0 / 10) * 10, np.ceil(y1 / 10) * 10
    w, h = int(np.ceil((x1 - x0) / 10)), int(np.ceil((y1 - y0) / 10))
    return Affine(10, 0, x0, 0, -10, y1), (h, w)


def _dem_on(data: Path, dem_items: list[dict], epsg: int, tf: Affine, shape: tuple[int, int]) -> np.ndarray:
    """The DEM COGs resampled (bilinear) onto a UTM grid, NaN where no tile has data."""
    out = np.full(shape, np.nan, dtype=np.float32)
    for it in dem_items:
        with rasterio.open(_href(data, it["assets"]["data"]["href"])) as src:
            tmp = np.full(shape, np.nan, dtype=np.float32)
            reproject(
                rasterio.band(src, 1),
                tmp,
                dst_transform=tf,
                dst_crs=f"EPSG:{epsg}",
                resampling=Resampling.bilinear,
                dst_nodata=np.nan,
            )
        out = np.where(np.isnan(out), tmp, out)
    return out


def _slope(dem: np.ndarray, res: float = 10.0) -> np.ndarray:
    gy, gx = np.gradient(dem.astype(np.float64), res)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_whatever_the_workers(data, tmp_path):
    again = make_demo_data(tmp_path / "b", seed=SEED, size_km=2.0, workers=1)
    a, b = _hashes(data), _hashes(again)
    assert len(a) > 100 and a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, differing[:5]


def test_another_seed_gives_another_world(data, tmp_path):
    other = make_demo_data(tmp_path / "c", seed=SEED + 1, size_km=2.0, n_regions=1)
    name = json.loads((other / "regions.json").read_text())[0]["name"]
    rel = f"regions/{name}/inventory.geojson"
    assert (other / rel).read_bytes() != (data / rel).read_bytes()
    dems = sorted((other / "cop-dem-glo-30").glob("*/data.tif"))
    assert dems
    same_tile = data / dems[0].relative_to(other)
    assert same_tile.exists()  # the same place on Earth ...
    with rasterio.open(dems[0]) as a, rasterio.open(same_tile) as b:
        assert not np.array_equal(a.read(1), b.read(1))  # ... but other terrain


# ---- layout and STAC -----------------------------------------------------------------------


def test_regions_json_and_vectors(data, regions):
    assert len(regions) == 4
    for r in regions:
        assert set(r) >= {"name", "event_date", "epsg", "bbox", "aoi", "inventory", "inventory_area", "description"}
        assert r["aoi"] == f"regions/{r['name']}/aoi.geojson"
        aoi_fc = json.loads((data / r["aoi"]).read_text())
        assert len(aoi_fc["features"]) == 1 and aoi_fc["features"][0]["geometry"]["type"] == "Polygon"
        aoi = _geojson_union(data / r["aoi"])
        assert np.allclose(aoi.bounds, r["bbox"], atol=1e-6)
        area = _geojson_union(data / r["inventory_area"])
        assert area.within(aoi.buffer(1e-7))
        assert 0.6 < area.area / aoi.area < 0.95  # most of the AOI, not all of it
        inv = json.loads((data / r["inventory"]).read_text())["features"]
        assert len(inv) >= 10
        assert [f["properties"]["id"] for f in inv] == list(range(1, len(inv) + 1))
        for f in inv:
            assert f["properties"]["event_date"] == r["event_date"]
            geom = shapely.geometry.shape(f["geometry"])
            assert geom.is_valid and geom.intersects(area)
            assert geom.exterior.is_ccw  # RFC 7946 winding
            utm = _to_crs(geom, r["epsg"]).area
            assert abs(utm - f["properties"]["area_m2"]) < 0.01 * utm + 1.0
        areas = np.array([f["properties"]["area_m2"] for f in inv])
        assert areas.min() >= 300 and areas.max() < 150_000  # at most 500 m long and 150 m wide
    assert len({r["epsg"] for r in regions}) >= 3


def test_stac_items_follow_earth_search(data, s2_items, dem_items, regions):
    assert s2_items and dem_items
    ids = [it["id"] for it in s2_items]
    assert len(ids) == len(set(ids))
    for it in s2_items:
        p = it["properties"]
        assert it["collection"] == "sentinel-2-l2a" and it["type"] == "Feature"
        assert set(it["assets"]) == {"blue", "green", "red", "nir", "scl"}
        assert it["id"].startswith(("S2A_", "S2B_")) and it["id"].endswith("_L2A")
        assert p["platform"] in ("sentinel-2a", "sentinel-2b") and p["constellation"] == "sentinel-2"
        assert 0.0 <= p["eo:cloud_cover"] <= 100.0 and 0.0 <= p["s2:nodata_pixel_percentage"] < 100.0
        assert p["proj:code"] == f"EPSG:{p['proj:epsg']}" and 32600 < p["proj:epsg"] < 32761
        assert p["mgrs:utm_zone"] == p["proj:epsg"] % 100 and p["grid:code"].startswith("MGRS-")
        assert 0 <= p["view:sun_azimuth"] < 360 and 0 < p["view:sun_elevation"] < 90
        assert p["datetime"].endswith("Z") and "created" not in p and "updated" not in p
        assert any("projection" in e for e in it["stac_extensions"])
        assert any("eo" in e for e in it["stac_extensions"])
        g = shapely.geometry.shape(it["geometry"])
        assert g.is_valid and np.allclose(g.bounds, it["bbox"], atol=1e-6)
        for key, asset in it["assets"].items():
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert asset["href"].startswith("../../sentinel-2-l2a/") and asset["href"].endswith(f"/{key}.tif")
            assert _href(data, asset["href"]).is_file()
            rb = asset["raster:bands"][0]
            assert rb["nodata"] == 0
            if key == "scl":
                assert rb["data_type"] == "uint8" and rb["spatial_resolution"] == 20
            else:
                assert rb["data_type"] == "uint16" and rb["spatial_resolution"] == 10
                assert rb["scale"] == 0.0001 and rb["offset"] == -0.1
                assert asset["eo:bands"][0]["common_name"] == key
    for it in dem_items:
        assert it["collection"] == "cop-dem-glo-30" and set(it["assets"]) == {"data"}
        assert it["id"].startswith("Copernicus_DSM_COG_10_") and it["properties"]["proj:code"] == "EPSG:4326"
        assert it["assets"]["data"]["href"] == f"../../cop-dem-glo-30/{it['id']}/data.tif"
        assert _href(data, it["assets"]["data"]["href"]).is_file()
    # Collections cover their items.
    for cid, items in (("sentinel-2-l2a", s2_items), ("cop-dem-glo-30", dem_items)):
        col = json.loads((data / "stac" / "collections" / f"{cid}.json").read_text())
        assert col["type"] == "Collection" and col["id"] == cid and col["license"]
        bb = col["extent"]["spatial"]["bbox"][0]
        assert all(bb[0] <= it["bbox"][0] and bb[2] >= it["bbox"][2] for it in items)
        t0, t1 = col["extent"]["temporal"]["interval"][0]
        assert all(t0 <= it["properties"]["datetime"] <= t1 for it in items)
    # Exactly one region's imagery comes from granules in two UTM zones (two CRSs).
    zones = {r["name"]: {_epsg(it) for it in _region_items(s2_items, r, data)} for r in regions}
    straddling = [n for n, z in zones.items() if len(z) == 2]
    assert len(straddling) == 1 and all(len(z) == 1 for n, z in zones.items() if n not in straddling)
    region = next(r for r in regions if r["name"] == straddling[0])
    assert region["epsg"] in zones[region["name"]]


def test_cogs_match_their_items(data, s2_items, dem_items):
    it = max(s2_items, key=lambda i: 100 - i["properties"]["s2:nodata_pixel_percentage"])
    for key in ("red", "scl"):
        asset = it["assets"][key]
        with rasterio.open(_href(data, asset["href"])) as src:
            assert src.driver == "GTiff" and src.profile["tiled"] and src.profile["blockxsize"] in (256, 512)
            assert src.compression.name.lower() == "deflate" and src.nodata == 0
            assert src.crs.to_epsg() == it["properties"]["proj:epsg"]
            assert list(src.transform)[:6] == asset["proj:transform"] and list(src.shape) == asset["proj:shape"]
            if key != "scl":  # (the 240 px SCL fits in one block: no overview needed)
                assert src.overviews(1)  # internal overviews, as a COG
            arr = src.read(1)
        if key == "scl":
            valid = arr > 0
            assert set(np.unique(arr)) <= set(range(12))
            cloud = np.isin(arr, (8, 9, 10)).sum() / valid.sum() * 100
            assert abs(cloud - it["properties"]["eo:cloud_cover"]) < 1e-3
            assert abs((1 - valid.mean()) * 100 - it["properties"]["s2:nodata_pixel_percentage"]) < 1e-3
        else:
            assert arr.dtype == np.uint16 and (arr[arr > 0] >= 1000).all()  # the +1000 offset
    with rasterio.open(_href(data, dem_items[0]["assets"]["data"]["href"])) as src:
        assert src.dtypes[0] == "float32" and src.nodata == -32767 and src.crs.to_epsg() == 4326
        assert abs(src.res[0] - 1 / 3600) < 1e-12


def test_acquisitions_before_and_after_each_event(s2_items, regions, data):
    for r in regions:
        items = _region_items(s2_items, r, data)
        props = [it["properties"] for it in items]
        days = sorted({p["datetime"][:10] for p in props})
        pre = [d for d in r["pre_dates"]]
        post = [d for d in r["post_dates"]]
        assert len(pre) >= 3 and len(post) >= 3
        assert all(d < r["event_date"] for d in pre) and all(d > r["event_date"] for d in post)
        assert len(days) == len(pre) + len(post)
        # Each date has its own sky: a fairly clear and a fairly cloudy post-event pass.
        by_day = {}
        for p in props:
            by_day.setdefault(p["datetime"][:10], []).append(p["eo:cloud_cover"])
        covers = sorted(float(np.mean(v)) for d, v in by_day.items())
        assert covers[0] < 10 and covers[-1] > 30
        assert len({p["view:sun_elevation"] for p in props}) == len(days)


# ---- the learning problem ------------------------------------------------------------------


def test_landslides_sit_on_steep_ground_not_on_flat_land(data, regions, dem_items):
    for r in regions:
        tf, shape = _aoi_grid(data, r)
        slope = _slope(_dem_on(data, dem_items, r["epsg"], tf, shape))
        inv = _to_crs(_geojson_union(data / r["inventory"]), r["epsg"])
        aoi = _to_crs(_geojson_union(data / r["aoi"]), r["epsg"])
        slides = rasterize([inv], out_shape=shape, transform=tf).astype(bool)
        inside = rasterize([aoi], out_shape=shape, transform=tf).astype(bool) & np.isfinite(slope)
        slides &= inside
        on_slides, everywhere = slope[slides], slope[inside]
        assert slides.sum() > 200, r["name"]
        med_s, med_all = np.median(on_slides), np.median(everywhere)
        assert med_s > 20.0 and med_s > med_all + 4.0, (r["name"], med_s, med_all)
        assert np.mean(on_slides < 10.0) < 0.03, r["name"]
        assert np.mean(everywhere < 10.0) > 0.05, r["name"]  # there is flat land to avoid


def _granule_composites(data: Path, items: list[dict], event: str) -> dict:
    """Median of the clear observations before and after the event, one granule's grid."""
    out = {}
    for when, sel in (
        ("pre", [i for i in items if i["properties"]["datetime"][:10] < event]),
        ("post", [i for i in items if i["properties"]["datetime"][:10] > event]),
    ):
        stack = []
        for it in sel:
            bands = []
            for b in ("red", "nir"):
                with rasterio.open(_href(data, it["assets"][b]["href"])) as src:
                    bands.append(src.read(1).astype(np.float32))
            with rasterio.open(_href(data, it["assets"]["scl"]["href"])) as src:
                scl = np.repeat(np.repeat(src.read(1), 2, axis=0), 2, axis=1)
            arr = (np.stack(bands) - 1000.0) / 10000.0
            arr[:, np.isin(scl, NOT_CLEAR) | (bands[0] == 0)] = np.nan
            stack.append(arr)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[when] = np.nanmedian(np.stack(stack), axis=0)
    return out


def test_post_event_change_marks_landslides_and_little_else(data, regions, s2_items, dem_items):
    for r in regions:
        epsg = r["epsg"]
        items = [i for i in _region_items(s2_items, r, data) if _epsg(i) == epsg]
        # The granule that sees most of the AOI.
        by_tile: dict[str, list[dict]] = {}
        for it in items:
            by_tile.setdefault(it["properties"]["grid:code"], []).append(it)
        tile_items = max(by_tile.values(), key=lambda v: 100 - v[0]["properties"]["s2:nodata_pixel_percentage"])
        asset = tile_items[0]["assets"]["red"]
        tf, shape = Affine(*asset["proj:transform"]), tuple(asset["proj:shape"])
        comp = _granule_composites(data, tile_items, r["event_date"])
        inv = _to_crs(_geojson_union(data / r["inventory"]), epsg)
        area = _to_crs(_geojson_union(data / r["inventory_area"]), epsg)
        core = (
            rasterize([inv.buffer(-8)], out_shape=shape, transform=tf).astype(bool)
            if not inv.buffer(-8).is_empty
            else np.zeros(shape, bool)
        )
        core &= rasterize([area], out_shape=shape, transform=tf).astype(bool)
        near = rasterize([inv.buffer(60)], out_shape=shape, transform=tf).astype(bool)
        slope = _slope(_dem_on(data, dem_items, epsg, tf, shape))
        red_pre, nir_pre = comp["pre"]
        red_post, nir_post = comp["post"]
        ndvi_pre = (nir_pre - red_pre) / (nir_pre + red_pre)
        ndvi_post = (nir_post - red_post) / (nir_post + red_post)
        ok = np.isfinite(ndvi_pre) & np.isfinite(ndvi_post)
        hill = ok & ~near & (slope > 15)
        slid = ok & core
        assert slid.sum() > 50 and hill.sum() > 1000, r["name"]
        d_red, d_nir, d_ndvi = red_post - red_pre, nir_post - nir_pre, ndvi_post - ndvi_pre
        # > 0.04 reflectance: broad slides (width/length up to 0.8) keep more of their margin's cover
        assert np.median(d_red[slid]) > 0.04, r["name"]
        assert np.median(d_ndvi[slid]) < -0.25, r["name"]
        assert np.median(d_nir[slid]) < 0.01, r["name"]  # bare soil: NIR falls or stays (dry seasons)
        assert np.mean(d_red[slid] > 0.02) > 0.8, r["name"]
        # Away from landslides (and off the flat farmland) the change is small ...
        assert abs(np.median(d_red[hill])) < 0.01 and abs(np.median(d_ndvi[hill])) < 0.08, r["name"]
        # (old scars and cloud remnants, the confounders, take a few % of the hills)
        assert np.mean(d_ndvi[hill] < -0.25) < 0.05, r["name"]


def test_confounders_exist(data, regions, s2_items, dem_items):
    """What a naive change detector gets wrong must be there: harvests, old scars, cloud remnants."""
    harvested = old_scars = remnants = 0
    for r in regions:
        epsg = r["epsg"]
        items = [i for i in _region_items(s2_items, r, data) if _epsg(i) == epsg]
        tile = max(
            {i["properties"]["grid:code"] for i in items},
            key=lambda c: (
                -next(i for i in items if i["properties"]["grid:code"] == c)["properties"]["s2:nodata_pixel_percentage"]
            ),
        )
        tile_items = [i for i in items if i["properties"]["grid:code"] == tile]
        asset = tile_items[0]["assets"]["red"]
        tf, shape = Affine(*asset["proj:transform"]), tuple(asset["proj:shape"])
        comp = _granule_composites(data, tile_items, r["event_date"])
        inv = _to_crs(_geojson_union(data / r["inventory"]), epsg)
        near = rasterize([inv.buffer(60)], out_shape=shape, transform=tf).astype(bool)
        slope = _slope(_dem_on(data, dem_items, epsg, tf, shape))
        (rp, nrp), (rq, nrq) = comp["pre"], comp["post"]
        ndvi_pre, ndvi_post = (nrp - rp) / (nrp + rp), (nrq - rq) / (nrq + rq)
        with np.errstate(invalid="ignore"):
            flat_loss = ~near & (slope < 6) & (ndvi_post - ndvi_pre < -0.25)
            bare_both = ~near & (slope > 25) & (ndvi_pre < 0.3) & (ndvi_post < 0.3)
        harvested += int(flat_loss.sum())
        old_scars += int(ndimage.label(bare_both)[1])
        # Cloud remnants: pixels the SCL calls clear, yet much brighter in blue than usual.
        for it in tile_items:
            with rasterio.open(_href(data, it["assets"]["blue"]["href"])) as src:
                blue = src.read(1).astype(np.float32)
            with rasterio.open(_href(data, it["assets"]["scl"]["href"])) as src:
                scl = np.repeat(np.repeat(src.read(1), 2, axis=0), 2, axis=1)
            clear = (blue > 0) & ~np.isin(scl, NOT_CLEAR)
            if clear.sum() > 1000:
                base = np.median(blue[clear])
                remnants += int((clear & (blue > base + 600)).sum())
    assert harvested > 100, harvested
    assert old_scars > 10, old_scars
    assert remnants > 100, remnants
