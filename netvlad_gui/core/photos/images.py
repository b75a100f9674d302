"""Turning a photo file into the RGB tensor the model eats.

Decoding is where user data is at its worst (truncated files, bombs, odd formats), so every failure
becomes an ``ImageLoadError`` with a one-line reason that the caller records and moves past.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import ExtractConfig
from ..errors import NetvladError
from .filekind import describe_file

if TYPE_CHECKING:  # torch loads only when a photo is turned into a tensor (not for a scan)
    import torch

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".mpo"}
)

_heif_registered = False
_DEFAULTS = ExtractConfig()  # image_size and max_pixels come from here, not from copies


class ImageLoadError(NetvladError, ValueError):
    """A file that cannot be used as a photo; the message is the reason, fit for a user."""


def _register_heif() -> None:
    """Let Pillow open phones' HEIC/HEIF photos; pillow-heif is optional at run time."""
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:  # pragma: no cover - declared dependency, but not fatal without it
        pass


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """All image files under ``root`` (recursively, sorted, hidden folders skipped)."""
    root = Path(root)
    excluded = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded
        )
        found.extend(here / f for f in filenames if is_image_file(f) and not f.startswith("."))
    return sorted(found)


#: Why a named input gives no photo to locate; both fronts show these words.
NOT_FOUND = "file not found"
NOT_A_PHOTO = "not a photo"
NO_PHOTOS = "a folder with no photos"


#: Files a front hands to core/photos/video.py as a sequence of frames (named explicitly; a
#: folder is searched for photos only).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mts", ".m2ts", ".3gp", ".wmv", ".mpg"}
)


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class Inputs:
    """A user's photos and folders, sorted: what to locate and what was skipped (and why)."""

    photos: list[Path] = field(default_factory=list)  # as named (folders expanded), no repeats
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input as named, reason)
    videos: list[Path] = field(default_factory=list)  # named video files, as sequences of frames


@dataclass(frozen=True)
class PhotoInput:
    """A photo to locate as a front names it: its file, what results call it (a video frame
    saved as a file: "clip.mp4@00:12.0"; "" is the path) and its capture time when known
    otherwise than from its EXIF (a frame's time in its video, in seconds)."""

    path: Path
    name: str = ""
    time_s: float | None = None

    @property
    def label(self) -> str:
        return self.name or str(self.path)


def expand_inputs(items: Iterable[str | os.PathLike]) -> Inputs:
    """Photos and folders as a user names them, flattened to image files (folders recursively).

    A missing path, a file that is not a photo (by its extension) and a folder without photos
    are skipped with the reason; a photo named twice (overlapping folders, a file and its folder)
    is kept once, by its resolved path.
    """
    out = Inputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.photos.append(path)

    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = list_images(p)
            if not found:
                out.skipped.append((p, NO_PHOTOS))
            for f in found:
                add(f)
        elif not p.exists():
            out.skipped.append((p, NOT_FOUND))
        elif is_video_file(p):
            out.videos.append(p)
        elif not is_image_file(p):
            out.skipped.append((p, NOT_A_PHOTO))
        else:
            add(p)
    return out


def load_image(
    path: str | os.PathLike,
    image_size: int = _DEFAULTS.image_size,
    max_pixels: int = _DEFAULTS.max_pixels,
    *,
    draft: bool = False,
):
    """Open, orient (EXIF), convert to RGB and resize so the longer side is ``image_size``.

    ``draft`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (in the DCT domain) when it stays at
    least twice ``image_size`` pixels: an 8 MP photo decodes 4-5x faster, and pixels differ
    slightly from a full decode + resize (see benchmarks/README.md). JPEGs above
    ``DRAFT_ABOVE_PIXELS`` are decoded reduced either way, so that memory stays bounded.
    Images above ``max_pixels`` are refused from their header, before anything is decoded.
    """
    _register_heif()
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError("empty file (0 bytes)")
        _allow_pillow_up_to(max_pixels)
        with warnings.catch_warnings():
            # Our own limit (checked on the header, before any pixel is decoded) is the policy;
            # Pillow's warning at 89.5 MP would refuse ordinary 108 MP phone photos.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"image too large ({w}x{h} = {w * h / 1e6:.0f} MP, limit "
                        f"{max_pixels / 1e6:.0f} MP): possible decompression bomb"
                    )
                if img.format in ("JPEG", "MPO") and max(w, h) >= 2 * image_size:
                    _draft(img, image_size, always=draft)
                img.load()
                img = _to_8bit(ImageOps.exif_transpose(img))
                img = img.convert("RGB")
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError("file not found") from None
    except IsADirectoryError:
        raise ImageLoadError("is a folder, not an image") from None
    except PermissionError:
        raise ImageLoadError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError(_unreadable_reason(path)) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"possible decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncation and corrupt data as OSError ("image file is truncated").
        raise ImageLoadError(f"corrupt or truncated image: {exc}") from None
    return resize_longer_side(img, image_size)


