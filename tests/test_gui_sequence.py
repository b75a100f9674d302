"""Issue 22 in the window: photos of one walk located together, a video as its frames, the
predicted track on the map and Stop between groups.

Offscreen Qt, no network. Real night photos of gardens_point against a geotagged stretch of its
day walk (tests/_gardens.py, built once for this module); skipped without the shared data.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _gardens import SIZE, build_gardens, write_walk_video
from _gui import (
    LOCATE_TIMEOUT_MS,
    delete_later,  # noqa: F401 - fixture
    drop_files,
    isolated_settings,  # noqa: F401 - fixture
    open_window,
    run_js,
    wait_ready,
    wait_results,
)
from PySide6.QtCore import Qt

from netvlad_gui.core.query import wording
from netvlad_gui.core.query.result import LocateResult
from netvlad_gui.core.query.verdict import NOT_FOUND
from netvlad_gui.ui.mainwindow import MainWindow
from netvlad_gui.ui.mapdata import track_to_map
from netvlad_gui.ui.queuepanel import DONE

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")

EVIL = "<img src=x onerror=window.pwned=1>.jpg"
WALK = 10  # night photos per walk: enough for a track, few enough to locate in seconds


@pytest.fixture(scope="module")
def gardens(shared_dir, tmp_path_factory):
    """(index folder, night photos 125-144)."""
    return build_gardens(shared_dir, tmp_path_factory.mktemp("gardens"))


@pytest.fixture
def seq_window(qtbot, gardens) -> MainWindow:
    win = open_window(qtbot, index_dir=str(gardens[0]), image_size=SIZE)
    wait_ready(qtbot, win)
    return win


def _walk_folder(root: Path, photos: list[Path]) -> Path:
    """A folder of the photos (symlinks: the shared data is never copied), file order = walk."""
    root.mkdir()
    for p in photos:
        (root / p.name).symlink_to(p)
    return root


def _track(qtbot, window: MainWindow) -> dict:
    return run_js(qtbot, window, "nv.count().track")


def test_a_folder_dropped_as_one_walk_gets_support_and_a_track(
    qtbot, seq_window: MainWindow, gardens, tmp_path
) -> None:
    window = seq_window
    window.queue.together.setChecked(True)  # the photo list's "Locate as one walk"
    assert window.settings.sequence and window.sequencing.action.isChecked()
    folder = _walk_folder(tmp_path / "night", gardens[1][:WALK])
    assert drop_files(window, [folder])
    entries = window.queue.entries()
    assert len(entries) == WALK and len({e.group for e in entries}) == 1 and entries[0].group
    wait_results(qtbot, window, [e.token for e in entries])
    assert all(e.state == DONE for e in entries)

    decided = [e for e in entries if e.result.sequence is not None]
    assert len(decided) >= WALK // 2, [e.result.verdict_reason for e in entries]
    assert all(e.result.sequence.support > 0 for e in decided)
    assert all(e.job == entries[0].job for e in entries)  # one engine job

    # the result panel says how many neighbours agree, the list row too
    shown = decided[len(decided) // 2]
    window.queue.set_current(shown.token)
    qtbot.waitUntil(lambda: window.results.entry.token == shown.token, timeout=5_000)
    support = wording.support(shown.result)
    assert "neighbours agree" in support
    assert support in window.results.verdict.text()
    row = window.queue.list.item(entries.index(shown)).text()
    assert wording.support(shown.result, short=True) in row

    # the map: the walk as an ordered line of numbered points, the shown photo ringed
    placed = {
        e.token
        for e in decided
        if wording.coordinates_kind(e.result) == wording.ANSWER  # never a not-found guess
    }
    qtbot.waitUntil(lambda: (_track(qtbot, window) or {}).get("current") == shown.token)
    track = _track(qtbot, window)
    assert track["points"] == len(placed) >= 2
    assert set(track["tokens"]) == placed
    assert track["order"] == sorted(track["order"])  # walk order, numbered from 1
    assert track["order"] == [
        window.queue.entry(t).result.sequence.index + 1 for t in track["tokens"]
    ]
    assert track["numbered"] >= 1
    assert "track" in run_js(qtbot, window, "nv.ui().legend")

    # clicking another point of the track shows that photo
    other = next(t for t in track["tokens"] if t != shown.token)
    window.map.run_js(f"nv.trackMarker({other}).fire('click')")
    qtbot.waitUntil(lambda: window.queue.current().token == other, timeout=10_000)
    qtbot.waitUntil(lambda: (_track(qtbot, window) or {}).get("current") == other)

    # a file name with markup reaches the track's tooltip as text
    points = [
        {"token": 1, "number": 1, "lat": -27.4740, "lon": 153.028, "label": EVIL},
        {"token": 2, "number": 2, "lat": -27.4741, "lon": 153.028, "label": "b.jpg"},
    ]
    window.map.show_track({"points": points})
    qtbot.waitUntil(lambda: (_track(qtbot, window) or {}).get("points") == 2)
    window.map.run_js("nv.trackMarker(1).openTooltip()")
    tip = "document.querySelector('.leaflet-tooltip-pane').textContent"
    qtbot.waitUntil(lambda: EVIL in (run_js(qtbot, window, tip) or ""), timeout=10_000)
    assert run_js(qtbot, window, "window.pwned === undefined") is True
    assert (
        run_js(qtbot, window, "document.querySelectorAll('.leaflet-tooltip-pane img').length") == 0
    )


def test_a_selection_located_as_a_sequence(qtbot, seq_window: MainWindow, gardens) -> None:
    window = seq_window
    assert not window.queue.together.isChecked()  # off by default: each photo alone
    tokens = window.open_inputs([str(p) for p in gardens[1][:WALK]])
    wait_results(qtbot, window, tokens)
    assert all(window.queue.entry(t).result.sequence is None for t in tokens)
    assert not window.queue.sequence_button.isEnabled()

    window.queue.list.selectAll()
    assert window.queue.sequence_button.isEnabled()
    qtbot.mouseClick(window.queue.sequence_button, Qt.MouseButton.LeftButton)
    groups = {window.queue.entry(t).group for t in tokens}
    assert len(groups) == 1 and 0 not in groups
    wait_results(qtbot, window, tokens)
    results = [window.queue.entry(t).result for t in tokens]
    assert sum(r.sequence is not None for r in results) >= WALK // 2


def test_a_dropped_video_is_located_as_its_named_frames(
    qtbot, seq_window: MainWindow, gardens, tmp_path
) -> None:
    window = seq_window
    video = write_walk_video(tmp_path / "night walk.avi", gardens[1][:6])  # 6 s, 2 fps
    assert drop_files(window, [video])
    qtbot.waitUntil(lambda: len(window.queue.entries()) == 6, timeout=LOCATE_TIMEOUT_MS)
    entries = window.queue.entries()
    assert [e.name for e in entries] == [f"night walk.avi@00:{s:02d}.0" for s in range(6)]
    assert [e.time_s for e in entries] == [float(s) for s in range(6)]
    assert len({e.group for e in entries}) == 1 and entries[0].group
    assert all(e.source == str(video.resolve()) for e in entries)
    wait_results(qtbot, window, [e.token for e in entries])
    assert all(e.state == DONE and not e.result.error for e in entries)
    assert [Path(e.result.query).name for e in entries] == [e.name for e in entries]
    assert window.results.title.text() == entries[0].name


def test_an_unreadable_video_says_why(qtbot, seq_window: MainWindow, tmp_path) -> None:
    window = seq_window
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    drop_files(window, [bad])
    qtbot.waitUntil(lambda: window.notice.isVisible(), timeout=LOCATE_TIMEOUT_MS)
    assert "broken.mp4" in window.notice.text
    assert window.queue.entries() == []


def test_stop_between_groups(qtbot, seq_window: MainWindow, gardens, tmp_path) -> None:
    """Two folders dropped as walks are two groups: Stop while the second starts leaves its
    photos waiting and keeps the first group's answers."""
    window = seq_window
    window.sequencing.set_together(True)
    night = gardens[1]
    first = _walk_folder(tmp_path / "a", night[:4])
    second = _walk_folder(tmp_path / "b", night[4:8])
    session = window.engine._session
    real_run = session.run
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def gated_run(photos, cfg=None, **kw):  # the engine thread, once per group
        calls.append(len(photos))
        if len(calls) == 2:
            started.set()
            release.wait(LOCATE_TIMEOUT_MS / 1000)  # until the test has clicked Stop
        return real_run(photos, cfg, **kw)

    session.run = gated_run
    finished: list[tuple[int, bool]] = []
    window.engine.locateFinished.connect(lambda n, cancelled: finished.append((n, cancelled)))
    try:
        assert drop_files(window, [first, second])
        qtbot.waitUntil(started.is_set, timeout=LOCATE_TIMEOUT_MS)
        assert window.stop_button.isVisible()
        qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    finally:
        release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=LOCATE_TIMEOUT_MS)
    assert finished == [(4, True)] and calls == [4, 4]
    entries = window.queue.entries()
    qtbot.waitUntil(lambda: all(e.state == DONE for e in entries[:4]), timeout=5_000)
    assert all(e.state == "waiting" and e.result is None for e in entries[4:])
    qtbot.waitUntil(lambda: not window.stop_button.isVisible(), timeout=5_000)


