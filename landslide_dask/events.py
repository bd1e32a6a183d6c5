"""Real events as their data are shipped: a folder of per-band GeoTIFFs, a DEM and an inventory
becomes a searchable STAC collection and a labelled cube, by the same public steps a user runs
(``catalog``, then ``cube --stac`` on the catalogue folder; the README's walk-through).

An event is described once here: where its files are inside the folder, the dates to give
mosaics that do not record theirs, and the attribution its inventory's licence asks for on every
map made from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .cube.spec import SCENE_CHUNK
from .errors import InputDataError

__all__ = ["RealEvent", "IBURI_2018", "EVENTS", "event_of", "catalog_event", "event_cube", "split_labels", "map_event"]


@dataclass(frozen=True)
class RealEvent:
    """One real event folder: ``pre-event/``, ``post-event/`` (one GeoTIFF per band), ``dem/``,
    the inventory and the area it covers."""

    name: str
    title: str
    event_date: date
    pre_date: str  # a date inside the pre-event window, for mosaics that do not record theirs
    post_date: str
    aoi: str  # W,S,E,N in degrees: the scene
    inventory: str  # relative to the folder
    inventory_area: str
    bands: tuple[str, ...]
    dn_offset: float  # reflectance = DN x 0.0001 + dn_offset (Sentinel-2: 0 before 2022, -0.1 after)
    attribution: str  # as the licences ask, in the original language
    attribution_latin: str  # the same in Latin script, for maps drawn without a CJK font
    labelled_note: str


IBURI_2018 = RealEvent(
    name="iburi_2018",
    title="2018 Hokkaido Eastern Iburi earthquake (Mw 6.6, 6 September 2018)",
    event_date=date(2018, 9, 6),
    # Earth Engine mosaics without dates: before and after the event (PROVENANCE.md)
    pre_date="2018-08-20",
    post_date="2018-10-01",
    aoi="141.8903,42.6824,142.028,42.7695",
    inventory="inventory/iburi_hillslope_failures_west.gpkg",
    inventory_area="inventory/iburi_traced_area_west.gpkg",
    bands=("blue", "green", "red"),
    dn_offset=0.0,  # 2018 scenes, before Sentinel-2's +1000 DN offset
    attribution=(
        "Inventory: この地図は地理院地図 平成30年北海道胆振東部地震 正射画像をトレースした地図です "
        "https://github.com/koukita/2018_09_06_atumatyou — この地図は、"
        "https://github.com/koukita/2018_09_06_atumatyou で公開されている地図データを改変したものである "
        "(traced by K. Kita; clipped and converted). Imagery: Copernicus Sentinel-2. DSM: AW3D30 (c) JAXA."
    ),
    attribution_latin=(
        "Inventory: traced from the GSI orthophotos of the 2018 Hokkaido Eastern Iburi earthquake, "
        "https://github.com/koukita/2018_09_06_atumatyou (K. Kita); modified from the map data "
        "published at that address (clipped and converted). Imagery: Copernicus Sentinel-2. "
        "DSM: AW3D30 (c) JAXA. Japanese notice: report.md."
    ),
    labelled_note="inventory west of 141.96 E only; the east of the scene is unlabelled here",
)

EVENTS = {e.name: e for e in (IBURI_2018,)}


def event_of(folder: str | Path) -> RealEvent:
    """The event a folder holds, by its name (``../shared/data/iburi_2018`` -> Iburi 2018)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"No event folder at {folder}.")
    event = EVENTS.get(folder.resolve().name)
    if event is None:
        raise InputDataError(
            f"{folder} is not a known real event (known: {', '.join(EVENTS)}). Catalogue and "
            "cube other events with `landslide-dask catalog` and `landslide-dask cube` (README)."
        )
    missing = [
        p
        for p in ("pre-event", "post-event", "dem", event.inventory, event.inventory_area)
        if not (folder / p).exists()
    ]
    if missing:
        raise InputDataError(f"{folder} lacks {', '.join(missing)}: it is not the {event.title} folder as shipped.")
    return event


def catalog_event(folder: str | Path, stac: str | Path) -> Path:
    """Catalogue an event folder as shipped: pre and post scenes into one imagery collection (one
    item per folder, bands by their Sentinel-2 codes), the DEM into a collection without dates."""
    from .stac.catalog import catalog_geotiffs

    folder, stac = Path(folder), Path(stac)
    event = event_of(folder)
    col, dem = f"{event.name}-s2", f"{event.name}-dem"
    catalog_geotiffs(
        folder / "pre-event",
        stac,
        collection=col,
        group="folder",
        dates={"pre-event": event.pre_date},
        replace=True,
        dn_scale=1e-4,
        dn_offset=event.dn_offset,
    )
    catalog_geotiffs(
        folder / "post-event",
        stac,
        collection=col,
        group="folder",
        dates={"post-event": event.post_date},
        dn_scale=1e-4,
        dn_offset=event.dn_offset,
    )
    catalog_geotiffs(folder / "dem", stac, collection=dem, bands=["data"], static=True, replace=True)
    return stac


