"""A video as a sequence of photos: frames sampled every N seconds, named by their time, and
decoded to exactly what a photo file of the same picture gives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from netvlad_gui.core.config import ExtractConfig
from netvlad_gui.core.errors import ConfigError, NetvladError
from netvlad_gui.core.photos.decoding import decode
from netvlad_gui.core.photos.video import (
    VideoError,
    VideoTruncated,
    _info,
    format_time,
    frame_name,
    is_video_file,
    probe,
    sample_frames,
)

FPS, FRAMES, SIZE = 10.0, 35, (160, 120)


def picture(i: int) -> np.ndarray:
    """Frame i: a gradient and a block whose place moves, so frames differ (BGR)."""
    w, h = SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = (i * 7) % 256
    img[20:60, 4 * i : 4 * i + 30, 2] = 255
    return img


def write_video(path: Path, fourcc: str, frames: int = FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV cannot write {fourcc}")
    for i in range(frames):
        writer.write(picture(i))
    writer.release()
    return path


@pytest.fixture(params=[("MJPG", ".avi"), ("mp4v", ".mp4")], ids=["mjpg-avi", "mp4v-mp4"])
def video(request, tmp_path) -> Path:
    fourcc, ext = request.param
    return write_video(tmp_path / f"clip{ext}", fourcc)


def test_probe(video):
    info = probe(video)
    assert info.fps == pytest.approx(FPS)
    assert info.frames == FRAMES and (info.width, info.height) == SIZE
    assert info.duration_s == pytest.approx(3.5)


def test_sample_every_second(video):
    frames = list(sample_frames(video, ExtractConfig(image_size=80), 1.0))
    assert [f.index for f in frames] == [0, 10, 20, 30]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert [f.name for f in frames] == [f"{video.name}@00:0{s}.0" for s in range(4)]
    assert all(f.pixels.shape == (60, 80, 3) and f.pixels.dtype == np.uint8 for f in frames)


def test_sample_every_half_second(video):
    frames = list(sample_frames(video, ExtractConfig(image_size=80), 0.5))
    assert [f.index for f in frames] == [0, 5, 10, 15, 20, 25, 30]


def test_frames_decode_like_photos(video, tmp_path):
    """A frame's pixels equal decoding.decode of the same decoded picture saved losslessly."""
    cfg = ExtractConfig(image_size=80)
    frames = list(sample_frames(video, cfg, 1.0))
    cap = cv2.VideoCapture(str(video))
    for _ in range(11):
        ok, bgr = cap.read()
    cap.release()
    assert ok
    png = tmp_path / "frame10.png"
    cv2.imwrite(str(png), bgr)
    pixels, reason = decode(png, cfg)
    assert reason == ""
    np.testing.assert_array_equal(frames[1].pixels, pixels)
    # and the frames really are different pictures
    assert not np.array_equal(frames[0].pixels, frames[1].pixels)


def test_names_and_times():
    assert format_time(0) == "00:00.0"
    assert format_time(12.04) == "00:12.0"
    assert format_time(59.96) == "01:00.0"
    assert format_time(3723.5) == "1:02:03.5"
    assert frame_name("/x/clip.mp4", 12.0) == "clip.mp4@00:12.0"
    assert is_video_file("a/B.MP4") and is_video_file("c.mov") and not is_video_file("d.jpg")


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a video OpenCV can read"):
        list(sample_frames(fake))


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: None, "file not found"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_unreadable_paths(tmp_path, make, words):
    path = tmp_path / "clip.mp4"
    make(path)
    with pytest.raises(VideoError, match=words) as err:
        probe(path)
    assert isinstance(err.value, NetvladError) and "\n" not in str(err.value)


def test_truncated_avi_keeps_its_frames(tmp_path):
    whole = write_video(tmp_path / "whole.avi", "MJPG")
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with pytest.raises(VideoTruncated, match=r"truncated: frames stop at 00:0\d\.\d of 00:03\.5"):
        got.extend(sample_frames(cut, ExtractConfig(image_size=64), 1.0))
    assert 1 <= len(got) < 4  # what was there came through


def test_cut_off_mp4_has_a_reason(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", "mp4v")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # no index at the end
    with pytest.raises(VideoError, match="damaged or cut-off"):
        list(sample_frames(cut))


class _FakeCapture:
    """A capture whose header says what a test wants (a writer cannot make these)."""

    def __init__(self, fps: float, frames: float = 10.0) -> None:
        self.values = {cv2.CAP_PROP_FPS: fps, cv2.CAP_PROP_FRAME_COUNT: frames}

    def get(self, prop):
        return self.values.get(prop, 0.0)


@pytest.mark.parametrize("fps", [0.0, float("nan"), -5.0, 1e9])
def test_no_frame_rate(fps):
    with pytest.raises(VideoError, match="no usable frame rate"):
        _info(_FakeCapture(fps), "clip.mp4")


def test_zero_frames(tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.avi", "MJPG", frames=3)
    monkeypatch.setattr(cv2.VideoCapture, "grab", lambda self: False)
    with pytest.raises(VideoError, match="no frames could be decoded"):
        list(sample_frames(video))


def test_bad_interval(video):
    with pytest.raises(ConfigError, match="video interval"):
        list(sample_frames(video, every_s=0))
