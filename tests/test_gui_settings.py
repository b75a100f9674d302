"""Settings dialog, the paper-model download from the GUI (local HTTP server), and small parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from _gui import delete_later, isolated_settings  # noqa: F401 - fixtures
from _mat_models import write_mat_model
from PySide6.QtCore import QSettings, QTimer

from netvlad_gui.core.config import DEFAULT_MODEL, ExtractConfig
from netvlad_gui.core.model import zoo
from netvlad_gui.core.model.resolve import MISSING_WEIGHTS_FILE, NO_BACKBONE_WEIGHTS, check_model
from netvlad_gui.ui.mapdata import format_coords, osm_url, result_to_map
from netvlad_gui.ui.settingsdialog import AppSettings, SettingsDialog, model_problem
from netvlad_gui.ui.stallmeter import StallMeter
from netvlad_gui.ui.widgets import EtaClock, format_eta

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")


class _Files(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        data = self.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def model_server(tmp_path, monkeypatch) -> Iterator[str]:
    mat = tmp_path / "Pitts30K_struct.mat"
    write_mat_model(mat, k=4, out=8, seed=None, compress=True)
    _Files.files = {mat.name: mat.read_bytes(), "TokyoTM_struct.mat": b"not a model" * 100}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/netvlad/"
    monkeypatch.setenv(zoo.BASE_URL_ENV, url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _pick(combo, name: str) -> None:
    combo.setCurrentIndex(combo.findData(name))
    assert combo.currentData() == name


def test_get_the_papers_model_downloads_in_a_worker(qtbot, model_server) -> None:
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    dialog.show()
    _pick(dialog.zoo_model, "vgg16-netvlad-pitts30k")
    with qtbot.waitSignal(dialog.downloaded, timeout=60_000) as done:
        dialog.get_button.click()
        assert dialog.downloading and dialog.cancel_download.isEnabled()
    name, path = done.args
    assert name == "vgg16-netvlad-pitts30k" and zoo.model_path(name) is not None
    assert str(zoo.model_path(name)) == path
    assert dialog.model.currentText() == name  # the downloaded model is now the chosen one
    assert not dialog.downloading and dialog.get_button.isEnabled()
    assert model_problem(name) == ""

    # A broken file is refused with a message, and the dialog stays usable.
    _pick(dialog.zoo_model, "vgg16-netvlad-tokyotm")
    dialog.get_button.click()
    qtbot.waitUntil(lambda: not dialog.downloading, timeout=60_000)
    assert "not a valid NetVLAD model" in dialog.download_status.text()
    assert zoo.model_path("vgg16-netvlad-tokyotm") is None


def test_settings_round_trip_and_validation(qtbot, tmp_path) -> None:
    settings = AppSettings(
        library="/photos",
        model="vgg16-fmax",
        backbone_weights="",
        device="cpu",
        top_n=7,
        image_size=480,
    )
    settings.save()
    assert AppSettings.load() == settings
    store = QSettings()
    store.setValue("settings/top_n", "lots")
    store.setValue("settings/device", "tpu")
    loaded = AppSettings.load()
    assert loaded.top_n == AppSettings().top_n and loaded.device == "auto"

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.device.findData("cuda") == -1 or dialog.device.count() == 3
    dialog.top_n.setValue(9)
    dialog.weights.setText(str(tmp_path / "missing.pth"))
    assert "does not exist" in dialog.problem.text()
    dialog.weights.setText("")
    dialog.model.setCurrentText(DEFAULT_MODEL)
    assert dialog.problem.text() == ""
    out = dialog.settings(settings)
    assert (out.top_n, out.model, out.library, out.device) == (9, DEFAULT_MODEL, "/photos", "cpu")
    assert out.online_tiles is False  # offline unless the user opts in


def test_backbone_runtime_setting_reaches_the_engine_config(qtbot, monkeypatch) -> None:
    """The runtime chosen in Settings is what the engine worker's ExtractConfig carries."""
    from netvlad_gui.core.model import ortmodel

    AppSettings(runtime="onnxruntime", device="cpu", image_size=480).save()
    loaded = AppSettings.load()
    cfg = loaded.extract_config()
    assert (cfg.runtime, cfg.device, cfg.image_size, cfg.num_workers) == (
        "onnxruntime",
        "cpu",
        480,
        ExtractConfig.num_workers,  # decoding threads, as the CLI: no process is forked
    )
    assert loaded.extract_config(320).image_size == 320  # a launch option wins
    QSettings().setValue("settings/runtime", "tensorrt")
    assert AppSettings.load().runtime == "auto"  # unknown stored value: the default
    AppSettings(runtime="torch").save()  # chosen now: kept
    assert AppSettings.load().runtime == "torch"
    QSettings().remove("settings/runtime_chosen")  # saved before "auto": torch was the default
    assert AppSettings.load().runtime == "auto"

    monkeypatch.setattr(ortmodel, "installed_version", lambda: None)
    dialog = SettingsDialog(loaded)
    qtbot.addWidget(dialog)
    ort = dialog.runtime.model().item(dialog.runtime.findData("onnxruntime"))
    assert not ort.isEnabled() and "pip install" in ort.toolTip()  # offered, with the reason
    dialog.runtime.setCurrentIndex(dialog.runtime.findData("torch"))
    assert dialog.settings(loaded).runtime == "torch"


