"""Library index: build, incremental update, cancel, resume after a kill, search."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _library import build_small, make_library
from PIL import Image

from netvlad_gui.core.errors import LibraryIndexError
from netvlad_gui.core.library.index import LibraryIndex
from netvlad_gui.core.library.store import DescriptorStore


def _build(lib, idx, **kw):
    return build_small(lib, idx, **kw)


def test_build_search_and_stats(tmp_path):
    paths = make_library(tmp_path / "lib", 12)
    (tmp_path / "lib/broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.new("RGB", (64, 48)).save(tmp_path / "lib/nogps.jpg")
    stages = []
    s = _build(tmp_path / "lib", tmp_path / "idx", progress=lambda st, d, t: stages.append(st))
    assert {"scan", "model", "init", "extract", "finalize"} <= set(stages)
    # in order: a user sees the model load (seconds of imports) before the photos move
    firsts = [stages.index(st) for st in ("scan", "model", "init", "extract", "finalize")]
    assert firsts == sorted(firsts)
    assert s.total == 14 and s.indexed == 13 and s.with_gps == 12 and s.extracted == 13
    assert [p for p, _ in s.failed] == ["broken.jpg"] and "image" in s.failed[0][1]
    assert [p for p, _ in s.no_gps] == ["nogps.jpg"] and "no usable GPS" not in s.no_gps[0][1]
    assert s.model == "mobilenet_v2-netvlad" and s.bytes_per_image > 6144 * 4

    index = LibraryIndex(tmp_path / "idx")
    assert index.dim == 6144 and index.model_path.exists()
    store = index.store()
    row = next(r for r in index.catalog.rows() if r.path == paths[3].name)
    hits = index.search(store.read([row.row]), 3)[0]
    assert hits[0].id == row.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].path == (tmp_path / "lib" / paths[3].name).resolve()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    cal = index.calibration()
    assert cal["pairs_same"] > 0 and cal["pairs_diff"] > 0


def test_incremental_update_only_processes_changes(tmp_path):
    lib = tmp_path / "lib"
    paths = make_library(lib, 10)
    first = _build(lib, tmp_path / "idx")
    assert first.extracted == 10
    again = _build(lib, tmp_path / "idx")
    assert again.extracted == 0 and again.indexed == 10 and again.removed == 0

    paths[0].unlink()
    make_library(tmp_path / "more", 2, seed=5)
    (tmp_path / "more/img_0000.jpg").rename(lib / "new.jpg")
    time.sleep(0.01)
    Image.new("RGB", (80, 60), (200, 0, 0)).save(paths[1])  # changed content and mtime
    upd = _build(lib, tmp_path / "idx")
    assert upd.removed == 1 and upd.extracted == 2 and upd.indexed == 10
    index = LibraryIndex(tmp_path / "idx")
    assert {r.path for r in index.catalog.rows()} == {p.name for p in paths[1:]} | {"new.jpg"}
    assert index.faiss_index().ntotal == 10


def test_index_keeps_its_model(tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 6)
    _build(lib, tmp_path / "idx")
    with pytest.raises(LibraryIndexError, match="built with model"):
        _build(lib, tmp_path / "idx", model_spec="alexnet-netvlad")
    # The GUI's "Update index" asks to go on with the index's own model, whatever is chosen.
    kept = _build(lib, tmp_path / "idx", model_spec="alexnet-netvlad", keep_index_model=True)
    assert kept.model == "mobilenet_v2-netvlad" and kept.indexed == 6
    with pytest.raises(LibraryIndexError, match="indexes"):
        make_library(tmp_path / "other", 2)
        _build(tmp_path / "other", tmp_path / "idx")


def test_cancel_keeps_finished_work(tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 12)
    seen = {"extracted": 0}

    def progress(stage, done, total):
        if stage == "extract":
            seen["extracted"] = done

    s = _build(lib, tmp_path / "idx", progress=progress, cancel=lambda: seen["extracted"] >= 4)
    assert s.cancelled and 0 < s.indexed < 12
    index = LibraryIndex(tmp_path / "idx")
    assert index.search(index.store().read([0]), 1)[0]  # usable after the cancel
    index.close()
    assert f"the {s.indexed} photos indexed so far are kept" in s.cancel_note
    s2 = _build(lib, tmp_path / "idx")
    assert not s2.cancelled and s2.indexed == 12 and s2.extracted == 12 - s.indexed


def test_cancel_while_fitting_says_nothing_is_kept(tmp_path):
    """Issue 12 item 8: a cancel during the NetVLAD fitting keeps no photo; the build says so
    instead of "finished work is kept"."""
    lib = tmp_path / "lib"
    make_library(lib, 8)
    seen = {"init": 0}

    def progress(stage, done, total):
        if stage == "init":
            seen["init"] = done

    s = _build(lib, tmp_path / "idx", progress=progress, cancel=lambda: seen["init"] >= 2)
    assert s.cancelled and s.indexed == 0
    assert s.cancel_note.startswith("no photo is indexed yet: it stopped while fitting NetVLAD")


def test_store_drops_uncommitted_tail(tmp_path):
    p = tmp_path / "d.f32"
    s = DescriptorStore(p, 4, 0)
    s.append(np.ones((3, 4), np.float32))
    with open(p, "ab") as f:
        f.write(b"\0" * 10)  # a half-written row from a killed run
    s2 = DescriptorStore(p, 4, 3)
    assert p.stat().st_size == 3 * 16 and s2.read([2]).tolist() == [[1, 1, 1, 1]]
    with pytest.raises(RuntimeError, match="shorter"):
        DescriptorStore(p, 4, 5)


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(LibraryIndexError, match="no index"):
        LibraryIndex(tmp_path / "missing")


def _indexed_count(idx: Path) -> int:
    try:
        con = sqlite3.connect(idx / "catalog.sqlite", timeout=5)
        n = con.execute("SELECT COUNT(*) FROM images WHERE status='indexed'").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def test_killed_build_resumes_without_redoing_work(tmp_path):
    lib = tmp_path / "lib"
    # A new library's sampled photos are only pooled after the initialisation (issue 14): they
    # commit fast, so there must be photos left for the second kill to land mid-extraction.
    n = 400
    make_library(lib, n, size=72)
    idx = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "netvlad_gui.cli",
        "index",
        str(lib),
        "--index",
        str(idx),
        "--backbone-weights",
        "none",
        "--image-size",
        "96",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "-q",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed_at = []
    for threshold in (1, 40):  # kill once early and once mid-way through extraction
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if _indexed_count(idx) >= threshold + (killed_at[-1] if killed_at else 0):
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"build ended before it could be killed: {proc.stderr.read().decode()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(_indexed_count(idx))
    assert 0 < killed_at[-1] < n
    done = subprocess.run(
        cmd + ["--json"], env=env, check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    import json

    summary = json.loads(done.stdout)
    assert summary["indexed"] == n
    assert summary["extracted"] == n - killed_at[-1]  # finished work is not redone
    index = LibraryIndex(idx)
    rows = index.catalog.rows()
    assert len({r.row for r in rows}) == n  # every photo its own descriptor row
    vecs = index.store().read([r.row for r in rows])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


def test_second_concurrent_build_is_refused(tmp_path):
    import fcntl

    lib = tmp_path / "lib"
    make_library(lib, 2)
    (tmp_path / "idx").mkdir()
    with open(tmp_path / "idx/build.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LibraryIndexError, match="another build"):
            _build(lib, tmp_path / "idx")


def test_a_scan_with_nothing_new_does_not_parse_gps_csv(tmp_path, monkeypatch):
    # A 1 000 000-row gps.csv took 6.4 s to parse on every no-op `netvlad index` (issue 23).
    from netvlad_gui.core.library.scan import scan_library
    from netvlad_gui.core.photos import geo

    lib = tmp_path / "lib"
    make_library(lib, 4)
    parsed = []
    real = geo.load_sidecar_csv
    monkeypatch.setattr(geo, "load_sidecar_csv", lambda root: parsed.append(root) or real(root))
    index = LibraryIndex(tmp_path / "idx", create=True)
    try:
        assert scan_library(index, lib, None) == (4, 0)
        assert len(parsed) == 1  # four new photos: read once for all of them
        assert all(r.gps_source == "csv" for r in index.catalog.rows())
        assert scan_library(index, lib, None) == (4, 0)
        assert len(parsed) == 1  # nothing new: not read at all
        with open(lib / "gps.csv", "a") as f:
            f.write("img_0001.jpg,55.8,13.3\n")  # a fix in gps.csv reaches the catalogue
        scan_library(index, lib, None)
        assert len(parsed) == 2
        assert {r.lat for r in index.catalog.rows() if r.path == "img_0001.jpg"} == {55.8}
    finally:
        index.close()


# -- issue 23: index folders that are not what they seem ---------------------------------------
def _foreign_catalog(folder: Path) -> Path:
    """A catalog.sqlite another program wrote: tables named as ours, other columns."""
    folder.mkdir()
    db = sqlite3.connect(folder / "catalog.sqlite")
    db.execute("CREATE TABLE images(id INTEGER PRIMARY KEY, path TEXT, taken TEXT)")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO images(path, taken) VALUES('a.jpg', '2020')")
    db.commit()
    db.close()
    return folder


def test_a_catalogue_of_a_foreign_schema_is_named_so_not_rebuilt(tmp_path):
    # It was "the index has no model; build it again", then `netvlad index` failed with
    # "no such column: status".
    idx = _foreign_catalog(tmp_path / "idx")
    before = (idx / "catalog.sqlite").read_bytes()
    for create in (False, True):
        with pytest.raises(LibraryIndexError) as err:
            LibraryIndex(idx, create=create)
        text = str(err.value)
        assert "is not an index catalogue of this app" in text and "no column" in text
        assert f"move the folder {idx} away" in text and "\n" not in text
    lib = tmp_path / "lib"
    make_library(lib, 2)
    with pytest.raises(LibraryIndexError):
        build_small(lib, idx)
    assert (idx / "catalog.sqlite").read_bytes() == before  # the other program's data is intact
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "catalog.sqlite")
    db.execute("CREATE TABLE photos(id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    with pytest.raises(LibraryIndexError, match="its tables are photos"):
        LibraryIndex(other)


def test_index_folder_that_is_a_file_is_refused_in_one_line(tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 2)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(LibraryIndexError, match=f"the index folder {afile} is a file: name a"):
        build_small(lib, afile)
    with pytest.raises(LibraryIndexError, match="would be made inside .*afile, a file"):
        build_small(lib, afile / "sub")
    with pytest.raises(LibraryIndexError, match="is a file"):
        LibraryIndex(afile)
