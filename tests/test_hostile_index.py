"""Issue 23's hostile probes on an index and its build: damaged, lost or mixed descriptors, a
full disk, photos swapped behind the catalogue's back. Each ends in a build that repairs what
it can, or a one-line reason, never a silently wrong answer."""

from __future__ import annotations

import errno
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from _library import build_small, make_library
from PIL import Image

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


# -- probe 1: bit rot in descriptors.f32 ------------------------------------------------------
def rot(idx, row: int, dim: int) -> None:
    """Flip the top exponent bit of one value of a stored row (x 2^128: 0.01 becomes 3e36), and
    a few mantissa bits around it: what 10 flipped bits did to the hostile tester's store."""
    path = next(idx.glob("descriptors*.f32"))
    bits = np.fromfile(path, np.uint32)
    start = row * dim
    bits[start + 100] ^= np.uint32(1 << 30)
    for j in (7, 300, 2000):
        bits[start + j] ^= np.uint32(1 << 3)
    bits.tofile(path)


@pytest.mark.parametrize(("kind", "rerank"), [("flat", 128), ("ivfpq", 128), ("ivfpq", 0)], ids=str)
def test_a_rotten_row_is_never_a_match_and_the_next_build_repairs_it(tmp_path, kind, rerank):
    """Exact search leaves the row out when it loads; an approximate index (whose codes were
    made before the damage) when it re-ranks its candidates, or checks its top-k without."""
    from netvlad_gui.core.config import IndexConfig

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 8)
    cfg = IndexConfig(kind=kind, nlist=1, pq_m=8, rerank=rerank)
    _build(lib, idx, index_cfg=cfg)
    index = LibraryIndex(idx)
    good = index.store().read(np.arange(8))
    victim = next(r for r in index.catalog.rows("indexed") if r.row == 3)
    dim = index.dim
    index.close()
    rot(idx, 3, dim)

    index = LibraryIndex(idx, config=cfg)  # a reader: locate
    try:
        for hits in index.search(good, 8):  # every photo's own descriptor as a query
            assert victim.id not in [h.id for h in hits]  # was: first, at 1.9e35
            assert all(-1.0001 <= h.score <= 1.0001 for h in hits)
        assert index.damaged_ids == {victim.id}
    finally:
        index.close()

    s = _build(lib, idx)  # was: "0 new or changed"
    assert s.extracted == 1 and s.indexed == 8
    assert any("damaged" in w and "1 photo" in w for w in s.warnings), s.warnings
    assert _self_hits(idx) == 8
    index = LibraryIndex(idx)
    index.search(good[:1], 8)
    assert index.damaged_ids == set()
    index.close()
    assert _build(lib, idx).extracted == 0  # the check found nothing more: no loop


def test_a_build_never_stores_a_descriptor_that_is_not_unit_length(tmp_path, monkeypatch):
    from netvlad_gui.core.library import builder

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    real = builder._descriptors

    def blank(model, files, *a, **k):  # F.normalize keeps an all-zero vector all zero
        for item in real(model, files, *a, **k):
            if Path(files[item.index]).name == paths[1].name:
                item.descriptor = np.zeros_like(item.descriptor)
            yield item

    monkeypatch.setattr(builder, "_descriptors", blank)
    s = _build(lib, idx)
    assert s.indexed == 5 and [p for p, _ in s.failed] == [paths[1].name]
    assert "empty descriptor" in s.failed[0][1]


