"""The faiss index that searches a library: chosen by its size, kept in step with the catalogue.

Small libraries get exact inner-product search over every descriptor, built in memory from the
descriptor store when the index is opened. It has no file of its own, which would only double the
index on disk. Past ``IndexConfig.flat_max`` references, float32 descriptors (24 KB each at 6144-D)
no longer fit in RAM by the million, so an approximate index of compact codes takes over: IVF-PQ
(512 bytes per reference by default, 4-bit codes scanned with SIMD; optionally after a PCA) or
HNSW over 8-bit scalars. It is trained on a sample of the store, written atomically into the
index folder, and updated in place when photos come and go; it is retrained once the library has
outgrown it. Its candidates are re-scored with the exact descriptors from the store, so
``locate`` sees true cosine similarities (the ones its confidence was calibrated on) whatever the
index type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from ..config import IndexConfig
from ..errors import ConfigError
from ..paths import atomic_open, atomic_path
from .store import DescriptorStore, unit_rows

log = logging.getLogger(__name__)

SEARCH_FILE = "search.faiss"
PAIRS_FILE = "search.ids.npy"
META_KEY = "search_index"
#: IndexConfig fields that change how a trained index is searched, not what it holds.
SEARCH_ONLY = ("nprobe", "ef_search", "rerank", "flat_max", "retrain_growth")
CHUNK = 8192  # descriptors read from the store at a time: 200 MB at 6144-D
FEW_QUERIES = 4  # up to this many queries, faiss searches on one thread (see _threads)

Progress = Callable[[int, int], None]


#: The former name of the error of an IndexConfig that builds no index.
IndexConfigError = ConfigError


def choose_kind(n: int, cfg: IndexConfig) -> str:
    """The index type for ``n`` references: the configured one, or by size when "auto"."""
    cfg.validate()
    if cfg.kind != "auto":
        return cfg.kind
    return "flat" if n <= cfg.flat_max else "ivfpq"


def auto_nlist(n: int, n_train: int) -> int:
    """About sqrt(N) IVF lists (a power of two), with >= 39 training points per list.

    Fewer lists than faiss's usual 4 sqrt(N): at 6144-D every list costs a 24 KB centroid to
    train and to compare each vector with, and re-ranking makes up for the longer lists' PQ noise.
    """
    want = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1.0)))
    cap = 2 ** int(math.log2(max(n_train // 39, 1)))
    return int(min(want, cap))


def _divisor_at_most(p: int, m: int) -> int:
    """PQ needs a sub-quantiser count that divides the dimension: the largest one <= m."""
    return next(k for k in range(min(m, p), 0, -1) if p % k == 0)


def _build_fields(kind: str, cfg: IndexConfig) -> dict:
    fields = dataclasses.asdict(cfg)
    out = {k: v for k, v in fields.items() if k not in SEARCH_ONLY}
    out["kind"] = kind
    return out


def catalogue_pairs(catalog) -> tuple[np.ndarray, np.ndarray]:
    """(ids, store rows) of the indexed photos, sorted by id, straight from SQLite."""
    if isinstance(catalog, sqlite3.Connection):
        cur = catalog.execute("SELECT id, row FROM images WHERE status='indexed' ORDER BY id")
    else:
        cur = catalog.indexed_pairs()
    flat = np.fromiter((v for pair in cur for v in pair), dtype=np.int64)
    pairs = flat.reshape(-1, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def _unwrap(index: faiss.Index) -> faiss.Index:
    """The index under IDMap / PreTransform wrappers (IVF-PQ or HNSW)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2 | faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _configure(index: faiss.Index, cfg: IndexConfig) -> None:
    """Apply the search-time parameters, and drop IVF-PQ's precomputed table.

    That table (nlist x M x 256 floats, 0.5 GB at 1 M references) would cost more memory than the
    codes themselves, to save well under a millisecond per query.
    """
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexIVFPQ):
        inner.nprobe = max(1, min(cfg.nprobe, inner.nlist))
        if inner.use_precomputed_table != -1:
            inner.use_precomputed_table = -1
            inner.precomputed_table.resize(0)
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = max(1, min(cfg.nprobe, inner.nlist))
    elif isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = max(cfg.ef_search, 1)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """faiss's OpenMP threads for this thread's next searches (None: leave as is).

    One query is too little work to share: waking the other threads cost more than it saved
    (benchmarks/README.md, "faiss threading").
    """
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class SearchIndex:
    """A faiss index plus the id -> store row map that re-ranking needs.

    ``damaged``: ids of photos whose stored row failed ``unit_rows`` (bit rot, a stray write),
    left out of every answer: those met while filling the index, and those an approximate index
    meets among its candidates (their codes may predate the damage). A build extracts them again.
    """

    def __init__(
        self,
        kind: str,
        index: faiss.Index,
        ids: np.ndarray,
        rows: np.ndarray,
        cfg: IndexConfig,
        damaged: set[int] | None = None,
    ):
        self.kind = kind
        self.index = index
        self.ids = ids  # sorted
        self.rows = rows
        self.cfg = cfg
        self.damaged: set[int] = damaged if damaged is not None else set()
        _configure(index, cfg)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(
        self, store: DescriptorStore | None, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), best first; ids are -1 where fewer than ``k`` references exist."""
        n = self.ntotal
        k = min(k, n)
        with _threads(1 if len(queries) <= FEW_QUERIES else None):
            if self.kind == "flat":
                return self.index.search(queries, k)
            fetch = min(max(k, self.cfg.rerank), n)
            dist, ids = self.index.search(queries, fetch)
        if self.cfg.rerank <= 0 or store is None:
            if self.index.metric_type == faiss.METRIC_INNER_PRODUCT:
                approx = dist[:, :k].astype(np.float32)
            else:  # unit vectors: |x - y|^2 = 2 - 2 x.y, so this is the (approximate) cosine
                approx = (1.0 - dist[:, :k] / 2.0).astype(np.float32)
            return self._sound(store, approx, ids[:, :k])
        scores = np.full((len(queries), k), -np.inf, np.float32)
        out = np.full((len(queries), k), -1, np.int64)
        for qi, (q, cand) in enumerate(zip(queries, ids, strict=True)):
            cand = cand[cand >= 0]
            if len(cand) == 0:
                continue
            vecs = store.read(self.rows[np.searchsorted(self.ids, cand)])
            exact = vecs @ q
            order = self._sound_first(np.argsort(-exact, kind="stable"), vecs, cand, k)
            scores[qi, : len(order)] = exact[order]
            out[qi, : len(order)] = cand[order]
        return scores, out

    def _sound_first(self, order, vecs, cand, k: int) -> np.ndarray:
        """The first ``k`` of ``order`` whose rows are sound: only the rows an answer would
        show are checked (k, not every candidate), again past any damaged one."""
        while True:
            top = order[:k]
            bad = ~unit_rows(vecs[top])
            if not bad.any():
                return top
            self.damaged.update(int(i) for i in cand[top[bad]])
            order = order[~np.isin(order, top[bad])]

    def _sound(self, store, scores, ids) -> tuple[np.ndarray, np.ndarray]:
        """Without re-ranking: drop the top-k whose stored row is damaged (k rows read)."""
        if store is None:
            return scores, ids
        for qi in range(len(ids)):
            have = ids[qi] >= 0
            rows = self.rows[np.searchsorted(self.ids, ids[qi][have])]
            bad = np.zeros(len(ids[qi]), bool)
            bad[have] = ~unit_rows(store.read(rows))
            if bad.any():
                self.damaged.update(int(i) for i in ids[qi][bad])
                keep = ~bad
                n = int(keep.sum())
                scores[qi, :n], ids[qi, :n] = scores[qi][keep], ids[qi][keep]
                scores[qi, n:], ids[qi, n:] = -np.inf, -1
        return scores, ids


def _fill(
    index, store, ids, rows, progress: Progress | None, damaged: set[int] | None = None
) -> None:
    """Add descriptors in store order (sequential reads), ``CHUNK`` at a time, leaving out the
    damaged ones (``unit_rows``; their ids go to ``damaged``): 2 % of the time a fill takes."""
    order = np.argsort(rows, kind="stable")
    for start in range(0, len(order), CHUNK):
        pick = order[start : start + CHUNK]
        vecs = store.read(rows[pick])
        sound = unit_rows(vecs)
        if not sound.all():
            if damaged is not None:
                damaged.update(int(i) for i in ids[pick][~sound])
            vecs, pick = vecs[sound], pick[sound]
        index.add_with_ids(vecs, ids[pick])
        if progress:
            progress(min(start + CHUNK, len(order)), len(ids))


def build_flat(
    store: DescriptorStore | None, ids, rows, dim: int, progress=None, damaged=None
) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(ids) and store is not None:
        _fill(index, store, ids, rows, progress, damaged)
    return index


def new_approx(kind: str, d: int, n: int, cfg: IndexConfig) -> faiss.Index:
    """An untrained approximate index for ``n`` references of dimension ``d``.

    IVF-PQ over the full descriptor compares by inner product: an L2 estimate carries the
    squared norm of each *reconstructed* code, whose quantisation noise is as large as the
    gaps between a photo's true match and its distractors (at 10 k distractors, the exact top
    match ranked beyond 128th for 10 % of the queries with L2, 2nd at worst with inner product).
    After a PCA, L2: centring keeps distances but shifts each dot product by a per-reference
    term. HNSW's 8-bit codes are close enough for L2, the cosine ranking of unit vectors.
    """
    # A tiny library forced onto an approximate kind: no more PCA axes or PQ centroids than the
    # sample can fit.
    p = max(1, min(cfg.pca_dim or d, d, n, cfg.pca_train_size))
    n_train = min(n, cfg.train_size)
    if kind == "ivfpq":
        m = _divisor_at_most(p, cfg.pq_m)
        nlist = cfg.nlist or auto_nlist(n, n_train)
        bits = max(1, min(cfg.pq_bits, int(math.log2(max(n_train, 2)))))
        # 4-bit codes are scanned with SIMD lookups ("fs"): the scan is what a query spends its
        # time on, and fast scan does it ~8x faster than 8-bit PQ of the same size.
        spec = f"IVF{nlist},PQ{m}x4fs" if bits == 4 else f"IVF{nlist},PQ{m}x{bits}np"
    elif kind == "hnsw":
        spec = f"HNSW{cfg.hnsw_m}_SQ8"
    else:
        raise ConfigError(f"{kind!r} is not an approximate index kind (ivfpq, hnsw)")
    metric = faiss.METRIC_INNER_PRODUCT if kind == "ivfpq" and p == d else faiss.METRIC_L2
    if p < d:
        spec = f"PCAR{p},{spec}"
    index = faiss.index_factory(d, spec, metric)
    if kind == "hnsw":
        index = faiss.IndexIDMap2(index)  # HNSW keeps no ids of its own
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexIVF):
        inner.cp.spherical = metric == faiss.METRIC_INNER_PRODUCT
        inner.cp.niter = max(1, cfg.kmeans_iters)
        inner.cp.max_points_per_centroid = max(39, cfg.train_size // max(inner.nlist, 1))
        inner.cp.seed = cfg.seed
    if isinstance(inner, faiss.IndexIVFPQ):
        inner.use_precomputed_table = -1
    if isinstance(inner, faiss.IndexIVFPQ | faiss.IndexIVFPQFastScan):
        inner.pq.cp.seed = cfg.seed
        inner.pq.cp.niter = max(1, cfg.kmeans_iters)  # hundreds of small k-means: keep them short
    return index


def train_approx(index: faiss.Index, store: DescriptorStore, rows: np.ndarray, cfg) -> None:
    """Train on samples of the store, never holding more than the sample in memory.

    The PCA is fitted on ``pca_train_size`` full descriptors; IVF and PQ on ``train_size``
    descriptors reduced by that PCA, read and reduced a chunk at a time.
    """
    rng = np.random.default_rng(cfg.seed)

    def sample(m: int) -> np.ndarray:
        return np.sort(rng.choice(rows, size=min(m, len(rows)), replace=False))

    top = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    top = faiss.downcast_index(top)
    if isinstance(top, faiss.IndexPreTransform):
        vt = faiss.downcast_VectorTransform(top.chain.at(0))
        vt.train(_sound_rows(store, sample(cfg.pca_train_size)))
        if isinstance(vt, faiss.PCAMatrix):
            # The full d x d eigenvector matrix (150 MB at 6144-D) only served to derive the
            # projection; applying it needs the d_out x d projection alone.
            vt.PCAMat.clear()
        picked = sample(cfg.train_size)
        reduced = np.concatenate(
            [
                vt.apply(_sound_rows(store, picked[i : i + CHUNK]))
                for i in range(0, len(picked), CHUNK)
            ]
        )
        faiss.downcast_index(top.index).train(reduced)
        top.is_trained = True
    else:
        top.train(_sound_rows(store, sample(cfg.train_size)))
    if isinstance(index, faiss.IndexIDMap2):
        index.is_trained = True


def _sound_rows(store: DescriptorStore, rows: np.ndarray) -> np.ndarray:
    """The rows' descriptors less the damaged ones: one row at 1e35 would skew a k-means."""
    vecs = store.read(rows)
    return vecs[unit_rows(vecs)]


