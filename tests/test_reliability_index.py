"""Faults and bad input around a library index (issue 13): each gives a one-line reason or is
worked round, never a traceback, a silently wrong answer or a lost index."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _library import build_small, make_library
from PIL import Image

from netvlad_gui.core.errors import LibraryIndexError
from netvlad_gui.core.library import builder
from netvlad_gui.core.library import index as index_mod
from netvlad_gui.core.library.catalog import CatalogDamagedError
from netvlad_gui.core.library.index import CATALOG_FILE, MODEL_FILE, LibraryIndex
from netvlad_gui.core.library.store import DescriptorStore


def _build(lib, idx, **kw):
    return build_small(lib, idx, init_images=12, **kw)


def _self_hits(idx: Path) -> None:
    """Every indexed photo's stored descriptor finds that photo first, at cosine 1."""
    index = LibraryIndex(idx)
    try:
        rows = index.catalog.rows("indexed")
        vecs = index.store().read([r.row for r in rows])
        for r, hits in zip(rows, index.search(vecs, 1), strict=True):
            assert hits[0].id == r.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    finally:
        index.close()


def _repaint(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(path, quality=90)


# -- 1. descriptors of two models are never mixed -------------------------------------------
def test_a_lost_model_has_every_photo_extracted_again_with_the_new_one(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 8)
    _build(lib, idx)
    (idx / MODEL_FILE).unlink()  # a backup or sync tool lost it
    _repaint(paths[0], 1)  # … and a few photos changed: the new model is initialised on them
    _repaint(paths[1], 2)
    s = _build(lib, idx)
    assert s.extracted == 8 and s.indexed == 8  # not just the 2 changed photos
    assert any("missing" in w and "all 8 photos" in w for w in s.warnings)
    _self_hits(idx)
    index = LibraryIndex(idx)
    assert index.stats().store_rows == 8  # the old model's rows are gone from the store
    index.close()


def test_a_replaced_model_is_refused_by_search_and_re_extracted_by_a_build(tmp_path):
    lib, other = tmp_path / "lib", tmp_path / "other"
    make_library(lib, 6)
    make_library(other, 6, seed=5)
    _build(lib, tmp_path / "idx")
    _build(other, tmp_path / "idx2")
    shutil.copy(tmp_path / "idx2" / MODEL_FILE, tmp_path / "idx" / MODEL_FILE)
    with pytest.raises(LibraryIndexError, match="not the model this index's descriptors"):
        LibraryIndex(tmp_path / "idx")
    s = _build(lib, tmp_path / "idx")
    assert s.extracted == 6 and any("not the model" in w for w in s.warnings)
    LibraryIndex(tmp_path / "idx").close()  # consistent again
    _self_hits(tmp_path / "idx")


# -- 2. a file name that is not UTF-8 ---------------------------------------------------------
def test_a_non_utf8_file_name_is_indexed_and_shown_with_replacement_characters(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    odd = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 name from an old disk: surrogate-escaped
    _repaint(lib / odd, 3)
    s = _build(lib, idx)
    assert s.total == 7 and s.indexed == 7 and not s.failed
    assert ("caf\ufffd.jpg" in [p for p, _ in s.no_gps]) and s.no_gps[0][0].isprintable()
    index = LibraryIndex(idx)
    row = next(r for r in index.catalog.rows() if r.path == odd)  # stored losslessly
    assert row.status == "indexed" and row.display_path == "caf\ufffd.jpg"
    hit = index.search(index.store().read([row.row]), 1)[0][0]
    assert hit.id == row.id and hit.path.exists()
    index.close()
    assert _build(lib, idx).extracted == 0  # the same key again: not seen as a new photo


# -- 3. a reader never writes -----------------------------------------------------------------
def test_a_reader_looping_during_a_build_never_breaks_the_store(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 40, size=64)
    _build(lib, idx)
    for n, p in enumerate(sorted(lib.glob("*.jpg"))[:30]):
        _repaint(p, 100 + n)
    monkeypatch.setattr(builder, "COMMIT_EVERY", 1)  # many append -> commit windows
    result: dict = {}

    def run():
        try:
            result["summary"] = _build(lib, idx)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    opened = 0
    while t.is_alive():
        try:
            index = LibraryIndex(idx)
        except LibraryIndexError:
            continue
        try:
            store = index.store()
            if store.rows:  # searching while rows are committed: never past the open store
                assert index.search(store.read([store.rows - 1]), 3)[0]
            opened += 1
        except LibraryIndexError:
            pass
        finally:
            index.close()
    t.join()
    assert "error" not in result, result.get("error")
    assert opened > 10 and result["summary"].extracted == 30
    _self_hits(idx)


def test_a_read_only_store_ignores_an_uncommitted_tail_and_leaves_the_file_alone(tmp_path):
    path = tmp_path / "d.f32"
    DescriptorStore(path, 4, 0).append(np.ones((5, 4), np.float32))  # 3 committed, 2 not yet
    before = path.stat()
    reader = DescriptorStore(path, 4, 3, writable=False)
    assert reader.rows == 3 and reader.read([2]).tolist() == [[1, 1, 1, 1]]
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(LibraryIndexError, match="read-only"):
        reader.append(np.ones((1, 4), np.float32))


# -- 6. a damaged catalogue -------------------------------------------------------------------
def test_a_damaged_catalogue_is_one_line_for_readers_and_rebuilt_by_a_build(tmp_path, capsys):
    from netvlad_gui import cli

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    with open(idx / CATALOG_FILE, "r+b") as f:
        f.write(b"this is no longer SQLite" * 8)
    with pytest.raises(CatalogDamagedError, match="damaged.*netvlad index"):
        LibraryIndex(idx)
    for argv in (
        ["info", "--index", str(idx)],
        ["locate", str(lib / "img_0001.jpg"), "--index", str(idx)],
    ):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1 and "damaged" in err
    s = _build(lib, idx)
    assert s.indexed == 6 and s.extracted == 6 and any("damaged" in w for w in s.warnings)
    assert list(idx.glob(f"{CATALOG_FILE}.damaged-*"))  # set aside, not deleted
    _self_hits(idx)


def test_a_catalogue_damaged_inside_its_pages_is_rebuilt(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    size = (idx / CATALOG_FILE).stat().st_size
    with open(idx / CATALOG_FILE, "r+b") as f:  # keep the header, wreck the pages after it
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    s = _build(lib, idx)
    assert s.indexed == 6 and any("damaged" in w for w in s.warnings)


# -- 7. a read-only index ---------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_read_only_index_is_searched_without_writing_a_byte(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    before = _snapshot(idx)
    for p in idx.iterdir():
        p.chmod(0o444)
    idx.chmod(0o555)
    # Tests may run as root, which writes anyway: say "read-only" as a share or disc would.
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode)
    )
    try:
        _self_hits(idx)
        assert _snapshot(idx) == before  # no -wal/-shm, no touched store
    finally:
        idx.chmod(0o755)


# -- 11. the build lock and forked workers ----------------------------------------------------
def test_a_forked_worker_does_not_keep_the_build_lock_of_a_dead_build(tmp_path):
    lock = builder._lock(tmp_path)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker that outlives its killed parent
        os.write(ready_w, b"1")  # running (fork's handlers are done)
        time.sleep(5)
        os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    try:
        lock.close()  # the build is gone
        again = builder._lock(tmp_path)  # … so the next build may start at once
        again.close()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


# -- 12. the store is compacted ---------------------------------------------------------------
def test_dead_rows_are_reported_then_compacted(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 8)
    _build(lib, idx)
    monkeypatch.setattr(index_mod, "COMPACT_SHARE", 2.0)  # never: see the dead rows first
    for p in paths[:3]:
        os.utime(p, (time.time() + 10, time.time() + 10))
    assert _build(lib, idx).extracted == 3
    index = LibraryIndex(idx)
    st = index.stats()
    assert (st.store_rows, st.dead_rows) == (11, 3) and st.dead_share == pytest.approx(3 / 11)
    index.close()
    (idx / "descriptors-99.f32").write_bytes(b"\0" * 64)  # left by a compaction killed midway
    monkeypatch.setattr(index_mod, "COMPACT_SHARE", 0.5)
    monkeypatch.setattr(index_mod, "COMPACT_MIN_ROWS", 1)
    for p in paths:
        os.utime(p, (time.time() + 20, time.time() + 20))
    assert _build(lib, idx).extracted == 8  # 11 of 19 rows dead: compacted
    index = LibraryIndex(idx)
    st = index.stats()
    assert (st.store_rows, st.dead_rows) == (8, 0) and st.store_bytes == 8 * st.dim * 4
    assert [p.name for p in idx.glob("descriptors*.f32")] == [index.store_path.name]
    index.close()
    _self_hits(idx)


def test_a_compaction_killed_before_its_commit_leaves_the_old_store_in_use(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)
    for p in paths:
        os.utime(p, (time.time() + 10, time.time() + 10))
    monkeypatch.setattr(index_mod, "COMPACT_MIN_ROWS", 1)

    def killed(*a, **k):
        raise KeyboardInterrupt

    from netvlad_gui.core.library.catalog import Catalog

    monkeypatch.setattr(Catalog, "set_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(lib, idx)
    _self_hits(idx)  # the catalogue still points at the old, complete store
    monkeypatch.undo()
    monkeypatch.setattr(index_mod, "COMPACT_MIN_ROWS", 1)
    _build(lib, idx)
    assert len(list(idx.glob("descriptors*.f32"))) == 1
    _self_hits(idx)


# -- 15. a GPS fix in gps.csv -----------------------------------------------------------------
def test_a_gps_csv_fix_reaches_the_catalogue_without_extraction(tmp_path):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    _build(lib, idx)
    csv = lib / "gps.csv"
    lines = csv.read_text().splitlines()
    name, lat, lon = lines[4].split(",")
    lines[4] = f"{name},{float(lat) + 1.0:.7f},{lon}"  # moved about 111 km
    lines.append("nogps_later.jpg,50.0,10.0")
    csv.write_text("\n".join(lines) + "\n")
    s = _build(lib, idx)
    assert s.extracted == 0
    index = LibraryIndex(idx)
    row = next(r for r in index.catalog.rows() if r.path == name)
    assert row.lat == pytest.approx(float(lat) + 1.0) and row.gps_source == "csv"
    hit = index.search(index.store().read([row.row]), 1)[0][0]
    assert hit.image.lat == pytest.approx(float(lat) + 1.0)  # the next answers use it
    index.close()


# -- 16. change detection ---------------------------------------------------------------------
def test_change_detection_needs_both_size_and_mtime_to_be_unchanged(tmp_path):
    """Each case fails a detector that looks at only one of the two."""
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    _build(lib, idx)

    def stamp(p):
        return p.stat().st_atime_ns, p.stat().st_mtime_ns

    # A same-size edit: new pixels and mtime, same size (size-only detection misses it).
    data = bytearray(paths[0].read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(255 - b for b in data[mid : mid + 64])
    paths[0].write_bytes(bytes(data))
    os.utime(paths[0], ns=(stamp(paths[0])[0], stamp(paths[0])[1] + 5_000_000_000))
    assert _build(lib, idx).extracted == 1
    # A size change with the old mtime put back (mtime-only detection misses it).
    old = stamp(paths[1])
    with open(paths[1], "ab") as f:
        f.write(b"\0" * 100)
    os.utime(paths[1], ns=old)
    assert _build(lib, idx).extracted == 1
    # A touch: same bytes, new mtime. Extracted again (decided in scan._is_unchanged).
    os.utime(paths[2], ns=(stamp(paths[2])[0], stamp(paths[2])[1] + 5_000_000_000))
    assert _build(lib, idx).extracted == 1
    assert _build(lib, idx).extracted == 0


# -- also: a full disk while saving the model -------------------------------------------------
def test_a_full_disk_while_saving_the_model_says_so(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    make_library(lib, 6)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    from netvlad_gui.core.model import checkpoint

    monkeypatch.setattr(checkpoint, "save_checkpoint", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(LibraryIndexError, match="no space left on device") as err:
        _build(lib, tmp_path / "idx")
    assert "enforce fail" not in str(err.value) and "\n" not in str(err.value)


# -- also: unreadable subfolders --------------------------------------------------------------
def test_an_unreadable_subfolder_is_listed_and_its_photos_kept(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 6)
    make_library(lib / "private", 2, seed=3, gps=False)
    assert _build(lib, idx).indexed == 8
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (even as root)
        if Path(path).name == "private":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = _build(lib, idx)
    assert any("private" in w and "Permission denied" in w for w in s.warnings)
    assert s.removed == 0 and s.indexed == 8  # not taken for deleted photos


# -- 9 (store side): a non-finite descriptor is never stored ----------------------------------
def test_a_non_finite_descriptor_is_not_stored_and_the_photo_says_why(tmp_path, monkeypatch):
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    paths = make_library(lib, 6)
    real_extract = builder._descriptors  # every descriptor of a build passes there

    def some_nan(model, files, *a, **k):
        for item in real_extract(model, files, *a, **k):
            if Path(files[item.index]).name == paths[2].name:
                item.descriptor = np.full_like(item.descriptor, np.nan)
            yield item

    monkeypatch.setattr(builder, "_descriptors", some_nan)
    s = _build(lib, idx)
    assert s.indexed == 5 and [p for p, _ in s.failed] == [paths[2].name]
    assert "NaN" in s.failed[0][1]
    index = LibraryIndex(idx)
    assert np.isfinite(index.store().read(list(range(index.store().rows)))).all()
    index.close()


def test_after_kill_9_the_next_build_is_not_refused_by_orphaned_workers(tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys

    lib, idx = tmp_path / "lib", tmp_path / "idx"
    make_library(lib, 80, size=72)
    cmd = [sys.executable, "-m", "netvlad_gui.cli", "index", str(lib), "--index", str(idx)]
    cmd += ["--backbone-weights", "none", "--image-size", "96", "--batch-size", "2"]
    cmd += ["--workers", "2", "--device", "cpu", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(idx / CATALOG_FILE, timeout=5)
            n = con.execute("SELECT COUNT(*) FROM images WHERE status='indexed'").fetchone()[0]
            con.close()
        except sqlite3.Error:
            n = 0
        if n >= 2:  # extracting: the DataLoader workers are running
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"build ended before it could be killed: {proc.stderr.read().decode()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    builder._lock(idx).close()  # at once: the workers (alive for a few seconds) hold nothing


# -- issue 23: what the mutation audit found untested -----------------------------------------
def test_catalog_check_finds_a_damaged_index_page_that_reads_do_not_touch(tmp_path):
    import sqlite3

    from netvlad_gui.core.library.catalog import Catalog, CatalogDamagedError

    path = tmp_path / "catalog.sqlite"
    cat = Catalog(path)
    cat.upsert_pending([(f"p_{i:05d}.jpg", i, 0.0, None, None, None, "", "") for i in range(3000)])
    cat.close()
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='images_status'").fetchone()
    (page,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(path, "r+b") as f:  # the status index's root page: garbage of a valid type byte
        f.seek((root - 1) * page)
        f.write(b"\x0d" + np.random.default_rng(0).integers(0, 256, page - 1, np.uint8).tobytes())
    cat = Catalog(path)
    try:
        assert len(cat.rows()) == 3000  # ordinary reads go by the table and see nothing wrong
        with pytest.raises(CatalogDamagedError, match="is damaged .Page") as err:
            cat.check()  # quick_check walks every page, indexes included
        assert "\n" not in str(err.value) and "more problems" in str(err.value)
    finally:
        cat.close()


def test_the_build_lock_is_exclusive(tmp_path):
    from netvlad_gui.core.library.buildlock import lock_index

    first = lock_index(tmp_path)
    try:
        with pytest.raises(LibraryIndexError, match="another build is already updating"):
            lock_index(tmp_path)  # a second build on the same folder, even in this process
    finally:
        first.close()
    lock_index(tmp_path).close()  # free again once the first let go


def test_store_append_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    # The catalogue commits a row only after append returns: without fsync, a power cut could
    # leave committed rows pointing at bytes that never reached the disk.
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)  # wherever the store's writer calls it
    st = DescriptorStore(tmp_path / "d.f32", 4, 0)
    st.append(np.ones((3, 4), np.float32))
    assert synced == [3 * 16]  # the file, once it held the new rows
    st.append(np.ones((2, 4), np.float32))
    assert synced == [3 * 16, 5 * 16]
