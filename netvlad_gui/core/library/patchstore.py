"""References' local features kept on disk between processes: ``patches.sqlite`` in the index.

A verified locate spends most of its time on the K references' feature maps (a forward pass
each); the in-memory LRU of ``query.verify.Verifier`` dies with the process, so every cold
``netvlad locate`` paid them again. This store keeps them beside the index, filled by the first
verification of each reference (and by an index build: library/patchfill.py), bounded by
``VerifyConfig.disk_cache_mb`` with the least recently used rows evicted.

A row is keyed by the reference's path and a *recipe* (everything that shapes its features:
the model file's hash, engine and precision, image size, feature settings; the verifier builds
it), and is used only while the photo's identity (``photos.filestamp.identity``) is the one
stored: an edited or replaced photo is recomputed and its row replaced. Arrays are raw buffers
(no pickle) with a CRC-32 over them.

It is a cache: it never fails a locate. A read-only folder is read (or, without a file, left
alone); a locked file is skipped; a full disk stops the writes; a damaged or foreign file is
rebuilt (or ignored where it cannot be written) — each said once in the log.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..model.patches import LocalFeatures

log = logging.getLogger(__name__)

STORE_FILE = "patches.sqlite"
#: PRAGMA application_id of the file ("NVPF"): a sqlite file without it is someone else's.
APPLICATION_ID = 0x4E565046
FORMAT = 1  # PRAGMA user_version
_DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    path TEXT NOT NULL,
    recipe TEXT NOT NULL,
    ident TEXT NOT NULL,          -- filestamp.identity of the photo the features were made from
    n INTEGER NOT NULL,           -- keypoints
    d INTEGER NOT NULL,           -- descriptor length
    dtype TEXT NOT NULL,          -- of the descriptors
    xy BLOB NOT NULL,             -- (n, 2) float32
    desc BLOB NOT NULL,           -- (n, d) dtype
    sx REAL NOT NULL, sy REAL NOT NULL,
    w INTEGER NOT NULL, h INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,      -- len(xy) + len(desc): what the bound counts
    crc INTEGER NOT NULL,         -- zlib.crc32 of xy then desc
    used INTEGER NOT NULL,        -- time.time_ns() of the last read or write: LRU order
    PRIMARY KEY (path, recipe)
);
CREATE INDEX IF NOT EXISTS features_used ON features(used);
"""

#: Reasons an operation fails that say nothing about the file's content.
_TRANSIENT = ("locked", "busy")
_FULL = ("full", "no space", "quota")
_CHUNK = 500  # paths per query (SQLite's limit on bound parameters: 999 in old versions)


class _Damaged(Exception):
    """The file is not a store of this format (damaged, foreign, or a newer format)."""


def _checksum(xy: bytes, desc: bytes) -> int:
    return zlib.crc32(desc, zlib.crc32(xy))


