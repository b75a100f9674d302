"""What a file that is not a readable photo actually is, from its first bytes, in plain words.

A user who dropped a PDF or a video into a library should read "a PDF document", not a decoder's
error: the reason is shown next to the file, so it must say what to do with it at a glance.
"""

from __future__ import annotations

import os

HEAD_BYTES = 512

# (offset, magic, words): checked in order, the first match wins.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "a PDF document"),
    (0, b"\xff\xd8\xff", "a damaged JPEG photo"),
    (0, b"\x89PNG\r\n\x1a\n", "a damaged PNG image"),
    (0, b"GIF8", "a damaged GIF image"),
    (0, b"II*\x00", "a damaged or unsupported TIFF (or camera raw) image"),
    (0, b"MM\x00*", "a damaged or unsupported TIFF (or camera raw) image"),
    (0, b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!", "a RAR archive"),
    (0, b"\x1aE\xdf\xa3", "a Matroska or WebM video"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"OggS", "an Ogg audio or video file"),
    (0, b"fLaC", "a FLAC audio file"),
    (0, b"8BPS", "a Photoshop document"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office document"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
    (0, b"\x7fELF", "a program (ELF executable)"),
)
# Two-byte magics that text can start with: checked after the text test.
_SHORT_MAGIC = ((b"BM", "a damaged BMP image"), (b"MZ", "a Windows program"))

# ISO base media files (MP4, MOV, HEIF, AVIF, CR3) say what they are in their "ftyp" brand.
_FTYP_BRANDS = {
    b"qt  ": "a QuickTime video",
    b"heic": "a HEIC photo this installation cannot decode (pillow-heif missing?)",
    b"heix": "a HEIC photo this installation cannot decode (pillow-heif missing?)",
    b"mif1": "a HEIF image this installation cannot decode (pillow-heif missing?)",
    b"avif": "an AVIF image this installation cannot decode",
    b"crx ": "a Canon CR3 raw photo (convert it to JPEG first)",
    b"M4A ": "an M4A audio file",
    b"3gp4": "a 3GP video",
    b"3gp5": "a 3GP video",
}

_RIFF = {b"AVI ": "an AVI video", b"WAVE": "a WAV audio file", b"WEBP": "a damaged WebP image"}


def describe_head(head: bytes) -> str:
    """Plain words for what ``head`` (a file's first bytes) is; "" when nothing is recognised."""
    if not head:
        return "an empty file"
    for offset, magic, words in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return words
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "an MP4 video")
    if head[:4] == b"RIFF":
        return _RIFF.get(head[8:12], "a RIFF file (audio or video)")
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "a web page (HTML)"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG drawing (convert it to PNG or JPEG first)"
    if text.startswith(b"<?xml"):
        return "an XML file"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a character cut at the end of the head
                return ""
        return "a text file"
    return next((words for magic, words in _SHORT_MAGIC if head.startswith(magic)), "")


def describe_file(path: str | os.PathLike) -> str:
    """What the file at ``path`` is, from its first bytes; "" when unknown or unreadable."""
    try:
        with open(path, "rb") as f:
            return describe_head(f.read(HEAD_BYTES))
    except OSError:
        return ""
