"""Where things live on disk (shipped data, user data, caches), and how the engine writes there.

Every file the engine writes (the index's files, checkpoints, exports, downloads) goes through
:func:`atomic_path`: a temporary file in the same folder, flushed to the disk, renamed over the
target and the rename itself made durable. A kill or a full disk at any moment leaves the old
file or the new one, never half of one, and no temporary file; a failure is one
:class:`~netvlad_gui.core.errors.FileWriteError` line that names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import platformdirs

from .errors import FileWriteError

APP_NAME = "netvlad-gui"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: Backbone weights that ship with the app, in :func:`models_dir` (model/backbones.py loads them,
#: model/zoo.py says whether they are there without importing torch).
SHIPPED_WEIGHTS = {"mobilenet_v2": "mobilenet_v2_imagenet.pth"}


def _shipped_dir(name: str) -> Path:
    """A top-level data folder (models/, resources/), installed as a wheel or editable."""
    in_wheel = _PACKAGE_DIR / f"_{name}"
    if in_wheel.is_dir():
        return in_wheel
    return _PACKAGE_DIR.parent / name


def models_dir() -> Path:
    return _shipped_dir("models")


def resources_dir() -> Path:
    return _shipped_dir("resources")


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def safe_name(name: str, limit: int = 40) -> str:
    """``name`` as a portable folder-name part: letters, digits, - and _ (others become _)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:limit]


def default_index_dir(library: str | Path) -> Path:
    """One index per library folder, keyed by its absolute path, under the user data directory."""
    library = Path(library).expanduser().resolve()
    digest = hashlib.sha1(str(library).encode("utf-8")).hexdigest()[:12]
    return data_dir() / "indexes" / f"{safe_name(library.name) or 'root'}-{digest}"


# --- writing ------------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new file to, by any means (a library that
    takes a file name); when the block ends it replaces ``path`` durably (see
    :func:`replace_durably`). An error in the block removes it and leaves ``path`` as it was;
    an OSError becomes a :class:`FileWriteError` naming ``path``. The folder must exist.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask's mode
    except OSError as exc:
        raise FileWriteError(path, exc) from None
    try:
        yield tmp
        replace_durably(tmp, path)
    except FileWriteError:
        _discard(tmp)
        raise
    except OSError as exc:
        _discard(tmp)
        raise FileWriteError(path, exc) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    """Remove a temporary file; where even that fails (a read-only file system refuses it with
    EROFS) the reason the write failed is what the user must hear, not this."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing, through :func:`atomic_path`: the file appears complete
    when the block ends, or not at all."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically and durably."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Flush ``src`` to the disk, rename it over ``dst``, then make the rename durable.

    For a file that is complete (a finished download's ``.part``, a temporary file). An OSError
    becomes a :class:`FileWriteError` naming ``dst``.
    """
    try:
        fd = os.open(src, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(src, dst)
    except OSError as exc:
        raise FileWriteError(dst, exc) from None
    fsync_dir(Path(dst).parent)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in ``folder`` durable (where the platform allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
