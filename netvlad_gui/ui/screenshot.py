"""Screenshot mode: index if needed, locate photos, wait until everything is drawn, save, quit.

Used by ``netvlad-gui --library DIR --locate PHOTO --screenshot FILE.png`` for documentation and
for the end-to-end test in a real X server. Without ``--screenshot`` it only locates the photos.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from PySide6.QtCore import QObject, QPoint, QTimer
from PySide6.QtWidgets import QApplication

log = logging.getLogger(__name__)

POLL_MS = 200
SETTLE_MS = 1200  # after the map reports its markers: let Chromium paint them


class AutoLocate(QObject):
    """Drives a MainWindow through one locate; ``exit_code`` is set when it has finished."""

    def __init__(
        self, window, photos: list[str], screenshot: str | None, *, timeout_s: float = 900.0
    ) -> None:
        super().__init__(window)
        self.window = window
        self.photos = photos
        self.screenshot = screenshot
        self.timeout_s = timeout_s
        self.exit_code: int | None = None
        self._tokens: list[int] = []
        self._done: set[int] = set()
        self._t0 = time.perf_counter()
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._check_drawn)
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(lambda: self._finish(1, "timed out"))
        self._map_ok = False
        self._settling = False
        self._finished = False

    def start(self) -> None:
        w = self.window
        w.indexChanged.connect(self._on_index)
        w.buildEnded.connect(self._on_build)
        w.resultArrived.connect(self._on_result)
        self._deadline.start(int(self.timeout_s * 1000))
        if not self.photos:  # just the window as it opens (e.g. the first-start page)
            if w.map.is_ready:
                self._start_settling()
            else:
                w.map.ready.connect(self._start_settling)
            return
        if w.info is not None:
            self._on_index(w.info)

    # ---- steps -------------------------------------------------------------------------------

    def _on_index(self, info) -> None:
        if not info.ready or self._tokens:
            return
        if not self.window.map.is_ready:
            # Let the map page finish starting first: it is needed for the picture anyway, and
            # the stall figures then measure locating, not the browser engine's start-up.
            self.window.map.ready.connect(lambda: self._on_index(info))
            return
        self._tokens = self.window.open_inputs(self.photos)
        if not self._tokens:
            self._finish(1, "no photo to locate")

    def _on_build(self, summary) -> None:
        if summary is None:
            self._finish(1, f"indexing failed: {self.window.notice.text}")

    def _on_result(self, token: int) -> None:
        if token not in self._tokens:
            return
        self._done.add(token)
        if len(self._done) < len(self._tokens):
            return
        entries = [self.window.queue.entry(t) for t in self._tokens]
        for e in entries:
            res = e.result
            if res is not None and not res.error:
                where = f"{res.lat:.6f}, {res.lon:.6f}" if res.lat is not None else "no position"
                print(f"{e.path}: {where} (confidence {res.confidence:.2f})", flush=True)
        failed = [e for e in entries if e.result is None or e.result.error]
        if failed:
            self._finish(1, f"cannot locate {failed[0].path}: {failed[0].error}")
            return
        if not self.screenshot:
            self.exit_code = 0
            self._deadline.stop()
            return
        self.window.queue.set_current(self._tokens[0])
        self._poll.start()

    def _check_drawn(self) -> None:
        if self._settling:
            return
        if self.window.results.thumbnails_pending():
            return
        entry = self.window.queue.entry(self._tokens[0])
        res = entry.result
        want = sum(1 for m in res.matches if m.lat is not None)
        want_pred = 1 if res.lat is not None else 0

        def on_count(text) -> None:
            try:
                counts = json.loads(text) if text else {}
            except ValueError:
                counts = {}
            if counts.get("matches") == want and counts.get("prediction") == want_pred:
                self._start_settling()

        self.window.map.run_js("JSON.stringify(window.nv.count())", on_count)

    def _start_settling(self) -> None:
        if not self._settling:
            self._settling = True
            self._poll.stop()
            QTimer.singleShot(SETTLE_MS, self._grab)

    def _grab(self) -> None:
        pixmap = self.window.grab()
        if pixmap.isNull() or not pixmap.save(self.screenshot):
            self._finish(1, f"cannot save the screenshot to {self.screenshot}")
            return
        elapsed = time.perf_counter() - self._t0
        view = self.window.map
        corner = view.mapTo(self.window, QPoint(0, 0))
        ratio = pixmap.devicePixelRatio()
        box = [round(v * ratio) for v in (corner.x(), corner.y(), view.width(), view.height())]
        visible = view.isVisible()
        print(
            f"screenshot saved to {self.screenshot} ({pixmap.width()}x{pixmap.height()}, "
            f"{elapsed:.1f} s)",
            flush=True,
        )
        if visible:
            print("map area: {} {} {} {}".format(*box), flush=True)
        self._finish(0)

    def _finish(self, code: int, message: str = "") -> None:
        if self._finished:
            return
        self._finished = True
        self.exit_code = code
        self._poll.stop()
        self._deadline.stop()
        if message:
            print(f"netvlad-gui: {message}", file=sys.stderr, flush=True)
        self.window.close()
        QApplication.instance().exit(code)
