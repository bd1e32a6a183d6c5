"""The cube grid: one projected CRS, square pixels, bounds snapped to whole pixels."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
from affine import Affine
from pyproj import CRS

from ..errors import InputDataError

__all__ = ["utm_epsg", "Grid"]


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing (lon, lat)."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise InputDataError(
            f"({lon:.4f}, {lat:.4f}) is outside the UTM zones (lat -80..84): "
            "pass a projected CRS explicitly with --epsg (e.g. a polar stereographic EPSG code)."
        )
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: top-left corner (x0, y0), pixel size ``res`` metres, shape."""

    epsg: int
    res: float
    x0: float
    y0: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0 - self.height * self.res, self.x0 + self.width * self.res, self.y0)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.epsg)

    def xs(self) -> np.ndarray:
        """Pixel-centre x coordinates."""
        return self.x0 + (np.arange(self.width) + 0.5) * self.res

    def ys(self) -> np.ndarray:
        """Pixel-centre y coordinates (descending)."""
        return self.y0 - (np.arange(self.height) + 0.5) * self.res

    def padded(self, n: int) -> Grid:
        """The same grid grown by ``n`` pixels on every side (for neighbourhood operations)."""
        return Grid(
            self.epsg, self.res, self.x0 - n * self.res, self.y0 + n * self.res, self.width + 2 * n, self.height + 2 * n
        )

    def window_transform(self, row0: int, col0: int) -> Affine:
        return self.transform @ Affine.translation(col0, row0)

    @classmethod
    def covering(cls, aoi: gpd.GeoDataFrame, res: float = 10.0, epsg: int | None = None) -> Grid:
        """The smallest grid aligned to multiples of ``res`` that covers the AOI.

        The CRS is the UTM zone of the AOI's centre unless given; a geographic CRS is refused,
        because slope and the 10 m pixel contract need metres.
        """
        if aoi.crs is None:
            raise InputDataError("The area of interest has no CRS: save it with one (GeoJSON is EPSG:4326).")
        if epsg is None:
            lon, lat = _centre_lonlat(aoi)
            epsg = utm_epsg(lon, lat)
        crs = CRS.from_epsg(epsg)
        if not crs.is_projected:
            raise InputDataError(
                f"EPSG:{epsg} is not a projected CRS: the cube needs metres. Leave --epsg out to use "
                "the UTM zone of the area, or give a projected EPSG code."
            )
        minx, miny, maxx, maxy = aoi.to_crs(crs).total_bounds
        x0, y1 = np.floor(minx / res) * res, np.floor(miny / res) * res
        x1, y0 = np.ceil(maxx / res) * res, np.ceil(maxy / res) * res
        width, height = int(round((x1 - x0) / res)), int(round((y0 - y1) / res))
        if width < 1 or height < 1:
            raise InputDataError("The area of interest is empty after projection: check its geometry.")
        return cls(epsg=epsg, res=float(res), x0=float(x0), y0=float(y0), width=width, height=height)

    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """The grid's bounds in EPSG:4326 (densified, so it contains the whole grid)."""
        from rasterio.warp import transform_bounds

        return tuple(transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21))


def _centre_lonlat(gdf: gpd.GeoDataFrame) -> tuple[float, float]:
    minx, miny, maxx, maxy = gdf.to_crs("EPSG:4326").total_bounds
    return (minx + maxx) / 2.0, (miny + maxy) / 2.0
