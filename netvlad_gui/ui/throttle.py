"""Thinning progress reports from a worker thread to what the window can draw.

Not superqt's ``qthrottled``: its timer lives in the calling thread's event loop, and a worker
busy inside one long core call (a build, a download) runs no event loop, so every report after
the first would wait for the job to end (measured: 100 reports over 1 s, one delivered).
A clock check in the caller's thread has no such need.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

#: Progress reports are thinned to this interval (the last one of a stage always goes out).
PROGRESS_INTERVAL_S = 0.05


class Throttle:
    """``ready(key, done, total)``: True at most once per ``interval_s`` for the same key.

    A new key (a new stage) and the final report (``done >= total``) always pass, so the
    receiver never misses a stage change or the end.
    """

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last_t = float("-inf")
        self._last_key: Hashable = object()

    def ready(self, key: Hashable, done: int, total: int | None) -> bool:
        now = time.monotonic()
        final = total is not None and done >= total
        if key == self._last_key and not final and now - self._last_t < self.interval_s:
            return False
        self._last_t, self._last_key = now, key
        return True
