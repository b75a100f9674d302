"""The SQLite catalogue of a library: one row per photo, with its GPS and indexing status.

SQLite's transactions are what make an index build safe to kill: a photo only counts as indexed
once the row that points at its stored descriptor has been committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,      -- relative to the library root, POSIX separators
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    lat REAL, lon REAL, alt REAL,
    gps_source TEXT NOT NULL DEFAULT '',
    gps_reason TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,           -- pending | indexed | failed
    error TEXT NOT NULL DEFAULT '',
    row INTEGER                     -- descriptor row in the store, when indexed
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

PENDING, INDEXED, FAILED = "pending", "indexed", "failed"


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


_COLUMNS = "id, path, size, mtime, lat, lon, alt, gps_source, gps_reason, status, error, row"


class Catalog:
    """Thin typed access to the catalogue; every write method commits its own transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} was written by a newer netvlad-gui (schema {version}); upgrade the app"
            )

    def close(self) -> None:
        self.db.close()

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str, *, commit: bool = True) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))
        if commit:
            self.db.commit()

    # -- rows --------------------------------------------------------------------------------
    def rows(self, status: str | None = None) -> list[ImageRow]:
        sql = f"SELECT {_COLUMNS} FROM images"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status=?"
            args = (status,)
        return [ImageRow(*r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def by_ids(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        out: dict[int, ImageRow] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", chunk):
                out[r[0]] = ImageRow(*r)
        return out

    def counts(self) -> dict[str, int]:
        out = {PENDING: 0, INDEXED: 0, FAILED: 0}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM images GROUP BY status"):
            out[status] = n
        out["with_gps"] = self.db.execute(
            "SELECT COUNT(*) FROM images WHERE status=? AND lat IS NOT NULL", (INDEXED,)
        ).fetchone()[0]
        return out

    def upsert_pending(self, entries: Iterable[tuple]) -> None:
        """(path, size, mtime, lat, lon, alt, gps_source, gps_reason): new or changed files."""
        self.db.executemany(
            "INSERT INTO images(path, size, mtime, lat, lon, alt, gps_source, gps_reason, status)"
            " VALUES(?, ?, ?, ?, ?, ?, ?, ?, 'pending')"
            " ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime=excluded.mtime,"
            " lat=excluded.lat, lon=excluded.lon, alt=excluded.alt,"
            " gps_source=excluded.gps_source, gps_reason=excluded.gps_reason,"
            " status='pending', error='', row=NULL",
            list(entries),
        )
        self.db.commit()

    def delete(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM images WHERE id=?", [(int(i),) for i in ids])
        self.db.commit()

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
