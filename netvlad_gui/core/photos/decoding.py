"""Photos decoded ahead of the network, in threads, without torch.

Decoding is Pillow's C code, which releases the GIL, so a decoding thread runs beside the
forward pass as torch's DataLoader worker process did, without one. And since nothing here
needs torch, a build starts decoding the photos it will want first while torch is still being
imported (3-4 s on one core, the other idle): those photos then meet a backbone that has both
cores to itself (benchmarks/README.md, "Decoding while torch loads").
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..config import ExtractConfig
from .images import ImageLoadError, load_image, to_pixels

Decoded = tuple[np.ndarray | None, str]  # the pixels (uint8, H x W x 3), or why there are none


def decode(path: str | os.PathLike, cfg: ExtractConfig) -> Decoded:
    """One photo's pixels at ``cfg``'s input size, or the one-line reason it cannot be used."""
    try:
        img = load_image(path, cfg.image_size, cfg.max_pixels, draft=cfg.jpeg_draft)
        return to_pixels(img), ""
    except ImageLoadError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one photo's decoder failure must not end the run
        return None, f"cannot read image: {type(exc).__name__}: {exc}"


class Decoder:
    """Decodes photos in ``cfg.num_workers`` threads, ahead of use.

    ``prefetch(paths)`` starts on up to ``cfg.decode_ahead`` photos before anyone asks (a build,
    while torch loads); ``decoded(paths)`` yields every photo in order, two batches ahead,
    taking a prefetched result where there is one. With ``num_workers=0`` photos are decoded in
    the calling thread, when asked for. ``close()`` drops what was decoded and not used.
    """

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.ahead = cfg.decode_ahead
        self._window = 2 * cfg.batch_size  # enough to keep the forward pass fed
        workers = cfg.num_workers
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None
        )
        self._early: dict[str, deque[Future]] = {}

    def prefetch(self, paths: Iterable[str | os.PathLike]) -> None:
        """Start decoding (up to ``decode_ahead`` of) ``paths`` now, for a later ``decoded``."""
        if self._pool is None:
            return
        for n, path in enumerate(paths):
            if n >= self.ahead:
                break
            future = self._pool.submit(decode, path, self.cfg)
            self._early.setdefault(str(path), deque()).append(future)

    def decoded(
        self, paths: Sequence[str | os.PathLike]
    ) -> Iterator[tuple[int, np.ndarray | None, str]]:
        """(position, pixels or None, reason) for each of ``paths``, in order."""
        if self._pool is None:
            for i, path in enumerate(paths):
                yield i, *decode(path, self.cfg)
            return
        window: deque[Future] = deque()
        submitted = 0
        try:
            for i in range(len(paths)):
                while submitted < len(paths) and len(window) < self._window:
                    window.append(self._take(paths[submitted]))
                    submitted += 1
                yield i, *window.popleft().result()
        finally:
            for future in window:  # a consumer that stopped early (cancel, error)
                future.cancel()

    def _take(self, path: str | os.PathLike) -> Future:
        early = self._early.get(str(path))
        if early:
            future = early.popleft()
            if not early:
                del self._early[str(path)]
            return future
        return self._pool.submit(decode, path, self.cfg)

    def close(self) -> None:
        """Drop the prefetched photos nobody asked for and stop the threads.

        Waits for the photos being decoded (one per thread, tens of ms), so that no thread is
        left when the caller goes on, e.g. to fork training's DataLoader workers.
        """
        for futures in self._early.values():
            for future in futures:
                future.cancel()
        self._early.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
