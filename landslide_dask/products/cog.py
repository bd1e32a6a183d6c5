"""Cloud-Optimized GeoTIFFs of a map: the probability and the status (where the map is blind).

One streaming writer (:func:`stream_cog`) for both: the source is read block by block into a tiled
temporary GeoTIFF, which ``rio_cogeo.cog_translate`` turns into the COG with overviews; only a
validated file takes the final name, so memory stays at one block and a killed run leaves no
finished-looking file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..predict.store import open_prediction

__all__ = ["STATUS", "STATUS_COLOURS", "export_cog", "export_status", "status_block", "stream_cog", "cog_from_raster"]

#: Status codes of the not-mapped layer (uint8; 0 is nodata). What a responder must know of each
#: pixel before reading its probability.
STATUS: dict[int, str] = {
    0: "outside the mapped area",
    1: "mapped",
    2: "mapped from post-event imagery and terrain only (no pre-event image)",
    3: "not mapped: no usable post-event image or terrain (cloud, no data)",
    4: "not mapped: no pre-event image",
}
#: RGBA of each status code, shared by the COG's colour table, its QGIS style and the web map.
STATUS_COLOURS: dict[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 0),
    1: (255, 255, 255, 0),
    2: (70, 130, 180, 90),
    3: (90, 90, 90, 170),
    4: (128, 64, 160, 160),
}


def status_block(valid: np.ndarray, no_pre: np.ndarray | None, inside: np.ndarray | None) -> np.ndarray:
    """Status codes (:data:`STATUS`) of one block from the prediction's ``valid`` and ``no_pre``
    layers and the area of interest (``inside``; None: the whole grid)."""
    valid = np.asarray(valid, bool)
    no_pre = np.zeros_like(valid) if no_pre is None else np.asarray(no_pre, bool)
    inside = np.ones_like(valid) if inside is None else np.asarray(inside, bool)
    out = np.where(valid, np.where(no_pre, 2, 1), np.where(no_pre, 4, 3)).astype(np.uint8)
    out[~inside & ~valid] = 0
    return out


Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray | None]]


def stream_cog(
    out_tif: str | Path,
    read: Reader,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    *,
    crs,
    transform,
    dtype: str = "uint8",
    nodata: float | None = None,
    tags: dict | None = None,
    scale: float | None = None,
    colormap: dict | None = None,
    description: str | None = None,
    blocksize: int = 512,
    overview_resampling: str = "average",
) -> Path:
    """Write a one-band COG from ``read(y0, y1, x0, x1) -> (data, mask)`` called once per chunk
    (``mask``: 255 where valid, or None to rely on ``nodata``). ``scale``: GDAL band scale (values
    x scale = physical value). ``colormap``: a colour table {value: RGBA}."""
    import rasterio
    from rasterio.windows import Window
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    out_tif = Path(out_tif)
    h, w = shape
    out_tif.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tif.with_name(out_tif.name + ".tmp.tif")
    part = out_tif.with_name(out_tif.name + ".partial")
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=blocksize,
        blockysize=blocksize,
        compress="DEFLATE",
        BIGTIFF="IF_SAFER",
    )
    if nodata is not None:
        profile["nodata"] = nodata
    cog = cog_profiles.get("deflate")
    cog.update(blockxsize=blocksize, blockysize=blocksize, BIGTIFF="IF_SAFER", predictor=2)
    cy, cx = chunks
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
                if scale is not None:
                    dst.scales = (scale,)
                if description:
                    dst.set_band_description(1, description)
                if colormap:
                    dst.write_colormap(1, colormap)
                for y0 in range(0, h, cy):
                    for x0 in range(0, w, cx):
                        y1, x1 = min(y0 + cy, h), min(x0 + cx, w)
                        win = Window(x0, y0, x1 - x0, y1 - y0)
                        data, mask = read(y0, y1, x0, x1)
                        dst.write(data, 1, window=win)
                        if mask is not None:
                            dst.write_mask(mask, window=win)
            cog_translate(
                tmp,
                part,
                cog,
                overview_resampling=overview_resampling,
                in_memory=False,
                quiet=True,
                config={"GDAL_TIFF_INTERNAL_MASK": True},
                colormap=colormap,
                forward_band_tags=True,
            )
        ok, errors, _ = cog_validate(str(part), quiet=True)
        if not ok:  # pragma: no cover - rio-cogeo writes valid COGs
            raise RuntimeError(f"rio-cogeo wrote an invalid COG for {out_tif}: {errors}")
        part.replace(out_tif)
    finally:
        for f in (tmp, tmp.with_name(tmp.name + ".msk"), part):
            f.unlink(missing_ok=True)
    return out_tif


def cog_from_raster(
    src: str | Path, out_tif: str | Path, *, overview_resampling: str = "average", blocksize: int = 512
) -> Path:
    """A COG copy of any raster GDAL reads (a VRT mosaic, a tiled GeoTIFF), metadata and masks kept."""
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    out_tif = Path(out_tif)
    part = out_tif.with_name(out_tif.name + ".partial")
    cog = cog_profiles.get("deflate")
    cog.update(blockxsize=blocksize, blockysize=blocksize, BIGTIFF="IF_SAFER", predictor=2)
    try:
        cog_translate(
            str(src),
            part,
            cog,
            overview_resampling=overview_resampling,
            in_memory=False,
            quiet=True,
            config={"GDAL_TIFF_INTERNAL_MASK": True},
            forward_band_tags=True,
        )
        part.replace(out_tif)
    finally:
        part.unlink(missing_ok=True)
    return out_tif


def _georef(attrs: dict):
    from rasterio.transform import Affine

    crs = attrs.get("crs") or (f"EPSG:{attrs['epsg']}" if attrs.get("epsg") else None)
    transform = Affine(*attrs["transform"][:6]) if "transform" in attrs else Affine.identity()
    return crs, transform


def export_cog(
    pred: str | Path, out_tif: str | Path, *, blocksize: int = 512, overview_resampling: str = "average"
) -> Path:
    """The probability as a COG: one uint8 band, exactly the zarr's values (p x 255), band scale
    1/255 in its metadata (QGIS and ``gdalinfo`` show probabilities).

    Pixels not mapped are 0 **and** masked by an internal mask band (``read(masked=True)``), not
    by a nodata value: 0 is also a legitimate probability, and a nodata of 255 would clip the top.
    """
    import zarr

    pred = Path(pred)
    open_prediction(pred)  # refuses unfinished output
    g = zarr.open_group(str(pred), mode="r")
    prob, valid, attrs = g["probability"], g["valid"], dict(g.attrs)
    crs, transform = _georef(attrs)

    def read(y0: int, y1: int, x0: int, x1: int):
        return prob[y0:y1, x0:x1], np.where(valid[y0:y1, x0:x1], 255, 0).astype(np.uint8)

    tags = dict(
        product="landslide probability x 255",
        threshold=attrs.get("threshold"),
        threshold_rule=attrs.get("threshold_rule"),
        model=attrs.get("model"),
        window=attrs.get("window"),
        overlap=attrs.get("overlap"),
        event_date=attrs.get("event_date"),
    )
    return stream_cog(
        out_tif,
        read,
        prob.shape,
        prob.chunks,
        crs=crs,
        transform=transform,
        tags=tags,
        scale=1.0 / 255.0,
        description="landslide probability x 255",
        blocksize=blocksize,
        overview_resampling=overview_resampling,
    )


def export_status(
    pred: str | Path,
    out_tif: str | Path,
    inside: Callable[[int, int, int, int], np.ndarray] | None = None,
    *,
    blocksize: int = 512,
) -> tuple[Path, np.ndarray]:
    """The not-mapped layer as a COG: status codes (:data:`STATUS`), 0 nodata, a colour table.
    ``inside(y0, y1, x0, x1)``: the area of interest of a block (None: the whole grid). Returns the
    COG and the pixel count of each code, counted in the same pass (the products' areas)."""
    import zarr

    pred = Path(pred)
    open_prediction(pred)
    g = zarr.open_group(str(pred), mode="r")
    valid, attrs = g["valid"], dict(g.attrs)
    no_pre = g["no_pre"] if "no_pre" in g else None
    crs, transform = _georef(attrs)
    counts = np.zeros(len(STATUS), np.int64)

    def read(y0: int, y1: int, x0: int, x1: int):
        np_ = None if no_pre is None else no_pre[y0:y1, x0:x1]
        box = None if inside is None else inside(y0, y1, x0, x1)
        block = status_block(valid[y0:y1, x0:x1], np_, box)
        counts[:] += np.bincount(block.ravel(), minlength=len(STATUS))[: len(STATUS)]
        return block, None

    tags = {"product": "landslide map status", **{f"code_{k}": v for k, v in STATUS.items()}}
    cog = stream_cog(
        out_tif,
        read,
        valid.shape,
        valid.chunks,
        crs=crs,
        transform=transform,
        nodata=0,
        tags=tags,
        colormap=STATUS_COLOURS,
        description="map status (see tags code_N)",
        blocksize=blocksize,
        overview_resampling="nearest",
    )
    return cog, counts
