"""The first index in the app: drop a folder on the window, click "Build index", "Index ready".

    python benchmarks/gui_index.py                       # the lund references, default model
    python benchmarks/gui_index.py --library DIR --repeat 2
    python benchmarks/gui_index.py --locate PHOTO --repeat 5   # an indexed library, one photo

Each round runs, in fresh subprocesses with their own empty user folders (settings, indexes,
caches), first the real window (offscreen Qt) and then ``netvlad index`` on the same folder:

- window: from the process start to the window shown, the engine loaded in its thread
  (``engine_warm``: torch and OpenCV, which the window no longer waits for), the folder dropped
  on the library panel (its ``libraryDropped`` signal, what a drop emits), the index found
  missing, "Build index" clicked, and the build's end (the "Index ready" notice). ``--drop``
  says when the folder arrives: ``shown`` (at once: the first job waits for the engine) or
  ``warm`` (once the engine is loaded, as when a user takes a few seconds to pick a folder);
- CLI: ``netvlad index LIB --index DIR`` start to finish, the same build without the window.

The ratio says what the window adds to the engine's build (the GUI's build goes through the same
``build_index`` in its engine thread).

``--locate PHOTO``: the library is indexed first (by ``netvlad index``, untimed, in the same
user folders: a model's first use is behind it), then the window starts on that index; marks:
the window shown, the engine warm (``warmedUp``), the index open and searchable, "engine ready"
(both), the photo dropped then (``open_inputs``, what a drop does), its first answer (the
session's first stage: the global search) and its final one (verified). ``--code DIR`` runs
another source tree's window too, alternating (e.g. main before issue 24).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

DEFAULT_LIBRARY = REPO.parent / "shared" / "data" / "lund_street" / "references"


def child(library: str, t_spawn: float, drop_when: str = "shown") -> None:
    """In the window's process: drop, build, wait; print the times (s since the spawn)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, QObject, QTimer, Slot
    from PySide6.QtWidgets import QApplication

    from netvlad_gui.ui.mainwindow import LaunchOptions, MainWindow

    QCoreApplication.setOrganizationName("netvlad-gui-bench")
    QCoreApplication.setApplicationName("netvlad-gui")
    app = QApplication([sys.argv[0]])
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, round(time.time() - t_spawn, 2))

    win = MainWindow(LaunchOptions())
    win.show()
    mark("window_shown")
    notices: list[str] = []
    win.noticeShown.connect(lambda level, text: notices.append(text))

    def opened(info) -> None:
        if info is not None and not info.ready and "build_clicked" not in marks:
            mark("index_missing")
            mark("build_clicked")
            win.library_panel.build_button.click()

    def progress(stage: str, done: int, total: int) -> None:
        if done >= 1 and stage not in ("scan", "model"):
            mark("first_photo")

    def ended(summary) -> None:
        mark("index_ready")
        QTimer.singleShot(0, app.quit)

    win.indexChanged.connect(opened)
    win.engine.progress.connect(progress)
    win.buildEnded.connect(ended)

    def drop() -> None:
        mark("dropped")
        win.library_panel.libraryDropped.emit(library)

    class Warm(QObject):  # in the GUI thread, so the worker's signal is queued to it
        @Slot()
        def warmed(self) -> None:
            mark("engine_warm")
            if drop_when == "warm":
                drop()

    warm = Warm()
    win.engine.warmedUp.connect(warm.warmed)
    if drop_when == "shown":
        QTimer.singleShot(0, drop)
    QTimer.singleShot(600_000, app.quit)  # a stuck build ends the round, not the benchmark
    app.exec()
    summary = win.build_summaries[-1] if win.build_summaries else None
    win.shutdown()
    out = {
        "marks": marks,
        "indexed": summary.indexed if summary else None,
        "notice": next((n for n in notices if n.startswith("Index ready")), None),
    }
    print("RESULT " + json.dumps(out), flush=True)


