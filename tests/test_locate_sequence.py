"""Issue 22 end to end: photos and a video's frames located together, through the session and
the CLI, on real night photos of gardens_point against a geotagged stretch of its day walk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from netvlad_gui.cli import main
from netvlad_gui.core.config import ExtractConfig, SequenceConfig

FRAMES = range(120, 160)  # a stretch of the walk: 40 places, 3 m apart
SIZE = 320


def _frame(path: str | Path) -> int:
    return int(re.search(r"Image(\d+)", str(path)).group(1))


@pytest.fixture(scope="module")
def gardens(shared_dir, tmp_path_factory):
    """(index folder, night photos): the day_right stretch as a library with synthetic GPS."""
    from netvlad_gui.core.library.builder import build_index

    src = shared_dir / "data/gardens_point"
    if not src.is_dir():
        pytest.skip(f"gardens_point not found at {src}")
    root = tmp_path_factory.mktemp("gardens")
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


def _r1(results) -> float:
    return sum(abs(_frame(r.matches[0].path) - _frame(r.query)) <= 2 for r in results) / len(
        results
    )


def test_a_night_walk_located_together_ends_each_photo_on_one_final_stage(gardens):
    from netvlad_gui.core.query.session import open_session

    index, night = gardens
    _, session = open_session(index, ExtractConfig(image_size=SIZE, num_workers=0))
    try:
        alone = [r for _, r in session.run(night) if r.final]
        stages = list(session.run(night, sequence=SequenceConfig()))
    finally:
        session.close()
    finals = [r for _, r in stages if r.final]
    assert sorted(i for i, r in stages if r.final) == list(range(len(night)))  # one each
    # the verified stage waits for the neighbours: provisional, no verdict
    assert all(r.verdict is None for _, r in stages if not r.final)
    assert session.ordering.by == "file order" and len(session.ordering.groups) == 1
    decided = [r for r in finals if r.sequence is not None]
    assert len(decided) >= len(night) // 2
    assert all(r.sequence.support >= SequenceConfig().min_support for r in decided)
    assert _r1(finals) >= _r1(alone) and _r1(finals) >= 0.9
    assert all(r.verdict in ("located", "uncertain") for r in decided)
    assert all("neighbours" in r.verdict_reason or "agree" in r.verdict_reason for r in decided)


def test_one_photo_or_no_sequence_is_located_as_alone(gardens):
    from netvlad_gui.core.query.session import open_session

    index, night = gardens
    _, session = open_session(index, ExtractConfig(image_size=SIZE, num_workers=0))
    try:
        (solo,) = [r for _, r in session.run(night[:1], sequence=SequenceConfig()) if r.final]
        alone = session.locate(night[0])
    finally:
        session.close()
    assert solo.sequence is None and solo.verdict == alone.verdict
    assert [m.path for m in solo.matches] == [m.path for m in alone.matches]


def _video(path: Path, photos: list[Path], fps: float = 2.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 360))
    for p in photos:
        img = cv2.resize(cv2.imread(str(p)), (640, 360))
        for _ in range(int(fps)):  # each place one second
            writer.write(img)
    writer.release()
    return path


def test_a_video_is_located_as_a_sequence_of_named_frames(gardens, tmp_path, capsys):
    index, night = gardens
    clip = _video(tmp_path / "walk.avi", night[:12])
    argv = ["locate", str(clip), "--index", str(index), "--json", "-q", "--image-size", str(SIZE)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["query"] for r in rows[:3]] == [
        "walk.avi@00:00.0",
        "walk.avi@00:01.0",
        "walk.avi@00:02.0",
    ]
    assert len(rows) == 12 and all("sequence" in r for r in rows)
    assert sum(r["sequence"] is not None for r in rows) >= 6
    truth = [_frame(p) for p in night[:12]]
    hits = sum(
        abs(_frame(r["matches"][0]["path"]) - t) <= 2 for r, t in zip(rows, truth, strict=True)
    )
    assert hits >= 10
    assert {r["sequence"]["id"] for r in rows if r["sequence"]} == {1}

    # each frame alone on request: no sequence field filled
    assert main([*argv, "--no-sequence", "--every", "2s"]) == 0
    alone = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(alone) == 6 and all(r["sequence"] is None for r in alone)


def test_an_unreadable_video_says_why_in_one_result(gardens, tmp_path, capsys):
    index, _ = gardens
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a movie")
    assert main(["locate", str(bad), "--index", str(index), "--json", "-q"]) == 1
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["query"].endswith("broken.mp4") and row["error"] and "\n" not in row["error"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("0.5", 0.5), ("2.5s", 2.5), ("500ms", 0.5)]
)
def test_every_reads_times(text, seconds):
    from netvlad_gui.cli.locating import _seconds

    assert _seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0s", "-1", "soon"])
def test_every_refuses_what_is_no_time(text):
    import argparse

    from netvlad_gui.cli.locating import _seconds

    with pytest.raises(argparse.ArgumentTypeError):
        _seconds(text)
