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

from netvlad_gui.core.backbones import WeightsUnavailableError
from netvlad_gui.core.config import ExtractConfig, LocateConfig
from netvlad_gui.core.images import ImageLoadError
from netvlad_gui.core.paths import default_index_dir

from .errors import error_message
from .throttle import Throttle

log = logging.getLogger(__name__)


@dataclass
class IndexInfo:
    """What the GUI shows about the library's index; made in the worker thread."""

    index_dir: str
    library: str = ""
    model: str = ""
    exists: bool = False  # an index folder with a catalogue
    ready: bool = False  # photos can be located now
    problem: str = ""  # why not, for the user
    indexed: int = 0
    with_gps: int = 0
    failed: int = 0
    pending: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not indexed
    no_gps: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): indexed, no GPS
    references: list[dict] = field(default_factory=list)  # for MapView.set_references


def _extract_cfg(device: str, image_size: int) -> ExtractConfig:
    # Decoding stays in this worker thread: forking DataLoader processes out of a Qt process
    # that runs a browser engine is not safe.
    return ExtractConfig(
        image_size=image_size or ExtractConfig.image_size, device=device or "auto", num_workers=0
    )


class EngineWorker(QObject):
    """Holds the open LibraryIndex and its Locator; builds, updates and searches.

    Signals: ``progress(stage, done, total)`` (build stages, then "locate"), ``buildFinished``
    (a BuildSummary, or None after a failure), ``indexOpened`` (an IndexInfo), ``located(token, LocateResult)``,
    ``locateFinished(count, cancelled)`` and ``failed(what, message)`` where ``what`` is one of
    "open", "build", "locate", "weights".
    """

    progress = Signal(str, int, int)
    buildFinished = Signal(object)
    indexOpened = Signal(object)
    located = Signal(int, object)
    locateFinished = Signal(int, bool)
    failed = Signal(str, str)

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._stopping = threading.Event()
        self._index = None
        self._locator = None
        self._throttle = Throttle()

    # ---- called from the GUI thread ---------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running job at its next checkpoint; finished work is kept."""
        self._cancel.set()

    def stop(self) -> None:
        """Cancel the running job and refuse queued ones (before the thread quits)."""
        self._stopping.set()
        self._cancel.set()

    def release(self) -> None:
        """Close the index; call only once the worker's thread has finished."""
        self._close()

    # ---- slots (run in the worker thread) --------------------------------------------------

    @Slot(str, str, int)
    def open_index(self, index_dir: str, device: str = "auto", image_size: int = 0) -> None:
        """Open (or reopen) an index folder and warm up the model for locating."""
        if self._stopping.is_set():
            return
        try:
            self.indexOpened.emit(self._open(Path(index_dir), device, image_size))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notice, never a crash
            self._report("open", exc)

    @Slot(str, str, str, str, str, int)
    def build(
        self,
        library: str,
        model_spec: str = "",
        weights: str = "",
        device: str = "auto",
        index_dir: str = "",
        image_size: int = 0,
    ) -> None:
        """Index or update ``library``; cancel keeps what is finished. Reopens the index after."""
        if self._stopping.is_set():
            return
        from netvlad_gui.core.builder import build_index
        from netvlad_gui.core.index import MODEL_FILE

        self._cancel.clear()
        target = Path(index_dir) if index_dir else default_index_dir(library)
        self._close()  # the builder opens the folder itself
        spec = model_spec or None
        if spec is not None and (target / MODEL_FILE).exists():
            spec = None  # an existing index keeps the model its descriptors came from
        try:
            summary = build_index(
                library,
                target,
                model_spec=spec,
                backbone_weights=weights or None,
                extract_cfg=_extract_cfg(device, image_size),
                progress=self._progress,
                cancel=self._cancel.is_set,
            )
        except Exception as exc:  # noqa: BLE001
            self._report("build", exc)
            summary = None
        self.buildFinished.emit(summary)  # None when the build failed (``failed`` said why)
        if not self._stopping.is_set() and (target / "catalog.sqlite").exists():
            try:
                self.indexOpened.emit(self._open(target, device, image_size))
            except Exception as exc:  # noqa: BLE001
                self._report("open", exc)

    @Slot(list, int)
    def locate(self, jobs: list, top_n: int = 5) -> None:
        """Locate ``jobs`` = [(token, path)], emitting ``located`` per photo as it is done."""
        if self._stopping.is_set():
            return
        self._cancel.clear()
        done = 0
        cancelled = False
        if self._locator is None:
            self.failed.emit("locate", "there is no index to search yet: build the library first")
            self.locateFinished.emit(0, False)
            return
        from netvlad_gui.core.locate import LocateResult

        for n, (token, path) in enumerate(jobs):
            if self._cancel.is_set():
                cancelled = True
                break
            self._progress("locate", n, len(jobs))
            try:
                result = self._locator.locate(path, top_n)
            except ImageLoadError as exc:
                result = LocateResult(query=str(path), error=str(exc))
            except Exception as exc:
                log.exception("cannot locate %s", path)
                result = LocateResult(query=str(path), error=f"{type(exc).__name__}: {exc}")
            done += 1
            self.located.emit(int(token), result)
        self._progress("locate", done, len(jobs))
        self.locateFinished.emit(done, cancelled)

    # ---- internals --------------------------------------------------------------------------

    def _open(self, index_dir: Path, device: str, image_size: int) -> IndexInfo:
        from netvlad_gui.core.catalog import INDEXED
        from netvlad_gui.core.index import CATALOG_FILE, LibraryIndex
        from netvlad_gui.core.locate import Locator

        self._close()
        info = IndexInfo(index_dir=str(index_dir))
        if not (index_dir / CATALOG_FILE).exists():
            info.problem = "not indexed yet"
            return info
        index = LibraryIndex(index_dir)
        self._index = index
        stats = index.stats()
        info.exists = True
        info.library = str(index.library or "")
        info.model = index.model_name
        info.indexed, info.with_gps = stats.indexed, stats.with_gps
        info.failed, info.pending = stats.failed, stats.pending
        info.failures = list(stats.failures)
        info.no_gps = [
            (r.path, r.gps_reason or "no GPS") for r in index.catalog.rows(INDEXED) if not r.has_gps
        ]
        info.references = [
            {"id": r.id, "lat": r.lat, "lon": r.lon, "label": r.path}
            for r in index.reference_points()
        ]
        if stats.indexed == 0:
            info.problem = "no photo is indexed yet"
            return info
        if not index.model_path.exists():
            info.problem = "the index has no model: update the index"
            return info
        locator = Locator(
            index, extract_cfg=_extract_cfg(device, image_size), locate_cfg=LocateConfig()
        )
        index.faiss_index()  # load the search index now, not on the first drop
        self._locator = locator
        info.ready = True
        return info

    def _close(self) -> None:
        self._locator = None
        if self._index is not None:
            try:
                self._index.close()
            except Exception:
                log.debug("closing the index failed", exc_info=True)
            self._index = None

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
        from netvlad_gui.core import zoo

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
