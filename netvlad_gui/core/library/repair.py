"""What a build repairs in the descriptor store before it scans: rows lost to a file that was
truncated or deleted behind the app's back, and rows damaged in place (bit rot, a stray write).

The photos whose rows are gone or damaged go back to pending, so the build's extraction stage
extracts them again like any new photo; finished work elsewhere in the store is kept. Without
this, a store shorter than its catalogue failed every build with "rebuild the index" (only
deleting the index folder helped), and a damaged row stayed every query's match at 1.9e35 while
the build said "0 new or changed".
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from .index import LibraryIndex
from .store import file_size, unit_rows

log = logging.getLogger(__name__)

CHECKED_KEY = "store_checked"  # the store file's stamp when every row was last found sound
#: A store up to this size is checked at every build (a no-op run of 2 000 photos reads 48 MB,
#: ~40 ms: benchmarks/README.md, "bit rot"); a larger one when its file changed since its last check (any write, a stray one
#: included, moves its mtime and ctime). A search never uses a damaged row either way.
ALWAYS_CHECK_BYTES = 1 << 30
CHUNK = 4096  # rows read at a time: 24 MB at 6144-D


def recover_lost_rows(index: LibraryIndex, warnings: list[str]) -> int:
    """Writer only: requeue the photos whose rows the store file no longer holds, and point the
    catalogue at the whole rows that are left. Returns how many photos were requeued."""
    if index.dim is None:
        return 0
    committed = int(index.catalog.get_meta("store_rows", "0") or 0)
    path = index.store_path
    left = min(file_size(path) // (index.dim * 4), committed)
    if left == committed:
        return 0
    ids = index.catalog.rows_from(left)
    index.catalog.requeue(ids, {"store_rows": str(left)})
    index.invalidate()
    what = "is gone" if left == 0 else f"holds {left} of its {committed} rows (truncated?)"
    msg = f"the descriptor store {path.name} {what}: {len(ids)} photos are extracted again"
    log.warning(msg)
    warnings.append(msg)
    return len(ids)


def store_stamp(path: os.PathLike) -> str:
    """What changes whenever the store file is written: size, mtime, ctime, inode."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return json.dumps([os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])


def requeue_damaged_rows(index: LibraryIndex, warnings: list[str]) -> int:
    """Writer only: check every indexed photo's stored row (``unit_rows``) and requeue those
    that are damaged. Skipped for a large store whose file is as it was after the last build.
    Returns how many photos were requeued."""
    if index.dim is None:
        return 0
    path = index.store_path
    size = file_size(path)
    if size > ALWAYS_CHECK_BYTES and index.catalog.get_meta(CHECKED_KEY) == store_stamp(path):
        return 0
    pairs = np.array(index.catalog.indexed_pairs(), np.int64).reshape(-1, 2)
    pairs = pairs[np.argsort(pairs[:, 1], kind="stable")]  # sequential reads
    store = index.store()
    bad: list[int] = []
    for start in range(0, len(pairs), CHUNK):
        part = pairs[start : start + CHUNK]
        sound = unit_rows(store.read(part[:, 1]))
        bad.extend(int(i) for i in part[~sound, 0])
    if not bad:
        return 0
    index.catalog.requeue(bad, {})
    index.invalidate()
    one = "1 photo's stored descriptor was"
    whose = one if len(bad) == 1 else f"{len(bad)} photos' stored descriptors were"
    msg = f"{whose} damaged in {path.name} (bit rot or a stray write): extracted again"
    log.warning(msg)
    warnings.append(msg)
    return len(bad)


def record_checked(index: LibraryIndex) -> None:
    """After a build: the store as it is now holds only sound rows (the ones checked at its
    start, and the ones it stored, each checked before it was written)."""
    if index.dim is None:
        return
    stamp = store_stamp(index.store_path)
    if stamp and index.catalog.get_meta(CHECKED_KEY) != stamp:
        index.catalog.set_meta(CHECKED_KEY, stamp)