def event_cube(
    folder: str | Path, out_dir: str | Path, chunk: int = SCENE_CHUNK, progress: bool = True, aoi: str | None = None
) -> Path:
    """The event's labelled cube (``out_dir/<name>.zarr``), built from its catalogue folder (no
    server); a finished cube is reused. ``aoi``: W,S,E,N (default: the whole scene)."""
    from .cube.build import CubeSpec, build_cube

    folder, out_dir = Path(folder), Path(out_dir)
    event = event_of(folder)
    cube = out_dir / f"{event.name}.zarr"
    if (cube / "zarr.json").exists():
        return cube
    stac = catalog_event(folder, out_dir / f"{event.name}-stac")
    spec = CubeSpec(
        stac_url=str(stac),
        event_date=event.event_date,
        aoi=aoi or event.aoi,
        out=cube,
        inventory=folder / event.inventory,
        inventory_area=folder / event.inventory_area,
        collection=f"{event.name}-s2",
        bands=event.bands,
        scl_asset=None,
        dem_collection=f"{event.name}-dem",
        chunk=chunk,
    )
    build_cube(spec, progress=progress, quicklook=False)
    (out_dir / f"{event.name}-event.json").write_text(
        json.dumps(
            {"event": event.name, "title": event.title, "attribution": event.attribution, "note": event.labelled_note},
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )
    return cube


def split_labels(cube: str | Path, index, split: str = "test"):
    """The cube (lazy) with labels kept only inside the ``split`` windows of a training index, so
    a map is scored on a local model's held-out blocks and nothing else."""
    import xarray as xr

    from .cube.read import open_cube
    from .train.chips import split_mask

    ds = open_cube(cube)
    mine = index[(index["path"] == str(cube)) & (index["split"] == split)]
    if not index.attrs.get("window") or not len(mine):
        raise InputDataError(f"no {split} windows of {cube} in the index: nothing to score on")
    keep = split_mask(index, cube, split, (ds.sizes["y"], ds.sizes["x"]))
    mask = xr.DataArray(keep, dims=("y", "x")).chunk(dict(zip(("y", "x"), ds["label"].data.chunksize)))
    return ds.assign(label=ds["label"].where(mask, 255).astype("uint8")), float(keep.mean())


def map_event(
    folder: str | Path,
    model: str | Path,
    out_dir: str | Path,
    *,
    client=None,
    name: str = "map",
    cube: str | Path | None = None,
    scored_on=None,
    progress: bool = True,
    products: bool = True,
) -> dict:
    """Map an event with a trained model and score the map against its inventory: probability,
    polygons, report and a PNG of the map beside the post-event image, with the data's attribution.
    ``scored_on``: a labelled dataset to score against instead of the whole inventory (e.g.
    :func:`split_labels`); ``cube``: the event's cube if built already (default: built in ``out_dir``).
    ``products``: also write the responder's products (COGs, styles, offline web map, STAC item;
    :func:`landslide_dask.products.write_products`) into ``out_dir/<name>-products``; the report's
    ``files`` name them."""
    from .predict import coverage, open_prediction, predict
    from .predict.polygons import polygonize
    from .predict.report import evaluate_map

    folder, out_dir = Path(folder), Path(out_dir)
    event = event_of(folder)
    cube = Path(cube) if cube is not None else event_cube(folder, out_dir, progress=progress)
    pred = predict(cube, model, out_dir / f"{name}-probability.zarr", client=client, progress=progress, overwrite=True)
    polys = polygonize(pred, out_dir / f"{name}-landslides")
    rep = evaluate_map(
        pred,
        cube if scored_on is None else scored_on,
        out_dir / name,
        inventory=folder / event.inventory,
        polygons=polys,
        name=f"{event.name} {name}",
        attribution=event.attribution,
        attribution_latin=event.attribution_latin,
        beside=True,
    )
    rep["coverage"] = coverage(open_prediction(pred))
    rep["event"] = event.name
    if products:
        from .products import write_products

        made = write_products(
            pred,
            out_dir / f"{name}-products",
            polygons=polys,
            inventory=folder / event.inventory,
            attribution=f"{event.title}. {event.attribution}",
            title=f"{event.title}: {name}",
        )
        rep.setdefault("files", {}).update({f"products_{k}": str(v) for k, v in made.items()})
    return rep
