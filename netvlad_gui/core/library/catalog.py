"""The SQLite catalogue of a library: one row per photo, with its GPS and indexing status.

SQLite's transactions are what make an index build safe to kill: a photo only counts as indexed
once the row that points at its stored descriptor has been committed.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import LibraryIndexError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,      -- relative to the library root, POSIX separators; a name
                                    -- that is not UTF-8 is kept as its raw bytes (a BLOB)
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    lat REAL, lon REAL, alt REAL,
    gps_source TEXT NOT NULL DEFAULT '',
    gps_reason TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,           -- pending | indexed | failed
    error TEXT NOT NULL DEFAULT '',
    row INTEGER,                    -- descriptor row in the store, when indexed
    marker TEXT NOT NULL DEFAULT '',  -- inode:ctime when last seen (photos/filestamp.py)
    digest TEXT NOT NULL DEFAULT ''   -- hash of the file's first and last 64 KB
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

PENDING, INDEXED, FAILED = "pending", "indexed", "failed"

#: Columns added after the first release, to an older catalogue as the build opens it.
_ADDED = {"images": {"marker": "TEXT NOT NULL DEFAULT ''", "digest": "TEXT NOT NULL DEFAULT ''"}}

#: The columns each table had from the start: a catalogue lacking one is not ours.
_TABLES = {
    "images": {
        "id", "path", "size", "mtime", "lat", "lon", "alt",
        "gps_source", "gps_reason", "status", "error", "row",
    },
    "meta": {"key", "value"},
}  # fmt: skip


class CatalogDamagedError(LibraryIndexError):
    """The catalogue file is not a readable SQLite database any more."""


class ForeignCatalogError(LibraryIndexError):
    """A readable SQLite file that another program (or an older netvlad-gui) wrote."""


def foreign_message(path: Path, why: str) -> str:
    return (
        f"{path} is not an index catalogue of this app ({why}): another program or an older "
        f"netvlad-gui wrote it; move the folder {path.parent} away (or name another --index "
        "folder) and run `netvlad index LIBRARY` to build a new index"
    )


def _schema_problem(db: sqlite3.Connection) -> str:
    """Why the database's tables are not this app's, or "" (ours, or none yet: a new file).

    ``CREATE TABLE IF NOT EXISTS`` keeps a foreign ``images`` table as it is, so the first
    query then failed with "no such column: status", after advice to run `netvlad index`.
    """
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    ours = sorted(tables & set(_TABLES))
    if tables and not ours:
        shown = ", ".join(sorted(tables)[:3]) + (", …" if len(tables) > 3 else "")
        return f"its tables are {shown}"
    for table in ours:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if missing := sorted(_TABLES[table] - columns):
            shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
            return f"its table {table!r} has no column {shown}"
    return ""


def damaged_message(path: Path, exc: BaseException) -> str:
    return (
        f"the index catalogue {path} is damaged ({exc}); run `netvlad index LIBRARY` to rebuild "
        "it from the photos (its descriptors cannot be kept: every photo is extracted again)"
    )


def _guarded(method: Callable) -> Callable:
    """SQLite failures become one-line LibraryIndexErrors that say what to do."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:  # locked, read-only, cannot open …
            raise LibraryIndexError(f"cannot use the index catalogue {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed" …
            raise CatalogDamagedError(damaged_message(self.path, exc)) from exc

    return wrapper


def path_to_db(rel: str) -> str | bytes:
    """A file name as SQLite keeps it: text when it is UTF-8, else its raw bytes (lossless)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes of a non-UTF-8 name
        return os.fsencode(rel)
    return rel


def path_from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def display_name(path: str) -> str:
    """A file name fit to show or print: undecodable bytes become replacement characters."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _image_row(r: tuple) -> ImageRow:
    return ImageRow(r[0], path_from_db(r[1]), *r[2:])


@dataclass
class ImageRow:
    id: int
    path: str
    size: int
    mtime: float
    lat: float | None
    lon: float | None
    alt: float | None
    gps_source: str
    gps_reason: str
    status: str
    error: str
    row: int | None

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lon is not None

    @property
    def display_path(self) -> str:
        """``path`` fit to print (a non-UTF-8 name shows replacement characters)."""
        return display_name(self.path)


_COLUMNS = "id, path, size, mtime, lat, lon, alt, gps_source, gps_reason, status, error, row"


class Catalog:
    """Thin typed access to the catalogue; every write method commits its own transaction.

    ``writable=False`` opens it read-only and never writes (a reader next to a running build, or
    an index on a read-only share or disc): SQLite ``mode=ro``, or ``immutable=1`` where the
    folder cannot be written (WAL needs a writable ``-shm`` file otherwise).
    """

    def __init__(self, path: str | Path, *, writable: bool = True):
        self.path = Path(path)
        self.writable = writable
        try:
            if writable:
                self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._refuse_foreign()
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(_SCHEMA)
                self._add_columns()
                if self.get_meta("schema_version") is None:
                    self.set_meta("schema_version", str(SCHEMA_VERSION))
            else:
                self.db = self._connect_read_only()
        except ForeignCatalogError:
            raise
        except sqlite3.OperationalError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise CatalogDamagedError(damaged_message(self.path, exc)) from exc
            raise LibraryIndexError(f"cannot open the index catalogue {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise CatalogDamagedError(damaged_message(self.path, exc)) from exc
        version = self.get_meta("schema_version")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise LibraryIndexError(
                f"{self.path} was written by a newer netvlad-gui (schema {version}); upgrade the app"
            )

    def _refuse_foreign(self) -> None:
        """Close and raise ForeignCatalogError when the file holds another program's tables."""
        if why := _schema_problem(self.db):
            self.db.close()
            raise ForeignCatalogError(foreign_message(self.path, why))

    def _add_columns(self) -> None:
        """Writer only: give an older catalogue the columns added since (``_ADDED``)."""
        for table, added in _ADDED.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, decl in added.items():
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        self.db.commit()

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = "file:" + quote(os.fspath(self.path.resolve()))
        folder = self.path.resolve().parent
        can_write = os.access(folder, os.W_OK) and os.access(self.path, os.W_OK)
        modes = ("mode=ro", "immutable=1") if can_write else ("immutable=1",)
        last: Exception | None = None
        for mode in modes:
            db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, check_same_thread=False)
            try:
                if why := _schema_problem(db):
                    db.close()
                    raise ForeignCatalogError(foreign_message(self.path, why))
                db.execute("SELECT COUNT(*) FROM meta").fetchone()
                return db
            except sqlite3.OperationalError as exc:  # e.g. WAL on a folder that is read-only
                db.close()
                last = exc
                if "no such table" in str(exc):
                    raise sqlite3.DatabaseError("no catalogue tables") from exc
        assert last is not None
        raise last

    def close(self) -> None:
        self.db.close()

    # -- meta --------------------------------------------------------------------------------
    @_guarded
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    @_guarded
    def get_metas(self, keys: Iterable[str]) -> dict[str, str]:
        """Several meta values read in one statement (one consistent snapshot)."""
        keys = list(keys)
        marks = ",".join("?" * len(keys))
        return dict(self.db.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys))

    @_guarded
    def set_meta(self, key: str, value: str, *, commit: bool = True) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))
        if commit:
            self.db.commit()

    # -- rows --------------------------------------------------------------------------------
    @_guarded
    def rows(self, status: str | None = None, limit: int = -1) -> list[ImageRow]:
        sql = f"SELECT {_COLUMNS} FROM images"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status=?"
            args = (status,)
        sql += " ORDER BY id LIMIT ?"
        return [_image_row(r) for r in self.db.execute(sql, (*args, limit))]

    @_guarded
    def by_ids(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        out: dict[int, ImageRow] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", chunk):
                out[r[0]] = _image_row(r)
        return out

    @_guarded
    def counts(self) -> dict[str, int]:
        out = {PENDING: 0, INDEXED: 0, FAILED: 0}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM images GROUP BY status"):
            out[status] = n
        out["with_gps"] = self.db.execute(
            "SELECT COUNT(*) FROM images WHERE status=? AND lat IS NOT NULL", (INDEXED,)
        ).fetchone()[0]
        return out

    @_guarded
    def upsert_pending(self, entries: Iterable[tuple]) -> None:
        """(path, size, mtime, lat, lon, alt, gps_source, gps_reason): new or changed files."""
        self.db.executemany(
            "INSERT INTO images(path, size, mtime, lat, lon, alt, gps_source, gps_reason, status)"
            " VALUES(?, ?, ?, ?, ?, ?, ?, ?, 'pending')"
            " ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime=excluded.mtime,"
            " lat=excluded.lat, lon=excluded.lon, alt=excluded.alt,"
            " gps_source=excluded.gps_source, gps_reason=excluded.gps_reason,"
            " status='pending', error='', row=NULL",
            [(path_to_db(e[0]), *e[1:]) for e in entries],
        )
        self.db.commit()

    @_guarded
    def stamps(self) -> dict[int, tuple[str, str]]:
        """id -> (change marker, content digest) as last recorded ("" where never recorded)."""
        return {i: (m, d) for i, m, d in self.db.execute("SELECT id, marker, digest FROM images")}

    @_guarded
    def set_stamps(self, entries: Iterable[tuple]) -> None:
        """(path, change marker, content digest) of files the scan looked at."""
        self.db.executemany(
            "UPDATE images SET marker=?, digest=? WHERE path=?",
            [(m, d, path_to_db(path)) for path, m, d in entries],
        )
        self.db.commit()

    @_guarded
    def update_gps(self, entries: Iterable[tuple]) -> None:
        """(id, lat, lon, alt, gps_source, gps_reason): a GPS fix; the descriptor stays valid."""
        self.db.executemany(
            "UPDATE images SET lat=?, lon=?, alt=?, gps_source=?, gps_reason=? WHERE id=?",
            [(*e[1:], e[0]) for e in entries],
        )
        self.db.commit()

    @_guarded
    def restart_all(self, meta: dict[str, str]) -> int:
        """Every photo back to pending with no descriptor (another model), atomically with meta."""
        with self.db:
            self.db.execute("UPDATE images SET status='pending', error='', row=NULL")
            (n,) = self.db.execute("SELECT COUNT(*) FROM images").fetchone()
            for k, v in meta.items():
                self.set_meta(k, v, commit=False)
        return n

    @_guarded
    def requeue(self, ids: Iterable[int], meta: dict[str, str]) -> None:
        """Photos back to pending (their stored row is lost or damaged), atomically with meta.

        Size, mtime and GPS stay: the scan leaves them pending and the build extracts them.
        """
        with self.db:
            self.db.executemany(
                "UPDATE images SET status='pending', row=NULL, error='' WHERE id=?",
                [(int(i),) for i in ids],
            )
            for k, v in meta.items():
                self.set_meta(k, v, commit=False)

    @_guarded
    def rows_from(self, first_row: int) -> list[int]:
        """Ids of the indexed photos whose store row is ``first_row`` or later."""
        return [
            i
            for (i,) in self.db.execute(
                "SELECT id FROM images WHERE status='indexed' AND row >= ? ORDER BY id",
                (int(first_row),),
            )
        ]

    @_guarded
    def indexed_pairs(self) -> list[tuple[int, int]]:
        """(id, store row) of the indexed photos, by id."""
        return self.db.execute(
            "SELECT id, row FROM images WHERE status='indexed' ORDER BY id"
        ).fetchall()

    @_guarded
    def live_rows(self) -> int:
        """How many store rows indexed photos point at (the rest of the store is dead)."""
        return self.db.execute(
            "SELECT COUNT(*) FROM images WHERE status='indexed' AND row IS NOT NULL"
        ).fetchone()[0]

    @_guarded
    def check(self) -> None:
        """Raise CatalogDamagedError unless SQLite's quick check passes (pages and indexes)."""
        result = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":  # one line: SQLite lists every problem, one per line
            lines = [line for line in result.splitlines() if not line.startswith("***")]
            more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
            raise sqlite3.DatabaseError(f"{lines[0] if lines else result}{more}")

    @_guarded
    def delete(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM images WHERE id=?", [(int(i),) for i in ids])
        self.db.commit()

    @_guarded
    def mark_done(
        self, indexed: list[tuple[int, int]], failed: list[tuple[int, str]], meta: dict[str, str]
    ) -> None:
        """Commit one batch: (id, store row) pairs, (id, error) pairs and meta, atomically."""
        with self.db:
            self.db.executemany(
                "UPDATE images SET status='indexed', row=?, error='' WHERE id=?",
                [(row, i) for i, row in indexed],
            )
            self.db.executemany(
                "UPDATE images SET status='failed', row=NULL, error=? WHERE id=?",
                [(err, i) for i, err in failed],
            )
            for k, v in meta.items():
                self.set_meta(k, v, commit=False)

    @_guarded
    def set_rows(self, mapping: dict[int, int], meta: dict[str, str]) -> None:
        """Point rows at a compacted store, atomically with the store's new name."""
        with self.db:
            self.db.executemany(
                "UPDATE images SET row=? WHERE id=?", [(r, i) for i, r in mapping.items()]
            )
            for k, v in meta.items():
                self.set_meta(k, v, commit=False)


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