def test_the_track_leaves_out_not_found_guesses_and_escapes_names() -> None:
    from netvlad_gui.core.query.result import SequenceInfo

    def res(i: int, verdict: str) -> LocateResult:
        r = LocateResult(query=f"{i}.jpg", lat=-27.47 + i * 1e-5, lon=153.03, verdict=verdict)
        r.sequence = SequenceInfo(1, i, 3, 4)
        return r

    evil = EVIL
    photos = [
        (1, evil, res(0, "located")),
        (2, "b", res(1, NOT_FOUND)),
        (3, "c", res(2, "uncertain")),
    ]
    track = track_to_map(photos, current=3)
    assert [p["token"] for p in track["points"]] == [1, 3]  # the not-found guess is no point
    assert [p["number"] for p in track["points"]] == [1, 3]
    assert track["points"][0]["label"] == evil  # a plain string: nvtrack.js sets textContent


def test_a_row_waiting_for_its_neighbours_and_one_decided_with_them() -> None:
    from netvlad_gui.core.query.result import SequenceInfo
    from netvlad_gui.ui.queuepanel import Entry

    waiting = LocateResult(query="a.jpg", lat=1.0, lon=2.0, final=False, verified=True)
    entry = Entry(1, "a.jpg", state=DONE, result=waiting)
    assert entry.status_lines() == ("Checked, waiting for", "the photos after it")
    assert entry.status_line() == "Checked, " + wording.WAITING_FOR_NEIGHBOURS
    decided = LocateResult(
        query="a.jpg", lat=1.0, lon=2.0, verdict="located", confidence=0.9, radius_m=10.0
    )
    decided.sequence = SequenceInfo(1, 3, 5, 9)
    entry.result = decided
    assert entry.status_lines()[0] == "Located · 5 of 9 agree"


def test_stop_cancels_a_video_queued_behind_the_running_job(qtbot, tmp_path) -> None:
    """A video dropped while photos are located waits in the engine's queue; Stop must end it
    too, though its sampling only starts (and clears the cancel flag) after the Stop."""
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.ui.workers import EngineWorker

    video = tmp_path / "clip.avi"
    video.write_bytes(b"not read: the job must end before it opens the file")
    worker = EngineWorker()
    asked_at = worker.cancels  # the window asks for the video...
    worker.cancel()  # ...then Stop is clicked while another job runs
    with qtbot.waitSignal(worker.framesReady, timeout=5_000) as got:
        worker.sample_video(str(video), ExtractConfig(), 1.0, asked_at)
    assert got.args == [str(video), [], "", True]  # cancelled, no frames, no problem
