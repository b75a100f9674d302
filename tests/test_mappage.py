"""The offline map page (no Qt): local assets only, no CDN, data escaped for <script>."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from netvlad_gui.core import mappage
from netvlad_gui.core.mappage import (
    DEFAULT_TILE_URL,
    QWEBCHANNEL_JS,
    MapAssetsMissingError,
    MapPageError,
    js_call,
    to_js,
    write_map_page,
)

URL_RE = re.compile(r"https?://[^\s\"'<>)\\]+")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def offline_page(tmp_path: Path) -> str:
    return write_map_page(tmp_path).read_text(encoding="utf-8")


def test_offline_page_has_no_network_url(offline_page: str) -> None:
    assert URL_RE.findall(offline_page) == []
    for cdn_thing in ("jquery", "bootstrap", "awesome", "fontawesome", "cdn"):
        assert cdn_thing not in offline_page.lower()


def test_page_references_only_existing_local_files(tmp_path: Path) -> None:
    html = write_map_page(tmp_path).read_text(encoding="utf-8")
    urls = _links(html)
    assert len(urls) >= 10
    for url in urls:
        if url == QWEBCHANNEL_JS:
            continue  # Qt's built-in resource
        parsed = urlparse(url)
        assert parsed.scheme == "file", url
        assert Path(unquote(parsed.path)).is_file(), url
    world = tmp_path / "world.js"
    assert f'src="{world.resolve().as_uri()}"' in html
    text = world.read_text(encoding="utf-8")
    assert text.startswith("window.nvWorld = ")
    topo = json.loads(text.removeprefix("window.nvWorld = ").rstrip().rstrip(";"))
    assert topo["type"] == "Topology" and "countries" in topo["objects"]


def test_page_loads_vendored_leaflet_and_scale(offline_page: str) -> None:
    assert "leaflet.js" in offline_page and "leaflet.markercluster.js" in offline_page
    assert "topojson-client.min.js" in offline_page
    assert "L.control.scale()" in offline_page
    assert '"tiles_online": false' in offline_page


def test_online_tiles_add_only_tile_and_attribution_urls(tmp_path: Path) -> None:
    html = write_map_page(tmp_path, tiles_online=True).read_text(encoding="utf-8")
    found = set(URL_RE.findall(html))
    assert found == {DEFAULT_TILE_URL, "https://www.openstreetmap.org/copyright"}


def test_bad_tile_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MapPageError, match="tile URL"):
        write_map_page(tmp_path, tiles_online=True, tile_url="javascript:alert(1)")
    with pytest.raises(MapPageError):
        write_map_page(tmp_path, tiles_online=True, tile_url="https://example.org/tile.png")
    # Offline, the tile URL is not used, so it is not checked either.
    write_map_page(tmp_path, tiles_online=False, tile_url="nonsense")


def test_config_cannot_close_the_script_element(tmp_path: Path) -> None:
    evil = "</script><script>window.pwned=1</script>"
    html = write_map_page(tmp_path, tiles_online=True, attribution=evil).read_text(encoding="utf-8")
    assert evil not in html
    assert "<\\/script><script>window.pwned=1<\\/script>" in html


def test_to_js_escapes_and_round_trips() -> None:
    label = "</script><img src=x onerror=window.pwned=2>\u2028"
    out = to_js({"label": label})
    assert "</" not in out and "\u2028" not in out
    assert json.loads(out) == {"label": label}


def test_to_js_cleans_numpy_nan_and_paths() -> None:
    value = {"a": np.float32(1.5), "b": math.nan, "c": [np.int64(3), math.inf], "d": Path("/x")}
    assert json.loads(to_js(value)) == {"a": 1.5, "b": None, "c": [3, None], "d": "/x"}


def test_js_call_builds_a_call_and_rejects_odd_names() -> None:
    assert js_call("select", 3) == "window.nv.select(3)"
    assert js_call("fitAll") == "window.nv.fitAll()"
    with pytest.raises(MapPageError):
        js_call("select(1);alert", 1)


def test_missing_asset_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mappage, "web_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(MapAssetsMissingError, match="vendor.sh"):
        write_map_page(tmp_path / "out")


def test_page_script_never_uses_inner_html() -> None:
    script = (mappage.web_dir() / "nvmap.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "textContent" in script


def test_vendored_files_have_licences() -> None:
    web = mappage.web_dir()
    for name in ("leaflet", "leaflet.markercluster", "topojson-client", "world-atlas"):
        assert (web / "licenses" / f"{name}-LICENSE").is_file()
    notes = (web / "VENDORED.md").read_text(encoding="utf-8")
    for package in ("leaflet", "leaflet.markercluster", "topojson-client", "world-atlas"):
        assert package in notes
    for name in ("marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"):
        assert (web / "images" / name).is_file()