def _unreadable_reason(path: Path) -> str:
    """Why no decoder opens ``path``, saying what the file is where its first bytes tell."""
    kind = describe_file(path)
    if kind:
        return f"not an image this app can read: the file is {kind}"
    return "not an image this app can read (an unknown format)"


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale (scanners, thermal and scientific cameras) as 8-bit "L".

    Pillow's ``convert("RGB")`` clips these modes at 255 instead of scaling them: a 16-bit
    photo turned flat white (mean 255, std 0), a query "not found", a library photo indexed as a
    blank. 16-bit data is scaled by 1/257 (65535 -> 255); "I" and "F" by what their values
    span: 0..1 floats, 8-bit or 16-bit ranges, else their maximum.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    top = float(a.max()) if a.size else 0.0
    if img.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif img.mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    elif top <= 65535.0:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))


#: The shortest side any backbone can take: AlexNet cut at conv5 needs 31 px (VGG16 16, ResNet
#: and MobileNetV2 any), so a strip thinner than this after resizing (e.g. a 21:1 panorama at
#: 640 px) would stop a whole batch in the network; it is refused here, with the reason.
MIN_INPUT_SIDE = 32


#: JPEGs above this many pixels are always decoded at reduced size (``Image.draft``): a full
#: decode of a 108 MP photo takes 430 MB per decoding worker, for a 640-pixel model input.
DRAFT_ABOVE_PIXELS = 40_000_000


def _allow_pillow_up_to(max_pixels: int) -> None:
    """Raise Pillow's process-wide bomb error threshold (2 x MAX_IMAGE_PIXELS) to our limit.

    Pillow refuses images above twice its limit in ``Image.open``, before we see the size; the
    configured ``max_pixels`` decides instead. The threshold is only ever raised, never lowered.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and 2 * limit < max_pixels:
        Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2


def _draft(img: Image.Image, image_size: int, *, always: bool) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT domain.

    The decode stays at least twice ``image_size``, so that the resize still downsamples by 2
    or more: on the 8 MP shared photos that decodes 4-5x faster than in full, as fast as drafting
    down to ``image_size`` itself, with descriptors at cosine 0.998-0.999 to a full decode
    instead of 0.990-0.994 (benchmarks/README.md, issue 14). With ``always`` (the ``jpeg_draft``
    switch, on by default) every such JPEG is drafted; otherwise only those above
    ``DRAFT_ABOVE_PIXELS``, so that memory stays bounded.
    """
    w, h = img.size
    if always or w * h > DRAFT_ABOVE_PIXELS:
        target = 2 * image_size
    else:
        return
    scale = target / max(w, h)
    img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """(w, h) of a photo as displayed: EXIF orientations 5-8 swap the sides. Reads the header."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def resize_longer_side(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if max(w, h) == size:
        return img
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)


def to_pixels(img: Image.Image) -> np.ndarray:
    """The photo's pixels as the network input before scaling: uint8, (H, W, 3), torch-free, so
    that photos can be decoded while torch is still loading (core/photos/decoding.py).

    Every network input passes here, so a strip too thin for the networks is refused here
    (ImageLoadError: the photo is skipped with the reason, the batch and the build go on).
    """
    if min(img.size) < MIN_INPUT_SIDE:
        w, h = img.size
        raise ImageLoadError(
            f"too narrow to describe: {w}x{h} px at the model's input size (a "
            f"{max(w, h) / min(w, h):.0f}:1 strip; the networks need at least {MIN_INPUT_SIDE} px "
            "on the shorter side)"
        )
    return np.array(img, dtype=np.uint8, copy=True)


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """RGB float in [0, 1], (3, H, W), from :func:`to_pixels`: the model normalises for its own
    weights. The tensor keeps the pixels' (H, W, 3) memory order, as channels-last convs want."""
    import torch

    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """:func:`pixels_to_tensor` of :func:`to_pixels`: a decoded photo as the network's input."""
    return pixels_to_tensor(to_pixels(img))


def load_tensor(
    path: str | os.PathLike,
    image_size: int = _DEFAULTS.image_size,
    max_pixels: int = _DEFAULTS.max_pixels,
    *,
    draft: bool = False,
):
    return to_tensor(load_image(path, image_size, max_pixels, draft=draft))


def batched_by_shape(
    items: Iterable[tuple[int, torch.Tensor]], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Group (index, image) pairs into same-size batches, so portrait and landscape mix safely."""
    import torch

    buckets: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for idx, tensor in items:
        bucket = buckets.setdefault(tuple(tensor.shape), [])
        bucket.append((idx, tensor))
        if len(bucket) >= batch_size:
            yield [i for i, _ in bucket], torch.stack([t for _, t in bucket])
            bucket.clear()
    for bucket in buckets.values():
        if bucket:
            yield [i for i, _ in bucket], torch.stack([t for _, t in bucket])
