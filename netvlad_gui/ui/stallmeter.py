"""How long the GUI event loop stalls: a fast timer notes the gap between its ticks.

A timer set to fire every ``interval_ms`` fires late exactly when the event loop is busy, so the
longest gap between two ticks is the longest the user waited for a repaint or a click. Named
phases ("indexing", "locating") keep their own worst figure, so one meter serves the whole app.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel

log = logging.getLogger(__name__)


class StallMeter(QObject):
    """Records the worst gap (ms) between ticks of a precise timer, overall and per phase."""

    #: Emitted when the overall worst stall grows, with the new figure in ms.
    worstChanged = Signal(float)

    def __init__(
        self, interval_ms: int = 10, parent: QObject | None = None, *, on_demand: bool = False
    ) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        #: Tick only while a phase is active (the window's normal mode: no idle wake-ups).
        self.on_demand = on_demand
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self._worst = 0.0
        self._phases: dict[str, float] = {}
        self._active: set[str] = set()
        #: The last long gaps, (perf_counter at the late tick, gap ms, active phases), for finding
        #: what blocked the loop.
        self.long_stalls: list[tuple[float, float, tuple[str, ...]]] = []
        self.long_ms = 50.0

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    @property
    def active_phases(self) -> frozenset[str]:
        return frozenset(self._active)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._last = None

    def reset(self) -> None:
        """Forget every figure (phases included); keeps running if it was."""
        self._worst = 0.0
        self.long_stalls.clear()
        self._phases = {p: 0.0 for p in self._active}
        if self._last is not None:
            self._last = time.perf_counter()

    def begin(self, phase: str) -> None:
        """Start attributing stalls to ``phase`` (phases may overlap); starts the meter."""
        self._active.add(phase)
        self._phases.setdefault(phase, 0.0)
        if not self.running:
            self.start()

    def end(self, phase: str) -> None:
        """Stop attributing to ``phase`` and log its worst stall (stops an on-demand meter)."""
        if phase not in self._active:
            return
        self._active.discard(phase)
        # A developer's figure: in the user's log only when measuring (--measure-stalls).
        level = logging.DEBUG if self.on_demand else logging.INFO
        log.log(level, "%s: worst GUI stall %.0f ms", phase, self.worst_ms(phase))
        if self.on_demand and not self._active:
            self.stop()

    def worst_ms(self, phase: str | None = None) -> float:
        """The worst gap between ticks so far, overall or within ``phase`` (0 if never seen)."""
        if phase is None:
            return self._worst
        return self._phases.get(phase, 0.0)

    def figures(self) -> dict[str, float]:
        """Worst gap per phase plus ``"overall"``, rounded to 0.1 ms."""
        out = {p: round(v, 1) for p, v in sorted(self._phases.items())}
        out["overall"] = round(self._worst, 1)
        return out

    def summary(self) -> str:
        """One line for a log or a status bar."""
        parts = [f"{p} {v:.0f} ms" for p, v in self.figures().items()]
        return "worst GUI stall: " + ", ".join(parts)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is None:
            self._last = now
            return
        gap = (now - self._last) * 1000.0
        self._last = now
        if gap >= self.long_ms:
            self.long_stalls.append((now, gap, tuple(sorted(self._active))))
            del self.long_stalls[:-100]
        for phase in self._active:
            self._phases[phase] = max(self._phases[phase], gap)
        if gap > self._worst:
            self._worst = gap
            self.worstChanged.emit(gap)


def stall_label(meter: StallMeter) -> QLabel:
    """A status-bar label that shows the meter's worst stall as it grows."""
    label = QLabel()
    label.setObjectName("stallLabel")
    label.setToolTip("The longest the window was unresponsive while working")
    meter.worstChanged.connect(lambda ms: label.setText(f"worst UI stall {ms:.0f} ms"))
    return label
