"""A library index on disk: catalogue (SQLite) + descriptor store + faiss index + the model.

Layout of an index folder::

    catalog.sqlite     photos, GPS, status, descriptor rows; meta (model, library root, stats)
    descriptors.f32    append-only float32 rows (the source of truth for faiss); after a
                       compaction descriptors-N.f32 (the catalogue's ``store_file`` names it)
    model.pt           the exact model the descriptors came from (netvlad-gui checkpoint)
    search.faiss       large libraries only: the approximate search index (see searchindex.py)
    search.ids.npy     the (id, store row) pairs that search.faiss holds

Every file is written so that a build killed at any moment resumes without redoing finished work.
Only a build (which holds ``build.lock``) writes; everything else opens the index read-only, so a
search never disturbs a running build and works on a read-only share or disc.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ..config import IndexConfig
from ..errors import FileWriteError, LibraryIndexError
from ..paths import fsync_dir
from .catalog import FAILED, INDEXED, PENDING, Catalog, ImageRow, display_name
from .searchindex import SearchIndex, open_search, refresh_saved
from .store import DescriptorStore, write_compacted

log = logging.getLogger(__name__)

INDEX_FORMAT = "1"
CATALOG_FILE = "catalog.sqlite"
STORE_FILE = "descriptors.f32"
MODEL_FILE = "model.pt"
INDEX_CONFIG_KEY = "index_config"
STORE_FILE_KEY = "store_file"  # the store's current file name (it changes when compacted)
MODEL_SHA_KEY = "model_sha256"  # which model made the descriptors: hash of its weights
MODEL_FILE_KEY = "model_file"  # size, mtime and sha256 of model.pt as saved, for a cheap check
#: What made the descriptors: {"runtime", "precision"} (model.runtime.Engine). An index never
#: mixes precisions: bf16 and fp32 descriptors of one photo differ (cosine 0.97-0.99), where
#: ONNX Runtime and torch in fp32 agree (1.0000).
ENGINE_KEY = "descriptor_engine"
EXTRACTION_KEY = "extraction"  # the settings the descriptors were made with: {"image_size": N}
COMPACT_SHARE = 0.5  # compact the store once this share of its rows is dead
COMPACT_MIN_ROWS = 64  # … and at least this many (tiny stores are not worth rewriting)

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
    store_rows: int = 0  # rows in the descriptor store
    dead_rows: int = 0  # rows no photo points at any more (re-extracted or removed photos)

    @property
    def dead_share(self) -> float:
        """Share of the store's rows that are dead; a build compacts past ``COMPACT_SHARE``."""
        return self.dead_rows / self.store_rows if self.store_rows else 0.0

    @property
    def bytes_per_image(self) -> float:
        return (self.store_bytes + self.catalog_bytes) / max(self.indexed, 1)


