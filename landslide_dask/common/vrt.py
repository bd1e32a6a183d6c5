"""GDAL VRT files: one raster band assembled from sources, written as XML.

Two stages write VRTs: the catalogue (one band of a multi-band GeoTIFF as its own asset, with a
nodata value the file lacks) and the country job (a mosaic of per-cell COGs on one UTM grid).
GDAL's own ``BuildVRT`` would do the mosaic but needs every source readable from this process at
build time and cannot name sources by object-store paths it cannot open (``/vsis3/`` keys
written through fsspec); the XML is small and documented, so it is written here once.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .files import write_text

__all__ = ["VrtSource", "vrt_xml", "write_vrt_xml", "gdal_number"]


@dataclass(frozen=True)
class VrtSource:
    """One source band placed on the VRT's grid.

    ``relative``: ``filename`` is relative to the VRT (else absolute or a ``/vsi...`` path).
    ``size``/``block``: the source's (width, height) and (block width, block height).
    ``dst_offset``: where its top-left pixel lands on the VRT (x, y). ``nodata``: source pixels
    with this value are not copied (a ComplexSource). ``use_mask``: honour the source's mask band."""

    filename: str
    size: tuple[int, int]
    block: tuple[int, int]
    data_type: str
    band: int = 1
    relative: bool = False
    dst_offset: tuple[int, int] = (0, 0)
    nodata: float | None = None
    use_mask: bool = False


def gdal_number(v: float) -> str:
    """A value as VRT text: '0' rather than '0.0', full precision otherwise, 'nan'/'inf' as such."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def vrt_xml(
    width: int,
    height: int,
    crs_wkt: str,
    geotransform: tuple[float, ...],
    data_type: str,
    sources: list[VrtSource],
    *,
    description: str | None = None,
    nodata: float | None = None,
    axis_mapping: str = "1,2",
    scale: float | None = None,
) -> str:
    """The XML of a one-band VRT of ``width`` x ``height`` pixels. ``geotransform``: GDAL order
    (x0, dx, 0, y0, 0, dy). ``axis_mapping``: ``dataAxisToSRSAxisMapping`` (1,2: x/easting first).
    ``scale``: the band's value scale (GDAL ``GetScale``)."""
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    srs = ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping=axis_mapping)
    srs.text = crs_wkt
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in geotransform)
    band = ET.SubElement(root, "VRTRasterBand", dataType=data_type, band="1")
    if description:
        ET.SubElement(band, "Description").text = description
    if scale is not None:
        ET.SubElement(band, "Scale").text = gdal_number(scale)
    if nodata is not None:
        ET.SubElement(band, "NoDataValue").text = gdal_number(nodata)
    for s in sources:
        complex_ = s.nodata is not None or s.use_mask
        el = ET.SubElement(band, "ComplexSource" if complex_ else "SimpleSource")
        ET.SubElement(el, "SourceFilename", relativeToVRT="1" if s.relative else "0").text = s.filename
        ET.SubElement(el, "SourceBand").text = str(s.band)
        (w, h), (bw, bh) = s.size, s.block
        ET.SubElement(
            el,
            "SourceProperties",
            RasterXSize=str(w),
            RasterYSize=str(h),
            DataType=s.data_type,
            BlockXSize=str(bw),
            BlockYSize=str(bh),
        )
        ET.SubElement(el, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(el, "DstRect", xOff=str(s.dst_offset[0]), yOff=str(s.dst_offset[1]), xSize=str(w), ySize=str(h))
        if s.nodata is not None:
            ET.SubElement(el, "NODATA").text = gdal_number(s.nodata)
        if s.use_mask:
            ET.SubElement(el, "UseMaskBand").text = "true"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_vrt_xml(path: str | Path, xml: str) -> Path:
    """Write a VRT atomically (a reader never opens half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, xml)