def child_locate(index_dir: str, photo: str, t_spawn: float) -> None:
    """In the window's process: open the index, drop ``photo`` once ready, wait for its answer."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, QObject, QTimer, Slot
    from PySide6.QtWidgets import QApplication

    from netvlad_gui.ui.mainwindow import LaunchOptions, MainWindow

    QCoreApplication.setOrganizationName("netvlad-gui-bench")
    QCoreApplication.setApplicationName("netvlad-gui")
    app = QApplication([sys.argv[0]])
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, round(time.time() - t_spawn, 2))

    win = MainWindow(LaunchOptions(index_dir=index_dir))
    win.show()
    mark("window_shown")
    state = {"warm": False, "open": False}

    def maybe_drop() -> None:
        if state["warm"] and state["open"] and "dropped" not in marks:
            mark("engine_ready")
            mark("dropped")
            win.open_inputs([photo])

    class Marks(QObject):  # in the GUI thread, so the worker's signals are queued to it
        @Slot()
        def warmed(self) -> None:
            mark("engine_warm")
            state["warm"] = True
            maybe_drop()

        @Slot(object)
        def opened(self, info) -> None:
            if info is not None and info.ready:
                mark("index_open")
                state["open"] = True
                maybe_drop()

        @Slot(int, object)
        def staged(self, token, result) -> None:
            mark("first_answer")
            if result.final:
                mark("final_answer")
                marks["verdict"] = str(result.verdict)
                QTimer.singleShot(0, app.quit)

    marks_obj = Marks()
    win.engine.warmedUp.connect(marks_obj.warmed)
    win.indexChanged.connect(marks_obj.opened)
    win.engine.staged.connect(marks_obj.staged)
    QTimer.singleShot(300_000, app.quit)
    app.exec()
    win.shutdown()
    print("RESULT " + json.dumps({"marks": marks}), flush=True)


def run_locate(library: Path, photo: Path, home: Path, code: Path | None) -> dict:
    """Index ``library`` (untimed), then time the window on it with ``photo`` dropped."""
    env = user_env(home, code)
    index_dir = home / "index"
    subprocess.run(
        [sys.executable, "-m", "netvlad_gui.cli", "index", str(library), "--index", str(index_dir)],
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
        cwd=home.parent,
    )
    t0 = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-locate",
            str(index_dir),
            str(photo),
            "--t-spawn",
            repr(t0),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=home.parent,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the window's run failed:\n{proc.stderr[-3000:]}")
    m = json.loads(line[len("RESULT ") :])["marks"]
    return {
        "code": str(code) if code else "this tree",
        "marks_s": m,
        "engine_ready_after_shown_s": round(m["engine_ready"] - m["window_shown"], 2),
        "first_answer_after_drop_s": round(m["first_answer"] - m["dropped"], 2),
        "final_answer_after_drop_s": round(m["final_answer"] - m["dropped"], 2),
    }


def user_env(home: Path, code: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=os.pathsep.join([str(code or REPO), env.get("PYTHONPATH", "")]),
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    return env


def run_window(library: Path, home: Path, drop_when: str = "shown") -> dict:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(library), "--t-spawn", repr(t0)]
        + ["--drop", drop_when],
        check=False,
        env=user_env(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the window's run failed:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("RESULT ") :])
    m = out["marks"]
    out["drop_to_ready_s"] = round(m["index_ready"] - m["dropped"], 2)
    out["click_to_ready_s"] = round(m["index_ready"] - m["build_clicked"], 2)
    return out


def run_cli(library: Path, home: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "index",
            str(library),
            "--index",
            str(home / "cli-index"),
        ],
        env=user_env(home),
        check=True,
        capture_output=True,
        timeout=900,
    )
    return round(time.perf_counter() - t0, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, default=DEFAULT_LIBRARY)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--drop",
        choices=("shown", "warm"),
        default="shown",
        help="drop the folder when the window is shown, or once the engine has loaded",
    )
    ap.add_argument("--locate", type=Path, help="time a photo located in the indexed library")
    ap.add_argument("--code", type=Path, nargs="*", default=[], help="other trees (--locate)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-locate", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--t-spawn", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.t_spawn, args.drop)
        return
    if args.child_locate:
        child_locate(*args.child_locate, args.t_spawn)
        return
    from _common import machine

    print(json.dumps({"machine": machine(), "library": str(args.library)}))
    if args.locate:
        for r in range(args.repeat):
            for code in [None, *args.code]:
                with tempfile.TemporaryDirectory() as tmp:
                    row = run_locate(args.library, args.locate.resolve(), Path(tmp) / "home", code)
                print(json.dumps({"round": r + 1, "load": os.getloadavg()} | row), flush=True)
        return
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            win = run_window(args.library, Path(tmp) / "win", args.drop)
            cli_s = run_cli(args.library, Path(tmp) / "cli")
        row = {
            "round": r + 1,
            "drop": args.drop,
            "photos": win["indexed"],
            "window_marks_s": win["marks"],
            "drop_to_index_ready_s": win["drop_to_ready_s"],
            "click_to_index_ready_s": win["click_to_ready_s"],
            "cli_index_s": cli_s,
            "window_build_vs_cli": round(win["click_to_ready_s"] / cli_s, 2),
            "notice": win["notice"],
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
