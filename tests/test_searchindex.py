"""Search index types by library size: exact flat, IVF-PQ and HNSW, persisted and kept in sync.

Synthetic descriptors (64-D, clustered like real ones) go straight into an index folder, so these
tests need no model and run in seconds.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from _library import make_library

from netvlad_gui.core.config import ExtractConfig, IndexConfig, InitConfig
from netvlad_gui.core.library import searchindex
from netvlad_gui.core.library.builder import build_index
from netvlad_gui.core.library.index import LibraryIndex
from netvlad_gui.core.library.searchindex import (
    PAIRS_FILE,
    SEARCH_FILE,
    IndexConfigError,
    choose_kind,
)

DIM = 64
SMALL = {
    "flat_max": 100,
    "pca_dim": 32,
    "pq_m": 8,
    "train_size": 5000,
    "pca_train_size": 5000,
    "nprobe": 8,
}


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _add(index: LibraryIndex, vecs: np.ndarray, start: int) -> list[int]:
    """Catalogue rows + stored descriptors for ``vecs``, as a build would commit them."""
    names = [f"img_{start + i:05d}.jpg" for i in range(len(vecs))]
    index.catalog.upsert_pending([(n, 1, 0.0, 55.7, 13.2, None, "exif", "") for n in names])
    ids = {r.path: r.id for r in index.catalog.rows("pending")}
    store = index.store()
    first = store.append(vecs)
    index.catalog.mark_done(
        [(ids[n], first + i) for i, n in enumerate(names)], [], {"store_rows": str(store.rows)}
    )
    index.invalidate()
    return [ids[n] for n in names]


def _make(tmp_path, n: int, cfg: IndexConfig | None = None, seed: int = 0):
    index = LibraryIndex(tmp_path / "idx", create=True, config=cfg)
    index.catalog.set_meta("dim", str(DIM))
    vecs = _vectors(n, seed)
    ids = _add(index, vecs, 0)
    return index, vecs, ids


def _top1(index: LibraryIndex, queries: np.ndarray) -> list[int]:
    return [hits[0].id for hits in index.search(queries, 5)]


def test_kind_follows_library_size():
    cfg = IndexConfig(flat_max=1000)
    assert choose_kind(1000, cfg) == "flat" and choose_kind(1001, cfg) == "ivfpq"
    assert choose_kind(10, IndexConfig(kind="hnsw")) == "hnsw"
    with pytest.raises(IndexConfigError, match="unknown index kind"):
        choose_kind(10, IndexConfig(kind="lsh"))
    assert searchindex.auto_nlist(1_000_000, 1_000_000) == 1024
    assert searchindex.auto_nlist(1_000_000, 20_000) == 512  # >= 39 training points per list
    assert searchindex.auto_nlist(10, 10) == 1


def test_small_library_is_exact_and_has_no_file(tmp_path):
    index, vecs, ids = _make(tmp_path, 80, IndexConfig(**SMALL))
    assert index.search_kind == "flat"
    assert _top1(index, vecs[:10]) == ids[:10]
    assert not (tmp_path / "idx" / SEARCH_FILE).exists()


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_large_library_gets_an_approximate_index_that_agrees_with_exact(tmp_path, kind):
    # IVF-PQ over the full descriptor (the default); HNSW after a PCA.
    extra = {"pca_dim": 0, "kind": "auto"} if kind == "ivfpq" else {"kind": kind}
    cfg = IndexConfig(**(SMALL | extra))
    index, vecs, ids = _make(tmp_path, 1500, cfg)
    assert index.search_kind == kind
    assert (tmp_path / "idx" / SEARCH_FILE).exists() and (tmp_path / "idx" / PAIRS_FILE).exists()
    noisy = vecs[:200] + 0.05 * np.random.default_rng(1).standard_normal((200, DIM))
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    exact = np.array(ids)[(noisy @ vecs.T).argmax(1)]
    got = np.array(_top1(index, noisy))
    assert (got == exact).mean() >= 0.97
    # Re-ranked scores are the exact cosine, whatever the index type.
    hit = index.search(vecs[3], 1)[0][0]
    assert hit.id == ids[3] and hit.score == pytest.approx(1.0, abs=1e-5)
    index.close()


def test_saved_index_is_reused_then_updated_when_the_catalogue_changes(tmp_path, monkeypatch):
    cfg = IndexConfig(**SMALL)
    index, vecs, ids = _make(tmp_path, 1200, cfg)
    assert index.faiss_index().ntotal == 1200
    index.close()

    def no_training(*a, **k):
        raise AssertionError("retrained although the saved index was still good")

    monkeypatch.setattr(searchindex, "train_approx", no_training)
    # Writable, as a build opens it: this test changes the catalogue.
    index = LibraryIndex(tmp_path / "idx", writable=True)
    index.config = cfg
    assert index.search_kind == "ivfpq" and index.faiss_index().ntotal == 1200

    gone = ids[:50]
    index.catalog.delete(gone)
    extra = _vectors(30, seed=7)
    new_ids = _add(index, extra, 5000)
    assert index.faiss_index().ntotal == 1200 - 50 + 30
    assert _top1(index, extra[:10]) == new_ids[:10]
    found = {h.id for hits in index.search(vecs[:50], 10) for h in hits}
    assert not found & set(gone)
    index.close()
    # What was saved after the update is what the next open loads, still without training.
    again = LibraryIndex(tmp_path / "idx", config=cfg)
    assert again.faiss_index().ntotal == 1180
    again.close()


def test_rebuilt_when_config_changes_file_is_corrupt_or_library_shrinks(tmp_path, caplog):
    cfg = IndexConfig(**SMALL)
    index, vecs, ids = _make(tmp_path, 1200, cfg)
    index.faiss_index()
    index.close()
    other = IndexConfig(**(SMALL | {"pq_m": 4}))
    index = LibraryIndex(tmp_path / "idx", config=other)
    assert index.faiss_index().ntotal == 1200  # retrained with 4 sub-quantisers
    assert searchindex._unwrap(index.faiss_index()).pq.M == 4
    index.close()

    (tmp_path / "idx" / SEARCH_FILE).write_bytes(b"not a faiss index")
    index = LibraryIndex(tmp_path / "idx", config=other, writable=True)
    assert _top1(index, vecs[:5]) == ids[:5]  # rebuilt, not crashed
    index.catalog.delete(ids[:1150])
    index.invalidate()
    assert index.search_kind == "flat"
    assert not (tmp_path / "idx" / SEARCH_FILE).exists()
    index.close()


def test_hnsw_rebuilds_after_a_removal(tmp_path):
    cfg = IndexConfig(**SMALL, kind="hnsw")
    index, vecs, ids = _make(tmp_path, 400, cfg)
    index.faiss_index()
    index.catalog.delete(ids[:10])
    index.invalidate()
    assert index.faiss_index().ntotal == 390
    assert all(h.id not in ids[:10] for hits in index.search(vecs[:10], 5) for h in hits)


def test_build_records_the_index_config_for_later_searches(tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 8)
    cfg = IndexConfig(kind="ivfpq", pca_dim=8, pq_m=4, nprobe=4)
    build_index(
        lib,
        tmp_path / "idx",
        backbone_weights="none",
        extract_cfg=ExtractConfig(image_size=64, batch_size=4, num_workers=0, device="cpu"),
        init_cfg=InitConfig(num_images=8, descriptors_per_image=20),
        index_cfg=cfg,
    )
    index = LibraryIndex(tmp_path / "idx")
    assert index.config == cfg and index.search_kind == "ivfpq"
    row = index.catalog.rows("indexed")[2]
    hit = index.search(index.store().read([row.row]), 1)[0][0]
    assert hit.id == row.id and hit.score == pytest.approx(1.0, abs=1e-4)


def test_fast_scan_codes_stay_findable_after_photos_are_removed_and_added(tmp_path):
    # faiss 1.15 misplaces codes added to fast-scan lists after remove_ids: the lists are refilled.
    cfg = IndexConfig(**(SMALL | {"pca_dim": 0, "pq_m": 32, "pq_bits": 4}))
    index, vecs, ids = _make(tmp_path, 1200, cfg)
    assert isinstance(faiss.downcast_index(index.faiss_index()), faiss.IndexIVFPQFastScan)
    index.catalog.delete(ids[:50])
    extra = _vectors(30, seed=7)
    new_ids = _add(index, extra, 5000)
    assert index.faiss_index().ntotal == 1200 - 50 + 30
    assert _top1(index, extra) == new_ids
    assert not set(_top1(index, vecs[:50])) & set(ids[:50])


def test_after_a_build_only_an_approximate_index_is_made_and_a_stale_one_removed(tmp_path):
    cfg = IndexConfig(**SMALL)
    index, vecs, ids = _make(tmp_path, 1200, cfg)
    index.invalidate()
    index.refresh_saved_search()  # what build_index runs last
    assert index._search is not None and index._search.kind == "ivfpq"
    assert (tmp_path / "idx" / SEARCH_FILE).exists()
    index.catalog.delete(ids[:1150])
    index.invalidate()
    index.refresh_saved_search()
    # Exact search keeps no file and is not built in memory (24 KB per photo) until a search.
    assert index._search is None and not (tmp_path / "idx" / SEARCH_FILE).exists()
    assert _top1(index, vecs[1150:1155]) == ids[1150:1155]
    index.close()


def test_a_search_index_damaged_in_place_is_rebuilt_not_trusted(tmp_path, caplog):
    # Same size, valid structure, wrong ids: without a checksum it loads and answers wrongly.
    cfg = IndexConfig(**SMALL)
    index, vecs, ids = _make(tmp_path, 1200, cfg)
    index.faiss_index()  # trained and saved
    index.close()
    path = tmp_path / "idx" / SEARCH_FILE
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the file ends with the last list's ids: make 16 of them wrong
        f.seek(size - 16 * 8)
        f.write(b"\x01" * 16 * 8)
    assert path.stat().st_size == size
    index = LibraryIndex(tmp_path / "idx", config=cfg, writable=True)  # what `netvlad index` does
    with caplog.at_level("WARNING"):
        found = [hits[0].id if hits else None for hits in index.search(vecs, 1)]
    assert found == ids and "checksum" in caplog.text
    index.close()
    caplog.clear()
    index = LibraryIndex(tmp_path / "idx", config=cfg)  # the rebuilt file was saved
    with caplog.at_level("WARNING"):
        assert [hits[0].id for hits in index.search(vecs[-50:], 1)] == ids[-50:]
    assert "checksum" not in caplog.text
    index.close()