class PatchStore:
    """The on-disk tier of references' features, for one index folder.

    Thread-safe (one connection behind a lock: the window's worker and its prefetch may share a
    verifier). ``get`` and ``put`` never raise for the file's sake.
    """

    def __init__(self, index_dir: str | os.PathLike, max_bytes: int):
        self.path = Path(index_dir) / STORE_FILE
        self.max_bytes = int(max_bytes)
        self.writable = False
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._said: set[str] = set()
        self._full = False  # a write met a full disk: no more writes in this process
        self._open()

    # -- opening, and healing ---------------------------------------------------------------
    def _say(self, key: str, message: str, level: int = logging.WARNING) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message)

    def _open(self) -> None:
        folder = self.path.parent
        can_write = os.access(folder, os.W_OK) and (
            not self.path.exists() or os.access(self.path, os.W_OK)
        )
        try:
            if can_write:
                try:
                    self._db = self._connect_writable()
                    self.writable = True
                    return
                except sqlite3.OperationalError as exc:
                    if not _is_read_only(exc):
                        raise
            if self.path.exists():
                self._db = self._connect_read_only()
            else:
                self._say(
                    "ro",
                    f"{folder} is read-only: references' features are not kept on disk",
                    logging.INFO,
                )
        except _Damaged as exc:
            self._heal(str(exc))
        except sqlite3.DatabaseError as exc:
            if _is_transient(exc):  # another process holds it while creating it: a cache miss
                self._say(
                    "locked", f"{self.path} is busy ({exc}); not used this time", logging.INFO
                )
            elif _is_read_only(exc):
                self.close()
                self._say("ro", f"cannot open {self.path} ({exc}): not used", logging.INFO)
            else:
                self._heal(str(exc))

    def _connect_writable(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=0.5, check_same_thread=False)
        try:
            _check_format(db)
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # evictions give the space back
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={FORMAT}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost last write is a miss
            db.executescript(_SCHEMA)
            return db
        except BaseException:
            db.close()
            raise

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = "file:" + quote(os.fspath(self.path.resolve()))
        last: Exception | None = None
        # "ro" makes a -shm and -wal beside a WAL file, and cannot open one without them in a
        # read-only folder: there "immutable" reads the file as it lies, creating nothing.
        can_write = os.access(self.path.parent, os.W_OK)
        for mode in ("mode=ro", "immutable=1") if can_write else ("immutable=1",):
            db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=0.5, check_same_thread=False)
            try:
                _check_format(db)
                db.execute("SELECT COUNT(*) FROM features").fetchone()
                return db
            except _Damaged:
                db.close()
                raise
            except sqlite3.DatabaseError as exc:
                db.close()
                last = exc
        raise last  # type: ignore[misc]

    def _heal(self, why: str) -> None:
        """Replace a damaged or foreign file by an empty store; where the folder cannot be
        written, go on without one."""
        self.close()
        self.writable = False
        if not os.access(self.path.parent, os.W_OK):
            self._say(
                "damaged",
                f"{self.path} is damaged ({why}) and read-only: references' "
                "features are computed instead",
            )
            return
        self._say("damaged", f"{self.path} was damaged or not ours ({why}): made it anew")
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._connect_writable()
            self.writable = True
        except (OSError, sqlite3.DatabaseError, _Damaged) as exc:
            self.close()
            self._say("unusable", f"{self.path} cannot be made anew ({exc}): not used")

    def _failed(self, exc: sqlite3.DatabaseError, writing: bool) -> None:
        """What a failed read or write means: skip it (locked), stop writing (disk full), or
        rebuild (damaged)."""
        msg = str(exc).lower()
        if _is_transient(exc):
            self._say("locked", f"{self.path} is busy ({exc}): skipped", logging.INFO)
        elif writing and (any(w in msg for w in _FULL) or _is_read_only(exc)):
            self._full = True
            self._say(
                "full",
                f"cannot write {self.path} ({exc}): references' features are "
                "not kept on disk from now on",
            )
        else:
            self._heal(str(exc))

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    # -- reading and writing ----------------------------------------------------------------
    def get(self, keys: Sequence[tuple[str, str]], recipe: str) -> dict[int, LocalFeatures]:
        """Features stored for ``keys`` ((path, identity_text), ...): {position: features}.

        A row of another identity (the photo changed) or one whose checksum fails is a miss
        (and is replaced by the next ``put``).
        """
        with self._lock:
            if self._db is None or not keys:
                return {}
            try:
                return self._get(keys, recipe)
            except sqlite3.DatabaseError as exc:
                self._failed(exc, writing=False)
                return {}

    def _get(self, keys: Sequence[tuple[str, str]], recipe: str) -> dict[int, LocalFeatures]:
        db = self._db
        assert db is not None
        wanted: dict[str, list[int]] = {}
        for i, (path, _) in enumerate(keys):
            wanted.setdefault(path, []).append(i)
        paths = list(wanted)
        rows = []
        for lo in range(0, len(paths), _CHUNK):
            part = paths[lo : lo + _CHUNK]
            rows += db.execute(
                "SELECT path, ident, n, d, dtype, xy, desc, sx, sy, w, h, crc FROM features "
                f"WHERE recipe = ? AND path IN ({','.join('?' * len(part))})",
                (recipe, *part),
            ).fetchall()
        out: dict[int, LocalFeatures] = {}
        for path, ident, n, d, dtype, xy, desc, sx, sy, w, h, crc in rows:
            if ident != keys[wanted[path][0]][1]:
                continue  # the photo changed since: recompute
            feats = _decode(n, d, dtype, xy, desc, sx, sy, w, h, crc)
            if feats is None:
                self._say("row", f"{self.path}: a damaged row (checksum) was recomputed")
                continue
            for i in wanted[path]:
                out[i] = feats
        if out and self.writable and not self._full:
            try:
                with db:
                    db.executemany(
                        "UPDATE features SET used = ? WHERE path = ? AND recipe = ?",
                        [(time.time_ns(), path, recipe) for path in {keys[i][0] for i in out}],
                    )
            except sqlite3.DatabaseError as exc:  # the order of eviction is not worth failing
                if _is_read_only(exc) or any(w in str(exc).lower() for w in _FULL):
                    self._full = True
                elif not _is_transient(exc):
                    raise
        return out

    def put(self, items: Sequence[tuple[str, str, LocalFeatures]], recipe: str) -> None:
        """Store ``items`` ((path, identity_text, features), ...) in one transaction, replacing
        the rows of those paths, then evict the least recently used rows over the bound."""
        with self._lock:
            if self._db is None or not self.writable or self._full or not items:
                return
            try:
                self._put(items, recipe)
            except sqlite3.DatabaseError as exc:
                self._failed(exc, writing=True)

    def _put(self, items: Sequence[tuple[str, str, LocalFeatures]], recipe: str) -> None:
        db = self._db
        assert db is not None
        now = time.time_ns()
        rows = []
        for path, ident, f in items:
            xy = np.ascontiguousarray(f.xy, dtype=np.float32).tobytes()
            desc = np.ascontiguousarray(f.desc)
            if desc.dtype.name not in _DTYPES:
                continue
            raw = desc.tobytes()
            nbytes = len(xy) + len(raw)
            if nbytes > self.max_bytes:
                continue
            n, d = desc.shape
            sx, sy = f.to_original
            w, h = f.work_size
            crc = _checksum(xy, raw)
            rows.append(
                (
                    path,
                    recipe,
                    ident,
                    n,
                    d,
                    desc.dtype.name,
                    xy,
                    raw,
                    sx,
                    sy,
                    w,
                    h,
                    nbytes,
                    crc,
                    now,
                )
            )
        if not rows:
            return
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO features (path, recipe, ident, n, d, dtype, xy, desc, "
                "sx, sy, w, h, nbytes, crc, used) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            evicted = self._evict(db)
        if evicted:
            db.execute("PRAGMA incremental_vacuum")

    def _evict(self, db: sqlite3.Connection) -> int:
        """Delete the least recently used rows until the stored bytes fit the bound."""
        total = db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM features").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        doomed = []
        for rowid, nbytes in db.execute("SELECT rowid, nbytes FROM features ORDER BY used"):
            if total <= self.max_bytes:
                break
            doomed.append((rowid,))
            total -= nbytes
        db.executemany("DELETE FROM features WHERE rowid = ?", doomed)
        return len(doomed)

    def stored_bytes(self) -> int:
        """Bytes of features held (what the bound counts); 0 without a file."""
        with self._lock:
            if self._db is None:
                return 0
            try:
                q = "SELECT COALESCE(SUM(nbytes), 0) FROM features"
                return int(self._db.execute(q).fetchone()[0])
            except sqlite3.DatabaseError:
                return 0


def _is_transient(exc: sqlite3.DatabaseError) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in _TRANSIENT)


