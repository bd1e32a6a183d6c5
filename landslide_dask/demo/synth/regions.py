"""The conventions of the written data, and the regions: what differs between them.

The constants are the contract with the rest of the pipeline (grid steps, DN offset, bands, SCL
classes, STAC extensions), shared by every module that writes a file. A :class:`RegionSpec` holds
everything that defines one synthetic event region (look, relief, zone, season, event): its world is
a pure function of it. ``REGION_TEMPLATES`` are the demo regions, ``region_specs`` the first n of
them and their shifted variants; ``utm_epsg`` and the zone helpers place them in UTM zones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from ...errors import UsageError

__all__ = [
    "RES",
    "SCL_RES",
    "GRANULE_STRIDE",
    "GRANULE_SIZE",
    "ZONE_OVERLAP_DEG",
    "DEM_TILE_ARCSEC",
    "DEM_NODATA",
    "DN_OFFSET",
    "BANDS",
    "BAND_INFO",
    "COG_TYPE",
    "DEM_DATETIME",
    "S2_EXTENSIONS",
    "DEM_EXTENSIONS",
    "SCL_NODATA",
    "SCL_SATURATED",
    "SCL_DARK",
    "SCL_SHADOW",
    "SCL_VEG",
    "SCL_BARE",
    "SCL_WATER",
    "SCL_UNCLASSIFIED",
    "SCL_CLOUD_MED",
    "SCL_CLOUD_HIGH",
    "SCL_CIRRUS",
    "SCL_SNOW",
    "Spec4",
    "RegionSpec",
    "utm_epsg",
    "zone_of",
    "zone_lon_range",
    "REGION_TEMPLATES",
    "region_specs",
]


RES = 10.0  # m, the 10 m bands
SCL_RES = 20.0  # m, the scene classification
GRANULE_STRIDE = 4400.0  # m, the scaled-down MGRS grid step ...
GRANULE_SIZE = 4800.0  # m, ... and granule side: neighbours overlap by 400 m (real: 9.8 km)
ZONE_OVERLAP_DEG = 0.002  # how far a zone's granules reach past the zone's edge (degrees)
DEM_TILE_ARCSEC = 180  # 0.05 degree DEM tiles (real Copernicus DEM: 1 degree)
DEM_NODATA = -32767.0
DN_OFFSET = 1000  # BOA_ADD_OFFSET of processing baseline >= 04.00
BANDS = ("blue", "green", "red", "nir")
BAND_INFO = {  # name -> (Sentinel-2 band, centre wavelength um, FWHM um)
    "blue": ("B02", 0.490, 0.098),
    "green": ("B03", 0.560, 0.045),
    "red": ("B04", 0.665, 0.038),
    "nir": ("B08", 0.842, 0.145),
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
DEM_DATETIME = "2021-04-22T00:00:00Z"
S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]
DEM_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
# SCL classes (Sen2Cor)
SCL_NODATA, SCL_SATURATED, SCL_DARK, SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER = 0, 1, 2, 3, 4, 5, 6
SCL_UNCLASSIFIED, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 7, 8, 9, 10, 11


Spec4 = tuple[float, float, float, float]


@dataclass(frozen=True)
class RegionSpec:
    """Everything that defines one synthetic event region; the world is a pure function of it."""

    name: str
    lon: float
    lat: float
    event_date: date
    description: str
    relief: float = 900.0  # m, valley floor to hill tops
    base_elev: float = 600.0  # m, valley floor at the centre
    hill_scale: float = 1800.0  # m, wavelength of the ridge pattern
    valley_width: float = 650.0  # m, e-folding width of valley walls
    floor_width: float = 110.0  # m, half-width of the flat valley floor
    valley_angle: float = 20.0  # degrees, direction of the main valley
    trib_spacing: float = 1700.0  # m between tributary valleys
    river_width: float = 24.0  # m
    veg_density: float = 0.85  # mean vegetation cover of natural ground
    forest: float = 0.6  # share of forest in the vegetation
    tree_line: float = 1e9  # m, vegetation thins above
    rock_line: float = 1e9  # m, bare rock above
    forest_spec: Spec4 = (0.025, 0.050, 0.030, 0.320)
    grass_spec: Spec4 = (0.040, 0.075, 0.060, 0.300)
    soil_spec: Spec4 = (0.100, 0.130, 0.160, 0.220)
    rock_spec: Spec4 = (0.130, 0.150, 0.170, 0.210)
    scar_spec: Spec4 = (0.120, 0.150, 0.185, 0.230)
    water_spec: Spec4 = (0.040, 0.055, 0.035, 0.015)
    turbid_spec: Spec4 = (0.070, 0.100, 0.105, 0.045)
    haze: float = 0.5  # 0..1 residual haze after atmospheric correction
    pheno_peak_doy: int = 200  # greenest day of year
    pheno_amp: float = 0.10
    field_max_slope: float = 5.0  # degrees
    field_share: float = 0.7
    parcel: tuple[float, float] = (110.0, 60.0)  # m, along/across the valley
    slide_density: float = 60.0  # candidate landslides per km² at the epicentre (before rejection)
    slide_decay_km: float = 3.0
    slide_size: float = 1.0  # multiplies landslide lengths
    epicentre_offset: tuple[float, float] = (0.15, 0.1)  # fraction of size from the centre
    scar_density: float = 4.0  # old scars per km² on susceptible ground
    cloudiness: float = 1.0
    inventory_strip: str = "east"  # side of the AOI left out of the inventory
    size_km: float = 6.0
    margin_km: float = 0.6
    seed: int = 0

    @property
    def epsg(self) -> int:
        return utm_epsg(self.lon, self.lat)


def utm_epsg(lon: float, lat: float) -> int:
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def zone_of(epsg: int) -> int:
    """The zone number of a UTM EPSG code: regions' variants stay in it, granule codes start with it."""
    return epsg % 100


