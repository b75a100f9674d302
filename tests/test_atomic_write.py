"""core/paths.py's one atomic writer: every file the engine writes appears whole or not at all,
and a failure is one line that names the file (issue 20: it was written 7 ways)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from netvlad_gui.core import paths
from netvlad_gui.core.errors import FileWriteError, NetvladError
from netvlad_gui.core.library.store import DescriptorStore, write_compacted
from netvlad_gui.core.paths import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_writes_replace_the_file_whole_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    assert atomic_write_bytes(target, b"new contents") == target
    assert target.read_bytes() == b"new contents"
    atomic_write_text(tmp_path / "t.csv", "a,b\r\nc,d\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\nc,d\n"  # newlines as given
    with atomic_open(tmp_path / "n.npy", "wb") as fh:
        np.save(fh, np.arange(3))
    assert np.load(tmp_path / "n.npy").tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_the_new_file_gets_the_umask_mode_not_a_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "m.pt", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644


def test_an_error_in_the_block_keeps_the_original_and_removes_the_temporary(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"original")
    with pytest.raises(ZeroDivisionError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of a new fi")
        raise ZeroDivisionError
    assert target.read_bytes() == b"original"
    assert _leftovers(tmp_path) == []


def _read_only(monkeypatch, folder: Path, code: int) -> None:
    """What a read-only folder does to a new file in it (tests may run as root, which may
    write anyway), for paths in ``folder`` only."""
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(paths.os, "open", refusing)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_read_only_folder_is_one_line_naming_the_file(tmp_path, monkeypatch, code):
    target = tmp_path / "model.pt"
    target.write_bytes(b"original")
    _read_only(monkeypatch, tmp_path, code)
    with pytest.raises(FileWriteError) as err:
        atomic_write_bytes(target, b"new")
    message = str(err.value)
    assert message.startswith(f"cannot write {target}: ") and "\n" not in message
    assert "choose a folder you may write to" in message
    assert isinstance(err.value, NetvladError) and isinstance(err.value, OSError)
    assert err.value.errno == code
    assert target.read_bytes() == b"original"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_really_read_only_folder(tmp_path):
    target = tmp_path / "ro" / "a.csv"
    target.parent.mkdir()
    target.write_text("original")
    target.parent.chmod(0o555)
    try:
        with pytest.raises(FileWriteError, match="cannot write .*a.csv: Permission denied"):
            atomic_write_text(target, "new")
        assert target.read_text() == "original" and _leftovers(target.parent) == []
    finally:
        target.parent.chmod(0o755)


def test_a_full_disk_is_one_line_and_leaves_the_original(tmp_path, monkeypatch):
    target = tmp_path / "descriptors.f32"
    target.write_bytes(b"original")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paths.os, "fsync", full)
    with pytest.raises(FileWriteError) as err:
        atomic_write_bytes(target, b"new rows")
    assert str(err.value) == (
        f"cannot write {target}: No space left on device; free some space and try again"
    )
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"original"
    assert _leftovers(tmp_path) == []


def test_a_missing_folder_is_said_as_such(tmp_path):
    with pytest.raises(FileWriteError, match=r"cannot write .*nowhere.*No such file"):
        atomic_write_text(tmp_path / "nowhere" / "a.csv", "x")


def test_the_store_compaction_goes_through_it(tmp_path, monkeypatch):
    """One of the engine's writers: a full disk while compacting keeps the old store whole."""
    store = DescriptorStore(tmp_path / "d.f32", 2, 0)
    store.append(np.arange(8, dtype=np.float32).reshape(4, 2))
    write_compacted(store, np.array([3, 1]), tmp_path / "c.f32")
    assert np.fromfile(tmp_path / "c.f32", np.float32).tolist() == [6, 7, 2, 3]
    monkeypatch.setattr(
        paths.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(FileWriteError, match="c2.f32: full; free some space"):
        write_compacted(store, np.array([0]), tmp_path / "c2.f32")
    assert not (tmp_path / "c2.f32").exists() and _leftovers(tmp_path) == []
