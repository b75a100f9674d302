"""One family of errors: everything core raises about a user's input or files derives from
`NetvladError`, whose message is one line a front can show as it is.

The fronts catch `NetvladError` and show its message; anything else escaping core is a bug
(the CLI logs its traceback, the GUI shows a notice). Errors that belong to one module stay
there (`CheckpointError` in checkpoint.py …) and derive from `NetvladError`; the ones shared
across areas live here. Each keeps its old builtin base too, so `except ValueError` still works.
"""

from __future__ import annotations

import errno


class NetvladError(Exception):
    """A failure the user can act on; ``str(exc)`` is one line that says why and what to do."""


class LibraryIndexError(NetvladError, RuntimeError):
    """An index folder that cannot be used as asked; the message says why and what to do."""


class DatasetError(NetvladError, ValueError):
    """A data source that cannot become a training or evaluation set."""


class GeoError(NetvladError, ValueError):
    """Coordinates handed to the distance helpers are not valid latitudes/longitudes."""


class TrainError(NetvladError, RuntimeError):
    """Training cannot go on (no usable tuples, out of memory, a run folder in the way…)."""


class WeightsUnavailableError(NetvladError, RuntimeError):
    """Pretrained weights are not on this machine and cannot be downloaded.

    Raised by model/backbones.py; here, so that a front can tell it apart without importing torch.
    """


class DeviceUnavailableError(NetvladError, RuntimeError):
    """The device asked for (``--device cuda``, ``cuda:1``, ``mps``) is not on this machine."""


class FileWriteError(NetvladError, OSError):
    """A file the engine writes could not be written (read-only folder, disk full…).

    The message names the file and says why in one line. Also an OSError with the cause's
    errno, so that callers that work round a read-only folder (``except OSError``) still do.
    """

    def __init__(self, path: object, cause: OSError) -> None:
        why = cause.strerror or str(cause).strip().splitlines()[0] or type(cause).__name__
        hint = _WRITE_HINTS.get(cause.errno or 0, "")
        super().__init__(cause.errno, f"cannot write {path}: {why}{hint}")
        self.path = str(path)

    def __str__(self) -> str:
        return str(self.strerror)


_FULL = "; free some space and try again"
_READ_ONLY = " (a read-only folder?); choose a folder you may write to"
_WRITE_HINTS = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EACCES: _READ_ONLY,
    errno.EPERM: _READ_ONLY,
    errno.EROFS: "; choose a folder you may write to",
}


class ConfigError(NetvladError, ValueError):
    """A setting out of its range (``--top 0``, ``--image-size 100000``…); says which and why.

    The one error of every config dataclass's ``validate()`` (core/config.py), for the GUI and
    the CLI alike: the message names the setting in the words of the GUI's label or the CLI's
    flag.
    """


#: The names of the config errors before there was one; kept for the code that imports them.
TrainConfigError = ConfigError


class IndexModelMissingError(LibraryIndexError, FileNotFoundError):
    """An index that holds photos but not the model that described them (model.pt is gone)."""
