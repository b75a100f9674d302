"""Issue 23's hostile probes on an index and its build: damaged, lost or mixed descriptors, a
full disk, photos swapped behind the catalogue's back. Each ends in a build that repairs what
it can, or a one-line reason, never a silently wrong answer."""

from __future__ import annotations

import errno
import os
import shutil
import time

from _library import build_small, make_library

from netvlad_gui.core.errors import FileWriteError
from netvlad_gui.core.library import index as index_mod
from netvlad_gui.core.library.index import LibraryIndex


def _build(lib, idx, **kw):
    return build_small(lib, idx, init_images=12, **kw)


def _touch_all(paths, seconds: float) -> None:
    for p in paths:
        os.utime(p, (time.time() + seconds, time.time() + seconds))


# -- probe 14: no room for compaction's copy --------------------------------------------------
def test_a_disk_too_full_to_compact_skips_compaction_with_a_warning(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)
    monkeypatch.setattr(index_mod, "COMPACT_MIN_ROWS", 1)
    real = index_mod.write_compacted

    def full(store, rows, path, chunk=8192):  # the copy runs out of room half-way
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        path.unlink()
        raise FileWriteError(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(index_mod, "write_compacted", full)
    _touch_all(paths, 10)
    s = _build(lib, idx)  # 6 of 12 rows dead: compaction is due, and fails for room
    assert s.extracted == 6 and s.indexed == 6
    assert any("compact" in w and "No space left" in w for w in s.warnings), s.warnings
    assert _build(lib, idx).indexed == 6  # and every later run as well: never exit 1
    index = LibraryIndex(idx)
    assert index.stats().dead_rows == 6 and len(list(idx.glob("*.tmp"))) == 0
    index.close()
    monkeypatch.setattr(index_mod, "write_compacted", real)
    tiny = shutil._ntuple_diskusage(10**9, 10**9 - 10, 10)  # known too small: not even tried
    monkeypatch.setattr(index_mod.shutil, "disk_usage", lambda p: tiny)
    s = _build(lib, idx)
    assert any("compact" in w and "MB needed" in w for w in s.warnings), s.warnings
    assert not list(idx.glob("descriptors-*.f32")) and not list(idx.glob(".*.tmp"))
    monkeypatch.undo()  # room again: compacted
    monkeypatch.setattr(index_mod, "COMPACT_MIN_ROWS", 1)
    s = _build(lib, idx)
    assert not s.warnings
    index = LibraryIndex(idx)
    assert index.stats().dead_rows == 0
    index.close()


# -- probe 15: descriptors.f32 truncated or deleted -------------------------------------------
def _self_hits(idx) -> int:
    """How many indexed photos find themselves first, at cosine 1, from their stored rows."""
    index = LibraryIndex(idx)
    try:
        rows = index.catalog.rows("indexed")
        vecs = index.store().read([r.row for r in rows])
        hits = index.search(vecs, 1)
        return sum(h[0].id == r.id and h[0].score > 0.9999 for r, h in zip(rows, hits, strict=True))
    finally:
        index.close()


def test_a_truncated_store_is_searched_as_far_as_it_goes_and_repaired_by_a_build(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    store = idx / "descriptors.f32"
    row = store.stat().st_size // 6
    os.truncate(store, 3 * row + row // 2)  # three and a half rows left
    index = LibraryIndex(idx)  # a reader (locate) searches the rows that are left
    try:
        assert index.store().rows == 3 and index.store().lost == 3
        vecs = index.store().read([0, 1, 2])
        assert [h[0].score > 0.9999 for h in index.search(vecs, 1)] == [True] * 3
    finally:
        index.close()
    s = _build(lib, idx)  # was: "shorter than its catalogue says …; rebuild the index", forever
    assert s.extracted == 3 and s.indexed == 6
    assert any("3 photos" in w and "extracted again" in w for w in s.warnings), s.warnings
    assert _self_hits(idx) == 6
    assert _build(lib, idx).extracted == 0


def test_a_deleted_store_has_every_photo_extracted_again(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    (idx / "descriptors.f32").unlink()
    s = _build(lib, idx)
    assert s.extracted == 6 and s.indexed == 6
    assert any("6 photos" in w for w in s.warnings), s.warnings
    assert _self_hits(idx) == 6
