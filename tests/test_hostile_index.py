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
