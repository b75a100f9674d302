"""A library index on disk: catalogue (SQLite) + descriptor store + faiss index + the model.

Layout of an index folder::

    catalog.sqlite     photos, GPS, status, descriptor rows; meta (model, library root, stats)
    descriptors.f32    append-only float32 rows (the source of truth for faiss)
    model.pt           the exact model the descriptors came from (netvlad-gui checkpoint)

Every file is written so that a build killed at any moment resumes without redoing finished work.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .catalog import FAILED, INDEXED, PENDING, Catalog, ImageRow
from .store import DescriptorStore

log = logging.getLogger(__name__)

INDEX_FORMAT = "1"
CATALOG_FILE = "catalog.sqlite"
STORE_FILE = "descriptors.f32"
MODEL_FILE = "model.pt"

StageProgress = Callable[[str, int, int], None]


class IndexError_(RuntimeError):
    """An index folder that cannot be used as asked; the message says why and what to do."""


@dataclass
class SearchHit:
    id: int
    score: float
    image: ImageRow
    path: Path  # absolute


@dataclass
class IndexStats:
    library: str
    model: str
    dim: int
    indexed: int
    with_gps: int
    failed: int
    pending: int
    store_bytes: int
    catalog_bytes: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bytes_per_image(self) -> float:
        return (self.store_bytes + self.catalog_bytes) / max(self.indexed, 1)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LibraryIndex:
    """Opens an index folder; building and updating live in ``builder.py``."""

    def __init__(self, index_dir: str | Path, *, create: bool = False):
        self.dir = Path(index_dir).expanduser()
        if not (self.dir / CATALOG_FILE).exists():
            if not create:
                raise IndexError_(
                    f"no index in {self.dir}; build one first with `netvlad index LIBRARY`"
                )
            self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.dir / CATALOG_FILE)
        fmt = self.catalog.get_meta("index_format")
        if fmt is None:
            self.catalog.set_meta("index_format", INDEX_FORMAT)
        elif fmt != INDEX_FORMAT:
            raise IndexError_(f"{self.dir} uses index format {fmt}; this app reads {INDEX_FORMAT}")
        self._faiss: faiss.Index | None = None
        self._store: DescriptorStore | None = None

    def close(self) -> None:
        self.catalog.close()

    # -- properties from meta ---------------------------------------------------------------
    @property
    def library(self) -> Path | None:
        root = self.catalog.get_meta("library")
        return Path(root) if root else None

    @property
    def dim(self) -> int | None:
        d = self.catalog.get_meta("dim")
        return int(d) if d else None

    @property
    def model_name(self) -> str:
        return self.catalog.get_meta("model", "") or ""

    @property
    def model_path(self) -> Path:
        return self.dir / MODEL_FILE

    def calibration(self) -> dict[str, float]:
        return json.loads(self.catalog.get_meta("calibration", "{}") or "{}")

    # -- descriptors -------------------------------------------------------------------------
    def store(self) -> DescriptorStore:
        if self._store is None:
            if self.dim is None:
                raise IndexError_(f"the index in {self.dir} has no descriptors yet")
            rows = int(self.catalog.get_meta("store_rows", "0") or 0)
            self._store = DescriptorStore(self.dir / STORE_FILE, self.dim, rows)
        return self._store

    def faiss_index(self) -> faiss.Index:
        """The search index, built in memory from the descriptor store on first use.

        Exact inner-product search over the store needs no file of its own: writing one would
        only double the index's size on disk.
        """
        if self._faiss is None:
            self._faiss = self._build_faiss(self.catalog.rows(INDEXED))
        return self._faiss

    def _build_faiss(self, rows: list[ImageRow]) -> faiss.Index:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim or 1))
        if rows:
            store = self.store()
            for start in range(0, len(rows), 4096):
                chunk = rows[start : start + 4096]
                vecs = store.read([r.row for r in chunk])
                index.add_with_ids(vecs, np.array([r.id for r in chunk], dtype=np.int64))
        return index

    def invalidate(self) -> None:
        self._faiss = None
        self._store = None

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Top-k references for each query descriptor, best first."""
        index = self.faiss_index()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != index.d:
            raise IndexError_(
                f"query descriptor has {queries.shape[1]} dimensions, the index {index.d}: "
                "the index was built with another model"
            )
        scores, ids = index.search(queries, min(k, index.ntotal))
        rows = self.catalog.by_ids(i for i in ids.ravel() if i >= 0)
        root = self.library or Path(".")
        out = []
        for qs, qi in zip(scores, ids, strict=True):
            out.append(
                [
                    SearchHit(int(i), float(s), rows[int(i)], root / rows[int(i)].path)
                    for s, i in zip(qs, qi, strict=True)
                    if i >= 0 and int(i) in rows
                ]
            )
        return out

    def stats(self) -> IndexStats:
        c = self.catalog.counts()
        store_bytes = (
            (self.dir / STORE_FILE).stat().st_size if (self.dir / STORE_FILE).exists() else 0
        )
        return IndexStats(
            library=str(self.library or ""),
            model=self.model_name,
            dim=self.dim or 0,
            indexed=c[INDEXED],
            with_gps=c["with_gps"],
            failed=c[FAILED],
            pending=c[PENDING],
            store_bytes=store_bytes,
            catalog_bytes=(self.dir / CATALOG_FILE).stat().st_size,
            failures=[(r.path, r.error) for r in self.catalog.rows(FAILED)],
        )

    def reference_points(self) -> list[ImageRow]:
        """Indexed photos with GPS, for drawing the library on a map."""
        return [r for r in self.catalog.rows(INDEXED) if r.has_gps]