def test_online_tiles_setting_persists_as_a_real_bool(qtbot) -> None:
    AppSettings(online_tiles=False).save()
    assert AppSettings.load().online_tiles is False  # INI text "false" must not read as True
    AppSettings(online_tiles=True, tile_url="https://tiles.example/{z}/{x}/{y}.png").save()
    loaded = AppSettings.load()
    assert loaded.online_tiles is True and loaded.tile_url.startswith("https://tiles.example/")
    dialog = SettingsDialog(loaded)
    qtbot.addWidget(dialog)
    assert dialog.online_tiles.isChecked()
    dialog.online_tiles.setChecked(False)
    assert dialog.settings(loaded).online_tiles is False


def test_model_problem_says_how_to_fix_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert model_problem(DEFAULT_MODEL) == ""
    assert "Get the paper's trained model" in model_problem("vgg16-netvlad-pitts30k")
    text = model_problem("alexnet-netvlad")
    assert "No usable weights" in text and "backbone weights file" in text
    weights = tmp_path / "alexnet.pth"
    weights.write_bytes(b"x")
    assert model_problem("alexnet-netvlad", str(weights)) == ""
    assert "does not exist" in model_problem(str(tmp_path / "model.pt"))
    # The rules live in core; the dialog only words them.
    problem = check_model("alexnet-netvlad")
    assert (problem.kind, problem.backbone) == (NO_BACKBONE_WEIGHTS, "alexnet")
    assert check_model("alexnet-netvlad", "none") is None
    missing = check_model("alexnet-netvlad", str(tmp_path / "gone.pth"))
    assert missing.kind == MISSING_WEIGHTS_FILE and "gone.pth" in missing.message


def test_stall_meter_sees_a_blocked_event_loop(qtbot) -> None:
    # Bounds from the clock around each step, not fixed figures: a loaded machine only makes
    # the gaps longer, never the test wrong.
    meter = StallMeter(interval_ms=10)
    t0 = time.perf_counter()
    meter.start()
    qtbot.waitUntil(lambda: meter.worst_ms() > 0, timeout=5_000)  # it ticks
    assert meter.worst_ms() <= (time.perf_counter() - t0) * 1000
    meter.begin("work")
    blocked = threading.Event()

    def block() -> None:
        time.sleep(0.25)  # block the GUI thread for 250 ms
        blocked.set()

    t1 = time.perf_counter()
    QTimer.singleShot(20, block)
    qtbot.waitUntil(lambda: blocked.is_set() and meter.worst_ms("work") >= 250, timeout=10_000)
    meter.end("work")
    elapsed_ms = (time.perf_counter() - t1) * 1000
    assert meter.worst_ms("work") <= elapsed_ms  # never more than the time that passed
    assert meter.worst_ms() >= meter.worst_ms("work")
    assert meter.long_stalls and meter.long_stalls[-1][2] == ("work",)
    assert "work" in meter.figures() and meter.summary().startswith("worst GUI stall")
    meter.reset()
    assert meter.worst_ms("work") == 0 and meter.worst_ms() == 0
    meter.stop()
    assert not meter.running


