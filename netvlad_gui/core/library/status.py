"""A library as the fronts see it: where its index lives and what state it is in.

The GUI's engine worker and the CLI both ask here, so that "which index folder", "is it ready
to locate" and "which photos have no GPS" are decided once (core/query/session.py opens a
library for locating on top of this).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LibraryIndexError
from .catalog import INDEXED
from .index import CATALOG_FILE, LibraryIndex

log = logging.getLogger(__name__)

#: Why an index cannot locate although it holds photos (the one wording for every front).
NO_MODEL = "the index has no model: update the index"

__all__ = [
    "CATALOG_FILE",
    "LibraryStatus",
    "index_exists",
    "library_status",
    "no_gps_photos",
    "not_searchable_note",
    "resolve_index_dir",
]


def resolve_index_dir(
    library: str | os.PathLike | None = None, index: str | os.PathLike | None = None
) -> Path:
    """Where a library's index lives: ``index`` when given, else the user data folder's one."""
    from ..paths import default_index_dir

    if index:
        return check_index_dir(Path(index).expanduser())
    if library:
        return default_index_dir(library)
    raise LibraryIndexError("name a library folder or an index folder")


def check_index_dir(index_dir: Path) -> Path:
    """``index_dir``, unless it (or a folder it would be made in) is a file: say so in one line
    instead of "[Errno 17] File exists" when the build makes the folder."""
    for p in (index_dir, *index_dir.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == index_dir else f"would be made inside {p}, a file"
                raise LibraryIndexError(
                    f"the index folder {index_dir} {what}: name a folder (an existing index, "
                    "or a new one to create)"
                )
            break
    return index_dir


def index_exists(index_dir: str | os.PathLike) -> bool:
    """An index folder with a catalogue (possibly still empty or half built)."""
    return (Path(index_dir) / CATALOG_FILE).exists()


def no_gps_photos(index: LibraryIndex) -> list[tuple[str, str]]:
    """(path, reason) of the indexed photos without a location: searchable, never a prediction."""
    return [
        (r.display_path, r.gps_reason or "no GPS")
        for r in index.catalog.rows(INDEXED)
        if not r.has_gps
    ]


@dataclass
class LibraryStatus:
    """What a front shows about a library's index."""

    index_dir: str
    library: str = ""
    model: str = ""
    exists: bool = False  # an index folder with a catalogue
    ready: bool = False  # photos can be located now
    problem: str = ""  # why not, for the user
    indexed: int = 0
    with_gps: int = 0
    failed: int = 0
    pending: int = 0
    lost: int = 0  # indexed photos whose stored descriptor the store no longer holds
    damaged: int = 0  # indexed photos whose stored descriptor is damaged: left out of searches
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not indexed
    no_gps: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): indexed, no GPS
    references: list[dict] = field(default_factory=list)  # id, lat, lon, label: the map's points
    image_size: int | None = None  # the size its descriptors were made at (None: not recorded)
    notes: list[str] = field(default_factory=list)  # what a front says once when it opens it

    def why_not(self) -> str:
        """Why photos cannot be located with this index yet, as one line for an error."""
        if not self.exists:
            return f"no index in {self.index_dir}; build one first with `netvlad index LIBRARY`"
        return f"cannot locate with the index in {self.index_dir}: {self.problem}"

    @property
    def not_searchable(self) -> int:
        """Photos of the library a search does not see until the index is updated."""
        return self.pending + self.lost + self.damaged

    @property
    def cannot_place(self) -> bool:
        """Photos are indexed but none has GPS: the index finds similar photos, places nothing."""
        return self.indexed > 0 and self.with_gps == 0


def not_searchable_note(status: LibraryStatus) -> str:
    """Why some photos of the library are not searched, and what to do; "" when none.

    A search that misses them may answer "not found" for a place the library holds (after an
    update killed half-way, the photos it re-queued): every front says so with its answers.
    """
    causes = [
        (status.pending, "an index update is unfinished"),
        (status.lost, "lost"),
        (status.damaged, "damaged"),
    ]
    causes = [(n, _stored(n, why)) for n, why in causes if n]
    n = sum(k for k, _ in causes)
    if not n:
        return ""
    why = causes[0][1] if len(causes) == 1 else "; ".join(f"{k}: {w}" for k, w in causes)
    photos = "1 photo of this library is" if n == 1 else f"{n} photos of this library are"
    return f"{photos} not searchable yet ({why}): update the index"


def _stored(n: int, what: str) -> str:
    """ "its stored descriptor is lost" (one photo) or "their stored descriptors are lost"."""
    if what not in ("lost", "damaged"):
        return what
    return f"its stored descriptor is {what}" if n == 1 else f"their stored descriptors are {what}"


def library_status(index: LibraryIndex) -> LibraryStatus:
    """The status of an open index; ``ready`` says whether its model and photos allow locating."""
    stats = index.stats()
    status = LibraryStatus(
        index_dir=str(index.dir),
        library=str(index.library or ""),
        model=index.model_name,
        exists=True,
        indexed=stats.indexed,
        with_gps=stats.with_gps,
        failed=stats.failed,
        pending=stats.pending,
        failures=list(stats.failures),
        no_gps=no_gps_photos(index),
        references=[
            {"id": r.id, "lat": r.lat, "lon": r.lon, "label": r.display_path}
            for r in index.reference_points()
        ],
        image_size=index.image_size,
    )
    if stats.indexed == 0:
        status.problem = "no photo is indexed yet"
    elif not index.model_path.exists():
        status.problem = NO_MODEL
    else:
        status.ready = True
    return status
