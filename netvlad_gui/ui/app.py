"""`netvlad-gui`: the desktop app's entry point.

netvlad-gui [PHOTO|FOLDER]... [--library DIR] [--index DIR]
netvlad-gui --library DIR --screenshot FILE.png [PHOTO|FOLDER]...   (locate, draw, save, exit 0)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ORGANIZATION = "netvlad-gui"
APPLICATION = "netvlad-gui"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="netvlad-gui",
        description="Tell where a photo was taken: drop photos on the window to locate them "
        "against a folder of geotagged photos.",
    )
    ap.add_argument("inputs", nargs="*", metavar="PHOTO|FOLDER", help="photos to locate")
    ap.add_argument("--library", metavar="DIR", help="the folder of geotagged reference photos")
    ap.add_argument(
        "--index",
        metavar="DIR",
        help="index folder (default: one per library, in the user data folder)",
    )
    ap.add_argument(
        "--locate",
        metavar="PHOTO",
        action="append",
        default=[],
        help="locate this photo once the index is ready (indexing it if needed)",
    )
    ap.add_argument(
        "--screenshot",
        metavar="FILE.png",
        help="save a screenshot of the window once everything is drawn (with photos or "
        "folders, given as arguments or with --locate: once their results are), then exit",
    )
    ap.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="longer side photos are resized to (default: the saved setting, 640)",
    )
    ap.add_argument(
        "--measure-stalls",
        action="store_true",
        help="print the GUI event loop's worst stall (ms) per phase on exit",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="screenshot mode gives up after this many seconds (exit 1)",
    )
    ap.add_argument("--verbose", "-v", action="store_true")
    return ap


def _prepare_environment() -> None:
    """Environment that must be set before Qt, numpy or torch are imported."""
    # Chromium refuses its sandbox as root (containers, CI); without this the map stays blank.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    # numpy's OpenBLAS threads spin against torch's and faiss's OpenMP threads: on 2 cores a
    # 19x6144 matrix product then takes 230 ms instead of 2 ms and stalls the window. The heavy
    # maths runs in torch and faiss, so numpy loses nothing by staying on one thread.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # In screenshot mode the photos and folders are located (indexing first if needed) before
    # the picture is taken, whether named as arguments or with --locate.
    to_locate = [*args.locate, *(args.inputs if args.screenshot else [])]
    if to_locate and not (args.library or args.index):
        what = "--locate" if args.locate else "--screenshot with photos"
        print(f"netvlad-gui: {what} needs --library DIR (or --index DIR)", file=sys.stderr)
        return 2
    _prepare_environment()
    from .errors import install_excepthook, setup_logging

    setup_logging(args.verbose)
    from netvlad_gui.core.model.runtime import tune_process

    tune_process()

    # QtWebEngine must be imported before the QApplication exists.
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtWidgets import QApplication

    from .mainwindow import LaunchOptions, MainWindow

    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationDisplayName("netvlad-gui")
    options = LaunchOptions(
        inputs=[] if args.screenshot else list(args.inputs),
        library=args.library,
        index_dir=args.index,
        image_size=args.image_size,
        auto_build=bool(to_locate),
        measure_stalls=args.measure_stalls,
    )
    window_ref: list = []
    install_excepthook(lambda text: window_ref and window_ref[0].show_notice(text, "error"))
    window = MainWindow(options)
    window_ref.append(window)
    window.show()
    runner = None
    if args.locate or args.screenshot:
        from .screenshot import AutoLocate

        runner = AutoLocate(
            window, [str(Path(p)) for p in to_locate], args.screenshot, timeout_s=args.timeout
        )
        runner.start()
    code = app.exec()
    if runner is not None and runner.exit_code is not None:
        code = runner.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
