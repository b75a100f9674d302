"""Named models: what each name means, whether it is on this machine, and downloading the
paper's trained VGG16 NetVLAD models (the MATLAB ``*_struct.mat`` files hloc uses).

Downloads resume: bytes go to ``NAME.part`` beside the target and an interrupted or cancelled
download continues from there with an HTTP Range request. The target name appears only once
the file is complete and its structure checks out, so a half or broken file is never loaded.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Literal

from ... import __version__
from .. import paths
from ..config import DEFAULT_MODEL
from ..errors import (
    NetvladError,
    WeightsUnavailableError,  # noqa: F401 - the fronts import it from here
)
from ..paths import SHIPPED_WEIGHTS

#: Where hloc downloads the paper's models from (ETH Zurich CVG).
DEFAULT_BASE_URL = "https://cvg-data.inf.ethz.ch/hloc/netvlad/"
#: Set this to a mirror (e.g. a local folder served over HTTP) to download from elsewhere.
BASE_URL_ENV = "NETVLAD_GUI_MODEL_BASE_URL"
USER_AGENT = f"netvlad-gui/{__version__} (Python-urllib; model download)"

_CHUNK = 1 << 20
_TIMEOUT_S = 30.0
#: Seconds to wait before retry n (1-based) of an interrupted download.
RETRY_BACKOFF_S = (1.0, 3.0, 10.0)

ProgressFn = Callable[[int, "int | None"], None]
CancelFn = Callable[[], bool]
Kind = Literal["shipped", "torchvision", "download"]


class ModelDownloadError(NetvladError, RuntimeError):
    """A named model could not be downloaded; the message says what to do about it."""


class DownloadCancelled(ModelDownloadError):
    """The user stopped the download; the ``.part`` file stays for a later resume."""


class UnknownModelError(NetvladError, ValueError):
    """The name is not one of :func:`list_models`."""


class ModelNotDownloadedError(NetvladError, RuntimeError):
    """A downloadable model was asked for but is not on this machine yet."""


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    kind: Kind
    filename: str | None = None  # downloads: file name at the base URL and in the cache
    approx_mb: int | None = None


_VGG_MAT_MB = 560  # VGG16 conv (14.7 M) + NetVLAD + 32768x4096 whitening, float32

_REGISTRY: tuple[_Entry, ...] = (
    _Entry(
        DEFAULT_MODEL,
        "MobileNetV2 (ImageNet weights shipped with the app) + NetVLAD fitted to your library",
        "shipped",
    ),
    _Entry(
        "vgg16-netvlad",
        "VGG16 conv5_3 (torchvision ImageNet) + NetVLAD, as in the paper",
        "torchvision",
    ),
    _Entry("alexnet-netvlad", "AlexNet conv5 (torchvision ImageNet) + NetVLAD", "torchvision"),
    _Entry("resnet18-netvlad", "ResNet-18 (torchvision ImageNet) + NetVLAD", "torchvision"),
    _Entry("resnet50-netvlad", "ResNet-50 (torchvision ImageNet) + NetVLAD", "torchvision"),
    _Entry(
        "vgg16-fmax",
        "VGG16 conv5_3 (torchvision ImageNet) + global max pooling (baseline)",
        "torchvision",
    ),
    _Entry(
        "mobilenet_v2-fmax",
        "MobileNetV2 (ImageNet weights shipped with the app) + global max pooling (baseline)",
        "shipped",
    ),
    _Entry(
        "vgg16-netvlad-pitts30k",
        "The paper's VGG16 NetVLAD trained on Pittsburgh 30k, 4096-D whitened (MATLAB release)",
        "download",
        "Pitts30K_struct.mat",
        _VGG_MAT_MB,
    ),
    _Entry(
        "vgg16-netvlad-tokyotm",
        "The paper's VGG16 NetVLAD trained on Tokyo Time Machine, 4096-D whitened (MATLAB release)",
        "download",
        "TokyoTM_struct.mat",
        _VGG_MAT_MB,
    ),
)
_BY_NAME = {e.name: e for e in _REGISTRY}


@dataclass(frozen=True)
class ModelInfo:
    """One named model as the CLI and the GUI list it."""

    name: str
    description: str
    kind: Kind
    available: bool  # usable without a download (shipped/cached weights, or file downloaded)
    path: Path | None = None  # downloads: where the file lives (or will)
    url: str | None = None  # downloads: where it comes from
    approx_size_mb: int | None = None  # downloads: rough size before it is on disk
    size: int | None = None  # downloads: bytes on disk once present


def list_models(base_url: str | None = None) -> list[ModelInfo]:
    """Every named model, in a stable order, with whether it can be used right now."""
    return [model_info(e.name, base_url=base_url) for e in _REGISTRY]


def model_names() -> list[str]:
    return [e.name for e in _REGISTRY]


def is_named_model(name: str) -> bool:
    return name in _BY_NAME


def is_downloadable(name: str) -> bool:
    """True for names whose weights come from :func:`get_model` (not from torchvision)."""
    entry = _BY_NAME.get(name)
    return entry is not None and entry.kind == "download"


def model_info(name: str, *, base_url: str | None = None) -> ModelInfo:
    entry = _entry(name)
    if entry.kind == "download":
        target = target_path(name)
        present = target.is_file()
        return ModelInfo(
            entry.name,
            entry.description,
            entry.kind,
            present,
            path=target,
            url=model_url(name, base_url),
            approx_size_mb=entry.approx_mb,
            size=target.stat().st_size if present else None,
        )
    return ModelInfo(entry.name, entry.description, entry.kind, _weights_available(entry))


def target_path(name: str) -> Path:
    """Where a downloadable model lives once downloaded (``cache_dir()/models/FILE``)."""
    entry = _entry(name)
    if entry.kind != "download" or entry.filename is None:
        raise UnknownModelError(f"{name!r} is not a downloadable model")
    return paths.cache_dir() / "models" / entry.filename


def model_path(name: str) -> Path | None:
    """The downloaded file of a downloadable model, or None if it is not here (or not one)."""
    if not is_downloadable(name):
        return None
    target = target_path(name)
    return target if target.is_file() else None


def require_model(name: str) -> Path:
    """The downloaded file of ``name``, or an error telling the user how to get it."""
    path = model_path(name)
    if path is None:
        _entry(name)
        if not is_downloadable(name):
            raise UnknownModelError(f"{name!r} is not a downloadable model")
        raise ModelNotDownloadedError(
            f"model {name!r} is not downloaded yet: run `netvlad models get {name}` "
            f"(or put {_entry(name).filename} at {target_path(name)})"
        )
    return path


def model_url(name: str, base_url: str | None = None) -> str:
    entry = _entry(name)
    if entry.filename is None:
        raise UnknownModelError(f"{name!r} is not a downloadable model")
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + entry.filename


def _entry(name: str) -> _Entry:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(model_names())}"
        ) from None


def _weights_available(entry: _Entry) -> bool:
    """Shipped weights are in models/; torchvision's are usable once in torch's hub cache."""
    backbone = entry.name.split("-", 1)[0]
    shipped = SHIPPED_WEIGHTS.get(backbone)
    if shipped is not None:  # answered without torch: the window asks before the engine loads
        return (paths.models_dir() / shipped).is_file()
    import torch.hub

    from .backbones import torchvision_weights_url

    try:
        url, _ = torchvision_weights_url(backbone)
    except (ValueError, KeyError, AttributeError):  # not a torchvision model name
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file()


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def get_model(
    name: str,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    base_url: str | None = None,
    retries: int = 2,
) -> Path:
    """Download a named model into the cache (resuming a partial download); returns its path.

    ``progress(done, total)`` is called as bytes arrive (total None if the server does not
    say); ``cancel()`` returning True stops the download, keeping the ``.part`` for later.
    An interrupted transfer is resumed up to ``retries`` times before giving up.
    """
    entry = _entry(name)
    if entry.kind != "download":
        raise UnknownModelError(
            f"{name!r} needs no download: its weights are "
            + (
                "shipped with the app"
                if entry.kind == "shipped"
                else "torchvision's ImageNet weights"
            )
        )
    target = target_path(name)
    if target.is_file():
        if progress is not None:
            size = target.stat().st_size
            progress(size, size)
        return target
    url = model_url(name, base_url)
    part = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelDownloadError(f"cannot create the model folder {target.parent}: {exc}") from None

    attempt = 0
    while True:
        try:
            _fetch(url, part, progress, cancel)
            break
        except _Interrupted as exc:
            attempt += 1
            if attempt > retries:
                raise ModelDownloadError(
                    f"download of {name} was interrupted ({exc}); {_size(part)} kept in {part}. "
                    f"Run it again to resume, or download {url} by hand and save it as {target}"
                ) from None
            time.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S)) - 1])
        except _Unreachable as exc:
            raise ModelDownloadError(
                f"downloading {name} needs the network, and {url} could not be reached ({exc}). "
                f"Connect and try again, or download that file by hand and save it as {target}"
            ) from None

    _verify(part, name, url, target)
    paths.replace_durably(part, target)  # the name appears only for a whole, checked file
    return target


class _Interrupted(Exception):
    """The transfer broke off part-way; what arrived is in the .part file."""


class _Unreachable(Exception):
    """No usable answer from the server."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch(url: str, part: Path, progress: ProgressFn | None, cancel: CancelFn | None) -> None:
    """One HTTP request that appends to ``part`` until the file is complete."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Nothing after our bytes: either the .part is already complete or it is not this file.
            total = _range_total(exc.headers.get("Content-Range"))
            exc.close()
            if total == have:
                return
            part.unlink(missing_ok=True)
            raise _Interrupted(
                "the partial file did not match the server's; starting over"
            ) from None
        exc.close()
        raise _Unreachable(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Unreachable(str(reason) or type(exc).__name__) from None

    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206 and have:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _Interrupted("the server resumed at the wrong offset; starting over")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        elif status == 200:
            have, mode = 0, "wb"  # no Range support (or a fresh start): write from the start
            total = length
        else:
            raise _Unreachable(f"unexpected HTTP status {status}")
        if progress is not None:
            progress(have, total)
        done = have
        try:
            with part.open(mode) as out:
                while True:
                    if cancel is not None and cancel():
                        raise DownloadCancelled(
                            f"download cancelled; {_size(part, done)} kept in {part} for a later resume"
                        )
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout mid-stream
            raise _Interrupted(f"{type(exc).__name__} after {done} bytes") from None
        if total is not None and done != total:
            raise _Interrupted(f"got {done} of {total} bytes")


def _range_total(header: str | None) -> int | None:
    match = re.match(r"bytes\s+\*/(\d+)", header or "")
    return int(match.group(1)) if match else None


def _verify(part: Path, name: str, url: str, target: Path) -> None:
    """Structure check before the file gets its real name; a bad file is removed."""
    from .checkpoint import CheckpointError
    from .importers import read_matlab_info

    try:
        read_matlab_info(part)
    except CheckpointError as exc:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(
            f"the file downloaded for {name} from {url} is not a valid NetVLAD model ({exc}); "
            "it was removed. Try again later, or download it by hand and save it as "
            f"{target}"
        ) from None


def _size(path: Path, n: int | None = None) -> str:
    if n is None:
        n = path.stat().st_size if path.is_file() else 0
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"