def _is_read_only(exc: sqlite3.DatabaseError) -> bool:
    """A file or folder that cannot be written (or opened): not a sign of damage."""
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "readonly" in msg or "read-only" in msg or "unable to open" in msg
    )


def _check_format(db: sqlite3.Connection) -> None:
    """Raise _Damaged unless ``db`` is empty or a store of this format (reading it also fails
    with DatabaseError on a file that is not sqlite at all)."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    if app == 0 and version == 0 and tables == 0:
        return  # a new, empty file
    if app != APPLICATION_ID:
        raise _Damaged("another program's sqlite file")
    if version != FORMAT:
        raise _Damaged(f"format {version}, this app writes {FORMAT}")


def _decode(n, d, dtype, xy, desc, sx, sy, w, h, crc) -> LocalFeatures | None:
    """A row's features; None when its sizes or checksum are wrong (bit rot, a torn write)."""
    kind = _DTYPES.get(dtype)
    if (
        kind is None
        or len(xy) != n * 2 * 4
        or len(desc) != n * d * np.dtype(kind).itemsize
        or _checksum(xy, desc) != crc
    ):
        return None
    return LocalFeatures(
        np.frombuffer(xy, np.float32).reshape(n, 2),
        np.frombuffer(desc, kind).reshape(n, d),
        (float(sx), float(sy)),
        (int(w), int(h)),
    )
