"""Georeferenced image/label tiles (e.g. ArcGIS "Classified Tiles" exports) as one labelled cube.

Why not :mod:`.patches`: those datasets ship patches without a location, laid out on a dummy grid;
tile exports such as the Chattogram Sentinel-2 set are cut from one georeferenced scene, often with
overlap. Here they are merged back onto their own pixel grid (``rasterio.merge``: no resampling
where tiles share a grid, as exports do), then warped to the scene's UTM zone at the cube's
resolution (nearest neighbour, so DN and labels keep their values), so the cube has a real place:
areas are in m², and a checkpoint knows whether it trained on this region.

Labels are sparse samples, not outlines: a label raster's values are mapped to the cube's
(``label_map``; Chattogram: 0 unlabelled -> unknown (255), 1 non-landslide sample -> 0, 2
landslide sample -> 1); where overlapping tiles disagree the larger source value wins (a landslide
sample over a non-landslide one over none). The labelled blobs (connected samples of each class)
are counted in the source and in the cube, and both counts are kept in the cube's attributes.

Only a post-event stream exists (``post``, the bands named by ``bands``); no pre-event image and no
terrain: a model maps such a cube when it was trained with dropout of the streams the cube lacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputDataError
from .inventory import LABEL_UNKNOWN
from .spec import SCENE_CHUNK

__all__ = [
    "CHATTOGRAM_BANDS",
    "CHATTOGRAM_LABELS",
    "SPARSE",
    "sparse_labels",
    "find_tiles",
    "blob_counts",
    "import_tiles",
]

#: Band order of the Chattogram export (per its README: R, G, B, NIR; the blue/red ratio of the
#: imagery, 0.81, agrees with it).
CHATTOGRAM_BANDS = ("red", "green", "blue", "nir")
#: Chattogram label values -> cube labels.
CHATTOGRAM_LABELS = {0: LABEL_UNKNOWN, 1: 0, 2: 1}
#: The cube attribute ``labels`` of such cubes (the index and the reports read it).
SPARSE = "sparse samples (blobs), not outlines; unlabelled pixels are unknown (255)"


def sparse_labels(ds) -> bool:
    """Whether a cube's (dataset's) labels are sparse samples rather than a mapped area."""
    return str(ds.attrs.get("labels", "")).startswith("sparse")


def find_tiles(folder: str | Path, images: str = "images", labels: str = "labels") -> list[tuple[Path, Path]]:
    """(image, label) GeoTIFF pairs of a tile export, paired by file name."""
    folder = Path(folder)
    for cand in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())) if folder.is_dir() else ():
        if (cand / images).is_dir() and (cand / labels).is_dir():
            folder = cand
            break
    else:
        raise InputDataError(
            f"{folder} holds no '{images}/' and '{labels}/' folders of tiles: point at the "
            "export's folder (e.g. .../chattogram_s2_tiles/LandslideData)."
        )
    imgs = sorted((folder / images).glob("*.tif"))
    pairs = [(i, folder / labels / i.name) for i in imgs]
    missing = [str(lab) for _, lab in pairs if not lab.exists()]
    if not pairs:
        raise InputDataError(f"no .tif images in {folder / images}")
    if missing:
        raise InputDataError(f"{len(missing)} images have no label tile of the same name, e.g. {missing[0]}")
    return pairs


def blob_counts(label: np.ndarray, classes: dict[str, int]) -> dict[str, int]:
    """Connected blobs (8-connected) of each named label value."""
    from scipy import ndimage

    return {name: int(ndimage.label(label == v, structure=np.ones((3, 3)))[1]) for name, v in classes.items()}


def import_tiles(
    folder: str | Path,
    out: str | Path,
    *,
    bands: tuple[str, ...] = CHATTOGRAM_BANDS,
    label_map: dict[int, int] | None = None,
    resolution: float = 10.0,
    chunk: int = SCENE_CHUNK,
    region: str | None = None,
    attribution: str | None = None,
    progress: bool = False,
) -> Path:
    """Merge an export's tiles into one cube at ``out`` (zarr, the cube contract: ``post``,
    ``valid``, ``label``; no ``pre``, no terrain). ``bands``: the names of the image channels in
    order; ``label_map``: source label value -> cube label (default Chattogram's); values not in it
    are an error. A pixel is valid where every band is positive and finite."""
    import rasterio
    import xarray as xr
    from pyproj import CRS
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info
    from rasterio.merge import merge
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from .. import __version__
    from .build import write_cube

    label_map = dict(CHATTOGRAM_LABELS if label_map is None else label_map)
    pairs = find_tiles(folder)
    with rasterio.open(pairs[0][0]) as first:
        src_crs, count = first.crs, first.count
    if src_crs is None:
        raise InputDataError(f"{pairs[0][0]} has no CRS: these tiles cannot be placed; use `import-patches`.")
    if count != len(bands):
        raise InputDataError(
            f"{pairs[0][0]} has {count} bands but {len(bands)} band names were given "
            f"({', '.join(bands)}): name every channel, in order."
        )
    img, t_src = merge([str(i) for i, _ in pairs], method="first", nodata=0)
    lab, _ = merge([str(lab) for _, lab in pairs], method="max", nodata=0)
    lab = lab[0].astype(np.int64)
    unknown_values = sorted(set(np.unique(lab).tolist()) - set(label_map))
    if unknown_values:
        raise InputDataError(f"label values {unknown_values} are not in the label mapping {label_map}")
    classes = {
        "landslide": next(k for k, v in label_map.items() if v == 1),
        "non_landslide": next(k for k, v in label_map.items() if v == 0),
    }
    blobs_src = blob_counts(lab, classes)

    h, w = lab.shape
    west, north = t_src.c, t_src.f
    east, south = west + t_src.a * w, north + t_src.e * h
    if src_crs.is_projected:
        dst_crs = src_crs
    else:
        info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(west, south, east, north))
        dst_crs = rasterio.crs.CRS.from_wkt(CRS.from_epsg(info[0].code).to_wkt())
    t_dst, dw, dh = calculate_default_transform(src_crs, dst_crs, w, h, west, south, east, north, resolution=resolution)
    post = np.zeros((len(bands), dh, dw), np.float64)
    reproject(
        img,
        post,
        src_transform=t_src,
        src_crs=src_crs,
        dst_transform=t_dst,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    lab_dst = np.zeros((dh, dw), np.int64)
    reproject(
        lab,
        lab_dst,
        src_transform=t_src,
        src_crs=src_crs,
        dst_transform=t_dst,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
        src_nodata=None,
        dst_nodata=0,
    )
    finite = np.isfinite(post).all(axis=0)
    valid = finite & (post > 0).all(axis=0)
    if not valid.any():
        raise InputDataError(f"no pixel of {folder} is positive in every band: nothing to import")
    dn = np.where(valid[None], np.clip(np.round(np.nan_to_num(post)), 1, 65535), 0).astype(np.uint16)
    label = np.full((dh, dw), LABEL_UNKNOWN, np.uint8)
    for src, dst in label_map.items():
        label[lab_dst == src] = dst
    label[~valid] = LABEL_UNKNOWN
    blobs = blob_counts(label, {"landslide": 1, "non_landslide": 0})

    epsg = dst_crs.to_epsg()
    ys = t_dst.f + t_dst.e * (np.arange(dh) + 0.5)
    xs = t_dst.c + t_dst.a * (np.arange(dw) + 0.5)
    crs_wkt = CRS.from_user_input(dst_crs.to_wkt()).to_wkt()
    ds = xr.Dataset(
        {"post": (("band", "y", "x"), dn), "valid": (("y", "x"), valid), "label": (("y", "x"), label)},
        coords={
            "band": np.array(bands, dtype=object),
            "y": ys,
            "x": xs,
            "spatial_ref": xr.DataArray(0, attrs={"crs_wkt": crs_wkt, "spatial_ref": crs_wkt}),
        },
    )
    folder = Path(folder)
    ds.attrs.update(
        {
            "crs": f"EPSG:{epsg}",
            "epsg": epsg,
            "transform": [t_dst.a, t_dst.b, t_dst.c, t_dst.d, t_dst.e, t_dst.f],
            "resolution": float(resolution),
            "bands": list(bands),
            "dn_scale_offset": [1e-4, 0.0],
            "region": region or folder.name,
            "source": str(folder),
            "source_tiles": len(pairs),
            "source_crs": str(src_crs),
            "label_map": {str(k): int(v) for k, v in label_map.items()},
            "labels": SPARSE,
            "blobs_source": blobs_src,
            "blobs": blobs,
            "streams": ["post"],
            "landslide_dask_version": __version__,
            **({"attribution": attribution} if attribution else {}),
        }
    )
    ds = ds.chunk({"band": -1, "y": chunk, "x": chunk})
    return write_cube(ds, Path(out), progress=progress)
