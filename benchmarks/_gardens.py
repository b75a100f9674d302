"""Gardens Point day/night (../shared/data/gardens_point, places 100-199) as libraries to search.

Each day walk becomes a library in the benchmark cache: symlinks to the shared photos and a
``gps.csv`` with synthetic positions (frame i at ``SPACING_M`` x i metres along a straight line
heading north), so that the builder calibrates its confidence and the 25 m rules of the verdict
apply as on a real walk. The night photos are the queries; their ground truth is the README's
(±2 frames, ``gt_night_right_to_<day>.csv``). Nothing is copied into the project.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from _real import CACHE, SHARED

GARDENS = SHARED / "data/gardens_point"
PAIRINGS = ("day_right", "day_left")  # night_right -> each
SPACING_M = 3.0
ORIGIN = (-27.4775, 153.0285)  # the campus, roughly: only distances matter
M_PER_DEG_LAT = 111_195.0


@dataclass
class Pairing:
    name: str  # "night->day_right"
    library: Path  # the symlinked library with gps.csv
    queries: list[Path]  # night photos (shared folder)
    positives: list[set[str]]  # reference file names within ±2 frames, per query

    def frame_of(self, path: Path | str) -> int:
        return int(Path(path).stem.removeprefix("Image"))


def frame_position(frame: int) -> tuple[float, float]:
    """Synthetic (lat, lon) of frame ``frame``: ``SPACING_M`` metres per frame, due north."""
    return ORIGIN[0] + SPACING_M * frame / M_PER_DEG_LAT, ORIGIN[1]


def library(day: str) -> Path:
    """The day walk ``day`` as a geotagged library (symlinks + gps.csv), in the cache."""
    src = GARDENS / day
    lib = CACHE / f"gardens_{day}_library"
    lib.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in sorted(src.glob("*.jpg")):
        link = lib / p.name
        if not link.exists():
            link.symlink_to(p)
        lat, lon = frame_position(int(p.stem.removeprefix("Image")))
        rows.append((p.name, f"{lat:.8f}", f"{lon:.8f}"))
    text = "file,lat,lon\n" + "".join(",".join(r) + "\n" for r in rows)
    gps = lib / "gps.csv"
    if not gps.exists() or gps.read_text() != text:
        gps.write_text(text)
    return lib


def pairing(day: str) -> Pairing:
    queries, positives = [], []
    with open(GARDENS / f"gt_night_right_to_{day}.csv") as f:
        for row in csv.DictReader(f):
            queries.append(GARDENS / row["query"])
            positives.append({Path(r).name for r in row["positive_refs"].split(";") if r})
    return Pairing(f"night->{day}", library(day), queries, positives)


def index(day: str, image_size: int = 640):
    """The library's index, built once by the real builder (default model) and cached."""
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.library.builder import build_index
    from netvlad_gui.core.library.index import LibraryIndex

    lib = library(day)
    idx = CACHE / f"gardens_{day}_index_{image_size}"
    if not (idx / "model.pt").exists():
        build_index(lib, idx, extract_cfg=ExtractConfig(image_size=image_size, device="cpu"))
    return LibraryIndex(idx)


def available() -> bool:
    return (GARDENS / "night_right").is_dir() and all((GARDENS / d).is_dir() for d in PAIRINGS)
