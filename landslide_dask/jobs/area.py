"""The ``area`` of a job spec: a vector file (optionally one country of it) or a bbox in degrees,
validated, and resolved to one shapely geometry in EPSG:4326.

Country boundaries: no well-kept pip package ships them for offline use (``geodatasets`` and
cartopy download Natural Earth on first use, ``pycountry`` has no geometries, the Natural Earth
sample left geopandas in 1.0), and the pipeline never downloads at run time. So ``country``
alone is refused with instructions; with ``file`` (a world or regional admin-0 file, e.g. Natural
Earth "Admin 0 - Countries" or geoBoundaries ADM0) it selects the feature(s) whose ISO column
(``ISO_A3``, ``ADM0_A3``, ``shapeGroup``, ``GID_0``, ...) holds the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..common.validation import Strict, fail, fail_all, show
from ..errors import JobSpecError
from .locations import base_dir, is_local, resolve_path

__all__ = ["COUNTRY_COLUMNS", "COUNTRY_ONLY_MSG", "Area"]

COUNTRY_COLUMNS = (
    "ISO_A3",
    "ADM0_A3",
    "ISO_A3_EH",
    "SOV_A3",
    "GU_A3",
    "ISO3",
    "ISO",
    "shapeGroup",
    "shapeISO",
    "GID_0",
    "iso_a3",
    "adm0_a3",
    "iso3",
)

COUNTRY_ONLY_MSG = (
    "`country: {code}` needs a boundary file: no installed package ships country boundaries for "
    "offline use, and jobs never download at run time. Download the boundary once, e.g. Natural "
    'Earth "Admin 0 - Countries" (naturalearthdata.com) or geoBoundaries ADM0 for {code} '
    "(geoboundaries.org), and give it as `file: <path>` (keep `country: {code}` to pick that "
    "country from a world file)"
)

# UTM zones, which processing cells use, span 80°S to 84°N
_UTM_SOUTH, _UTM_NORTH = -80.0, 84.0


class Area(Strict):
    """The area to map: exactly one of ``file`` (with an optional ``country``) and ``bbox``."""

    file: Path | None = Field(None, description="the path of a GeoJSON/GeoPackage/Shapefile", examples=["nepal.gpkg"])
    bbox: tuple[float, float, float, float] | None = Field(
        None,
        description="[west, south, east, north] in degrees, west < east, south < north",
        examples=["[84.0, 27.3, 86.8, 28.6]"],
    )
    country: str | None = Field(None, description="an ISO 3166-1 alpha-3 code, together with `file`", examples=["NPL"])

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, v: Any, info: ValidationInfo) -> Path | None:
        if v is None or isinstance(v, Path):
            return v
        if not isinstance(v, str):
            raise ValueError(f"got {show(v)}, not text")
        if not v.strip():
            raise ValueError("empty path")
        if not is_local(v):
            raise ValueError(f"{v!r} is a URL: download the boundary once and give its local path")
        return resolve_path(base_dir(info), v)

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, raw: Any) -> tuple[float, float, float, float] | None:
        if raw is None:
            return None
        if not isinstance(raw, (list, tuple)) or len(raw) != 4:
            raise ValueError(f"got {show(raw)}; a bbox is a list of 4 numbers")
        for i, x in enumerate(raw):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                fail(f"got {show(x)}, not a number", i)
        w, s, e, n = (float(x) for x in raw)
        outside = [
            (
                (i,),
                f"{what} = {val:g} is outside {lo}..{hi} degrees (is the bbox in metres? it must be "
                "longitude/latitude, EPSG:4326)",
            )
            for i, (val, lo, hi, what) in enumerate(
                [(w, -180, 180, "west"), (s, -90, 90, "south"), (e, -180, 180, "east"), (n, -90, 90, "north")]
            )
            if not lo <= val <= hi
        ]
        if outside:
            fail_all(outside)
        if w >= e:
            hint = (
                " If the area crosses the antimeridian (180°), split it into two jobs or give a file with "
                "two polygons, one each side of 180°"
                if w > e
                else ""
            )
            raise ValueError(f"west ({w:g}) must be less than east ({e:g}).{hint}")
        if s >= n:
            raise ValueError(f"south ({s:g}) must be less than north ({n:g}); the order is [west, south, east, north]")
        if n > _UTM_NORTH or s < _UTM_SOUTH:
            raise ValueError(
                f"reaches latitude {n if n > _UTM_NORTH else s:g}°, outside the UTM zones (80°S to "
                "84°N) that processing cells use: clip it to that range"
            )
        return (w, s, e, n)

    @field_validator("country", mode="before")
    @classmethod
    def _country(cls, v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str):
            raise ValueError(f"got {show(v)}, not text")
        code = v.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValueError(f"{v!r} is not an ISO 3166-1 alpha-3 code")
        return code

    @model_validator(mode="after")
    def _exactly_one(self) -> Area:
        if self.file is not None and self.bbox is not None:
            fail("give exactly one of `file` and `bbox`, not both")
        if self.file is None and self.bbox is None:
            if self.country:
                fail(COUNTRY_ONLY_MSG.format(code=self.country), "country")
            fail("no area given: add `file` or `bbox`")
        if self.bbox is not None and self.country:
            fail("`country` selects a feature of `file`; it cannot be used with `bbox`", "country")
        return self

    def describe(self) -> str:
        if self.bbox is not None:
            return "bbox [" + ", ".join(f"{v:g}" for v in self.bbox) + "]"
        return f"{self.file}" + (f" (country {self.country})" if self.country else "")

    def geometry(self):
        """The area as one shapely (Multi)Polygon in EPSG:4326."""
        import shapely

        if self.bbox is not None:
            return shapely.box(*self.bbox)
        from ..cube.inventory import read_polygons

        gdf, _ = read_polygons(self.file, what="area")
        if self.country:
            gdf = _select_country(gdf, self.country, self.file)
        gdf = gdf.to_crs("EPSG:4326")
        geom = shapely.union_all(gdf.geometry.values)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        return geom


def _select_country(gdf, code: str, path: Path):
    cols = [c for c in COUNTRY_COLUMNS if c in gdf.columns]
    if not cols:
        raise JobSpecError(
            str(path),
            [
                (
                    "area.country",
                    (
                        f"{path} has no ISO country column (looked for {', '.join(COUNTRY_COLUMNS[:8])}, ...); "
                        f"its columns are {', '.join(map(str, gdf.columns[:15]))}. Remove `country` if the file is "
                        "already the area, or use an admin-0 file such as Natural Earth's or geoBoundaries'"
                    ),
                )
            ],
        )
    mask = None
    for c in cols:
        m = gdf[c].astype(str).str.upper() == code
        mask = m if mask is None else (mask | m)
    sel = gdf[mask]
    if not len(sel):
        raise JobSpecError(
            str(path),
            [
                (
                    "area.country",
                    (f"no feature of {path} has {code} in {', '.join(cols)}: check the ISO 3166-1 alpha-3 code"),
                )
            ],
        )
    return sel
