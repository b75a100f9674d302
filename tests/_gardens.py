"""Real night photos of gardens_point against a short geotagged stretch of its day walk: the
test data for photos located together (issue 22), built once per test module that asks."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest

FRAMES = range(120, 160)  # a stretch of the walk: 40 places, 3 m apart
SIZE = 320


def frame_number(path: str | Path) -> int:
    return int(re.search(r"Image(\d+)", str(path)).group(1))


def build_gardens(shared_dir: Path, root: Path) -> tuple[Path, list[Path]]:
    """(index folder, night photos): the day_right stretch as a library of symlinks with a
    gps.csv that puts frame i at 3·i m north, indexed at SIZE px; its night photos 125-144."""
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.library.builder import build_index

    src = shared_dir / "data/gardens_point"
    if not src.is_dir():
        pytest.skip(f"gardens_point not found at {src}")
    lib = root / "day_right"
    lib.mkdir()
    rows = ["file,lat,lon"]
    for f in FRAMES:
        (lib / f"Image{f}.jpg").symlink_to(src / "day_right" / f"Image{f}.jpg")
        rows.append(f"Image{f}.jpg,{-27.4775 + 3.0 * f / 111_195:.8f},153.0285")
    (lib / "gps.csv").write_text("\n".join(rows) + "\n")
    cfg = ExtractConfig(image_size=SIZE, num_workers=0)
    build_index(lib, root / "idx", extract_cfg=cfg)
    night = [src / "night_right" / f"Image{f}.jpg" for f in FRAMES[5:25]]
    return root / "idx", night


def write_walk_video(path: Path, photos: list[Path], fps: float = 2.0) -> Path:
    """An MJPG video showing each photo for one second, in order."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 360))
    for p in photos:
        img = cv2.resize(cv2.imread(str(p)), (640, 360))
        for _ in range(int(fps)):  # each place one second
            writer.write(img)
    writer.release()
    return path