def zone_lon_range(zone: int) -> tuple[float, float]:
    """A UTM zone's (west, east) longitudes: where variants may go and how far granules reach."""
    w = -180.0 + 6.0 * (zone - 1)
    return w, w + 6.0


REGION_TEMPLATES: tuple[RegionSpec, ...] = (
    RegionSpec(
        name="hokkaido_like",
        lon=141.95,
        lat=42.75,
        event_date=date(2023, 9, 6),
        description="Low, densely forested hills on bright pumice soils; a dense swarm of small shallow "
        "slides after an earthquake in early autumn; rice and wheat fields on the valley floors "
        "being harvested. UTM zone 54N.",
        relief=330.0,
        base_elev=60.0,
        hill_scale=1200.0,
        valley_width=450.0,
        floor_width=150.0,
        valley_angle=35.0,
        trib_spacing=1300.0,
        river_width=20.0,
        veg_density=0.95,
        forest=0.85,
        forest_spec=(0.022, 0.048, 0.026, 0.340),
        grass_spec=(0.035, 0.075, 0.050, 0.330),
        soil_spec=(0.120, 0.155, 0.190, 0.250),
        scar_spec=(0.140, 0.180, 0.215, 0.260),
        haze=0.35,
        pheno_peak_doy=210,
        pheno_amp=0.08,
        field_max_slope=5.0,
        field_share=0.85,
        parcel=(140.0, 70.0),
        slide_density=450.0,
        slide_decay_km=3.0,
        slide_size=0.7,
        epicentre_offset=(-0.1, 0.15),
        scar_density=3.0,
        cloudiness=1.0,
        inventory_strip="west",
    ),
    RegionSpec(
        name="gorkha_like",
        lon=83.995,
        lat=28.20,
        event_date=date(2023, 4, 25),
        description="High Himalayan foothills with 1500 m of relief, patchy forest, terraced fields on "
        "gentle slopes and a grey glacial river; pre-monsoon haze; an earthquake in late April. "
        "Straddles the UTM 44N/45N boundary at 84 E: its imagery comes from granules in two CRSs.",
        relief=1300.0,
        base_elev=900.0,
        hill_scale=2400.0,
        valley_width=1300.0,
        floor_width=90.0,
        valley_angle=-25.0,
        trib_spacing=2600.0,
        river_width=34.0,
        veg_density=0.78,
        forest=0.55,
        tree_line=2200.0,
        rock_line=2300.0,
        forest_spec=(0.028, 0.052, 0.036, 0.290),
        grass_spec=(0.050, 0.080, 0.080, 0.260),
        soil_spec=(0.095, 0.120, 0.150, 0.205),
        scar_spec=(0.125, 0.145, 0.170, 0.195),
        water_spec=(0.060, 0.075, 0.060, 0.030),
        turbid_spec=(0.090, 0.115, 0.120, 0.060),
        haze=0.9,
        pheno_peak_doy=240,
        pheno_amp=0.10,
        field_max_slope=12.0,
        field_share=0.75,
        parcel=(60.0, 30.0),
        slide_density=140.0,
        slide_decay_km=3.0,
        slide_size=1.3,
        epicentre_offset=(0.1, -0.1),
        scar_density=5.0,
        cloudiness=0.8,
        inventory_strip="east",
    ),
    RegionSpec(
        name="kaikoura_like",
        lon=173.62,
        lat=-42.25,
        event_date=date(2022, 11, 14),
        description="Steep greywacke ranges under tussock grass and scrub with little forest, grey rock "
        "above 1300 m, sheep pasture on the flats; spring; large rock and debris slides. "
        "UTM zone 59S (southern hemisphere: overpass at 22:xx UTC the previous day).",
        relief=1000.0,
        base_elev=150.0,
        hill_scale=2200.0,
        valley_width=1100.0,
        floor_width=130.0,
        valley_angle=60.0,
        trib_spacing=2200.0,
        river_width=40.0,
        veg_density=0.7,
        forest=0.2,
        tree_line=1100.0,
        rock_line=1300.0,
        forest_spec=(0.030, 0.055, 0.040, 0.260),
        grass_spec=(0.060, 0.090, 0.095, 0.250),
        soil_spec=(0.110, 0.125, 0.140, 0.190),
        rock_spec=(0.140, 0.155, 0.165, 0.200),
        scar_spec=(0.150, 0.165, 0.180, 0.205),
        water_spec=(0.050, 0.070, 0.045, 0.020),
        haze=0.15,
        pheno_peak_doy=330,
        pheno_amp=0.10,
        field_max_slope=4.0,
        field_share=0.6,
        parcel=(180.0, 110.0),
        slide_density=110.0,
        slide_decay_km=2.5,
        slide_size=1.5,
        epicentre_offset=(0.0, 0.2),
        scar_density=6.0,
        cloudiness=0.6,
        inventory_strip="east",
    ),
    RegionSpec(
        name="haiti_like",
        lon=-73.48,
        lat=18.38,
        event_date=date(2021, 8, 14),
        description="Tropical mountains of moderate relief with a mosaic of secondary forest, shrub and "
        "small farms on red lateritic soil; hazy and cloudy in the hurricane season; "
        "earthquake-triggered slides in mid August. UTM zone 18N.",
        relief=650.0,
        base_elev=300.0,
        hill_scale=1600.0,
        valley_width=800.0,
        floor_width=100.0,
        valley_angle=-70.0,
        trib_spacing=1800.0,
        river_width=22.0,
        veg_density=0.8,
        forest=0.5,
        forest_spec=(0.030, 0.058, 0.034, 0.330),
        grass_spec=(0.045, 0.085, 0.065, 0.300),
        soil_spec=(0.075, 0.105, 0.165, 0.235),
        scar_spec=(0.085, 0.120, 0.190, 0.250),
        turbid_spec=(0.070, 0.105, 0.125, 0.050),
        haze=0.7,
        pheno_peak_doy=250,
        pheno_amp=0.06,
        field_max_slope=8.0,
        field_share=0.7,
        parcel=(45.0, 35.0),
        slide_density=170.0,
        slide_decay_km=2.5,
        slide_size=1.0,
        epicentre_offset=(-0.15, -0.05),
        scar_density=5.0,
        cloudiness=1.3,
        inventory_strip="west",
    ),
)