def test_small_parts() -> None:
    from netvlad_gui.core.query.locate import LocateResult, Match

    assert format_coords(55.6982559, 13.1952007) == "55.698256, 13.195201"
    assert osm_url(55.5, -3.25) == (
        "https://www.openstreetmap.org/?mlat=55.500000&mlon=-3.250000#map=18/55.500000/-3.250000"
    )
    assert format_eta(75) == "1:15" and format_eta(3725) == "1:02:05"
    clock = EtaClock()
    assert clock.update("extract", 0, 100, now=0.0) is None
    assert clock.update("extract", 10, 100, now=5.0) == pytest.approx(45.0)
    assert clock.update("finalize", 0, 1, now=6.0) is None  # a new stage starts over
    res = LocateResult(
        "/q/<b>x<i>.jpg",
        1.0,
        2.0,
        0.5,
        30.0,
        matches=[Match(1, "/lib/a.jpg", 1.0, 2.0, 0.9, 3.0, 7, True)],
    )
    data = result_to_map(res)
    assert data["query"]["label"] == "<b>x<i>.jpg" and data["query"]["radius_m"] == 30.0
    assert data["matches"][0]["thumb_url"] == "file:///lib/a.jpg"
    assert data["matches"][0]["rank"] == 1 and data["matches"][0]["label"] == "a.jpg"


def test_thumbnails_are_decoded_off_thread_and_upright(qtbot, tmp_path) -> None:
    import threading

    from PIL import Image

    from netvlad_gui.ui import thumbnails

    photo = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": a portrait shot stored landscape
    Image.new("RGB", (400, 200), (200, 30, 30)).save(photo, exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")

    seen_threads: list[int] = []
    real = thumbnails.load_image

    def spy(path, size, **kw):
        seen_threads.append(threading.get_ident())
        return real(path, size, **kw)

    loader = thumbnails.ThumbnailLoader(size=128)
    try:
        thumbnails.load_image = spy
        with qtbot.waitSignal(loader.loaded, timeout=10_000) as got:
            assert loader.request(str(photo)) is None  # not cached yet: comes later
        with qtbot.waitSignal(loader.failed, timeout=10_000) as bad:
            loader.request(str(broken))
    finally:
        thumbnails.load_image = real
        loader.shutdown()
    path, image = got.args
    assert path == str(photo) and (image.width(), image.height()) == (64, 128)  # upright
    assert loader.cached(str(photo)) is not None and loader.pending == 0
    assert bad.args[0] == str(broken) and loader.error(str(broken))
    assert seen_threads and threading.get_ident() not in seen_threads


def test_progress_throttle_passes_stage_changes_and_the_end(monkeypatch) -> None:
    from netvlad_gui.ui import throttle

    clock = [100.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: clock[0])
    t = throttle.Throttle(interval_s=0.05)
    assert t.ready("extract", 0, 10)
    assert not t.ready("extract", 1, 10)  # too soon
    assert t.ready("finalize", 0, 2)  # a new stage always passes
    clock[0] += 0.01
    assert not t.ready("finalize", 1, 2)
    assert t.ready("finalize", 2, 2)  # the end always passes
    clock[0] += 0.06
    assert t.ready("finalize", 2, 3)  # the interval has passed
    assert t.ready("download", 5, None)  # an unknown total: only the clock thins it
    assert not t.ready("download", 6, None)


def test_errors_a_netvlad_error_is_its_message_anything_else_a_logged_bug(qtbot, caplog) -> None:
    import sys

    from netvlad_gui.core.errors import LibraryIndexError
    from netvlad_gui.ui import errors
    from netvlad_gui.ui.workers import EngineWorker

    worker = EngineWorker()
    with qtbot.waitSignal(worker.failed, timeout=1_000) as failed:
        worker._report("open", LibraryIndexError("the index is damaged: run `netvlad index`"))
    assert failed.args == ["open", "the index is damaged: run `netvlad index`"]
    assert "Traceback" not in caplog.text  # the user's to fix, not a bug

    try:
        {}["missing"]
    except KeyError as exc:
        bug = exc
    with qtbot.waitSignal(worker.failed, timeout=1_000) as failed:
        worker._report("build", bug)
    what, text = failed.args
    assert what == "build" and text.startswith("unexpected error (KeyError: 'missing')")
    assert str(errors.log_file()) in text
    assert "while trying to build" in caplog.text and "Traceback" in caplog.text

    shown: list[str] = []
    old = sys.excepthook
    try:
        errors.install_excepthook(shown.append)
        sys.excepthook(ZeroDivisionError, ZeroDivisionError("boom"), None)
    finally:
        sys.excepthook = old
    assert shown and shown[0].startswith("Unexpected error (ZeroDivisionError: boom)")
