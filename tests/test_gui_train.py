"""The Retrain panel: a real (tiny) `netvlad train` process, live events, Stop, Resume, failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _gui import (
    delete_later,  # noqa: F401 - fixture
    isolated_settings,  # noqa: F401 - fixture
    open_window,
)
from _library import make_library
from PySide6.QtGui import QAction

from netvlad_gui.core.config import ExtractConfig
from netvlad_gui.core.paths import default_index_dir
from netvlad_gui.core.trainconfig import QUICK_EPOCHS, MiningConfig, TrainConfig
from netvlad_gui.ui import trainpanel
from netvlad_gui.ui.notices import ERROR, WARNING
from netvlad_gui.ui.trainpanel import IDLE, TrainPanel

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")

RUN_TIMEOUT_MS = 120_000
# A few seconds of real training: untrained AlexNet, 64 px, 8 clusters, 12 photos 5 m apart.
TINY = "--num-clusters 8 --split-fractions 0.7,0.3,0 --query-every 2 --init-images 12"


def tiny_library(root: Path, n: int = 12) -> Path:
    make_library(root, n, size=64)
    rows = ["file,lat,lon"] + [
        f"img_{i:04d}.jpg,{55.7 + i * 5 / 111_320:.7f},13.2" for i in range(n)
    ]
    (root / "gps.csv").write_text("\n".join(rows) + "\n")  # 5 m apart: positives within 10 m
    return root


def configure(panel: TrainPanel, run_dir: Path, epochs: int) -> None:
    panel.model_edit.setText("alexnet-netvlad")
    panel.weights = "none"
    panel.image_size.setValue(64)
    panel.batch.setValue(2)
    panel.epochs.setValue(epochs)
    panel.device.setCurrentIndex(panel.device.findData("cpu"))
    panel.extra_edit.setText(TINY)
    panel.out_edit.setText(str(run_dir))


def test_panel_trains_shows_progress_and_switches_model(qtbot, tmp_path: Path) -> None:
    library = tiny_library(tmp_path / "library")
    win = open_window(qtbot, library=str(library))
    retrain = [a for a in win.findChildren(QAction) if a.text() == "&Retrain…"]
    assert len(retrain) == 1
    retrain[0].trigger()  # Tools → Retrain…
    panel = win.train_panel
    assert win.train_dock.isVisible() and panel.use_library.isChecked()
    assert str(library) in panel.library_label.text()
    run_dir = tmp_path / "run"
    configure(panel, run_dir, epochs=1)
    events: list[dict] = []
    panel.event.connect(events.append)
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done:
        panel.start_button.click()
        assert panel.state == "running" and not panel.start_button.isEnabled()
    assert done.args[1] is True, panel.log_view.toPlainText()
    args = panel.last_args
    assert args[:2] == ["--data", str(library)] and "--json-progress" in args
    kinds = [e["event"] for e in events]
    assert "start" in kinds and "step" in kinds and kinds[-1] == "done"
    steps = [e for e in events if e["event"] == "step"]
    assert len(panel.charts.points()["loss"]) == len(steps)
    assert panel.progress.value() == panel.progress.maximum()
    assert panel.state == IDLE and panel.process is None
    assert (run_dir / "model.pt").is_file() and panel.use_button.isEnabled()
    panel.use_button.click()  # "Use this model": the app's model, with its own index folder
    assert win.settings.model == str((run_dir / "model.pt").resolve())
    assert Path(win.settings.index_dir) != default_index_dir(library)
    assert Path(win.settings.index_dir).name.startswith(default_index_dir(library).name)
    assert "Build index" in win.notice.text
    assert panel.build_button.isEnabled()


def test_the_held_out_figure_comes_with_use_this_model(qtbot, tmp_path: Path) -> None:
    library = tiny_library(tmp_path / "library", n=16)
    win = open_window(qtbot, library=str(library))
    panel = win.open_training()
    configure(panel, tmp_path / "run", epochs=1)
    # Validation places right after the training stretch: they are the held-out places.
    panel.extra_edit.setText(TINY + " --gap-m 0")
    events: list[dict] = []
    panel.event.connect(events.append)
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done:
        panel.start()
    assert done.args[1] is True, panel.log_view.toPlainText()
    heldout = [e for e in events if e["event"] == "heldout"]
    assert [e["stage"] for e in heldout] == ["before", "after"]
    before, after = (round(100 * e["recall@1"]) for e in heldout)
    # Before and after beside "Use this model", and in its tooltip.
    assert panel.heldout_label.isVisible()
    assert f"Recall@1 {before} % before → {after} % with this model" in panel.heldout_label.text()
    tip = panel.use_button.toolTip()
    assert "never trained on" in tip and f"{after} %" in tip and f"{before} % before" in tip
    assert panel.charts.points()["recall@1"][0] == (0.0, pytest.approx(before, abs=0.5))
    _assert_plain(panel)
    panel.use_button.click()  # the model comes with its figure
    assert "never trained on" in win.notice.text and f"{after} %" in win.notice.text


JARGON = ("margin", "tuple", "references/train", "/train:")


def _assert_plain(panel: TrainPanel) -> None:
    """What the panel says in words carries no training jargon or internal folder names."""
    shown = [panel.log_view.toPlainText(), panel.status_label.text(), panel.heldout_label.text()]
    shown += [b.toolTip() for b in (panel.start_button, panel.resume_button, panel.use_button)]
    for text in shown:
        lines = [line for line in text.splitlines() if not line.startswith("$ netvlad train")]
        for word in JARGON:
            assert word not in "\n".join(lines).lower(), (word, text)


def test_stop_really_stops_and_resume_continues(qtbot, tmp_path: Path) -> None:
    library = tiny_library(tmp_path / "library")
    panel = TrainPanel(lambda: str(library))
    qtbot.addWidget(panel)
    run_dir = tmp_path / "run"
    configure(panel, run_dir, epochs=50)
    epochs: list[int] = []
    panel.event.connect(lambda e: e["event"] == "epoch" and epochs.append(e["epoch"]))
    assert not panel.resume_button.isEnabled()
    panel.start()
    qtbot.waitUntil(lambda: bool(epochs), timeout=RUN_TIMEOUT_MS)
    pid = panel.process.processId()
    with qtbot.waitSignal(panel.finished, timeout=30_000) as done:
        panel.stop_button.click()
        assert panel.state == "stopping"
    assert done.args[1] is False and panel.state == IDLE and panel.process is None
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert (run_dir / "last.pt").is_file() and panel.resume_button.isEnabled()
    assert panel.start_button.isEnabled()

    stopped_at = epochs[-1]
    steps: list[dict] = []
    panel.event.connect(lambda e: e["event"] == "step" and steps.append(e))
    assert panel.resume()
    assert "--resume" in panel.last_args and str(run_dir) in panel.last_args
    qtbot.waitUntil(lambda: bool(steps), timeout=RUN_TIMEOUT_MS)
    assert steps[0]["epoch"] > stopped_at  # continues after the last finished epoch
    with qtbot.waitSignal(panel.finished, timeout=30_000):
        panel.stop()
    assert panel.state == IDLE


def test_failed_training_is_a_notice_and_the_app_keeps_working(qtbot, tmp_path: Path) -> None:
    library = tiny_library(tmp_path / "library")
    win = open_window(qtbot, library=str(library))
    panel = win.open_training()
    configure(panel, tmp_path / "run", epochs=1)
    panel.use_folders.setChecked(True)
    panel.database_edit.setText(str(tmp_path / "missing-db"))
    panel.queries_edit.setText(str(tmp_path / "missing-q"))
    errors = qtbot.waitSignal(
        win.noticeShown, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda lvl, _t: lvl == ERROR
    )
    with qtbot.waitSignal(panel.finished, timeout=RUN_TIMEOUT_MS) as done, errors as shown:
        panel.start()
    assert done.args[0] != 0 and done.args[1] is False
    text = shown.args[1]
    assert text.startswith("Training failed:") and "missing-db" in text
    assert panel.state == IDLE and panel.start_button.isEnabled()
    assert not panel.use_button.isEnabled()
    assert win.isVisible() and win.open_inputs([str(library / "img_0000.jpg")])  # still works

    # Output that is not JSON goes to the log; a malformed event does not break the panel.
    panel._handle_stdout_line("some library printed this")
    panel._handle_stdout_line('{"event": "step", "epoch": "x"}')
    assert "some library printed this" in panel.log_view.toPlainText()
    assert "unreadable progress line" in panel.log_view.toPlainText()


def test_form_arguments(qtbot, tmp_path: Path) -> None:
    panel = TrainPanel(lambda: "")
    qtbot.addWidget(panel)
    assert panel.use_folders.isChecked()  # no library: the folders are the only choice
    with pytest.raises(ValueError, match="database"):
        panel.train_args()
    panel.database_edit.setText("/db")
    panel.queries_edit.setText("/q")
    panel.spacing.setValue(10)
    panel.out_edit.setText(str(tmp_path / "run"))
    args = panel.train_args()
    assert args[:6] == ["--database", "/db", "--queries", "/q", "--frame-spacing-m", "10"]
    assert args[args.index("--lr") + 1] == "0.0001" and "--resume" not in args
    panel.loss.setCurrentIndex(panel.loss.findData("unsquared"))
    assert abs(panel.margin.value() - 0.3162) < 1e-4  # the unsquared loss's usual margin
    assert panel.train_args(resume=True)[-1] == "--resume"
    assert panel.margin.toolTip() and panel.epochs.toolTip() and panel.layers.toolTip()


def test_form_defaults_come_from_the_config(qtbot) -> None:
    panel = TrainPanel(lambda: "")
    qtbot.addWidget(panel)
    d = TrainConfig()
    assert panel.epochs.value() == QUICK_EPOCHS and panel.batch.value() == d.batch_size
    assert panel.lr.value() == pytest.approx(d.lr)
    assert panel.margin.value() == pytest.approx(MiningConfig.default_margin(d.mining.loss))
    assert panel.image_size.value() == d.extract.image_size == ExtractConfig().image_size
    assert panel.loss.currentData() == d.mining.loss
    assert panel.layers.currentData() == d.train_layers


def test_easy_epochs_and_skipped_whitening_are_said_not_charted(qtbot, tmp_path: Path) -> None:
    panel = TrainPanel(lambda: str(tmp_path))
    qtbot.addWidget(panel)
    easy = {"event": "epoch", "epoch": 1, "epochs": 2, "loss": 0.0, "all_easy": True}
    panel._handle_event(easy)
    panel._handle_event(
        {"event": "whitening_skipped", "dim": 4096, "images": 9, "message": "no PCA"}
    )
    log = panel.log_view.toPlainText()
    assert "epoch 1/2: nothing to learn" in log and "loss 0.0000" not in log and "no PCA" in log
    assert panel.charts.epoch_series.count() == 0
    panel._handle_event({**easy, "epoch": 2, "loss": 0.25, "all_easy": False})
    assert panel.charts.epoch_series.count() == 1 and "epoch 2/2: loss 0.2500" in (
        panel.log_view.toPlainText()
    )


def _fake_train(panel: TrainPanel, monkeypatch, code: str) -> None:
    """Make the panel run ``python -c code`` instead of ``netvlad train``."""
    monkeypatch.setattr(panel, "command", lambda _args: [sys.executable, "-c", code])


def test_stop_kills_a_process_that_ignores_sigterm(qtbot, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trainpanel, "KILL_AFTER_MS", 300)
    panel = TrainPanel(lambda: str(tmp_path))
    qtbot.addWidget(panel)
    panel.out_edit.setText(str(tmp_path / "run"))
    _fake_train(
        panel,
        monkeypatch,
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    )
    assert panel.start()
    qtbot.waitUntil(lambda: "ready" in panel.log_view.toPlainText(), timeout=10_000)
    with qtbot.waitSignal(panel.finished, timeout=10_000):
        panel.stop()
    assert panel.state == IDLE and panel.process is None


def test_out_of_memory_error_event_is_a_clear_notice(qtbot, tmp_path: Path, monkeypatch) -> None:
    panel = TrainPanel(lambda: str(tmp_path))
    qtbot.addWidget(panel)
    panel.out_edit.setText(str(tmp_path / "run"))
    message = "CUDA out of memory at batch size 4: use a smaller --batch-size"
    _fake_train(
        panel,
        monkeypatch,
        f"import json, sys; print(json.dumps({{'event': 'error', 'message': {message!r}}})); "
        f"print('netvlad: error: ' + {message!r}, file=sys.stderr); sys.exit(1)",
    )
    notices: list[tuple[str, str]] = []
    panel.notice.connect(lambda text, level: notices.append((level, text)))
    with qtbot.waitSignal(panel.finished, timeout=10_000) as done:
        panel.start()
    assert done.args == [1, False]
    level, text = notices[-1]
    assert level == ERROR and message in text and "smaller batch size" in text
    assert panel.state == IDLE and panel.start_button.isEnabled()


def test_nothing_to_learn_is_said_plainly_and_disables_start_and_resume(
    qtbot, tmp_path: Path, monkeypatch
) -> None:
    from netvlad_gui.core.training.train import NOTHING_TO_LEARN

    library = tiny_library(tmp_path / "library")
    panel = TrainPanel(lambda: str(library))
    qtbot.addWidget(panel)
    run_dir = tmp_path / "run"
    panel.out_edit.setText(str(run_dir))
    # What `netvlad train --json-progress` prints for such photos (tests/test_train.py runs it).
    lines = [
        {"event": "init", "images": 12, "descriptors": 2500, "alpha": 40.0},
        {"event": "cache", "epoch": 1, "done": 8, "total": 8},
        {"event": "start", "epochs": 5, "start_epoch": 1, "trainable_queries": 8},
        {"event": "nothing_to_learn", "message": NOTHING_TO_LEARN},
        {"event": "error", "message": NOTHING_TO_LEARN},
    ]
    _fake_train(
        panel,
        monkeypatch,
        "import json, sys\n"
        f"for ev in {lines!r}: print(json.dumps(ev), flush=True)\n"
        f"print('netvlad: error: ' + {NOTHING_TO_LEARN!r}, file=sys.stderr); sys.exit(1)",
    )
    notices: list[tuple[str, str]] = []
    panel.notice.connect(lambda text, level: notices.append((level, text)))
    with qtbot.waitSignal(panel.finished, timeout=10_000) as done:
        panel.start()
    assert done.args == [1, False]
    level, text = notices[-1]
    assert level == WARNING and text.startswith("Nothing to learn: the model already tells")
    assert "Training failed" not in text and "other times, seasons or light" in text
    assert panel.status_label.text() == "Nothing to learn from these photos."
    _assert_plain(panel)
    # Nothing can help with these photos: no Start, no Resume, until other data is chosen.
    assert not panel.start_button.isEnabled() and not panel.resume_button.isEnabled()
    assert "Nothing to learn" in panel.start_button.toolTip()
    panel.use_folders.setChecked(True)
    panel.database_edit.setText(str(tmp_path / "db"))
    panel.queries_edit.setText(str(tmp_path / "q"))
    assert panel.start_button.isEnabled()
    panel.use_library.setChecked(True)
    assert not panel.start_button.isEnabled()


def test_log_lines_wrap_instead_of_being_cut_off(qtbot) -> None:
    panel = TrainPanel(lambda: "")
    qtbot.addWidget(panel)
    mode = panel.log_view.lineWrapMode()
    assert mode == panel.log_view.LineWrapMode.WidgetWidth


def test_panel_opened_before_the_index_learns_its_library(qtbot, lund_index) -> None:
    """Retrain opened while an --index given alone is still opening: once the index names its
    library, the panel offers it (it said "no library chosen yet" for good)."""
    from _gui import open_window, wait_ready

    win = open_window(qtbot, index_dir=str(lund_index))
    panel = win.open_training()
    wait_ready(qtbot, win)
    assert win.library
    qtbot.waitUntil(panel.use_library.isEnabled, timeout=5_000)
    assert panel.library_label.text() == win.library
