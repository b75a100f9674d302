"""Named models and the resumable download, against a local HTTP server (never the network)."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _mat_models import write_mat_model

from netvlad_gui.core import paths
from netvlad_gui.core.config import DEFAULT_MODEL
from netvlad_gui.core.model import zoo

NAME = "vgg16-netvlad-pitts30k"
FILE = "Pitts30K_struct.mat"


@pytest.fixture(scope="module")
def mat_bytes(tmp_path_factory) -> bytes:
    """A structurally valid paper model (zero weights, compressed: ~70 KB)."""
    path = tmp_path_factory.mktemp("served") / FILE
    write_mat_model(path, k=4, out=8, seed=None, compress=True)
    return path.read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.honor_range = True
        self.cut_next = 0  # how many responses to break off half-way
        self.requests: list[dict[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/netvlad/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(
            {"range": self.headers.get("Range"), "ua": self.headers.get("User-Agent")}
        )
        data = srv.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.honor_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if srv.honor_range else "none")
        self.end_headers()
        if srv.cut_next:
            srv.cut_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(zoo, "RETRY_BACKOFF_S", (0.0,))
    monkeypatch.delenv(zoo.BASE_URL_ENV, raising=False)
    return tmp_path / "cache" / "models"


@pytest.fixture
def server(mat_bytes):
    srv = _Server({FILE: mat_bytes, "TokyoTM_struct.mat": b"not a mat file at all" * 100})
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_registry_names_and_kinds(cache):
    models = {m.name: m for m in zoo.list_models()}
    assert zoo.model_names()[0] == DEFAULT_MODEL == zoo.list_models()[0].name
    assert models[DEFAULT_MODEL].kind == "shipped" and models[DEFAULT_MODEL].available
    for name in (
        "vgg16-netvlad",
        "alexnet-netvlad",
        "resnet18-netvlad",
        "resnet50-netvlad",
        "vgg16-fmax",
    ):
        assert models[name].kind == "torchvision"
    assert models["mobilenet_v2-fmax"].kind == "shipped" and models["mobilenet_v2-fmax"].available
    pitts = models[NAME]
    assert pitts.kind == "download" and not pitts.available and pitts.size is None
    assert pitts.url == "https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat"
    assert pitts.path == cache / FILE
    assert models["vgg16-netvlad-tokyotm"].url.endswith("/hloc/netvlad/TokyoTM_struct.mat")
    assert zoo.is_named_model("vgg16-fmax") and not zoo.is_named_model("nope")
    assert zoo.is_downloadable(NAME) and not zoo.is_downloadable("vgg16-netvlad")
    assert zoo.model_path(NAME) is None and zoo.model_path("vgg16-netvlad") is None
    with pytest.raises(zoo.ModelNotDownloadedError, match=f"netvlad models get {NAME}"):
        zoo.require_model(NAME)
    with pytest.raises(zoo.UnknownModelError, match="known models"):
        zoo.get_model("nope")
    with pytest.raises(zoo.UnknownModelError, match="needs no download"):
        zoo.get_model("vgg16-netvlad")


def test_download_with_progress(cache, server, mat_bytes):
    calls: list[tuple[int, int | None]] = []
    path = zoo.get_model(NAME, base_url=server.url, progress=lambda d, t: calls.append((d, t)))
    assert path == cache / FILE and path.read_bytes() == mat_bytes
    assert not (cache / (FILE + ".part")).exists()
    assert calls[0] == (0, len(mat_bytes)) and calls[-1] == (len(mat_bytes), len(mat_bytes))
    assert server.requests[0]["range"] is None
    assert server.requests[0]["ua"].startswith("netvlad-gui/")
    info = zoo.model_info(NAME)
    assert info.available and info.size == len(mat_bytes)
    assert zoo.model_path(NAME) == path == zoo.require_model(NAME)
    # present: no second request
    assert zoo.get_model(NAME, base_url=server.url) == path
    assert len(server.requests) == 1


def test_cut_off_download_resumes_with_range(cache, server, mat_bytes):
    server.cut_next = 1
    with pytest.raises(zoo.ModelDownloadError, match="interrupted.*Run it again to resume"):
        zoo.get_model(NAME, base_url=server.url, retries=0)
    part = cache / (FILE + ".part")
    half = len(mat_bytes) // 2
    assert part.stat().st_size == half and not (cache / FILE).exists()
    path = zoo.get_model(NAME, base_url=server.url)
    assert path.read_bytes() == mat_bytes and not part.exists()
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]


def test_retry_resumes_within_one_call(cache, server, mat_bytes):
    server.cut_next = 2
    path = zoo.get_model(NAME, base_url=server.url, retries=2)
    assert path.read_bytes() == mat_bytes
    half = len(mat_bytes) // 2
    quarter = half + (len(mat_bytes) - half) // 2
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-", f"bytes={quarter}-"]


def test_server_ignoring_range_restarts(cache, server, mat_bytes):
    server.honor_range = False
    part = cache / (FILE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that must not stay in front")
    path = zoo.get_model(NAME, base_url=server.url)
    assert path.read_bytes() == mat_bytes
    assert (
        server.requests[0]["range"] == f"bytes={len(b'stale bytes that must not stay in front')}-"
    )


def test_cancel_keeps_part_then_resumes(cache, server, mat_bytes, monkeypatch):
    monkeypatch.setattr(zoo, "_CHUNK", 8192)
    seen: list[int] = []
    with pytest.raises(zoo.DownloadCancelled, match="kept"):
        zoo.get_model(
            NAME,
            base_url=server.url,
            progress=lambda d, t: seen.append(d),
            cancel=lambda: len(seen) >= 3,
        )
    part = cache / (FILE + ".part")
    assert part.stat().st_size == 2 * 8192 and not (cache / FILE).exists()
    assert zoo.get_model(NAME, base_url=server.url).read_bytes() == mat_bytes
    assert server.requests[-1]["range"] == "bytes=16384-"


def test_complete_part_is_finished_without_refetching(cache, server, mat_bytes):
    part = cache / (FILE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(mat_bytes)
    assert zoo.get_model(NAME, base_url=server.url).read_bytes() == mat_bytes  # 416 -> complete


def test_corrupt_download_leaves_nothing(cache, server):
    with pytest.raises(zoo.ModelDownloadError, match="not a valid NetVLAD model.*removed"):
        zoo.get_model("vgg16-netvlad-tokyotm", base_url=server.url)
    assert not any(cache.iterdir())


def test_http_error(cache, server):
    server.files.pop(FILE)
    with pytest.raises(zoo.ModelDownloadError, match="HTTP 404"):
        zoo.get_model(NAME, base_url=server.url)


def test_base_url_from_environment(cache, server, mat_bytes, monkeypatch):
    monkeypatch.setenv(zoo.BASE_URL_ENV, server.url)
    assert zoo.model_info(NAME).url == server.url + FILE
    assert zoo.get_model(NAME).read_bytes() == mat_bytes


def test_offline_error_says_how_to_install_by_hand(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hloc/netvlad"
    with pytest.raises(zoo.ModelDownloadError) as info:
        zoo.get_model(NAME, base_url=url)
    message = str(info.value)
    assert "needs the network" in message
    assert f"{url}/{FILE}" in message and str(cache / FILE) in message
    assert not (cache / FILE).exists()
