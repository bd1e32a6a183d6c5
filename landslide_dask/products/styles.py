"""QGIS styles of the products: a ``.qml`` beside each file (QGIS loads ``name.qml`` with
``name.tif`` or ``name.gpkg`` by itself) and the default style inside the GeoPackage's
``layer_styles`` table (what QGIS applies when the GeoPackage is opened anywhere).

The colours are the web map's (``tiles.RAMP``, ``cog.STATUS_COLOURS``), so a responder sees the
same map in the browser and in QGIS. QGIS applies a band's scale on read: the probability COG's
values are 0..1 there, and its ramp is written in those units.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..common.files import write_text
from .cog import STATUS, STATUS_COLOURS
from .tiles import ALPHA_FROM, ALPHA_FULL, RAMP

__all__ = ["probability_qml", "status_qml", "polygons_qml", "write_qml", "embed_gpkg_style"]

_HEAD = (
    "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    '<qgis version="3.28" styleCategories="AllStyleCategories">\n'
)


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(v) for v in rgb[:3]])


def _alpha(p: float) -> int:
    return int(round(min(max((p - ALPHA_FROM) / (ALPHA_FULL - ALPHA_FROM), 0.0), 1.0) * 230))


def probability_qml(threshold: float | None = None) -> str:
    """Singleband pseudocolour on the ramp, transparent below 0.1 as on the web map."""
    stops = sorted({s for s, _ in RAMP} | {ALPHA_FROM, ALPHA_FULL})
    import numpy as np

    items = []
    for p in stops:
        rgb = [np.interp(p, [s for s, _ in RAMP], [c[i] for _, c in RAMP]) for i in range(3)]
        label = f"{p:.2f}" + (" (threshold)" if threshold is not None and abs(p - threshold) < 1e-9 else "")
        items.append(
            f'          <item alpha="{_alpha(p)}" value="{p:g}" label={quoteattr(label)} color="{_hex(rgb)}"/>'
        )
    return (
        _HEAD + "  <pipe>\n"
        '    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" '
        'classificationMin="0" classificationMax="1">\n'
        "      <rastershader>\n"
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        'minimumValue="0" maximumValue="1">\n' + "\n".join(items) + "\n"
        "        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def status_qml() -> str:
    """Paletted: one class per status code, mapped pixels transparent."""
    entries = "\n".join(
        f'        <paletteEntry value="{code}" alpha="{STATUS_COLOURS[code][3]}" color="{_hex(STATUS_COLOURS[code])}" '
        f"label={quoteattr(STATUS[code])}/>"
        for code in sorted(STATUS)
        if code
    )
    return (
        _HEAD + "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        "      <colorPalette>\n" + entries + "\n      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def polygons_qml() -> str:
    """Landslide polygons: red outline over a translucent red fill, the web map's."""
    return (
        _HEAD + '  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">\n'
        "    <symbols>\n"
        '      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        '          <Option type="Map">\n'
        '            <Option type="QString" name="color" value="227,26,28,90"/>\n'
        '            <Option type="QString" name="outline_color" value="177,0,38,255"/>\n'
        '            <Option type="QString" name="outline_width" value="0.4"/>\n'
        '            <Option type="QString" name="outline_width_unit" value="MM"/>\n'
        '            <Option type="QString" name="style" value="solid"/>\n'
        "          </Option>\n        </layer>\n      </symbol>\n    </symbols>\n  </renderer-v2>\n"
        '  <mapTip>area [% round("area_m2") %] m², mean probability [% round("mean_prob", 2) %]</mapTip>\n'
        "</qgis>\n"
    )


def write_qml(path: str | Path, qml: str) -> Path:
    """``path`` with its suffix replaced by ``.qml``."""
    return write_text(Path(path).with_suffix(".qml"), qml)


def embed_gpkg_style(gpkg: str | Path, layer: str, qml: str, name: str = "landslide_dask") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table
    (QGIS's own schema for styles in a GeoPackage), replacing an earlier one of that name."""
    with sqlite3.connect(str(gpkg)) as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), "
            "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), "
            "styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
        )
        geom_col = con.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (layer, name))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner) VALUES "
            "('', '', ?, ?, ?, ?, '', 1, 'landslide-dask default style', '')",
            (layer, geom_col[0] if geom_col else "geom", name, qml),
        )
