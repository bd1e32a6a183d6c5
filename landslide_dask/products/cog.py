"""The probability as a Cloud-Optimized GeoTIFF, for GIS users and tile servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import open_prediction

__all__ = ["export_cog"]


def export_cog(pred: str | Path, out_tif: str | Path, *, blocksize: int = 512, compress: str = "DEFLATE",
               overview_resampling: str = "average") -> Path:
    """Write the probability as a Cloud-Optimized GeoTIFF (rio-cogeo), one uint8 band.

    Values are exactly the zarr's (p x 255, 0..255). Invalid pixels are 0 **and** masked by an
    internal per-dataset mask band (GDAL mask, ``read(masked=True)``), not by a nodata value:
    0 is also a legitimate probability, and a nodata value of 255 would have to clip the top
    level. Memory stays at one chunk: the zarr is streamed into a tiled temporary GeoTIFF, which
    ``rio_cogeo.cog_translate`` turns into the COG (overviews by ``overview_resampling``); only a
    validated file takes the final name.
    """
    import rasterio
    import zarr
    from rasterio.transform import Affine
    from rasterio.windows import Window
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    pred, out_tif = Path(pred), Path(out_tif)
    open_prediction(pred)  # refuses unfinished output
    g = zarr.open_group(str(pred), mode="r")
    prob, valid, attrs = g["probability"], g["valid"], dict(g.attrs)
    h, w = prob.shape
    crs = attrs.get("crs") or (f"EPSG:{attrs['epsg']}" if attrs.get("epsg") else None)
    transform = Affine(*attrs["transform"][:6]) if "transform" in attrs else Affine.identity()
    out_tif.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tif.with_name(out_tif.name + ".tmp.tif")
    part = out_tif.with_name(out_tif.name + ".partial")
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs, transform=transform,
                   tiled=True, blockxsize=blocksize, blockysize=blocksize, compress="DEFLATE", BIGTIFF="IF_SAFER")
    cog = cog_profiles.get(compress.lower())
    cog.update(blockxsize=blocksize, blockysize=blocksize, BIGTIFF="IF_SAFER")
    if compress.upper() in ("DEFLATE", "ZSTD", "LZW"):
        cog["predictor"] = 2
    cy, cx = prob.chunks
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.update_tags(product="landslide probability x 255", threshold=str(attrs.get("threshold")),
                                model=str(attrs.get("model")), window=str(attrs.get("window")),
                                overlap=str(attrs.get("overlap")))
                for y0 in range(0, h, cy):
                    for x0 in range(0, w, cx):
                        y1, x1 = min(y0 + cy, h), min(x0 + cx, w)
                        win = Window(x0, y0, x1 - x0, y1 - y0)
                        dst.write(prob[y0:y1, x0:x1], 1, window=win)
                        dst.write_mask(np.where(valid[y0:y1, x0:x1], 255, 0).astype(np.uint8), window=win)
            cog_translate(tmp, part, cog, overview_resampling=overview_resampling.lower(), in_memory=False,
                          quiet=True, config={"GDAL_TIFF_INTERNAL_MASK": True})
        ok, errors, _ = cog_validate(str(part), quiet=True)  # its warnings went to stdout, one per cell
        if not ok:  # pragma: no cover - rio-cogeo writes valid COGs
            raise RuntimeError(f"rio-cogeo wrote an invalid COG for {out_tif}: {errors}")
        part.replace(out_tif)
    finally:
        for f in (tmp, tmp.with_name(tmp.name + ".msk"), part):
            f.unlink(missing_ok=True)
    return out_tif
