"""Where things live on disk: shipped data, user data, caches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import platformdirs

APP_NAME = "netvlad-gui"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: Backbone weights that ship with the app, in :func:`models_dir` (model/backbones.py loads them,
#: model/zoo.py says whether they are there without importing torch).
SHIPPED_WEIGHTS = {"mobilenet_v2": "mobilenet_v2_imagenet.pth"}


def _shipped_dir(name: str) -> Path:
    """A top-level data folder (models/, resources/), installed as a wheel or editable."""
    in_wheel = _PACKAGE_DIR / f"_{name}"
    if in_wheel.is_dir():
        return in_wheel
    return _PACKAGE_DIR.parent / name


def models_dir() -> Path:
    return _shipped_dir("models")


def resources_dir() -> Path:
    return _shipped_dir("resources")


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def safe_name(name: str, limit: int = 40) -> str:
    """``name`` as a portable folder-name part: letters, digits, - and _ (others become _)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:limit]


def default_index_dir(library: str | Path) -> Path:
    """One index per library folder, keyed by its absolute path, under the user data directory."""
    library = Path(library).expanduser().resolve()
    digest = hashlib.sha1(str(library).encode("utf-8")).hexdigest()[:12]
    return data_dir() / "indexes" / f"{safe_name(library.name) or 'root'}-{digest}"
