"""Scanning a library folder into its catalogue: new, changed and removed photos, and GPS.

Change detection (size and mtime, then the content check of photos/filestamp.py) and the GPS
re-read of unchanged photos when gps.csv changed live here; the builder
(core/library/builder.py) then extracts what the scan left pending.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..photos import filestamp, geo
from ..photos.images import list_images
from .catalog import display_name
from .index import LibraryIndex, StageProgress

log = logging.getLogger(__name__)

SIDECAR_STAMP_KEY = "gps_csv_stamp"  # size and mtime of gps.csv when GPS was last read from it


def _is_unchanged(row, st: os.stat_result) -> bool:
    """Whether a catalogued photo's file is as it was indexed: same size and same mtime.

    Either one differing counts as a change and the photo is extracted again. A same-size edit
    (a retouch, a rotated JPEG) changes the pixels without the size; a size change can come with
    an mtime set back (a copy with preserved times). A bare ``touch`` (new mtime, same bytes) is
    extracted again too: telling it from an edit would mean hashing every photo at every scan,
    while extracting one photo again costs little and is never wrong.
    """
    return row.size == st.st_size and abs(row.mtime - st.st_mtime) < 1e-3


def _same_content(row_id: int, path: Path, st, recorded: dict, restamp: list) -> bool:
    """For a photo whose size and mtime are as indexed: is it still the same file?

    Its change marker as recorded says yes with nothing read. Otherwise (a chmod, a copied
    library, or a photo replaced by another of the same size with its mtime put back) the
    content digest decides; a file never digested (an older catalogue) is taken as it is, and
    its stamps are recorded either way (``restamp``) so the next scan reads nothing.
    """
    marker = filestamp.change_marker(st)
    old_marker, old_digest = recorded.get(row_id, ("", ""))
    if marker and marker == old_marker:
        return True
    try:
        digest = filestamp.content_digest(path)
    except OSError:
        return True  # unreadable now: extraction would fail on it the same way
    restamp.append((path, marker, digest))
    return not old_digest or digest == old_digest


def _sidecar_stamp(library: Path) -> str:
    try:
        st = (library / geo.SIDECAR_NAME).stat()
    except OSError:
        return "absent"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _gps_fields(gps) -> tuple:
    pt = gps.point
    return (
        pt.lat if pt else None,
        pt.lon if pt else None,
        pt.alt if pt else None,
        gps.source,
        gps.reason,
    )


def _unreadable_folders(library: Path, exclude: Path) -> list[tuple[str, str]]:
    """(folder relative to the library, why) for each folder the scan cannot list.

    ``list_images`` skips them as ``os.walk`` does; a build must say so, and must not take their
    photos for deleted ones.
    """
    excluded = exclude.resolve()
    bad: list[tuple[str, str]] = []

    def note(err: OSError) -> None:
        rel = Path(err.filename).relative_to(library).as_posix() if err.filename else "?"
        bad.append((rel, err.strerror or str(err)))

    for dirpath, dirnames, _ in os.walk(library, onerror=note):
        here = Path(dirpath)
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() != excluded
        ]
    return bad


def scan_library(
    index: LibraryIndex,
    library: Path,
    progress: StageProgress | None,
    warnings: list[str] | None = None,
) -> tuple[int, int]:
    """Bring the catalogue in line with the folder: returns (files found, rows removed).

    Photos in a folder that cannot be read (permissions, a share gone half away) are neither
    indexed nor removed from the catalogue; each such folder is listed in ``warnings``.

    Unchanged photos keep their descriptors; when gps.csv changed since the last scan, those
    whose GPS did not come from the photo itself (EXIF or XMP, which gps.csv never overrides)
    have it read again, so a fix in gps.csv reaches the catalogue without any extraction.
    """
    files = list_images(library, exclude=[index.dir])
    unreadable = _unreadable_folders(library, index.dir)
    for rel, why in unreadable:
        msg = f"cannot read folder {display_name(rel)} ({why}): its photos are not indexed"
        log.warning(msg)
        if warnings is not None:
            warnings.append(msg)
    hidden = tuple(f"{rel}/" for rel, _ in unreadable)
    sidecar = geo.LazySidecar(library)  # parsed only if a photo needs it
    stamp = _sidecar_stamp(library)
    recheck_csv = index.catalog.get_meta(SIDECAR_STAMP_KEY) != stamp
    known = {r.path: r for r in index.catalog.rows()}
    recorded = index.catalog.stamps()
    seen: set[str] = set()
    changed = []
    gps_fixes = []
    restamp: list[tuple[Path, str, str]] = []  # (path, change marker, digest) to record
    for n, path in enumerate(files, 1):
        rel = path.relative_to(library).as_posix()
        seen.add(rel)
        try:
            st = path.stat()
        except OSError as exc:
            log.warning("cannot stat %s: %s", display_name(str(path)), exc)
            continue
        row = known.get(rel)
        if (
            row is not None
            and _is_unchanged(row, st)
            and _same_content(row.id, path, st, recorded, restamp)
        ):
            if recheck_csv and row.gps_source in ("csv", ""):
                fields = _gps_fields(geo.read_gps(path, root=library, sidecar=sidecar))
                if fields != (row.lat, row.lon, row.alt, row.gps_source, row.gps_reason):
                    gps_fixes.append((row.id, *fields))
            continue
        if not restamp or restamp[-1][0] != path:  # a new or changed photo: stamp it as read
            try:
                restamp.append((path, filestamp.change_marker(st), filestamp.content_digest(path)))
            except OSError:
                pass  # its extraction will say why it cannot be read
        gps = geo.read_gps(path, root=library, sidecar=sidecar)
        pt = gps.point
        changed.append(
            (
                rel,
                st.st_size,
                st.st_mtime,
                pt.lat if pt else None,
                pt.lon if pt else None,
                pt.alt if pt else None,
                gps.source,
                gps.reason,
            )
        )
        if progress and n % 50 == 0:
            progress("scan", n, len(files))
    removed = [r.id for p, r in known.items() if p not in seen and not p.startswith(hidden)]
    if changed:
        index.catalog.upsert_pending(changed)
    if restamp:
        entries = [(p.relative_to(library).as_posix(), m, d) for p, m, d in restamp]
        index.catalog.set_stamps(entries)
    if gps_fixes:
        index.catalog.update_gps(gps_fixes)
        log.info("GPS updated from %s for %d photos", geo.SIDECAR_NAME, len(gps_fixes))
    if removed:
        index.catalog.delete(removed)
    index.catalog.set_meta(SIDECAR_STAMP_KEY, stamp)
    if progress:
        progress("scan", len(files), len(files))
    return len(files), len(removed)
