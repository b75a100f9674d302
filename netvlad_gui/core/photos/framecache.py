"""A video's sampled frames kept in the user's cache, for fronts that show frames as photos.

The window lists each sampled frame as a photo (a thumbnail, the match viewer, the export by
its name ``clip.mp4@00:12.0``), so the frames must live on disk as long as the session shows
them, and sampling a 10-minute video again each time it is dropped would cost half a minute.
:func:`cached_frames` saves them once per video file (its path, size and modification time),
interval and frame size, in a folder of their own under ``paths.cache_dir()``, with a
``frames.json`` written last (atomically): a folder without it is an interrupted sampling and
is done again. A truncated video keeps its frames and its one-line reason in the list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..cancel import Cancelled
from ..config import ExtractConfig, SequenceConfig
from .images import PhotoInput
from .video import VideoError, VideoTruncated, probe, save_frames

log = logging.getLogger(__name__)

MANIFEST = "frames.json"
_VERSION = 1  # of the manifest and of the frames' naming: another version samples again

ProgressFn = Callable[[int, int], None]  # (frames saved, frames expected; 0 when unknown)
CancelFn = Callable[[], bool]


@dataclass
class SampledVideo:
    """The frames of one video, in order, as photos with their names and times."""

    video: Path
    frames: list[PhotoInput] = field(default_factory=list)
    problem: str = ""  # why the frames stop early (a truncated video), "" when they do not
    reused: bool = False  # read from the cache, not sampled now


def frames_folder(
    video: str | os.PathLike, cfg: ExtractConfig | None = None, every_s: float | None = None
) -> Path:
    """The cache folder of this video's frames at this interval and frame size (one per
    combination: a changed file, interval or model input size gets another)."""
    cfg = cfg or ExtractConfig()
    every = SequenceConfig.every_s if every_s is None else float(every_s)
    path = Path(video).expanduser().resolve()
    st = path.stat()
    key = "|".join(
        str(v) for v in (_VERSION, path, st.st_size, st.st_mtime_ns, repr(every), cfg.image_size)
    )
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return paths.cache_dir() / "frames" / f"{paths.safe_name(path.stem) or 'video'}-{digest}"


def expected_frames(video: str | os.PathLike, every_s: float) -> int:
    """How many frames sampling every ``every_s`` should give, from the header (0: unknown)."""
    try:
        info = probe(video)
    except VideoError:
        return 0
    if info.duration_s <= 0:
        return 0
    return int(info.duration_s / every_s + 1e-9) + 1


def cached_frames(
    video: str | os.PathLike,
    cfg: ExtractConfig | None = None,
    every_s: float | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> SampledVideo:
    """The video's frames every ``every_s`` seconds, from the cache or sampled into it now.

    Raises VideoError (one line) for a video that gives no frame, ``Cancelled`` when ``cancel``
    turns true between frames (the frames so far are not kept: the next call samples again).
    A truncated video gives the frames before its end and ``problem`` says where it stopped.
    """
    cfg = (cfg or ExtractConfig()).validate()
    every = SequenceConfig.every_s if every_s is None else float(every_s)
    SequenceConfig(every_s=every).validate()
    video = Path(video).expanduser()
    try:
        folder = frames_folder(video, cfg, every)
    except OSError as exc:  # gone, or unreadable: said as video.py would say it
        raise VideoError(f"cannot read file ({exc.strerror or exc})") from None
    found = _read_manifest(folder)
    if found is not None:
        frames, problem = found
        return SampledVideo(video, frames, problem, reused=True)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted sampling: start again
    total = expected_frames(video, every)
    frames: list[PhotoInput] = []
    problem = ""
    try:
        for frame in save_frames(video, folder, cfg, every):
            frames.append(frame)
            if progress is not None:
                progress(len(frames), max(total, len(frames)))
            if cancel is not None and cancel():
                raise Cancelled(f"stopped reading {video.name}")
    except VideoTruncated as exc:
        problem = f"{exc}; locating the {len(frames)} frames before it"
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _write_manifest(folder, frames, problem)
    return SampledVideo(video, frames, problem)


def _write_manifest(folder: Path, frames: list[PhotoInput], problem: str) -> None:
    data = {
        "version": _VERSION,
        "problem": problem,
        "frames": [{"file": f.path.name, "name": f.name, "time_s": f.time_s} for f in frames],
    }
    try:
        with paths.atomic_path(folder / MANIFEST) as tmp:
            tmp.write_text(json.dumps(data), encoding="utf-8")
    except OSError as exc:  # the frames are there for this session; the next one samples again
        log.warning("cannot keep the frames of %s in the cache: %s", folder, exc)


def _read_manifest(folder: Path) -> tuple[list[PhotoInput], str] | None:
    """The cached frames, or None when the folder holds no complete, readable sampling."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("version") != _VERSION:
            return None
        frames = [
            PhotoInput(folder / str(f["file"]), str(f["name"]), float(f["time_s"]))
            for f in data["frames"]
        ]
        problem = str(data.get("problem") or "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not frames or not all(f.path.is_file() for f in frames):
        return None
    return frames, problem
