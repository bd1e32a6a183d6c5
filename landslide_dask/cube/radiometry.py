"""One radiometric convention per cube, whatever the processing baseline of each scene.

Sentinel-2 L2A from processing baseline 04.00 (25 January 2022 on) stores reflectance x 10,000
+ 1,000 (``BOA_ADD_OFFSET`` -1000); earlier scenes store reflectance x 10,000. A composite of
scenes of both kinds (pre-event 2021, post-event 2022, or granules of one mosaic processed at
different baselines) mixes units and gives a silently wrong map, so every imagery asset is
converted, per item and before any mosaic or median, to the cube's one convention:

    surface reflectance x 10,000 as uint16, no offset; 0 = no data, valid pixels >= 1

(what odc-stac and Planetary Computer users call "harmonized to the old baseline"). Where the
scale and offset come from, first found, per item and asset:

1. ``earthsearch:boa_offset_applied: true`` (Earth Search's older ``sentinel-2-l2a`` collection):
   the offset was already removed from the pixels, whatever ``raster:bands`` says (that
   collection is known to carry -0.1 there regardless; its maintainers call the flag the truth);
2. ``raster:bands`` ``scale``/``offset`` (Earth Search ``sentinel-2-c1-l2a``: 0.0001 and -0.1;
   a catalogue written with ``--dn-scale``/``--dn-offset``); 1 and 0 count as not recorded;
3. ``s2:processing_baseline`` (Planetary Computer): 04.00 or later -> offset -0.1 (-1000 DN);
4. a Sentinel-2 L2A item without either, by its date: on or after 2022-01-25 -> -1000 DN;
5. nothing (one's own GeoTIFFs): the pixels are taken as already in the convention.

The SCL and DEM assets are never converted. ``cube.build`` records what was done per item in the
cube's ``radiometry`` attribute (docs/contracts.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

__all__ = [
    "CONVENTION",
    "TARGET_SCALE",
    "BASELINE_04_START",
    "Radiometry",
    "asset_radiometry",
    "is_sentinel2_l2a",
    "harmonise",
    "summarise",
]

#: Reflectance per DN of the cube's convention (and its offset is 0).
TARGET_SCALE = 1e-4
#: The first day of Sentinel-2 processing baseline 04.00, which added the -1000 DN offset.
BASELINE_04_START = date(2022, 1, 25)
CONVENTION = (
    "surface reflectance x 10,000 as uint16 without offset (Sentinel-2 L2A before processing "
    "baseline 04.00); 0 = no data, valid pixels >= 1"
)


@dataclass(frozen=True)
class Radiometry:
    """reflectance = DN x ``scale`` + ``offset`` for one asset, and where that came from."""

    scale: float
    offset: float
    source: str

    @property
    def gain_bias(self) -> tuple[float, float]:
        """(gain, bias) turning the asset's DN into the convention's: DN x gain + bias."""
        return round(self.scale / TARGET_SCALE, 9), round(self.offset / TARGET_SCALE, 6)

    @property
    def identity(self) -> bool:
        return self.gain_bias == (1.0, 0.0)


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _recorded(asset: dict[str, Any]) -> tuple[float | None, float | None]:
    """(scale, offset) as the asset records them: raster extension 1.x ``raster:bands``, or 2.x
    (STAC 1.1) ``raster:scale``/``raster:offset`` on the asset or its first ``bands`` entry."""
    rb = asset.get("raster:bands")
    if isinstance(rb, list) and rb and isinstance(rb[0], dict):
        return _number(rb[0].get("scale")), _number(rb[0].get("offset"))
    bands = asset.get("bands")
    first = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}
    scale = _number(asset.get("raster:scale", first.get("raster:scale")))
    offset = _number(asset.get("raster:offset", first.get("raster:offset")))
    return scale, offset


def _baseline(text: Any) -> tuple[int, int] | None:
    """``"04.00"``, ``"4.0"``, ``"N0400"`` -> (4, 0)."""
    s = str(text or "").strip().upper().lstrip("N")
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", s) or re.fullmatch(r"(\d{2})(\d{2})", s)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _item_date(item: dict[str, Any]) -> date | None:
    props = item.get("properties") or {}
    text = props.get("datetime") or props.get("start_datetime")
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).date()


def is_sentinel2_l2a(item: dict[str, Any]) -> bool:
    """Whether an item is a Sentinel-2 Level-2A scene, by its product type, id or collection."""
    props = item.get("properties") or {}
    if str(props.get("s2:product_type", "")).upper() == "S2MSI2A":
        return True
    ident = str(item.get("id", "")).upper()
    if "MSIL2A" in ident:
        return True
    sentinel2 = any(
        re.sub(r"[\s_]", "-", str(props.get(k, ""))).lower().startswith("sentinel-2")
        for k in ("platform", "constellation")
    )
    collection = str(item.get("collection", "")).lower()
    level2a = "l2a" in collection or "l2a" in ident.lower()
    return (sentinel2 or "sentinel-2" in collection or "sentinel2" in collection) and level2a


def asset_radiometry(item: dict[str, Any], key: str) -> Radiometry:
    """How DN of ``item``'s imagery asset ``key`` become reflectance (see the module's rules)."""
    props = item.get("properties") or {}
    asset = (item.get("assets") or {}).get(key) or {}
    scale, offset = _recorded(asset)
    for flag in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if _flag(props.get(flag)):
            return Radiometry(
                scale if scale not in (None, 1.0) else TARGET_SCALE,
                0.0,
                f"{flag}: true (offset already removed from the pixels)",
            )
    if not (scale in (None, 1.0) and offset in (None, 0.0)):
        return Radiometry(scale if scale is not None else TARGET_SCALE, offset or 0.0, "raster:bands")
    base = _baseline(props.get("s2:processing_baseline"))
    if base is not None:
        return Radiometry(
            TARGET_SCALE, -0.1 if base >= (4, 0) else 0.0, f"s2:processing_baseline {props['s2:processing_baseline']}"
        )
    if is_sentinel2_l2a(item):
        day = _item_date(item)
        if day is not None:
            after = day >= BASELINE_04_START
            return Radiometry(
                TARGET_SCALE,
                -0.1 if after else 0.0,
                f"Sentinel-2 L2A acquired {'on or after' if after else 'before'} "
                f"{BASELINE_04_START.isoformat()} (no baseline recorded)",
            )
    return Radiometry(TARGET_SCALE, 0.0, "none recorded: read as already in the convention")


def harmonise(data: np.ndarray, gain: float, bias: float) -> np.ndarray:
    """DN x gain + bias, rounded, for an integer plane whose 0 is no data: 0 stays 0, every valid
    pixel stays valid (>= 1) and within the dtype. Float planes: NaN stays NaN."""
    if gain == 1.0 and bias == 0.0:
        return data
    if data.dtype.kind == "f":
        return (data * gain + bias).astype(data.dtype, copy=False)
    info = np.iinfo(data.dtype)
    valid = data != 0
    if gain == 1.0 and float(bias).is_integer():
        out = data.astype(np.int64) + int(bias)
    else:
        out = np.rint(data.astype(np.float64) * gain + bias)
    np.clip(out, max(1, info.min), info.max, out=out)
    out = out.astype(data.dtype)
    out[~valid] = 0
    return out


def summarise(per_item: dict[str, dict[str, Radiometry]]) -> dict[str, Any]:
    """The cube's ``radiometry`` attribute: the convention, and per item the scale and offset its
    DN were converted from and why (one entry per item, or per band where bands differ)."""
    items: dict[str, Any] = {}
    for item_id, by_band in sorted(per_item.items()):
        distinct = {(r.scale, r.offset, r.source) for r in by_band.values()}
        if len(distinct) == 1:
            r = next(iter(by_band.values()))
            items[item_id] = {"scale": r.scale, "offset": r.offset, "from": r.source}
        else:
            items[item_id] = {b: {"scale": r.scale, "offset": r.offset, "from": r.source} for b, r in by_band.items()}
    converted = sum(any(not r.identity for r in by_band.values()) for by_band in per_item.values())
    return {
        "convention": CONVENTION,
        "items_converted": converted,
        "items_unchanged": len(per_item) - converted,
        "items": items,
    }
