"""The window's file dialogs, opening where the user was last, else next to the library.

Qt's dialogs start in the current directory or the home folder; a user who keeps the library
and the photos to place side by side would browse there every time. The last folder used is
remembered in the settings (``ui/last_folder``).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QWidget

from netvlad_gui.core.photos.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

LAST_FOLDER_KEY = "ui/last_folder"
# A video is located as a sequence of its frames (Tools → Model and settings: one every N s).
IMAGE_FILTER = "Photos and videos ({});;Photos ({});;Videos ({});;All files (*)".format(
    " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)),
    " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS)),
    " ".join(f"*{e}" for e in sorted(VIDEO_EXTENSIONS)),
)
EXPORT_FILTER = "CSV (*.csv);;GeoJSON (*.geojson)"


def last_folder() -> str:
    value = QSettings().value(LAST_FOLDER_KEY, "")
    return value if isinstance(value, str) else ""


def remember(path: str | Path) -> None:
    """Remember the folder of ``path`` (or ``path`` itself when it is one) for the next dialog."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    store = QSettings()
    store.setValue(LAST_FOLDER_KEY, str(folder))
    store.sync()


def start_folder(library: str = "") -> str:
    """The last folder used, else the library's parent folder, else the home folder."""
    for candidate in (last_folder(), str(Path(library).parent) if library else ""):
        if candidate and Path(candidate).is_dir():
            return candidate
    return str(Path.home())


def choose_library(parent: QWidget, library: str = "") -> str:
    """A folder for the library ("" if cancelled); starts next to the current one."""
    start = str(Path(library).parent) if library and Path(library).is_dir() else ""
    folder = QFileDialog.getExistingDirectory(
        parent, "Choose a folder of geotagged photos", start or start_folder(library)
    )
    if folder:
        remember(folder)
    return folder


def photos(parent: QWidget, library: str = "") -> list[str]:
    files, _ = QFileDialog.getOpenFileNames(
        parent, "Photos or videos to locate", start_folder(library), IMAGE_FILTER
    )
    if files:
        remember(files[0])
    return files


def photo_folder(parent: QWidget, library: str = "") -> str:
    folder = QFileDialog.getExistingDirectory(
        parent, "A folder of photos to locate", start_folder(library)
    )
    if folder:
        remember(folder)
    return folder


def export_path(parent: QWidget, library: str = "") -> str:
    """Where to export results ("" if cancelled), with .csv or .geojson added when missing."""
    path, chosen = QFileDialog.getSaveFileName(
        parent,
        "Export results",
        str(Path(start_folder(library)) / "netvlad-results.csv"),
        EXPORT_FILTER,
    )
    if not path:
        return ""
    if Path(path).suffix.lower() not in (".csv", ".geojson", ".json"):
        path += ".geojson" if chosen.startswith("GeoJSON") else ".csv"
    remember(path)
    return path
