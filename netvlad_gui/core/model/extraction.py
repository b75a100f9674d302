"""Batched description of photo files through an InferenceModel, whichever engine runs it.

Photos are decoded ahead in threads (core/photos/decoding.py), grouped into same-size batches
and described; results are yielded as they come so that the index can stream them to disk, and
a bad photo is reported and skipped instead of ending the run. No torch here: with ONNX
Runtime a whole build runs without importing it (``features.extract`` is this loop for a torch
network).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..cancel import Cancelled
from ..config import ExtractConfig
from ..photos.decoding import Decoder

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

#: Why a photo whose descriptor holds NaN or inf is skipped: such a row would never match in a
#: search (nor let others match), so it is never stored; the model is the usual cause.
NON_FINITE = (
    "the model gave a non-finite descriptor (NaN or inf); photo skipped (damaged model weights?)"
)


@dataclass
class Extracted:
    """One image's outcome: a descriptor, or the reason there is none."""

    index: int
    descriptor: np.ndarray | None
    error: str = ""
    # With ``with_maps``: the backbone map (D, h, w) the descriptor was pooled from, and the
    # (w, h) of the pixels it was computed on (a build keeps references' patch features).
    local_map: np.ndarray | None = None
    work_size: tuple[int, int] | None = None


def decoded(
    paths: Sequence[str | os.PathLike], cfg: ExtractConfig, decoder: Decoder | None = None
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(index, pixels or None, error) for each path, in order, decoded ahead in ``decoder``'s
    threads (a build's, which may have started before the model was ready) or in
    ``cfg.num_workers`` new ones. Settings out of range are refused here, before any work."""
    cfg.validate()
    own = decoder is None
    decoder = Decoder(cfg) if own else decoder
    try:
        yield from decoder.decoded(paths)
    finally:
        if own:
            decoder.close()


def batched_pixels(
    items: Iterable[tuple[int, np.ndarray]], batch_size: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Group (index, pixels) into same-size batches (B, H, W, 3), so portrait and landscape
    photos mix safely; the batches of a size come out as they fill, the rest at the end."""
    buckets: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for idx, pixels in items:
        bucket = buckets.setdefault(tuple(pixels.shape), [])
        bucket.append((idx, pixels))
        if len(bucket) >= batch_size:
            yield [i for i, _ in bucket], np.stack([p for _, p in bucket])
            bucket.clear()
    for bucket in buckets.values():
        if bucket:
            yield [i for i, _ in bucket], np.stack([p for _, p in bucket])


def extract_with(
    model,
    paths: Sequence[str | os.PathLike],
    cfg: ExtractConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    decoder: Decoder | None = None,
    with_maps: bool = False,
) -> Iterator[Extracted]:
    """One ``Extracted`` per path (in completion order, not input order) from ``model``, an
    :class:`~netvlad_gui.core.model.inference.InferenceModel`.

    A photo whose descriptor is not finite comes back without one, with the reason
    (``NON_FINITE``), so that no caller ever stores it. Raises ``Cancelled`` between batches
    when ``cancel()`` turns true; results already yielded stay valid. ``with_maps``: each
    described photo also carries its backbone map, from the same forward pass.
    """
    total, done = len(paths), 0
    failures: list[Extracted] = []

    def good_images():
        for i, pixels, err in decoded(paths, cfg, decoder):
            if cancel is not None and cancel():
                raise Cancelled()
            if pixels is None:
                failures.append(Extracted(int(i), None, err))
                continue
            yield int(i), pixels

    for idxs, batch in batched_pixels(good_images(), cfg.batch_size):
        while failures:
            done += 1
            yield failures.pop(0)
        desc, maps = model.describe_pixels(batch, with_map=with_maps)
        finite = np.isfinite(desc).all(axis=1)
        size = (batch.shape[2], batch.shape[1])
        for n, (i, d, ok) in enumerate(zip(idxs, desc, finite, strict=True)):
            done += 1
            if not ok:
                yield Extracted(i, None, NON_FINITE)
            elif maps is None:
                yield Extracted(i, d)
            else:
                yield Extracted(i, d, local_map=maps[n], work_size=size)
        if progress is not None:
            progress(done + len(failures), total)
        if cancel is not None and cancel():
            raise Cancelled()
    for f in failures:
        done += 1
        yield f
    if progress is not None:
        progress(done, total)
