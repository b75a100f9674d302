"""What a build repairs in the descriptor store before it scans: rows lost to a file that was
truncated or deleted behind the app's back.

The photos whose rows are gone go back to pending, so the build's extraction stage extracts them
again like any new photo; finished work elsewhere in the store is kept. Without this, a store
shorter than its catalogue failed every build with "rebuild the index", and only deleting the
index folder helped.
"""

from __future__ import annotations

import logging

from .index import LibraryIndex
from .store import file_size

log = logging.getLogger(__name__)


def recover_lost_rows(index: LibraryIndex, warnings: list[str]) -> int:
    """Writer only: requeue the photos whose rows the store file no longer holds, and point the
    catalogue at the whole rows that are left. Returns how many photos were requeued."""
    if index.dim is None:
        return 0
    meta = index.catalog.get_metas(("store_rows",))
    committed = int(meta.get("store_rows") or 0)
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