def test_a_large_store_is_checked_when_its_file_changed_even_with_its_mtime_put_back(
    tmp_path, monkeypatch
):
    from netvlad_gui.core.library import repair

    monkeypatch.setattr(repair, "ALWAYS_CHECK_BYTES", 0)  # every store counts as large
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    reads = []
    real = repair.unit_rows
    monkeypatch.setattr(repair, "unit_rows", lambda v: reads.append(len(v)) or real(v))
    assert _build(lib, idx).extracted == 0 and reads == []  # as the last build left it: skipped
    store = idx / "descriptors.f32"
    st = store.stat()
    rot(idx, 2, store.stat().st_size // 4 // 6)
    os.utime(store, ns=(st.st_atime_ns, st.st_mtime_ns))  # the ctime still moved
    s = _build(lib, idx)
    assert reads == [6] and s.extracted == 1 and s.indexed == 6
    assert _self_hits(idx) == 6


# -- probe 6: a photo replaced by another of the same size and mtime ---------------------------
def _same_size_other_photo(path: Path, seed: int) -> None:
    """Write another picture over ``path``: same byte size (padded after the JPEG's end), and
    the old mtime put back, as `cp` + `touch -r` or a sync tool restoring times would."""
    st = path.stat()
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((128, 96))
    for quality in range(90, 5, -5):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        if buf.tell() <= st.st_size:
            break
    data = buf.getvalue()
    path.write_bytes(data + b"\0" * (st.st_size - len(data)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_photo_replaced_with_the_same_size_and_mtime_is_extracted_again(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)
    _same_size_other_photo(paths[1], seed=99)
    assert _build(lib, idx).extracted == 1  # was 0: the old descriptor stayed
    assert _self_hits(idx) == 6
    from netvlad_gui.core.photos import filestamp

    hashed = []
    real = filestamp.content_digest
    monkeypatch.setattr(filestamp, "content_digest", lambda p: hashed.append(p) or real(p))
    assert _build(lib, idx).extracted == 0 and hashed == []  # a no-op reads no photo
    paths[2].chmod(0o600)  # the change time moves, the bytes do not: hashed, kept
    assert _build(lib, idx).extracted == 0 and [p.name for p in hashed] == [paths[2].name]


# -- probe 5: the index records its input size -------------------------------------------------
def _sizes_extracted(monkeypatch) -> list[int]:
    """The image size of every extraction stage the builds run from now on."""
    from netvlad_gui.core.library import builder

    seen: list[int] = []
    real = builder._extract_pending

    def spy(index, model, library, pending, extract_cfg, *a, **k):
        seen.append(extract_cfg.image_size)
        return real(index, model, library, pending, extract_cfg, *a, **k)

    monkeypatch.setattr(builder, "_extract_pending", spy)
    return seen


def test_an_update_at_another_image_size_is_refused_or_keeps_the_index_size(tmp_path, monkeypatch):
    from netvlad_gui.cli import main
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.errors import LibraryIndexError

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)  # 96 px (build_small's)
    index = LibraryIndex(idx)
    assert index.image_size == 96
    index.close()
    seen = _sizes_extracted(monkeypatch)
    _touch_all(paths[:2], 10)

    asked = ExtractConfig.from_options(image_size=128, num_workers=0, device="cpu")
    with pytest.raises(LibraryIndexError, match="describes photos at 96 px, not 128 px") as err:
        _build(lib, idx, extract_cfg=asked)  # was: extracted at 128 among rows made at 96
    assert "leave out --image-size" in str(err.value) and "\n" not in str(err.value)
    assert seen == []

    s = _build(lib, idx, extract_cfg=asked, keep_index_model=True)  # the GUI's "Update index"
    assert s.extracted == 2 and seen == [96]
    assert any("keeps its image size of 96 px" in w for w in s.warnings), s.warnings

    _touch_all(paths[2:3], 20)
    default = ExtractConfig.from_options(num_workers=0, device="cpu")  # no --image-size: 640
    s = _build(lib, idx, extract_cfg=default)
    assert s.extracted == 1 and seen == [96, 96] and not s.warnings

    args = ["index", str(lib), "--index", str(idx), "--image-size", "128", "-q"]
    assert main(args) == 1  # the CLI says it in one line, exit 1


def test_a_new_index_takes_the_size_asked_until_it_holds_descriptors(tmp_path):
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.library.builder import build_index

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    first = ExtractConfig.from_options(image_size=128, num_workers=0, device="cpu")
    build_index(lib, idx, backbone_weights="none", extract_cfg=first, cancel=lambda: True)
    index = LibraryIndex(idx)
    assert index.image_size == 128 and index.stats().indexed == 0
    index.close()
    s = _build(lib, idx, extract_cfg=ExtractConfig.from_options(image_size=96, device="cpu"))
    assert s.indexed == 6  # nothing was extracted at 128: 96 is taken, not refused
    index = LibraryIndex(idx)
    assert index.image_size == 96
    index.close()


def test_an_older_index_without_a_recorded_size_has_it_settled_by_its_next_build(tmp_path):
    import sqlite3

    from netvlad_gui.core.config import ExtractConfig

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)  # at 96 px

    def forget():  # what an index built before the size was recorded holds
        db = sqlite3.connect(idx / "catalog.sqlite")
        with db:
            db.execute("DELETE FROM meta WHERE key='extraction'")
        db.close()

    forget()
    s = _build(lib, idx)  # nothing new, but the size is unknown: settled once (torch loads)
    assert s.extracted == 0 and not s.warnings
    index = LibraryIndex(idx)
    assert index.image_size == 96
    index.close()
    forget()
    _touch_all(paths[:1], 10)
    s = _build(lib, idx)  # the same size as its descriptors: recorded, nothing more
    assert s.extracted == 1 and not s.warnings
    index = LibraryIndex(idx)
    assert index.image_size == 96
    index.close()
    forget()
    _touch_all(paths[:1], 20)
    other = ExtractConfig(image_size=160, batch_size=4, num_workers=0, device="cpu")
    s = _build(lib, idx, extract_cfg=other)  # its descriptors were not made at 160: all again
    assert s.extracted == 6 and any("160 px" in w for w in s.warnings), s.warnings
    index = LibraryIndex(idx)
    assert index.image_size == 160
    index.close()
