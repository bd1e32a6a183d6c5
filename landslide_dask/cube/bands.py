"""Which asset of a STAC item is a band, whatever the API calls it.

Planetary Computer keys Sentinel-2 assets by band code (``B02``, ``SCL``), Earth Search by name
(``blue``, ``scl``), a catalogue of one's own GeoTIFFs by whatever was chosen. A band asked for
by any of these names is found in each item from its asset keys and ``eo:bands`` (or STAC 1.1
``bands``), so one ``--bands`` value works against every source, and the cube's ``band``
coordinate holds one canonical label per band (Earth Search's names for Sentinel-2 bands, else
the common name), so a model trained on cubes of one API maps cubes of another.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputDataError, UsageError
from ..stac.geotiff import S2_BAND_NAMES  # Sentinel-2 band codes -> Earth Search asset names (the cube labels)

__all__ = ["S2_BAND_NAMES", "ResolvedBands", "resolve_asset", "resolve_bands", "band_label", "describe_assets"]

_CODE_OF_NAME = {v: k for k, v in S2_BAND_NAMES.items()}
_CODE = re.compile(r"^(B0[1-9]|B1[0-2]|B8A|SCL)$", re.IGNORECASE)
_LOOSE_CODE = re.compile(r"^(B0?[1-9]|B1[0-2]|B8A|SCL)$", re.IGNORECASE)


def _s2_code(name: str | None, loose: bool = False) -> str | None:
    """``B02``/``b02``/``B8A``/``SCL`` (and ``B2`` if ``loose``: a name typed by a user, never an asset's,
    where ``b1`` is a catalogued file's first band) -> canonical code; Earth Search names -> their code."""
    if not name:
        return None
    text = str(name).strip()
    if (_LOOSE_CODE if loose else _CODE).match(text):
        code = text.upper()
        return code if code in ("B8A", "SCL") or len(code) == 3 else f"B0{code[1:]}"
    return _CODE_OF_NAME.get(text.lower())


def _bands_of(asset: dict[str, Any]) -> list[dict[str, Any]]:
    """The asset's band descriptions: ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1)."""
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, dict)]


def _common_name(asset: dict[str, Any]) -> str | None:
    bands = _bands_of(asset)
    if len(bands) != 1:
        return None
    return bands[0].get("common_name") or bands[0].get("eo:common_name")


def _band_name(asset: dict[str, Any]) -> str | None:
    bands = _bands_of(asset)
    return bands[0].get("name") if len(bands) == 1 else None


def _asset_code(key: str, asset: dict[str, Any]) -> str | None:
    return _s2_code(_band_name(asset)) or _s2_code(key)


def band_label(key: str, asset: dict[str, Any], requested: str) -> str:
    """The cube's name for a band: Earth Search's name of a Sentinel-2 band (``B02`` and ``blue``
    both -> ``blue``, ``B8A`` -> ``nir08``), else the asset's common name, else what was asked for."""
    code = _asset_code(key, asset)
    if code is not None:
        return S2_BAND_NAMES[code]
    return _common_name(asset) or requested


def _single_band(assets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Assets that can be a band: one band each (a true-colour ``visual`` asset is not)."""
    return {k: a for k, a in assets.items() if isinstance(a, dict) and len(_bands_of(a)) <= 1}


def _prefer_cog(keys: list[str], assets: dict[str, Any]) -> list[str]:
    """Of several assets of one band (Earth Search's ``blue`` and ``blue-jp2``), the GeoTIFFs."""
    tiffs = [k for k in keys if "tiff" in str(assets[k].get("type", "")).lower()]
    return tiffs if tiffs and len(tiffs) < len(keys) else keys


def describe_assets(item: dict[str, Any]) -> str:
    """``key (common name)`` for each asset of an item, for messages."""
    parts = []
    for key, asset in sorted((item.get("assets") or {}).items()):
        extra = _common_name(asset) if isinstance(asset, dict) else None
        name = _band_name(asset) if isinstance(asset, dict) else None
        tags = [t for t in dict.fromkeys((name, extra)) if t and t != key]
        parts.append(f"{key} ({', '.join(tags)})" if tags else key)
    return ", ".join(parts) or "none"


def resolve_asset(item: dict[str, Any], name: str) -> str:
    """The key of ``item``'s asset for band ``name``: the key itself, the key in any case, an asset
    whose ``eo:bands`` name is ``name``, the same Sentinel-2 band under its code or Earth Search
    name, or the one asset with that common name. Raises InputDataError naming what the item has."""
    assets = item.get("assets") or {}
    if name in assets:
        return name
    single = _single_band(assets)
    lower, code = name.lower(), _s2_code(name, loose=True)
    steps = (
        [k for k in assets if k.lower() == lower],
        [k for k, a in single.items() if str(_band_name(a) or "").lower() == lower],
        [k for k, a in single.items() if code is not None and _asset_code(k, a) == code],
        [k for k, a in single.items() if str(_common_name(a) or "").lower() == lower],
    )
    for found in steps:
        found = _prefer_cog(found, assets)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(
                f"band {name!r} is ambiguous in STAC item {item.get('id')}: assets {', '.join(sorted(found))} all "
                f"match it. Name one of them in --bands (Sentinel-2 codes such as B05 or Earth Search names such "
                f"as rededge1 are unambiguous)."
            )
    raise InputDataError(
        f"STAC item {item.get('id')} has no asset for band {name!r}; its assets (common names) are: "
        f"{describe_assets(item)}. Choose bands every item has (--bands, by key, Sentinel-2 code or common "
        f"name), or leave the item out (--exclude-item {item.get('id')})."
    )


@dataclass(frozen=True)
class ResolvedBands:
    """Items whose assets are re-keyed by the names asked for, and each band's cube label."""

    items: list[dict[str, Any]]
    labels: list[str]
    #: label -> the asset keys it was read from, over all items (for the cube's attributes)
    sources: dict[str, list[str]]


def resolve_bands(items: Sequence[dict[str, Any]], bands: Sequence[str], extra: Sequence[str] = ()) -> ResolvedBands:
    """Resolve ``bands`` (labelled) and ``extra`` (e.g. the SCL asset, not labelled) in every item.

    Each returned item is a shallow copy whose ``assets`` holds exactly the asked-for names, each
    mapped to that item's own asset, so everything downstream reads ``item["assets"][name]``."""
    names = list(bands) + [e for e in extra if e not in bands]
    labels: list[str | None] = [None] * len(bands)
    sources: dict[int, set[str]] = {i: set() for i in range(len(bands))}
    out = []
    for item in items:
        keys = {n: resolve_asset(item, n) for n in names}
        for i, b in enumerate(bands):
            key = keys[b]
            sources[i].add(key)
            if labels[i] is None:
                labels[i] = band_label(key, item["assets"][key], b)
        used = [keys[b] for b in bands]
        if len(set(used)) < len(used):
            dup = next(k for k in used if used.count(k) > 1)
            same = [b for b in bands if keys[b] == dup]
            raise UsageError(
                f"--bands {','.join(bands)}: {' and '.join(same)} are the same asset ({dup!r}) of "
                f"STAC item {item.get('id')}; give each band once."
            )
        out.append({**item, "assets": {n: item["assets"][keys[n]] for n in names}})
    final = [lab or b for lab, b in zip(labels, bands)]
    if len(set(final)) < len(final):  # two bands under one label (two red edges by common name): the names asked
        final = list(bands)
    return ResolvedBands(out, final, {final[i]: sorted(sources[i]) for i in range(len(bands))})
