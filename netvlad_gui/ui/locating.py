"""The photos being located: what was sent to the engine, and what each stage that comes back does.

The window owns widgets; this object owns the per-photo state between a drop and the final
answer: which photos are in flight, which were sent before the library changed (their answers
belong to the old one), which of a batch failed, and how long each took. The engine's session
decides every answer; stages are only relayed into the queue, and a photo's answer counts as
arrived (``resultArrived``) when its final stage does.

Waiting photos go out as engine jobs in list order: runs of photos located alone, and each
group of photos located together (a walk, a video's frames) as one sequence job; each photo
remembers its job, since a sequence's ids (its trips) are numbered per job.
"""

from __future__ import annotations

import itertools
import logging
import time

from PySide6.QtCore import QObject, Signal

from netvlad_gui.core.config import LocateConfig, SequenceConfig
from netvlad_gui.core.query.result import LocateResult

from . import messages
from .notices import WARNING
from .queuepanel import DONE, QueuePanel
from .workers import LocateJob

log = logging.getLogger("netvlad_gui.ui")

_jobs = itertools.count(1)
_groups = itertools.count(1)


def new_group() -> int:
    """A fresh group number: photos that share it are located together."""
    return next(_groups)


class Locating(QObject):
    """Sends the queue's waiting photos to the engine and files the stages that come back.

    Signals: ``requested(jobs, LocateConfig)`` to the engine worker; ``shown(token)`` when the
    photo on show changed; ``resultArrived(token)`` on a photo's final stage; ``notice(text,
    level, action, file, log_text)`` for the window's notice bar; ``idle()`` when nothing is in
    flight any more.
    """

    requested = Signal(list, object)
    shown = Signal(int)
    resultArrived = Signal(int)
    notice = Signal(str, str, str, str, str)
    idle = Signal()

    def __init__(self, queue: QueuePanel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.in_flight: set[int] = set()
        self._stale_in_flight: set[int] = set()  # sent before the library changed
        self._failed_names: list[str] = []  # photos of the current batch that failed
        self._drop_times: dict[int, float] = {}
        self.times: list[float] = []  # seconds from drop to final answer, per photo

    def dropped(self, tokens: list[int], t0: float) -> None:
        """New photos were added to the queue at ``t0`` (``time.perf_counter()``)."""
        for token in tokens:
            self._drop_times[token] = t0
        self._failed_names = []

    def send(self, cfg: LocateConfig, sequence: SequenceConfig | None = None) -> int:
        """Send the waiting photos that are not in flight; how many were sent. Photos of a
        group go as one job located together with ``sequence`` (default: core's)."""
        waiting = [e for e in self.queue.waiting() if e.token not in self.in_flight]
        if not waiting:
            return 0
        sequence = sequence or SequenceConfig()
        jobs: list[LocateJob] = []
        groups: dict[int, LocateJob] = {}
        for e in waiting:
            if e.group:
                job = groups.get(e.group)
                if job is None:
                    job = groups[e.group] = LocateJob([], sequence)
                    jobs.append(job)
            elif jobs and jobs[-1].sequence is None:
                job = jobs[-1]
            else:
                job = LocateJob([])
                jobs.append(job)
            job.items.append((e.token, e.photo()))
        numbers = {id(job): next(_jobs) for job in jobs}
        for job in jobs:
            for token, _ in job.items:
                self.queue.entry(token).job = numbers[id(job)]
        self.in_flight.update(e.token for e in waiting)
        self.requested.emit(jobs, cfg)
        return len(waiting)

    def locate_together(self, tokens: list[int]) -> bool:
        """Requeue these photos as one group located together; False (nothing changed) while
        one of them is still being located."""
        if len(tokens) < 2 or any(t in self.in_flight for t in tokens):
            return False
        self.queue.requeue(tokens, group=new_group())
        return True

    def has_waiting(self) -> bool:
        return any(e.token not in self.in_flight for e in self.queue.waiting())

    def library_changed(self) -> list[int]:
        """The library (or model) changed: answers from the old one are marked, not shown as
        current; photos in flight will be marked when they arrive. The tokens marked now."""
        old = [e.token for e in self.queue.entries() if e.state == DONE and not e.stale]
        self._stale_in_flight |= self.in_flight
        if old:
            self.queue.mark_stale(old)
        return old

    def locate_again(self) -> None:
        """Requeue the photos marked as from another library."""
        self.queue.requeue([e.token for e in self.queue.entries() if e.stale])

    # ---- from the engine ------------------------------------------------------------------

    def on_stage(self, token: int, result: LocateResult) -> None:
        """One stage of a photo's answer: file it; on the final one the photo is done."""
        entry = self.queue.set_result(token, result)
        if entry is None:
            self.in_flight.discard(token)
            return  # the queue was cleared meanwhile
        if result.final:
            self.in_flight.discard(token)
            if token in self._stale_in_flight:  # located against the library before the change
                self._stale_in_flight.discard(token)
                self.queue.mark_stale([token])
            self._record(entry, result)
        current = self.queue.current()
        if current is not None and current.token == token:
            self.shown.emit(token)
        if result.final:
            self.resultArrived.emit(token)

    def on_finished(self, _count: int, cancelled: bool) -> None:
        if cancelled:
            # A photo stopped at a provisional stage has no answer: it waits again.
            unfinished = [
                t for t in self.in_flight if (e := self.queue.entry(t)) is not None and e.verifying
            ]
            self.queue.requeue(unfinished)
            self.in_flight.clear()
        if not self.in_flight:
            self.idle.emit()

    def _record(self, entry, result: LocateResult) -> None:
        t0 = self._drop_times.pop(entry.token, None)
        if t0 is not None:
            self.times.append(time.perf_counter() - t0)
        if result.error:
            self._failed_names.append(entry.display_name)
            self.notice.emit(  # one notice for the batch, naming them all
                messages.failed_photos(self._failed_names, result.error),
                WARNING,
                "Show all" if len(self._failed_names) > 1 else "",
                entry.path,
                f"Cannot locate {entry.display_name} ({entry.path}): {result.error}",
            )
        else:
            took = f" in {self.times[-1]:.1f} s" if t0 is not None else ""
            log.info("located %s%s", entry.name, took)
