"""How the GUI puts an exception into words, in one place.

A `NetvladError` is the user's to act on: its one-line message is shown as it is. Anything else
escaping the engine is a bug: the user gets a notice that says so and names the log file, and
the traceback goes to that file (and stderr). Workers, dialogs and the window's last-resort hook
all call `error_message`, so the same failure reads the same wherever it surfaces.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import platformdirs

from netvlad_gui.core.errors import NetvladError
from netvlad_gui.core.paths import APP_NAME

log = logging.getLogger("netvlad_gui.ui")

LOG_NAME = "netvlad-gui.log"
_LOG_BYTES, _LOG_BACKUPS = 1_000_000, 3


def log_file() -> Path:
    """The GUI's log file, in the user's log folder (platformdirs)."""
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)) / LOG_NAME


def setup_logging(verbose: bool = False) -> Path | None:
    """Log to stderr and to `log_file()` (rotated); returns the file, or None if unwritable."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=_LOG_BYTES, backupCount=_LOG_BACKUPS, encoding="utf-8"
        )
    except OSError as exc:  # a read-only home must not stop the app
        log.warning("cannot write the log file %s: %s", path, exc)
        return None
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return path


def error_message(exc: BaseException, doing: str = "") -> str:
    """One line for the user. Anything but a `NetvladError` is logged with its traceback."""
    if isinstance(exc, NetvladError):
        return str(exc) or type(exc).__name__
    log.error(
        "unexpected error%s",
        f" while trying to {doing}" if doing else "",
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"unexpected error ({detail}); details in {log_file()}"


#: What the window says failed, per ``EngineWorker.failed`` kind.
FAILURES = {
    "build": "Indexing failed",
    "open": "Cannot open the index",
    "locate": "Cannot locate",
    "verify": "Cannot verify (the global result stands)",
}


def failure_text(what: str, message: str) -> str:
    """The notice for an engine job that failed (``message`` from `error_message`)."""
    if what == "weights":
        return (
            "The model cannot be built: no usable weights. See the message above for how to fix it."
        )
    return f"{FAILURES.get(what, 'Error')}: {message}"


def install_excepthook(notify: Callable[[str], None]) -> None:
    """An exception escaping a slot becomes ``notify(text)`` and a log entry, never a crash."""

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        if exc is None:  # pragma: no cover - a bare type, as some C code raises
            log.error("unexpected error: %s", "".join(traceback.format_exception_only(exc_type)))
            return
        exc.__traceback__ = tb
        text = error_message(exc)
        try:
            notify(text[:1].upper() + text[1:])
        except RuntimeError:  # the window is gone
            pass

    sys.excepthook = hook
