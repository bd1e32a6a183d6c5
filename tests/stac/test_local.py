"""``--stac`` without a server: a ``catalog`` folder, a static STAC catalog, an ItemCollection file,
each searched exactly as the loopback STAC API searches the same items; and the README's two
commands from one's own GeoTIFFs to a cube."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from landslide_dask.cli import main as cli_main
from landslide_dask.cube.read import open_cube
from landslide_dask.errors import EmptySearchError, UsageError
from landslide_dask.stac.local import load_stac_dir
from landslide_dask.stac.search import search_items
from landslide_dask.stac.server import serve_stac

from .test_search import COL, DEM, REGION_A, REGION_B, WORLD, _inside, build_stac_folder, ids


@pytest.fixture(scope="module")
def stac_dir(tmp_path_factory) -> Path:
    return build_stac_folder(tmp_path_factory.mktemp("localdir"))


@pytest.fixture(scope="module")
def server(stac_dir):
    with serve_stac(stac_dir) as url:
        yield url


@pytest.fixture(scope="module")
def static_catalog(stac_dir, tmp_path_factory) -> Path:
    """The same items as a static catalog written by pystac: catalog.json -> collections -> items,
    relative links and relative asset hrefs."""
    root = tmp_path_factory.mktemp("static")
    cols, items = load_stac_dir(stac_dir)
    cat = pystac.Catalog("local", "the test items as a static catalog")
    for c in cols:
        col = pystac.Collection.from_dict({**c, "links": []})
        col.add_items([pystac.Item.from_dict(it) for it in items if it["collection"] == c["id"]])
        cat.add_child(col)
    cat.normalize_hrefs(str(root / "catalog"))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog"


@pytest.fixture(scope="module")
def item_collection(stac_dir) -> Path:
    """The same items as one ItemCollection file, asset hrefs relative to it."""
    items = load_stac_dir(stac_dir)[1]
    base = stac_dir.resolve()
    for it in items:
        for a in it["assets"].values():
            if Path(a["href"]).is_relative_to(base):
                a["href"] = str(Path(a["href"]).relative_to(base))
    path = stac_dir / "search.geojson"  # beside the assets, so relative hrefs resolve
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


QUERIES = [
    dict(collections=[COL], bbox=_inside(REGION_A)),
    dict(collections=[COL], bbox=_inside(REGION_B)),
    dict(collections=[COL], bbox=(10.9, 45.9, 12.0, 47.0)),  # clips a corner
    dict(collections=[COL, DEM], bbox=_inside(REGION_A)),
    dict(collections=[COL], bbox=_inside(REGION_A), datetime=("2024-05-10", "2024-06-30")),
    dict(collections=[COL], bbox=WORLD, datetime=(date(2024, 5, 1), date(2024, 5, 3))),
    dict(collections=[COL], bbox=WORLD, datetime=(datetime(2024, 5, 1, 12), None)),
    dict(collections=[COL], bbox=WORLD, max_cloud=20),
    dict(collections=[COL], bbox=WORLD, max_cloud=60),
    dict(collections=[COL], bbox=_inside(REGION_B), datetime=("2024-05-01", "2024-05-31"), max_cloud=50),
    dict(collections=[DEM], bbox=_inside(REGION_A), datetime=("2024-05-01", "2024-05-31")),
]


@pytest.mark.parametrize("kind", ["catalog folder", "static catalog", "catalog.json", "item collection"])
def test_a_local_source_finds_what_the_server_finds(kind, server, stac_dir, static_catalog, item_collection):
    source = {
        "catalog folder": stac_dir,
        "static catalog": static_catalog,
        "catalog.json": static_catalog / "catalog.json",
        "item collection": item_collection,
    }[kind]
    for q in QUERIES:
        q = dict(q)
        cols, bbox = q.pop("collections"), q.pop("bbox")
        try:
            expected = ids(search_items(server, cols, bbox, **q))
        except EmptySearchError:
            expected = set()
        try:
            got = ids(search_items(str(source), cols, bbox, **q))
        except EmptySearchError:
            got = set()
        assert got == expected, (kind, cols, bbox, q)
    item = search_items(str(source), [COL], _inside(REGION_A), datetime=("2024-05-01", "2024-05-01"))[0]
    with rasterio.open(item["assets"]["red"]["href"]) as src:  # relative hrefs made absolute
        assert int(src.read(1)[0, 0]) == 100


def test_an_empty_local_search_says_what_to_widen_as_the_api_does(stac_dir):
    with pytest.raises(EmptySearchError) as ei:
        search_items(
            str(stac_dir), [COL], (150.0, -10.0, 151.0, -9.0), datetime=("2024-05-01", "2024-05-31"), max_cloud=20
        )
    msg = str(ei.value)
    for part in (COL, "150.0", "-9.0", "2024-05-01", "2024-05-31", "20", "widen"):
        assert part in msg, (part, msg)
    with pytest.raises(EmptySearchError, match="cloudier.*least cloudy: 5"):
        search_items(str(stac_dir), [COL], _inside(REGION_A), max_cloud=1)
    with pytest.raises(EmptySearchError) as ei:
        search_items(str(stac_dir), ["sentinel-2-l2a"], _inside(REGION_A))
    assert "no collection 'sentinel-2-l2a'" in str(ei.value) and COL in str(ei.value)


def test_max_items_and_signing_apply_to_local_items(stac_dir):
    got = search_items(str(stac_dir), [COL], WORLD, max_items=2, sign=lambda it: it.update(signed=True))
    assert len(got) == 2 and all(it["signed"] for it in got)


def test_what_is_not_a_stac_source_is_an_argument_error(tmp_path):
    with pytest.raises(UsageError, match=r"no such file or folder.*catalog.json.*ItemCollection"):
        search_items(str(tmp_path / "missing"), [COL], WORLD)
    with pytest.raises(UsageError, match=r"neither stac/collections/.*nor catalog.json.*landslide-dask catalog"):
        search_items(str(tmp_path), [COL], WORLD)
    with pytest.raises(UsageError, match="s3://"):
        search_items("s3://bucket/catalog.json", [COL], WORLD)
    (tmp_path / "B04.tif").write_bytes(b"II*\x00")
    with pytest.raises(UsageError, match=r"not a STAC file"):
        search_items(str(tmp_path / "B04.tif"), [COL], WORLD)


# --- the README's two commands: catalog, then cube --stac <folder> ---------------------------------

EPSG, X0, Y0, N = 32645, 300_000.0, 3_100_000.0, 48


def _own_geotiffs(folder: Path) -> np.ndarray:
    """One 4-band GeoTIFF (red, green, blue, nir) without date or STAC, as users have them."""
    data = np.random.default_rng(1).integers(1, 3000, (4, N, N)).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        folder / "scene.tif",
        "w",
        driver="GTiff",
        width=N,
        height=N,
        count=4,
        dtype="uint16",
        crs=f"EPSG:{EPSG}",
        transform=from_origin(X0, Y0, 10, 10),
    ) as dst:
        dst.write(data)
    return data


def test_readme_two_commands_from_own_geotiffs_to_a_cube(tmp_path, capsys):
    data = _own_geotiffs(tmp_path / "tiles")
    stac = tmp_path / "my-stac"
    assert (
        cli_main(
            [
                "catalog",
                str(tmp_path / "tiles"),
                "--out",
                str(stac),
                "--bands",
                "red,green,blue,nir",
                "--datetime",
                "2024-06-20T04:30:00Z",
                "--nodata",
                "0",
            ]
        )
        == 0
    )
    assert f"--stac {stac}" in capsys.readouterr().out  # it says the next command
    from pyproj import Transformer

    (w, e), (s, n) = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(
        [X0 + 30, X0 + 10 * N - 30], [Y0 - 10 * N + 30, Y0 - 30]
    )
    out = tmp_path / "own.zarr"
    rc = cli_main(
        [
            "cube",
            "--stac",
            str(stac),
            "--collection",
            "local-geotiffs",
            "--bands",
            "red,green,blue,nir",
            "--no-cloud-mask",
            "--no-dem",
            "--post-only",
            "--event-date",
            "2024-06-18",
            "--aoi",
            f"{w:.6f},{s:.6f},{e:.6f},{n:.6f}",
            "--chunk",
            "32",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ds = open_cube(out)
    assert list(ds["band"].values) == ["red", "green", "blue", "nir"]
    valid = ds["valid"].values
    assert valid.mean() > 0.9
    c0, r0 = int(round((float(ds["x"][0]) - 5 - X0) / 10)), int(round((Y0 - float(ds["y"][0]) - 5) / 10))
    h, w_ = valid.shape
    np.testing.assert_array_equal(ds["post"].values[:, valid], data[:, r0 : r0 + h, c0 : c0 + w_][:, valid])
    r = ds.attrs["radiometry"]
    assert r["items_unchanged"] == 1 and "none recorded" in next(iter(r["items"].values()))["from"]


def test_cube_with_a_stac_path_that_is_not_there_exits_2(tmp_path, capsys):
    rc = cli_main(
        [
            "cube",
            "--stac",
            str(tmp_path / "nope"),
            "--event-date",
            "2024-06-18",
            "--aoi",
            "85.30,27.70,85.32,27.72",
            "--out",
            str(tmp_path / "x.zarr"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no such file or folder" in err and "landslide-dask catalog" in err
