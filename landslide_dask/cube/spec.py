"""What defines one cube: the event, the area, the windows in time and the sources.

Light on purpose (no xarray, no rasterio): the CLI builds its ``cube`` options from these
fields, and job specs read the defaults, without importing the cube stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

__all__ = ["CHUNK", "SCENE_CHUNK", "event_windows", "CubeSpec"]

#: Side of a cube's zarr chunks in pixels: the default of every cube writer and the unit the
#: training order groups windows by (each chunk decoded about once per pass).
CHUNK = 1024
#: The chunk side of one scene's cube (a real event folder, a tile export, the demo's regions): a
#: 10-15 km scene is then 4-16 chunks, so every worker of a small cluster has blocks to build.
SCENE_CHUNK = 512


def event_windows(event: date, pre_days: int, post_days: int) -> tuple[tuple[date, date], tuple[date, date]]:
    """Pre- and post-event date windows (inclusive). The event day itself belongs to neither:
    an acquisition that day may be from before or after the event."""
    return (
        (event - timedelta(days=pre_days), event - timedelta(days=1)),
        (event + timedelta(days=1), event + timedelta(days=post_days)),
    )


@dataclass
class CubeSpec:
    """Everything that defines one cube; the CLI's ``cube`` options map onto it one to one."""

    stac_url: str  # a STAC API URL, or a local catalogue folder / ItemCollection file (stac.local)
    event_date: date
    aoi: Path
    out: Path
    inventory: Path | None = None
    inventory_area: Path | None = None
    pre_days: int = 90
    post_days: int = 60
    # bands and the SCL asset by name: an item's asset key, Sentinel-2 code or common name (cube.bands)
    bands: tuple[str, ...] = ("blue", "green", "red", "nir")
    collection: str = "sentinel-2-l2a"
    scl_asset: str | None = "scl"
    dem_collection: str | None = "cop-dem-glo-30"
    dem_asset: str = "data"
    max_cloud: float | None = None
    resolution: float = 10.0
    epsg: int | None = None
    chunk: int = CHUNK
    post_only: bool = False
    sign: str | None = None
    exclude_items: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pre_window(self) -> tuple[date, date]:
        return event_windows(self.event_date, self.pre_days, self.post_days)[0]

    @property
    def post_window(self) -> tuple[date, date]:
        return event_windows(self.event_date, self.pre_days, self.post_days)[1]
