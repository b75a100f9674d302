"""Workers that keep heavy work off the GUI thread: the engine (model + index) and downloads.

Each worker is a QObject moved to its own QThread. The GUI calls its slots through queued signals,
so jobs run one after another in the worker's thread; results, progress and errors come back as
signals. ``cancel()`` and ``stop()`` are plain methods that only set a ``threading.Event`` and are
safe to call from the GUI thread while a job runs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from netvlad_gui.core.config import ExtractConfig, LocateConfig, SequenceConfig
from netvlad_gui.core.library.status import LibraryStatus, index_exists, resolve_index_dir
from netvlad_gui.core.model.zoo import WeightsUnavailableError
from netvlad_gui.core.preload import preload

from .errors import error_message
from .throttle import Throttle

log = logging.getLogger(__name__)


@dataclass
class LocateJob:
    """Photos the engine locates in one go: ``items`` are (token, photo) with a photo a path
    or a ``PhotoInput`` (a video frame with its name and time); with ``sequence`` they are
    located together (core's session orders them and splits them into trips), else each
    alone, in order."""

    items: list = field(default_factory=list)
    sequence: SequenceConfig | None = None


class EngineWorker(QObject):
    """Holds the open library and its locate session; builds, updates and locates.

    Signals: ``progress(stage, done, total)`` (build stages, then "locate"), ``buildFinished``
    (a BuildSummary, or None after a failure), ``indexOpened`` (a core.library.LibraryStatus),
    ``staged(token, LocateResult)`` for every stage of a photo's answer as the session yields it
    (``result.final`` says whether more follow), ``locateFinished(count, cancelled)`` and
    ``failed(what, message)`` where ``what`` is one of "open", "build", "locate", "weights".
    ``warmedUp`` says that ``warm_up`` has loaded the engine's modules. ``framesReady(video,
    frames, problem, cancelled)`` ends ``sample_video``: the frames (PhotoInputs, none when
    the video cannot be read), the one-line reason why they are missing or stop early, and
    whether Stop ended it (progress stage "frames" before).
    """

    progress = Signal(str, int, int)
    buildFinished = Signal(object)
    indexOpened = Signal(object)
    staged = Signal(int, object)
    locateFinished = Signal(int, bool)
    failed = Signal(str, str)
    warmedUp = Signal()
    framesReady = Signal(str, list, str, bool)

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._stopping = threading.Event()
        self.cancels = 0  # how many times cancel() was called: a job asked for before is stale
        self._session = None  # core.query.session.LocateSession; owns the open index
        self._throttle = Throttle()

    # ---- called from the GUI thread ---------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running job at its next checkpoint, and the video samplings asked for before
        (queued behind it: each clears the flag when it starts); finished work is kept."""
        self.cancels += 1
        self._cancel.set()

    def stop(self) -> None:
        """Cancel the running job and refuse queued ones (before the thread quits)."""
        self._stopping.set()
        self._cancel.set()

    def release(self) -> None:
        """Close the index; call only once the worker's thread has finished."""
        self._close()

    # ---- slots (run in the worker thread) --------------------------------------------------

    @Slot()
    def warm_up(self) -> None:
        """Import the engine (ONNX Runtime, faiss, OpenCV; not torch) while the user is still
        choosing; jobs queue behind."""
        if self._stopping.is_set():
            return
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - a broken install is said when a job needs it
            log.warning("preloading the engine failed: %s", exc)
        self.warmedUp.emit()

    @Slot(str, object)
    def open_index(self, index_dir: str, extract_cfg: ExtractConfig) -> None:
        """Open (or reopen) an index folder and warm up the model for locating."""
        if self._stopping.is_set():
            return
        try:
            self.indexOpened.emit(self._open(Path(index_dir), extract_cfg))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notice, never a crash
            self._report("open", exc)

    @Slot(str, str, str, str, object)
    def build(
        self,
        library: str,
        model_spec: str,
        weights: str,
        index_dir: str,
        extract_cfg: ExtractConfig,
    ) -> None:
        """Index or update ``library``; cancel keeps what is finished. Reopens the index after."""
        if self._stopping.is_set():
            return
        from netvlad_gui.core.library.builder import build_index

        self._cancel.clear()
        target = resolve_index_dir(library, index_dir or None)
        self._close()  # the builder opens the folder itself
        try:
            summary = build_index(
                library,
                target,
                model_spec=model_spec or None,
                backbone_weights=weights or None,
                extract_cfg=extract_cfg,
                progress=self._progress,
                cancel=self._cancel.is_set,
                keep_index_model=True,  # "Update index" goes on with the index's own model
            )
        except Exception as exc:  # noqa: BLE001
            self._report("build", exc)
            summary = None
        self.buildFinished.emit(summary)  # None when the build failed (``failed`` said why)
        if not self._stopping.is_set() and index_exists(target):
            try:
                self.indexOpened.emit(self._open(target, extract_cfg))
            except Exception as exc:  # noqa: BLE001
                self._report("open", exc)

    @Slot(list, object)
    def locate(self, jobs: list, cfg: LocateConfig) -> None:
        """Locate ``jobs`` (LocateJobs, or (token, path) pairs located alone) with ``cfg``,
        relaying each stage as ``staged``.

        ``cancel()`` stops between photos (and between the trips of a sequence) and between a
        photo's stages (its final stage then rests on the global search and says so):
        ``locateFinished(done, True)``; the rest is not sent. A bug on one photo gives it a
        final result with ``error`` and the rest go on.
        """
        if self._stopping.is_set():
            return
        self._cancel.clear()
        if self._session is None:
            self.failed.emit("locate", "there is no index to search yet: build the library first")
            self.locateFinished.emit(0, False)
            return
        jobs = [j if isinstance(j, LocateJob) else LocateJob([j]) for j in jobs]
        total = sum(len(j.items) for j in jobs)
        done = 0
        self._progress("locate", 0, total)
        for job in jobs:
            if self._cancel.is_set():
                break
            if job.sequence is not None and len(job.items) > 1:
                for token, result in self._together(job, cfg):
                    self.staged.emit(int(token), result)
                    if result.final:
                        done += 1
                        self._progress("locate", done, total)
                continue
            for token, path in job.items:
                if self._cancel.is_set():
                    break
                for result in self._stages(path, cfg):
                    self.staged.emit(int(token), result)
                done += 1
                self._progress("locate", done, total)
        self._progress("locate", done, total)
        self.locateFinished.emit(done, self._cancel.is_set())

    def _stages(self, path, cfg: LocateConfig):
        """The session's stages of one photo; a bug ends the photo with a final error result
        (its traceback goes to the log) instead of stopping the rest."""
        from netvlad_gui.core.query.result import LocateResult

        try:
            yield from self._session.stages(path, cfg, cancel=self._cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - a bug on one photo must not stop the rest
            yield LocateResult(query=str(path), error=error_message(exc, f"locate {path}"))

    def _together(self, job: LocateJob, cfg: LocateConfig):
        """(token, stage) of a job's photos located as a sequence. A bug ends the photos that
        have no final stage yet with an error result (the traceback goes to the log)."""
        from netvlad_gui.core.query.result import LocateResult

        tokens = [token for token, _ in job.items]
        photos = [photo for _, photo in job.items]
        ended: set[int] = set()
        try:
            run = self._session.run(photos, cfg, cancel=self._cancel.is_set, sequence=job.sequence)
            for position, result in run:
                if result.final:
                    ended.add(position)
                yield tokens[position], result
        except Exception as exc:  # noqa: BLE001 - the photos get a reason, the app goes on
            message = error_message(exc, "locate a sequence")
            for position, photo in enumerate(photos):
                if position not in ended:
                    name = getattr(photo, "label", None) or str(photo)
                    yield tokens[position], LocateResult(query=name, error=message)

    @Slot(str, object, float, int)
    def sample_video(
        self, video: str, extract_cfg: ExtractConfig, every_s: float, asked_at: int = -1
    ) -> None:
        """Sample ``video``'s frames into the user cache (reused when there), with progress
        ("frames", saved, expected); ``framesReady`` says what came of it. ``asked_at`` is
        ``cancels`` when the window asked: a Stop since then cancels it before it starts."""
        if self._stopping.is_set():
            return
        if 0 <= asked_at < self.cancels:
            self.framesReady.emit(video, [], "", True)
            return
        from netvlad_gui.core.cancel import Cancelled
        from netvlad_gui.core.photos.framecache import cached_frames
        from netvlad_gui.core.photos.video import VideoError

        self._cancel.clear()
        self._progress("frames", 0, 0)
        try:
            sampled = cached_frames(
                video,
                extract_cfg,
                every_s,
                progress=lambda done, total: self._progress("frames", done, total),
                cancel=self._cancel.is_set,
            )
        except Cancelled:
            self.framesReady.emit(video, [], "", True)
            return
        except VideoError as exc:
            self.framesReady.emit(video, [], str(exc), False)
            return
        except Exception as exc:  # noqa: BLE001 - a bug: said in words, logged in full
            self.framesReady.emit(video, [], error_message(exc, f"read {video}"), False)
            return
        self.framesReady.emit(video, list(sampled.frames), sampled.problem, False)

    # ---- internals --------------------------------------------------------------------------

    def _open(self, index_dir: Path, extract_cfg: ExtractConfig) -> LibraryStatus:
        """``extract_cfg``: the window's (``AppSettings.extract_config``)."""
        from netvlad_gui.core.query.session import open_session

        self._close()
        status, self._session = open_session(index_dir, extract_cfg, progress=self._progress)
        return status

    def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                log.debug("closing the index failed", exc_info=True)

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._throttle.ready(stage, done, total):
            self.progress.emit(stage, int(done), int(total))

    def _report(self, what: str, exc: BaseException) -> None:
        message = error_message(exc, what)  # a bug's traceback goes to the log file
        if isinstance(exc, WeightsUnavailableError):
            what = "weights"
        log.warning("%s failed: %s", what, message)
        self.failed.emit(what, message)


class DownloadWorker(QObject):
    """Runs ``zoo.get_model(name)`` (the paper's trained models) with progress and cancel."""

    progress = Signal(object, object)  # bytes done, total bytes or None
    finished = Signal(str, str)  # name, path
    failed = Signal(str, str)  # name, message (cancelling is a failure that says so)

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @Slot(str)
    def download(self, name: str) -> None:
        from netvlad_gui.core.model import zoo

        self._cancel.clear()
        throttle = Throttle()

        def progress(done: int, total: int | None) -> None:
            if throttle.ready(name, done, total):
                self.progress.emit(done, total)

        try:
            path = zoo.get_model(name, progress=progress, cancel=self._cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised
            self.failed.emit(name, error_message(exc, f"download {name}"))
            return
        self.finished.emit(name, str(path))


class WorkerThread(QObject):
    """A QThread that owns one worker and stops it cleanly."""

    def __init__(self, worker: QObject, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.thread = QThread(self)
        self.thread.setObjectName(name)
        worker.moveToThread(self.thread)
        self.thread.start()

    def stop(self, timeout_ms: int = 30_000) -> bool:
        """Cancel the worker's job, end the thread's event loop and wait; True if it ended."""
        stop = getattr(self.worker, "stop", None) or getattr(self.worker, "cancel", None)
        if stop is not None:
            stop()
        self.thread.quit()
        ended = self.thread.wait(timeout_ms)
        if not ended:
            log.warning(
                "worker thread %s did not end within %d ms", self.thread.objectName(), timeout_ms
            )
        release = getattr(self.worker, "release", None)
        if ended and release is not None:
            release()
        return ended
