"""A video as a sequence of photos: one frame every N seconds, each with its time.

Each sampled frame becomes a "photo" named ``clip.mp4@00:12.0`` whose pixels are exactly what
``decoding.decode`` gives for a photo file (RGB uint8, the longer side resized to the model's
input with Pillow, the same checks), so a frame goes through the description path of a photo
without a file being written. OpenCV (its FFmpeg) reads the video: frames are demuxed in order
with ``grab`` and only the sampled ones are converted (``retrieve``), which is faster than
seeking for intervals of a few seconds, since a seek decodes from the previous key frame anyway.
Phone videos' rotation is applied (OpenCV's automatic orientation).

Odd videos get a one-line reason (``VideoError``): not a video, no frames, no frame rate.
A truncated video yields the frames it has, then raises ``VideoTruncated`` saying where it
stopped, so that a caller keeps what was read and can show why the rest is missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ExtractConfig, SequenceConfig
from ..errors import NetvladError
from .images import (
    VIDEO_EXTENSIONS,
    ImageLoadError,
    PhotoInput,
    is_video_file,
    resize_longer_side,
    to_pixels,
)

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoTruncated", "is_video_file", "sample_frames"]
#: A video is called truncated when its frames stop before this share of the length its header
#: announces (headers round; a last frame or two may be missing from any encoder's output).
TRUNCATED_BELOW = 0.9
_MAX_FPS = 10_000.0  # a header's frame rate above this is garbage


class VideoError(NetvladError, ValueError):
    """A video that cannot be sampled; the message is one line, fit for a user."""


class VideoTruncated(VideoError):
    """The video's frames stop early; the frames before were yielded."""


def format_time(seconds: float) -> str:
    """A frame's time as in its name: "00:12.0", "1:02:03.5" past an hour."""
    tenths = round(max(seconds, 0.0) * 10)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{clock}" if hours else clock


def frame_name(path: str | os.PathLike, seconds: float) -> str:
    """``clip.mp4@00:12.0``: the name a sampled frame goes by."""
    return f"{Path(path).name}@{format_time(seconds)}"


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frames: int  # as the header announces (0: unknown)
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.frames > 0 else 0.0


@dataclass
class Frame:
    """One sampled frame: a photo with a name, a time (seconds from the start) and pixels."""

    name: str
    time_s: float
    index: int  # frame number in the video
    pixels: np.ndarray  # uint8 (H, W, 3) RGB at the model's input size, as decoding.decode gives


def _open(path: str | os.PathLike):
    import cv2

    p = Path(path)
    try:
        if not p.is_file():
            raise VideoError("is a folder, not a video" if p.is_dir() else "file not found")
        if p.stat().st_size == 0:
            raise VideoError("empty file (0 bytes)")
        with open(p, "rb"):  # permission errors as words, not as an unopened capture
            pass
    except PermissionError:
        raise VideoError("permission denied") from None
    except OSError as exc:
        raise VideoError(f"cannot read file ({exc.strerror or exc})") from None
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            "not a video OpenCV can read (unknown format, or a damaged or cut-off file)"
        )
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    """What the video's header says; VideoError when it is no usable video."""
    cap = _open(path)
    try:
        return _info(cap, path)
    finally:
        cap.release()


def _info(cap, path) -> VideoInfo:
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0 or fps > _MAX_FPS:
        raise VideoError(f"no usable frame rate ({fps:g} fps): frame times unknown")
    frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    frames = int(frames) if math.isfinite(frames) and frames > 0 else 0
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    return VideoInfo(str(path), fps, frames, width, height)


def _pixels(bgr: np.ndarray, cfg: ExtractConfig) -> np.ndarray:
    """A decoded frame as ``decoding.decode`` would give the same picture from a photo file."""
    import cv2

    h, w = bgr.shape[:2]
    if w * h > cfg.max_pixels:
        raise VideoError(f"frames too large ({w}x{h}, limit {cfg.max_pixels / 1e6:.0f} MP)")
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    try:
        return to_pixels(resize_longer_side(img, cfg.image_size))
    except ImageLoadError as exc:
        raise VideoError(str(exc)) from None


def sample_frames(
    path: str | os.PathLike,
    cfg: ExtractConfig | None = None,
    every_s: float | None = None,
) -> Iterator[Frame]:
    """One frame every ``every_s`` seconds (default ``SequenceConfig.every_s``), from 0 on.

    Raises VideoError before the first frame for a video that cannot be read, and
    VideoTruncated after the last frame read when the video stops well before its announced
    length. A frame is taken at the first frame at or after each sampling time, by the frames'
    own time stamps (variable frame rates included).
    """
    cfg = (cfg or ExtractConfig()).validate()
    every = SequenceConfig().every_s if every_s is None else float(every_s)
    SequenceConfig(every_s=every).validate()
    import cv2

    cap = _open(path)
    try:
        info = _info(cap, path)
        index, taken, next_t, last_t = -1, 0, 0.0, 0.0
        while True:
            if not cap.grab():
                break
            index += 1
            stamp = cap.get(cv2.CAP_PROP_POS_MSEC)
            t = stamp / 1000.0 if math.isfinite(stamp) and stamp > 0 else index / info.fps
            if index > 0 and t <= last_t:  # stamps missing or stuck: trust the frame rate
                t = index / info.fps
            last_t = t
            if t + 0.5 / info.fps < next_t:
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None or bgr.size == 0:
                break
            yield Frame(frame_name(path, t), t, index, _pixels(bgr, cfg))
            taken += 1
            next_t = (math.floor(t / every + 1e-9) + 1) * every
        if taken == 0:
            raise VideoError("no frames could be decoded")
        if info.frames > 1 and index + 1 < TRUNCATED_BELOW * info.frames:
            length = format_time(info.duration_s)
            raise VideoTruncated(
                f"truncated: frames stop at {format_time(last_t)} of {length} "
                f"({index + 1} of {info.frames} frames)"
            )
    finally:
        cap.release()


def save_frames(
    path: str | os.PathLike,
    folder: str | os.PathLike,
    cfg: ExtractConfig | None = None,
    every_s: float | None = None,
) -> Iterator[PhotoInput]:
    """:func:`sample_frames`, each frame saved as a JPEG in ``folder`` (created): a photo with
    the frame's name and time, for fronts that show frames as photos (thumbnails, the match
    viewer) and locate them like photos. Raises as :func:`sample_frames` does, after the frames
    read so far."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(sample_frames(path, cfg, every_s)):
        out = folder / f"frame_{k:06d}_{frame.index:08d}.jpg"
        Image.fromarray(frame.pixels).save(out, quality=95)
        yield PhotoInput(out, frame.name, frame.time_s)