def _sha1(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def _file_sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _save(folder: Path, catalog, kind, index, ids, rows, cfg, trained_on: int) -> None:
    """Pairs first, then the index, then the meta that vouches for both (all atomic)."""
    pairs = np.stack([ids, rows])
    with atomic_open(folder / PAIRS_FILE, "wb") as f:
        np.save(f, pairs)
    with atomic_path(folder / SEARCH_FILE) as tmp:
        faiss.write_index(index, str(tmp))
        index_sha1 = _file_sha1(tmp)
    meta = {
        "kind": kind,
        "build": _build_fields(kind, cfg),
        "trained_on": int(trained_on),
        "ntotal": int(index.ntotal),
        "pairs_sha1": _sha1(pairs),
        "index_sha1": index_sha1,
    }
    catalog.set_meta(META_KEY, json.dumps(meta))


def _load(folder: Path, catalog, kind: str, cfg: IndexConfig):
    """(index, ids, rows, trained_on) of the saved index if it was built as ``cfg`` asks."""
    raw = catalog.get_meta(META_KEY)
    if not raw or not (folder / SEARCH_FILE).exists() or not (folder / PAIRS_FILE).exists():
        return None
    try:
        meta = json.loads(raw)
        if meta.get("kind") != kind or meta.get("build") != _build_fields(kind, cfg):
            return None
        pairs = np.load(folder / PAIRS_FILE)
        if _sha1(pairs) != meta.get("pairs_sha1"):
            log.warning("%s does not match its checksum: rebuilding it", folder / PAIRS_FILE)
            return None
        # Damage in place (same size) would otherwise load and answer "no match".
        if _file_sha1(folder / SEARCH_FILE) != meta.get("index_sha1"):
            log.warning("%s does not match its checksum: rebuilding it", folder / SEARCH_FILE)
            return None
        index = faiss.read_index(str(folder / SEARCH_FILE))
        if index.ntotal != pairs.shape[1] or index.ntotal != meta.get("ntotal"):
            return None
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # corrupt or foreign: rebuild
        log.warning("rebuilding the search index of %s: %s", folder, exc)
        return None
    return index, pairs[0].copy(), pairs[1].copy(), int(meta.get("trained_on", 0))


def _sync(
    kind, index, saved_ids, saved_rows, ids, rows, store, progress, damaged=None
) -> bool | None:
    """Bring a saved index in line with the catalogue: True if changed, None if it cannot."""
    present = np.isin(ids, saved_ids)
    pos = np.searchsorted(saved_ids, ids[present])
    moved = ids[present][saved_rows[pos] != rows[present]]  # re-extracted photos
    gone = saved_ids[~np.isin(saved_ids, ids)]
    remove = np.concatenate([gone, moved])
    add = np.concatenate([ids[~present], moved])
    if len(remove) == 0 and len(add) == 0:
        return False
    if len(remove):
        if kind == "hnsw":
            return None  # HNSW cannot delete
        if isinstance(_unwrap(index), faiss.IndexIVFFastScan):
            # faiss 1.15: after remove_ids, codes added to a fast-scan list land in the wrong
            # slots (most new photos were not found again). Keep the training, refill the lists.
            index.reset()
            _fill(index, store, ids, rows, progress, damaged)
            return True
        index.remove_ids(faiss.IDSelectorBatch(remove.astype(np.int64)))
    if len(add):
        add_rows = rows[np.searchsorted(ids, add)]
        _fill(index, store, add, add_rows, progress, damaged)
    return True


def open_search(
    folder: Path,
    catalog,
    store: DescriptorStore | None,
    dim: int,
    cfg: IndexConfig,
    progress: Progress | None = None,
    *,
    save: bool = True,
) -> SearchIndex:
    """The search index for the catalogue as it is now: loaded, updated or (re)built.

    ``save=False`` (a reader: a search next to a build, or a read-only index) changes no file:
    an index that is out of date is brought up to date in memory only.
    """
    ids, rows = catalogue_pairs(catalog)
    if store is not None and len(rows) and rows.max() >= store.rows:
        # Committed by a build after this store was opened: searched next time it is opened.
        keep = rows < store.rows
        ids, rows = ids[keep], rows[keep]
    n = len(ids)
    kind = choose_kind(n, cfg)
    damaged: set[int] = set()
    if kind == "flat" or n == 0 or store is None:
        if save and kind == "flat" and (folder / SEARCH_FILE).exists():
            remove_saved(folder)
        flat = build_flat(store, ids, rows, dim, progress, damaged)
        return SearchIndex("flat", flat, ids, rows, cfg, damaged)
    saved = _load(folder, catalog, kind, cfg)
    if saved is not None:
        index, s_ids, s_rows, trained_on = saved
        if n <= cfg.retrain_growth * max(trained_on, 1):
            changed = _sync(kind, index, s_ids, s_rows, ids, rows, store, progress, damaged)
            if changed is not None:
                if changed and save:
                    _try_save(folder, catalog, kind, index, ids, rows, cfg, trained_on)
                return SearchIndex(kind, index, ids, rows, cfg, damaged)
    t0 = time.perf_counter()
    index = new_approx(kind, dim, n, cfg)
    if progress:
        progress(0, n)
    train_approx(index, store, rows, cfg)
    _fill(index, store, ids, rows, progress, damaged)
    log.info("built a %s index of %d references in %.1f s", kind, n, time.perf_counter() - t0)
    if save:
        _try_save(folder, catalog, kind, index, ids, rows, cfg, n)
    return SearchIndex(kind, index, ids, rows, cfg, damaged)


def refresh_saved(
    folder: Path,
    catalog,
    store: DescriptorStore | None,
    dim: int,
    cfg: IndexConfig,
    progress: Progress | None = None,
) -> SearchIndex | None:
    """After a build: bring the saved index in line with the catalogue, and return it.

    A library searched exactly has no index file, so there is nothing to save: it is not built
    in memory here (24 KB per photo, 1.2 GB at ``flat_max``), only a stale approximate index of a
    library that shrank is removed.
    """
    (n,) = catalog.db.execute("SELECT COUNT(*) FROM images WHERE status='indexed'").fetchone()
    if choose_kind(int(n), cfg) == "flat":
        remove_saved(folder)
        return None
    return open_search(folder, catalog, store, dim, cfg, progress)


def _try_save(folder, catalog, kind, index, ids, rows, cfg, trained_on) -> None:
    try:
        _save(folder, catalog, kind, index, ids, rows, cfg, trained_on)
    except (OSError, sqlite3.Error) as exc:  # a read-only library: search from memory anyway
        log.warning("cannot save the search index in %s: %s", folder, exc)


def remove_saved(folder: Path) -> None:
    """Drop a saved approximate index (the library shrank back to exact search)."""
    for name in (SEARCH_FILE, PAIRS_FILE):
        try:
            (folder / name).unlink()
        except OSError:
            pass
