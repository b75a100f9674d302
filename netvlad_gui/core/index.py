"""A library index on disk: catalogue (SQLite) + descriptor store + faiss index + the model.

Layout of an index folder::

    catalog.sqlite     photos, GPS, status, descriptor rows; meta (model, library root, stats)
    descriptors.f32    append-only float32 rows (the source of truth for faiss)
    model.pt           the exact model the descriptors came from (netvlad-gui checkpoint)
    search.faiss       large libraries only: the approximate search index (see searchindex.py)
    search.ids.npy     the (id, store row) pairs that search.faiss holds

Every file is written so that a build killed at any moment resumes without redoing finished work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .catalog import FAILED, INDEXED, PENDING, Catalog, ImageRow
from .config import IndexConfig
from .errors import LibraryIndexError
from .searchindex import SearchIndex, open_search, refresh_saved
from .store import DescriptorStore

log = logging.getLogger(__name__)

INDEX_FORMAT = "1"
CATALOG_FILE = "catalog.sqlite"
STORE_FILE = "descriptors.f32"
MODEL_FILE = "model.pt"
INDEX_CONFIG_KEY = "index_config"

StageProgress = Callable[[str, int, int], None]


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
    """Opens an index folder; building and updating live in ``builder.py``.

    ``config`` picks the search index type and its parameters; without one, the configuration
    the index was built with (recorded in the catalogue) applies, else the defaults.
    """

    def __init__(
        self, index_dir: str | Path, *, create: bool = False, config: IndexConfig | None = None
    ):
        self.dir = Path(index_dir).expanduser()
        if not (self.dir / CATALOG_FILE).exists():
            if not create:
                raise LibraryIndexError(
                    f"no index in {self.dir}; build one first with `netvlad index LIBRARY`"
                )
            self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.dir / CATALOG_FILE)
        fmt = self.catalog.get_meta("index_format")
        if fmt is None:
            self.catalog.set_meta("index_format", INDEX_FORMAT)
        elif fmt != INDEX_FORMAT:
            raise LibraryIndexError(
                f"{self.dir} uses index format {fmt}; this app reads {INDEX_FORMAT}"
            )
        self.config = config or self.recorded_config() or IndexConfig()
        self._search: SearchIndex | None = None
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

    def recorded_config(self) -> IndexConfig | None:
        """The IndexConfig the index was built with, if the build recorded one."""
        raw = self.catalog.get_meta(INDEX_CONFIG_KEY)
        if not raw:
            return None
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        return IndexConfig(**{k: v for k, v in json.loads(raw).items() if k in known})

    def record_config(self, config: IndexConfig) -> None:
        self.config = config
        self.catalog.set_meta(INDEX_CONFIG_KEY, json.dumps(dataclasses.asdict(config)))
        self._search = None

    def calibration(self) -> dict[str, float]:
        return json.loads(self.catalog.get_meta("calibration", "{}") or "{}")

    # -- descriptors -------------------------------------------------------------------------
    def store(self) -> DescriptorStore:
        if self._store is None:
            if self.dim is None:
                raise LibraryIndexError(f"the index in {self.dir} has no descriptors yet")
            rows = int(self.catalog.get_meta("store_rows", "0") or 0)
            self._store = DescriptorStore(self.dir / STORE_FILE, self.dim, rows)
        return self._store

    def search_index(self, progress: Callable[[int, int], None] | None = None) -> SearchIndex:
        """The search index on first use: exact and in memory for a small library; for a large
        one, the saved approximate index, updated or (re)trained as the catalogue requires."""
        if self._search is None:
            store = self.store() if self.dim is not None else None
            self._search = open_search(
                self.dir, self.catalog, store, self.dim or 1, self.config, progress
            )
        return self._search

    def refresh_saved_search(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Update or train the saved approximate index after a build; exact search needs none."""
        if self.dim is None:
            return
        self._search = refresh_saved(
            self.dir, self.catalog, self.store(), self.dim, self.config, progress
        )

    def faiss_index(self, progress: Callable[[int, int], None] | None = None) -> faiss.Index:
        """The faiss index that answers searches (see ``search_index``)."""
        return self.search_index(progress).index

    @property
    def search_kind(self) -> str:
        """ "flat", "ivfpq" or "hnsw": the type of the search index."""
        return self.search_index().kind

    def invalidate(self) -> None:
        self._search = None
        self._store = None

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Top-k references for each query descriptor, best first."""
        index = self.search_index()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != index.d:
            raise LibraryIndexError(
                f"query descriptor has {queries.shape[1]} dimensions, the index {index.d}: "
                "the index was built with another model"
            )
        scores, ids = index.search(self.store(), queries, k)
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
