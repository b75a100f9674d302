"""Memory of a whole process tree, sampled from /proc (Linux), with a watchdog.

``sum_rss`` adds every process's resident set (shared pages counted once per process that maps
them, an upper bound); ``sum_pss`` shares each page among the processes that map it (what the
tree really holds). A training run must stay under 4 GB by the stricter of the two, the RSS sum.
The watchdog kills the tree before the machine's OOM killer would (other work shares it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pid: int) -> float:
    return _kb(f"/proc/{pid}/status", "VmRSS:") / 1024


def pss_mb(pid: int) -> float:
    return _kb(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024


class TreeSampler:
    """Samples the tree of ``pid`` every ``interval`` s in a thread; kills it above ``kill_mb``.

    ``peak_rss_mb``/``peak_pss_mb``: the largest sums seen; ``samples``: (t, sum RSS, sum PSS,
    processes, marker) rows, ``marker`` the last one set with :meth:`mark` (e.g. the epoch).
    """

    def __init__(
        self, pid: int, interval: float = 0.25, kill_mb: float | None = 6000, pss: bool = True
    ) -> None:
        self.pid, self.interval, self.kill_mb, self.pss = pid, interval, kill_mb, pss
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.peak_procs = 0
        self.samples: list[tuple[float, float, float, int, str]] = []
        self.killed = False
        self.marker = ""
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def mark(self, marker: str) -> None:
        self.marker = marker

    def sample(self) -> tuple[float, float, int]:
        pids = tree(self.pid)
        rss = sum(rss_mb(p) for p in pids)
        pss = sum(pss_mb(p) for p in pids) if self.pss else 0.0
        return rss, pss, len(pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, n = self.sample()
            if rss == 0 and not os.path.exists(f"/proc/{self.pid}"):
                return
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.peak_pss_mb = max(self.peak_pss_mb, pss)
            self.peak_procs = max(self.peak_procs, n)
            self.samples.append((time.monotonic() - self._t0, rss, pss, n, self.marker))
            if self.kill_mb and rss > self.kill_mb and self.pid != os.getpid():
                self.killed = True
                kill_tree(self.pid)
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak_by_marker(self) -> dict[str, float]:
        """The largest RSS sum seen while each marker was set."""
        out: dict[str, float] = {}
        for _, rss, _, _, m in self.samples:
            out[m] = max(out.get(m, 0.0), rss)
        return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (children first found, then all at once)."""
    for p in reversed(tree(pid)):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