def region_specs(n_regions: int, seed: int, size_km: float) -> list[RegionSpec]:
    """The first ``n_regions`` regions: the templates, then shifted variants of them."""
    if n_regions < 1:
        raise UsageError(f"n_regions must be at least 1, got {n_regions}.")
    if not (0.5 <= size_km <= 200.0):
        raise UsageError(f"size_km must be between 0.5 and 200 km, got {size_km}.")
    out = []
    for k in range(n_regions):
        t = REGION_TEMPLATES[k % len(REGION_TEMPLATES)]
        rep = k // len(REGION_TEMPLATES)
        rng = np.random.default_rng([seed, k, 11])
        name, lon, lat, event = t.name, t.lon, t.lat, t.event_date
        if rep:
            # Variants: same climate and look, elsewhere in the same zone (away from its edges).
            name = f"{t.name}_{rep + 1}"
            w, e = zone_lon_range(zone_of(t.epsg))
            lon = float(np.clip(t.lon + 0.35 * rep * (1 if rep % 2 else -1), w + 0.5, e - 0.5))
            lat = t.lat + 0.3 * rep
            event = t.event_date + timedelta(days=int(rng.integers(-40, 40)))
        out.append(
            RegionSpec(
                **{
                    **t.__dict__,
                    "name": name,
                    "lon": lon,
                    "lat": lat,
                    "event_date": event,
                    "size_km": float(size_km),
                    "margin_km": max(0.5, 0.1 * size_km),
                    "seed": int(rng.integers(0, 2**31 - 1)),
                }
            )
        )
    return out
