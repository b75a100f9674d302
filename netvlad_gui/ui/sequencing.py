"""Photos located together in the window (issue 22): a walk, a selection, a video's frames.

The window's side of sequences, kept out of the main window: the "Locate photos of one walk
together" option (File menu and the box under the photo list, saved in the settings), which
makes a dropped folder or several dropped photos one group; "Locate selected as a sequence";
videos, whose frames the engine worker samples into the user cache before the window lists
them as one group; and the predicted track of the shown photo's walk on the map. Core decides
everything (order, trips, places); this module only groups what the user dropped and draws
what came back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction

from .locating import new_group
from .mapdata import track_to_map
from .notices import WARNING
from .queuepanel import Entry

if TYPE_CHECKING:
    from .mainwindow import MainWindow

log = logging.getLogger("netvlad_gui.ui")


class Sequencing(QObject):
    """Groups photos to be located together and draws their track; owned by the window.

    ``sampling`` lists the videos whose frames the engine is reading (Stop ends that too).
    """

    _sampleRequested = Signal(str, object, float, int)

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.sampling: list[str] = []
        self._engine = None  # the engine worker (attach)
        self._started: dict[str, float] = {}  # video -> when it was dropped (perf_counter)
        self.action: QAction | None = None  # File → Locate photos of one walk together
        queue = win.queue
        queue.together.setChecked(win.settings.sequence)
        queue.togetherToggled.connect(self.set_together)
        queue.sequenceRequested.connect(self.locate_together)
        win.map.trackClicked.connect(queue.set_current)
        win.locating.resultArrived.connect(self._on_result)

    def attach(self, engine, action: QAction) -> None:
        """Wire the engine worker (video sampling) and the File menu's checkable action."""
        self._engine = engine
        self._sampleRequested.connect(engine.sample_video)
        engine.framesReady.connect(self._on_frames)
        self.action = action
        action.setCheckable(True)
        action.setChecked(self.win.settings.sequence)
        action.toggled.connect(self.set_together)

    # ---- the "one walk" option -------------------------------------------------------------

    @property
    def together(self) -> bool:
        return self.win.settings.sequence

    def set_together(self, on: bool) -> None:
        """Tick or clear "Locate photos of one walk together" (saved; the menu and the box
        follow each other). Applies to photos dropped from now on."""
        on = bool(on)
        for widget in (self.action, self.win.queue.together):
            if widget is not None and widget.isChecked() != on:
                widget.blockSignals(True)
                widget.setChecked(on)
                widget.blockSignals(False)
        if self.win.settings.sequence != on:
            self.win.settings.sequence = on
            self.win.settings.save()

    def add_photos(self, items: list[str], named: list[Path], photos: list[str]) -> list[Entry]:
        """List dropped photos (``photos``: resolved, ``named``: the same as found in
        ``items``): with the option on, the photos of each dropped folder are one group and the
        loose photos another; else each photo is located alone."""
        queue = self.win.queue
        if not self.together or len(photos) < 2:
            return queue.add(photos)
        # by the path as found, not the resolved one: a folder of symlinks is still one walk
        folders = [Path(i).expanduser() for i in items if Path(i).expanduser().is_dir()]
        groups: dict[Path | None, tuple[int, list[str]]] = {}
        for as_named, photo in zip(named, photos, strict=True):
            folder = next((f for f in folders if as_named.is_relative_to(f)), None)
            groups.setdefault(folder, (new_group(), []))[1].append(photo)
        entries: list[Entry] = []
        for group, paths in groups.values():
            entries += queue.add(paths, group=group)
        return entries

    def locate_together(self, tokens: list[int]) -> None:
        """Locate selected as a sequence: these photos again, as one group."""
        win = self.win
        if not win.locating.locate_together(tokens):
            win.statusBar().showMessage(
                "Some of these photos are still being located: wait for them, then try again.",
                5000,
            )
            return
        current = win.queue.current()
        if current is not None:
            win.show_token(current.token)  # its old answer is gone: "Locating…"
        win.send_waiting()

    # ---- videos ----------------------------------------------------------------------------

    def add_video(self, video: Path) -> None:
        """Have the engine sample the video's frames (its thread, not this one); they are
        listed and located together when they come (``_on_frames``)."""
        win = self.win
        path = str(video.expanduser().resolve())
        self.sampling.append(path)
        self._started[path] = time.perf_counter()
        win.statusBar().showMessage(f"Reading the frames of {video.name}…")
        win.stop_button.show()
        every = win.settings.sequence_config().every_s
        cfg = win.settings.extract_config(win.image_size)
        self._sampleRequested.emit(path, cfg, every, self._engine.cancels)

    def on_progress(self, done: int, total: int) -> None:
        """The engine's progress reading a video's frames (``total`` 0: not known)."""
        if not self.sampling:
            return
        name = Path(self.sampling[0]).name
        of = f" of about {total}" if total > done else ""
        self.win.statusBar().showMessage(f"Reading the frames of {name}: {done}{of}…")

    def _on_frames(self, video: str, frames: list, problem: str, cancelled: bool) -> None:
        win = self.win
        if video in self.sampling:
            self.sampling.remove(video)
        t0 = self._started.pop(video, time.perf_counter())
        name = Path(video).name
        if not self.sampling and not win.locating.in_flight:
            win.stop_button.hide()
        win.statusBar().clearMessage()
        if cancelled:
            win.statusBar().showMessage(f"Stopped reading {name}.", 5000)
            return
        if not frames:
            win.show_notice(f"Cannot read {name}: {problem}", WARNING, file=video)
            return
        if problem:  # truncated: its frames are kept, and the user is told why there are no more
            win.show_notice(f"{name}: {problem}", WARNING, file=video)
        entries = win.queue.add_frames(frames, video, new_group())
        if len(entries) < len(frames):
            win.statusBar().showMessage(f"{len(frames) - len(entries)} frames already listed", 5000)
        win.locating.dropped([e.token for e in entries], t0)
        if entries:
            win.queue.set_current(entries[0].token)
        log.info("%s: %d frames", name, len(frames))
        win.send_waiting()

    # ---- the track on the map ----------------------------------------------------------------

    def walk_of(self, entry: Entry | None) -> list[Entry]:
        """The photos decided together with ``entry`` (the same engine job and trip), in list
        order; none when it was located alone."""
        res = entry.result if entry is not None else None
        if entry is None or entry.stale or res is None or res.sequence is None or not entry.job:
            return []
        return [
            e
            for e in self.win.queue.entries()
            if e.job == entry.job
            and not e.stale
            and e.result is not None
            and e.result.final
            and e.result.sequence is not None
            and e.result.sequence.id == res.sequence.id
        ]

    def draw_track(self, entry: Entry | None, *, fit: bool = True) -> None:
        """Draw the shown photo's walk on the map (after ``show_result``, which clears it)."""
        walk = self.walk_of(entry)
        if len(walk) < 2:
            return
        photos = [(e.token, e.display_name, e.result) for e in walk]
        self.win.map.show_track(track_to_map(photos, entry.token), fit=fit)

    def _on_result(self, token: int) -> None:
        """A photo's final answer came: redraw the track on show when it joins it (the view
        stays where it is)."""
        current = self.win.queue.current()
        arrived = self.win.queue.entry(token)
        if current is None or arrived is None or token == current.token:
            return
        if arrived.job == current.job and current.result is not None and current.result.final:
            self.draw_track(current, fit=False)
