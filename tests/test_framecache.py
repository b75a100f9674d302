"""A video's frames sampled once into the user cache and reused (the window lists them as
photos): one folder per video file, interval and frame size; interrupted samplings redone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_video import write_video

from netvlad_gui.core import paths
from netvlad_gui.core.cancel import Cancelled
from netvlad_gui.core.config import ExtractConfig
from netvlad_gui.core.photos.framecache import MANIFEST, cached_frames, frames_folder
from netvlad_gui.core.photos.video import VideoError

CFG = ExtractConfig(image_size=64)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache"


def test_frames_are_saved_once_and_reused(tmp_path, _cache):
    clip = write_video(tmp_path / "clip.avi", "MJPG")  # 3.5 s at 10 fps
    seen: list[tuple[int, int]] = []
    first = cached_frames(clip, CFG, 1.0, progress=lambda d, t: seen.append((d, t)))
    assert not first.reused and not first.problem
    assert [f.name for f in first.frames] == [f"clip.avi@00:0{i}.0" for i in range(4)]
    assert [f.time_s for f in first.frames] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert all(f.path.is_file() and f.path.is_relative_to(_cache) for f in first.frames)
    assert seen[-1] == (4, 4)  # the header's length told how many to expect
    again = cached_frames(clip, CFG, 1.0)
    assert again.reused and again.frames == first.frames


def test_another_interval_size_or_file_gets_another_folder(tmp_path):
    clip = write_video(tmp_path / "clip.avi", "MJPG")
    folder = frames_folder(clip, CFG, 1.0)
    assert frames_folder(clip, CFG, 0.5) != folder
    assert frames_folder(clip, ExtractConfig(image_size=128), 1.0) != folder
    two = cached_frames(clip, CFG, 2.0)
    assert len(two.frames) == 2 and not two.reused
    os.utime(clip, ns=(0, 10**18))  # the file changed: its frames are read again
    assert frames_folder(clip, CFG, 2.0) != two.frames[0].path.parent
    assert not cached_frames(clip, CFG, 2.0).reused


def test_an_interrupted_sampling_is_done_again(tmp_path):
    clip = write_video(tmp_path / "clip.avi", "MJPG")
    with pytest.raises(Cancelled):
        cached_frames(clip, CFG, 1.0, cancel=lambda: True)
    folder = frames_folder(clip, CFG, 1.0)
    assert not (folder / MANIFEST).exists()
    # a folder left without its list (a kill) is sampled again, not trusted
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frame_000000_00000000.jpg").write_bytes(b"half")
    out = cached_frames(clip, CFG, 1.0)
    assert not out.reused and len(out.frames) == 4
    (out.frames[1].path).unlink()  # a frame removed from the cache: sampled again
    assert not cached_frames(clip, CFG, 1.0).reused


def test_a_truncated_video_keeps_its_frames_and_says_why(tmp_path):
    whole = write_video(tmp_path / "whole.avi", "MJPG")
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = cached_frames(cut, CFG, 1.0)
    assert 1 <= len(out.frames) < 4
    assert out.problem.startswith("truncated: frames stop at") and "\n" not in out.problem
    assert f"locating the {len(out.frames)} frames before it" in out.problem
    again = cached_frames(cut, CFG, 1.0)  # the reason travels with the cached frames
    assert again.reused and again.problem == out.problem


def test_what_is_no_video_says_why(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a movie")
    with pytest.raises(VideoError, match="not a video") as err:
        cached_frames(bad, CFG, 1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(VideoError, match="cannot read file"):
        cached_frames(tmp_path / "gone.mp4", CFG, 1.0)
