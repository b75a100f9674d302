"""An append-only file of float32 descriptor rows.

Descriptors stream here as they are extracted, so memory stays flat however large the library is,
and a killed build loses at most the rows that the catalogue had not yet committed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import LibraryIndexError
from ..paths import atomic_open

log = logging.getLogger(__name__)

PREFETCH_MAX = 4096  # up to this many rows per read are scattered ones worth prefetching
#: How far a stored descriptor's length may be from 1: float32 rounding stays under 1e-4 even
#: at 1.3 million dimensions. A flipped exponent bit moves it by orders of magnitude; of 20 000
#: rows with 10 random bits flipped, those left within this moved no cosine by more than 0.004
#: (benchmarks/README.md, "bit rot").
UNIT_TOLERANCE = 1e-3
#: Why a descriptor of length 0 is not stored (F.normalize keeps an all-zero vector at zero):
#: the store's check would take it for a damaged row and extract it again at every build.
NOT_UNIT = "the model gave an empty descriptor (a blank photo?); not indexed"


def unit_rows(vecs: np.ndarray) -> np.ndarray:
    """Which rows are sound descriptors: finite and of unit length (the model normalises every
    one). A damaged row (bit rot, a stray write) scored 1.9e35 and was every query's match."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", vecs, vecs)
        return np.abs(sq - 1.0) <= 2 * UNIT_TOLERANCE  # NaN and inf compare False


class StoreError(LibraryIndexError):
    """The descriptor store does not hold what the catalogue says it does."""


class DescriptorStore:
    def __init__(self, path: str | Path, dim: int, committed_rows: int, *, writable: bool = True):
        """Open ``path`` with the catalogue's ``committed_rows``.

        A writer (the build, which holds the build lock) drops any tail written after the last
        committed row (a killed run). A reader never writes: it ignores that tail, which may be
        a running build's rows about to be committed, and leaves repairs to the writer.

        A file shorter than the catalogue says (truncated or deleted behind the app's back) is
        refused to a writer, which repairs it first (``repair.recover_lost_rows``); a reader
        uses the whole rows that are left and counts the others in ``lost``.
        """
        self.path = Path(path)
        self.dim = int(dim)
        self.row_bytes = self.dim * 4
        self.writable = writable
        if writable:
            self.path.touch(exist_ok=True)
        size = file_size(self.path)
        want = committed_rows * self.row_bytes
        self.lost = 0  # committed rows the file no longer holds (a reader's count)
        if size < want and writable:
            raise StoreError(
                f"descriptor store {self.path} is shorter than its catalogue says "
                f"({size} < {want} bytes); rebuild the index"
            )
        if size < want:
            self.lost = committed_rows - size // self.row_bytes
            log.warning("%s lost %d of its %d rows", self.path, self.lost, committed_rows)
        if size > want and writable:
            os.truncate(self.path, want)
        self.rows = committed_rows - self.lost
        self._mm: np.memmap | None = None

    def append(self, descriptors: np.ndarray) -> int:
        """Write rows durably; return the row number of the first one."""
        if not self.writable:
            raise StoreError(f"descriptor store {self.path} is open read-only")
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(-1, self.dim)
        first = self.rows
        with open(self.path, "r+b") as f:
            f.seek(first * self.row_bytes)  # over any uncommitted tail, never after it
            f.write(descriptors.tobytes())
            f.flush()
            os.fsync(f.fileno())
        self.rows += len(descriptors)
        return first

    def read(self, rows: np.ndarray | list[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0 or self.rows == 0:
            return np.zeros((0, self.dim), np.float32)
        if len(rows) <= PREFETCH_MAX:
            self._prefetch(rows)
        return np.array(self._map()[rows])

    def _prefetch(self, rows: np.ndarray) -> None:
        """Ask the kernel for scattered rows all at once, before touching them one by one.

        Re-ranking reads ~100 random rows; when the store is larger than the page cache, reading
        them in turn waits for the disk once per row, while WILLNEED lets it fetch them in
        parallel (benchmarks/README.md, "re-ranking from disk").
        """
        if not hasattr(os, "posix_fadvise"):  # not on macOS / Windows: plain reads
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            for r in np.unique(rows):
                os.posix_fadvise(
                    fd, int(r) * self.row_bytes, self.row_bytes, os.POSIX_FADV_WILLNEED
                )
        except OSError:
            pass
        finally:
            os.close(fd)

    def _map(self) -> np.memmap:
        """A read-only map of the committed rows, kept while no row is added (cheap re-reads)."""
        if self._mm is None or self._mm.shape[0] != self.rows:
            self._mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.rows, self.dim))
        return self._mm

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


def file_size(path: Path) -> int:
    """The store file's size in bytes; 0 when it is gone."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def write_compacted(
    store: DescriptorStore, rows: np.ndarray, path: Path, chunk: int = 8192
) -> None:
    """Copy ``rows`` of ``store``, in that order, into a new file ``path``, durably.

    The caller then points the catalogue at ``path`` in one transaction and only then removes
    the old file, so a kill at any moment leaves one consistent store (the other is an orphan
    that the next build removes).
    """
    with atomic_open(path, "wb") as f:
        f.writelines(
            np.ascontiguousarray(store.read(rows[start : start + chunk])).tobytes()
            for start in range(0, len(rows), chunk)
        )
