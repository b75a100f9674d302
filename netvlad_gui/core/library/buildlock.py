"""The build lock: one build per index folder at a time, and none held by a dead build's workers."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LibraryIndexError

_held_locks: dict[int, int] = {}  # id(lock file) -> its descriptor, while a build holds it


def _release_in_child() -> None:
    """In a forked child (a DataLoader worker), let go of the parent's build lock.

    flock belongs to the open file, which fork shares: an orphaned worker that outlives a killed
    build would hold the lock until it exits. Pointing the child's copy of the descriptor at
    /dev/null drops its share (the number stays valid, so nothing else can reuse it).
    """
    if not _held_locks:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in _held_locks.values():
            try:
                os.dup2(null, fd)
            except OSError:
                pass
    finally:
        os.close(null)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_in_child)


class _Lock:
    def __init__(self, f):
        self.f = f
        _held_locks[id(self)] = f.fileno()

    def close(self) -> None:
        _held_locks.pop(id(self), None)
        self.f.close()


def lock_index(index_dir: Path) -> _Lock:
    """One build per index at a time: a second one (the GUI and the CLI, say) is refused."""
    f = open(index_dir / "build.lock", "w")  # noqa: SIM115 - held for the whole build
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no advisory locks; SQLite still serialises writes
        pass
    except OSError:
        f.close()
        raise LibraryIndexError(
            f"another build is already updating {index_dir}; wait for it"
        ) from None
    return _Lock(f)
