"""Whether a file is still the one that was read, cheaply: size and mtime, then the inode and
change time, and only when those moved, a hash of the file's first and last 64 KB.

Size and mtime alone miss a photo replaced by another of the same size whose mtime was put back
(`cp` then `touch -r`, a sync or backup tool restoring times): the index kept the old photo's
descriptor and the verifier its features. Any write, rename over or utime moves the change time
(ctime, which no program can set) or the inode, so a file whose both are as recorded is the same
file, with nothing read. Where they moved (a chmod, a library copied elsewhere) the edges of the
file decide: a JPEG's headers, EXIF and first and last entropy-coded blocks.
"""

from __future__ import annotations

import hashlib
import os

EDGE = 64 * 1024  # bytes hashed at each end of the file


def change_marker(st: os.stat_result) -> str:
    """The inode and change time of a stat result ("" on Windows, where ``st_ctime`` is the
    creation time, which an overwrite keeps: there the content digest always decides)."""
    if os.name == "nt":
        return ""
    return f"{st.st_ino}:{st.st_ctime_ns}"


def content_digest(path: str | os.PathLike) -> str:
    """blake2b of the file's size and its first and last ``EDGE`` bytes (two small reads)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode())
        h.update(f.read(EDGE))
        if size > EDGE:
            f.seek(max(EDGE, size - EDGE))
            h.update(f.read(EDGE))
    return h.hexdigest()


def identity(path: str | os.PathLike, st: os.stat_result) -> tuple:
    """What tells this file's content apart from any other it replaced at the same path: size,
    mtime and change marker (POSIX, nothing read), or the content digest (Windows)."""
    return (st.st_size, st.st_mtime_ns, change_marker(st) or content_digest(path))


def identity_text(ident: tuple) -> str:
    """``identity`` as one string, for a key kept on disk."""
    return ":".join(str(x) for x in ident)
