"""What the command line asks the window for, and how it changes the remembered settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .settingsdialog import AppSettings


@dataclass
class LaunchOptions:
    """What the command line asks for (see ``ui.app``)."""

    inputs: list[str] = field(default_factory=list)
    library: str | None = None
    index_dir: str | None = None
    image_size: int | None = None
    auto_build: bool = False  # build the index when it is missing (screenshot mode)
    measure_stalls: bool = False


def launch_settings(options: LaunchOptions) -> AppSettings:
    """The saved settings, with the command line's library and index folder (saved too: the
    next start opens the same library)."""
    settings = AppSettings.load()
    if options.library:
        library = str(Path(options.library).expanduser().resolve())
        if library != settings.library:
            settings.index_dir = ""  # the remembered index was for the old library
        settings.library = library
    if options.index_dir:
        settings.index_dir = str(Path(options.index_dir).expanduser().resolve())
        if not options.library:
            settings.library = ""  # learnt from the index once it is open
    if options.library or options.index_dir:
        settings.save()
    return settings