def model_state_sha(model) -> str:
    """Which weights a model has: sha256 over its state dict (names, shapes, dtypes, values)."""
    import torch

    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class LibraryIndex:
    """Opens an index folder; building and updating live in ``builder.py``.

    ``config`` picks the search index type and its parameters; without one, the configuration
    the index was built with (recorded in the catalogue) applies, else the defaults.

    ``writable`` (default: ``create``) is for the build, which holds the build lock: it may
    repair and update files. Otherwise nothing is written, not even a cache: the catalogue and
    the store are opened read-only, and an out-of-date search index is rebuilt in memory only.
    (A Locator's verifier keeps references' local features in ``patches.sqlite`` beside them,
    library/patchstore.py: a cache of its own, which a read-only folder goes without.)
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        create: bool = False,
        config: IndexConfig | None = None,
        writable: bool | None = None,
    ):
        self.dir = Path(index_dir).expanduser()
        self.writable = create if writable is None else writable
        if self.dir.exists() and not self.dir.is_dir():
            raise LibraryIndexError(
                f"the index folder {self.dir} is a file: name a folder (an existing index, or a "
                "new one to create)"
            )
        if not (self.dir / CATALOG_FILE).exists():
            if not create:
                raise LibraryIndexError(
                    f"no index in {self.dir}; build one first with `netvlad index LIBRARY`"
                )
            self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.dir / CATALOG_FILE, writable=self.writable)
        try:
            fmt = self.catalog.get_meta("index_format")
            if fmt is None and self.writable:
                self.catalog.set_meta("index_format", INDEX_FORMAT)
            elif fmt is not None and fmt != INDEX_FORMAT:
                raise LibraryIndexError(
                    f"{self.dir} uses index format {fmt}; this app reads {INDEX_FORMAT}"
                )
            self.config = config or self.recorded_config() or IndexConfig()
            if not self.writable:
                self.check_model_file()
        except BaseException:
            self.catalog.close()
            raise
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
    def image_size(self) -> int | None:
        """The input size (longer side, px) the descriptors were made at; None: not recorded
        (an index from before it was). Descriptors of two sizes do not compare (cosine 0.15 at
        160 vs 640 px for the same photo), so every extraction for this index uses it."""
        raw = self.catalog.get_meta(EXTRACTION_KEY)
        size = json.loads(raw).get("image_size") if raw else None
        return int(size) if size else None

    def record_image_size(self, size: int) -> None:
        self.catalog.set_meta(EXTRACTION_KEY, json.dumps({"image_size": int(size)}))

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

    def check_model_file(self) -> None:
        """Refuse a model.pt other than the one the descriptors were made with.

        Cheap when the file is as saved (size and mtime); a copied file (new mtime) is hashed.
        Indexes from before the check was recorded are not checked.
        """
        raw = self.catalog.get_meta(MODEL_FILE_KEY)
        if not raw or not self.model_path.exists():
            return
        saved = json.loads(raw)
        st = self.model_path.stat()
        if st.st_size == saved.get("size") and st.st_mtime_ns == saved.get("mtime_ns"):
            return
        if st.st_size != saved.get("size") or file_sha256(self.model_path) != saved.get("sha256"):
            raise LibraryIndexError(
                f"{self.model_path} is not the model this index's descriptors were made with "
                "(replaced?); run `netvlad index LIBRARY` to extract them again with it"
            )

    def record_model(self, model, name: str, *, state_sha: str | None = None) -> None:
        """After saving model.pt: note which model makes this index's descriptors (the hash of
        its weights: ``state_sha`` when the caller has it, else of ``model``, with torch)."""
        st = self.model_path.stat()
        stamp = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": file_sha256(self.model_path),
        }
        self.catalog.set_meta("model", name, commit=False)
        self.catalog.set_meta(MODEL_SHA_KEY, state_sha or model_state_sha(model), commit=False)
        self.catalog.set_meta(MODEL_FILE_KEY, json.dumps(stamp))

    def model_key(self, runtime: str, precision: str) -> str:
        """What names the weights and the engine that make this index's feature maps: the
        model file's hash as the build recorded it, the runtime and the precision (a part of
        the recipe of the references' features kept in ``patches.sqlite``)."""
        meta = self.catalog.get_metas((MODEL_FILE_KEY, MODEL_SHA_KEY))
        try:
            sha = json.loads(meta.get(MODEL_FILE_KEY) or "{}").get("sha256")
        except ValueError:
            sha = None
        if not sha:  # an index from before the file was recorded: its weights' hash, else stat
            st = self.model_path.stat()
            sha = meta.get(MODEL_SHA_KEY) or f"{st.st_size}:{st.st_mtime_ns}"
        return f"{sha}|{runtime}|{precision}"

    def descriptor_engine(self) -> dict | None:
        """What made this index's descriptors ({"runtime", "precision"}); None while it has none.

        An index from before this was recorded was made by torch in the precision "auto" meant
        on this machine then: bf16 with native bf16, else fp32 (``"assumed": True``).
        """
        if not int(self.catalog.get_meta("store_rows", "0") or 0):
            return None
        raw = self.catalog.get_meta(ENGINE_KEY)
        if raw:
            return json.loads(raw)
        from ..model.runtime import native_bf16

        precision = "bf16" if native_bf16("cpu") else "fp32"
        return {"runtime": "torch", "precision": precision, "assumed": True}

    def record_engine(self, engine) -> None:
        """Note the engine (model.runtime.Engine) that makes the descriptors from now on."""
        self.catalog.set_meta(
            ENGINE_KEY, json.dumps({"runtime": engine.runtime, "precision": engine.precision})
        )

    def calibration(self) -> dict[str, float]:
        return json.loads(self.catalog.get_meta("calibration", "{}") or "{}")

    # -- descriptors -------------------------------------------------------------------------
    def store(self) -> DescriptorStore:
        if self._store is None:
            if self.dim is None:
                raise LibraryIndexError(f"the index in {self.dir} has no descriptors yet")
            # One snapshot of both: a compaction commits a new file and its row count together.
            meta = self.catalog.get_metas(("store_rows", STORE_FILE_KEY))
            rows = int(meta.get("store_rows") or 0)
            path = self.dir / (meta.get(STORE_FILE_KEY) or STORE_FILE)
            self._store = DescriptorStore(path, self.dim, rows, writable=self.writable)
        return self._store

    @property
    def store_path(self) -> Path:
        return self.dir / (self.catalog.get_meta(STORE_FILE_KEY) or STORE_FILE)

    def remove_orphan_stores(self) -> None:
        """Writer only: drop store files a compaction killed half-way left behind."""
        keep = self.store_path.name
        for p in self.dir.glob("descriptors*.f32"):
            if p.name != keep:
                p.unlink(missing_ok=True)
        for p in self.dir.glob(".descriptors*.f32.tmp-*"):
            p.unlink(missing_ok=True)

    def compact_store(self, min_share: float = COMPACT_SHARE) -> bool:
        """Writer only: rewrite the store without its dead rows once they pass ``min_share``.

        Crash-safe: the live rows go to a new file (fsynced, renamed into place), the catalogue
        switches every row and the file name in one transaction, then the old file goes. Where
        the folder has no room for the copy, FileWriteError (ENOSPC) before a byte is written.
        """
        if self.dim is None:
            return False
        store = self.store()
        pairs = self.catalog.indexed_pairs()
        dead = store.rows - len(pairs)
        if dead < COMPACT_MIN_ROWS or dead < min_share * store.rows:
            return False
        old = store.path
        gen = int(self.catalog.get_meta("store_generation", "0") or 0) + 1
        new = self.dir / f"descriptors-{gen}.f32"
        ids = np.array([i for i, _ in pairs], np.int64)
        rows = np.array([r for _, r in pairs], np.int64)
        order = np.argsort(rows, kind="stable")  # sequential reads of the old file
        need = len(pairs) * store.row_bytes
        try:
            free = shutil.disk_usage(self.dir).free
        except OSError:
            free = need
        if free < need:
            why = f"{need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free"
            raise FileWriteError(new, OSError(errno.ENOSPC, f"No space left on device ({why})"))
        write_compacted(store, rows[order], new)
        mapping = {int(ids[o]): n for n, o in enumerate(order)}
        self.catalog.set_rows(
            mapping,
            {
                STORE_FILE_KEY: new.name,
                "store_rows": str(len(pairs)),
                "store_generation": str(gen),
            },
        )
        self.invalidate()
        old.unlink(missing_ok=True)
        fsync_dir(self.dir)
        log.info("compacted %s: %d dead rows dropped", self.dir, dead)
        return True

    def search_index(self, progress: Callable[[int, int], None] | None = None) -> SearchIndex:
        """The search index on first use: exact and in memory for a small library; for a large
        one, the saved approximate index, updated or (re)trained as the catalogue requires."""
        for _ in range(3):
            if self._search is not None:
                break
            store = self.store() if self.dim is not None else None
            search = open_search(
                self.dir,
                self.catalog,
                store,
                self.dim or 1,
                self.config,
                progress,
                save=self.writable,
            )
            if store is not None and store.path != self.store_path:
                # A build compacted the store meanwhile: rows now mean the new file's rows.
                self.invalidate()
                continue
            self._search = search
        if self._search is None:
            raise LibraryIndexError(f"the index in {self.dir} keeps changing; try again")
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

    @property
    def damaged_ids(self) -> set[int]:
        """Photos whose stored descriptor the search found damaged and leaves out (so far: an
        exact search checks every row when it loads, an approximate one the rows it reads)."""
        return set(self._search.damaged) if self._search is not None else set()

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
        path = self.store_path
        store_bytes = path.stat().st_size if path.exists() else 0
        store_rows = int(self.catalog.get_meta("store_rows", "0") or 0)
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
            failures=[(display_name(r.path), r.error) for r in self.catalog.rows(FAILED)],
            store_rows=store_rows,
            dead_rows=max(store_rows - self.catalog.live_rows(), 0),
        )

    def reference_points(self) -> list[ImageRow]:
        """Indexed photos with GPS, for drawing the library on a map."""
        return [r for r in self.catalog.rows(INDEXED) if r.has_gps]
