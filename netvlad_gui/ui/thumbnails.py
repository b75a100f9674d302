"""Thumbnails decoded off the GUI thread.

Jobs run in a QThreadPool and produce a QImage (safe outside the GUI thread) from
``core.images.load_image``, which applies the EXIF orientation. The GUI turns it into a QPixmap
when it shows it. Finished thumbnails are cached, so stepping through results costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from netvlad_gui.core.photos.images import ImageLoadError, load_image

log = logging.getLogger(__name__)

THUMB_SIZE = 256  # longer side in pixels
CACHE_SIZE = 400  # thumbnails kept in memory (~200 KB each)


def pil_to_qimage(img) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels."""
    img = img.convert("RGB")
    w, h = img.size
    data = img.tobytes("raw", "RGB")
    return QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class ImageSignals(QObject):
    done = Signal(str, QImage)
    error = Signal(str, str)


class ImageJob(QRunnable):
    """Decode one photo (EXIF orientation applied) at ``size`` in a pool thread."""

    def __init__(self, path: str, size: int, signals: ImageSignals, *, draft: bool = False):
        super().__init__()
        self.path = path
        self.size = size
        self.signals = signals
        self.draft = draft

    def run(self) -> None:
        try:
            image = pil_to_qimage(load_image(self.path, self.size, draft=self.draft))
        except ImageLoadError as exc:
            self.signals.error.emit(self.path, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not end the pool thread
            self.signals.error.emit(self.path, f"{type(exc).__name__}: {exc}")
            return
        self.signals.done.emit(self.path, image)


class ThumbnailLoader(QObject):
    """Asynchronous, cached thumbnails keyed by file path.

    ``request(path)`` returns the cached QImage at once, or None and emits ``loaded(path, image)``
    (or ``failed(path, reason)``) later in the GUI thread.
    """

    loaded = Signal(str, QImage)
    failed = Signal(str, str)

    def __init__(
        self, size: int = THUMB_SIZE, threads: int | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.size = size
        self._pool = QThreadPool(self)
        # Half the cores: the engine's forward pass and the GUI thread need the rest.
        self._pool.setMaxThreadCount(threads or max(1, (os.cpu_count() or 2) // 2))
        self._signals = ImageSignals(self)
        self._signals.done.connect(self._on_done)
        self._signals.error.connect(self._on_error)
        self._cache: OrderedDict[str, QImage] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._pending: set[str] = set()

    def cached(self, path: str) -> QImage | None:
        image = self._cache.get(path)
        if image is not None:
            self._cache.move_to_end(path)
        return image

    def error(self, path: str) -> str | None:
        return self._errors.get(path)

    def request(self, path: str) -> QImage | None:
        path = str(path)
        image = self.cached(path)
        if image is not None or path in self._pending or path in self._errors:
            return image
        self._pending.add(path)
        self._pool.start(ImageJob(path, self.size, self._signals))
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Drop queued jobs and wait for running ones (call before quitting)."""
        self._pool.clear()
        return self._pool.waitForDone(timeout_ms)

    def _on_done(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        self._cache[path] = image
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self.loaded.emit(path, image)

    def _on_error(self, path: str, reason: str) -> None:
        self._pending.discard(path)
        self._errors[path] = reason
        log.warning("no thumbnail for %s: %s", path, reason, extra={"file": path})
        self.failed.emit(path, reason)
