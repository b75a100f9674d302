"""The offline map page: a folium/Leaflet HTML file that needs no network.

Every script and style comes from ``resources/web`` (vendored from npm, see VENDORED.md), and a
world outline drawn from the vendored world-atlas TopoJSON stands in for map tiles, so a user
without network still sees coastlines, borders and a scale. Online tiles are optional.

The page exposes ``window.nv`` (see ``resources/web/nvmap.js``); the Qt widget drives it with
``runJavaScript(js_call(...))``. This module never imports Qt.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import folium
import numpy as np
from branca.element import MacroElement
from folium.template import Template

from netvlad_gui import __version__
from netvlad_gui.core.errors import NetvladError
from netvlad_gui.core.paths import resources_dir
from netvlad_gui.core.photos.geo import haversine_m

#: Sent by the Qt web engine with every request (tile servers ask apps to identify themselves).
#: The Qt side sets it on the QWebEngineProfile; a file:// page sends no Referer of its own.
HTTP_USER_AGENT = f"netvlad-gui/{__version__} (+offline photo geolocation)"
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)

#: Qt's built-in QWebChannel client, served from Qt's resources (not the network). In a plain
#: browser it fails to load and the page runs without the bridge.
QWEBCHANNEL_JS = "qrc:///qtwebchannel/qwebchannel.js"

#: Photos taken one after another (in file-name order) at most this far apart are joined into a
#: track on the map's coverage layer: a walk or drive shows as a line, lone photos as dots.
COVERAGE_MAX_GAP_M = 60.0
#: Coverage dots closer than about a metre (5 decimals of a degree) are drawn once; a library
#: with more distinct positions than MAX_COVERAGE_POINTS is drawn on a coarser grid (11 m, 110 m,
#: ...) so that the page stays quick to pan.
_COVERAGE_DECIMALS = (5, 4, 3, 2, 1)
MAX_COVERAGE_POINTS = 20_000

PAGE_NAME = "index.html"
WORLD_SCRIPT = "world.js"
WORLD_TOPOJSON = "countries-50m.json"

_JS = [
    "leaflet.js",
    "leaflet.markercluster.js",
    "topojson-client.min.js",
    "nvgeo.js",
    "nvcontrols.js",
    "nvtrack.js",
    "nvmap.js",
]
_CSS = ["leaflet.css", "MarkerCluster.css", "MarkerCluster.Default.css", "nvmap.css"]
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


class MapAssetsMissingError(NetvladError, RuntimeError):
    """A vendored web asset is missing from resources/web (re-run resources/web/vendor.sh)."""


class MapPageError(NetvladError, ValueError):
    """The map page was asked for something it cannot do (e.g. a malformed tile URL)."""


def web_dir() -> Path:
    """The folder of vendored web assets."""
    return resources_dir() / "web"


def required_assets() -> list[Path]:
    """Every local file the page loads (besides the world.js written next to it)."""
    base = web_dir()
    return [base / name for name in (*_JS, *_CSS, WORLD_TOPOJSON)]


def _check_assets() -> None:
    missing = [p for p in required_assets() if not p.is_file()]
    if missing:
        raise MapAssetsMissingError(
            f"map asset missing: {missing[0]} (run resources/web/vendor.sh to restore it)"
        )


def _check_tile_url(tile_url: str) -> None:
    if not re.match(r"^https?://", tile_url) or not all(
        key in tile_url for key in ("{z}", "{x}", "{y}")
    ):
        raise MapPageError(
            f"tile URL must be http(s) and contain {{z}}, {{x}} and {{y}}: {tile_url!r}"
        )


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become null, numpy scalars and paths become plain values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _clean(value.item())
    return value


def to_js(value: Any) -> str:
    """JSON for embedding in a <script> or a runJavaScript call.

    ``</`` is escaped so a label like ``</script>`` cannot end the script element, and the two
    line separators that older JS engines reject inside strings are escaped too.
    """
    text = json.dumps(_clean(value), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def js_call(function: str, *args: Any) -> str:
    """The JavaScript that calls ``nv.<function>(args...)`` with JSON-encoded arguments."""
    if not _IDENTIFIER.fullmatch(function):
        raise MapPageError(f"not a JavaScript function name: {function!r}")
    return f"window.nv.{function}({', '.join(to_js(a) for a in args)})"


def tile_config(
    online: bool, tile_url: str = DEFAULT_TILE_URL, attribution: str = DEFAULT_TILE_ATTRIBUTION
) -> dict[str, Any]:
    """What ``nv.setTiles`` takes: online tiles from ``tile_url``, or none (offline outline).

    Raises MapPageError for a tile URL that is not http(s) with {z}, {x} and {y}.
    """
    if not online:
        return {"online": False}
    _check_tile_url(tile_url)
    return {"online": True, "url": tile_url, "attribution": attribution}


_DIGITS = re.compile(r"(\d+)")


def _natural_key(text: str) -> list[Any]:
    """``img2`` before ``img10``: cameras and phones number their files in shot order."""
    parts: list[Any] = _DIGITS.split(text.lower())
    parts[1::2] = map(int, parts[1::2])
    return parts


def _coordinate(value: Any) -> float:
    """A latitude or longitude as a float; NaN when missing or not a number."""
    if value is None or isinstance(value, bool | str):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def reference_coverage(
    references: list[Mapping[str, Any]], max_gap_m: float = COVERAGE_MAX_GAP_M
) -> dict[str, list]:
    """Where the library has photos, for the map's faint coverage layer (no tiles needed).

    ``references`` are ``MapView.set_references`` dicts (lat, lon, label). Returns ``points``,
    each distinct position once as ``[lat, lon]``, and ``tracks``, runs of photos consecutive in
    file-name order whose neighbours are at most ``max_gap_m`` apart (two or more points each).
    Positions that are missing or out of range are left out.
    """
    labels, lats, lons = [], [], []
    for ref in references:
        label = ref.get("label")
        labels.append(str(label if label is not None else ref.get("id", "")))
        lats.append(_coordinate(ref.get("lat")))
        lons.append(_coordinate(ref.get("lon")))
    order = sorted(range(len(labels)), key=lambda i: _natural_key(labels[i]))
    lats, lons = np.array(lats, dtype=float)[order], np.array(lons, dtype=float)[order]
    ok = np.isfinite(lats) & np.isfinite(lons) & (np.abs(lats) <= 90) & (np.abs(lons) <= 180)
    lats, lons = lats[ok], lons[ok]
    for decimals in _COVERAGE_DECIMALS:
        grid = np.stack([lats.round(decimals), lons.round(decimals)], axis=1).reshape(-1, 2)
        points = np.unique(grid, axis=0)
        if len(points) <= MAX_COVERAGE_POINTS:
            break
    # Runs: break where the next photo (in file order) is farther than max_gap_m.
    gaps = haversine_m(grid[:-1, 0], grid[:-1, 1], grid[1:, 0], grid[1:, 1])
    starts = np.concatenate([[0], np.flatnonzero(np.atleast_1d(gaps) > max_gap_m) + 1])
    ends = np.append(starts[1:], len(grid))
    tracks = []
    for a, b in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
        run = grid[a:b]
        keep = np.ones(len(run), dtype=bool)
        keep[1:] = np.any(run[1:] != run[:-1], axis=1)  # a burst on one spot is one point
        if keep.sum() > 1:
            tracks.append(run[keep].tolist())
    return {"points": points.tolist(), "tracks": tracks}


class _NvInit(MacroElement):
    """Starts the page logic once folium has created the Leaflet map."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            nvInit({{ this._parent.get_name() }}, {{ this.config_js }});
        {% endmacro %}
        """
    )

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self._name = "NvInit"
        self.config_js = to_js(config)


class OfflineMap(folium.Map):
    """A folium Map whose scripts and styles are local files, with no CDN links.

    folium's defaults pull Leaflet, jQuery, Bootstrap, Awesome Markers and Font Awesome from
    CDNs; this page needs only Leaflet and its own plugins, all vendored.
    """

    def __init__(self, world_script: Path, **kwargs: Any) -> None:
        base = web_dir()
        self.default_js = [(name, (base / name).as_uri()) for name in _JS[:-1]]
        self.default_js += [
            ("qwebchannel", QWEBCHANNEL_JS),
            ("nvworld", world_script.resolve().as_uri()),
            ("nvmap", (base / _JS[-1]).as_uri()),
        ]
        self.default_css = [(name, (base / name).as_uri()) for name in _CSS]
        super().__init__(tiles=None, **kwargs)


def build_map_html(
    world_script: Path,
    *,
    tiles_online: bool = False,
    tile_url: str = DEFAULT_TILE_URL,
    attribution: str = DEFAULT_TILE_ATTRIBUTION,
) -> str:
    """The page's HTML; ``world_script`` is the world.js it loads (see write_map_page)."""
    if tiles_online:
        _check_tile_url(tile_url)
    fmap = OfflineMap(
        world_script,
        location=[20.0, 0.0],
        zoom_start=2,
        control_scale=True,
    )
    fmap.get_root().title = "netvlad-gui map"
    config: dict[str, Any] = {"tiles_online": bool(tiles_online)}
    if tiles_online:
        config.update(tile_url=tile_url, attribution=attribution)
    fmap.add_child(_NvInit(config))
    return fmap.get_root().render()


def write_map_page(
    out_dir: Path,
    *,
    tiles_online: bool = False,
    tile_url: str = DEFAULT_TILE_URL,
    attribution: str = DEFAULT_TILE_ATTRIBUTION,
) -> Path:
    """Write index.html (+ world.js) into ``out_dir`` and return the HTML path.

    The page references the vendored assets by absolute file:// URL, so ``out_dir`` can be any
    temporary folder. Load it from the file (QWebEngineView.load), not with setHtml: the world
    outline makes it far bigger than setHtml's 2 MB limit allows once inlined.
    """
    _check_assets()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = out_dir / WORLD_SCRIPT
    topo = (web_dir() / WORLD_TOPOJSON).read_text(encoding="utf-8")
    world.write_text(f"window.nvWorld = {topo};\n", encoding="utf-8")
    html = build_map_html(
        world, tiles_online=tiles_online, tile_url=tile_url, attribution=attribution
    )
    page = out_dir / PAGE_NAME
    page.write_text(html, encoding="utf-8")
    return page
