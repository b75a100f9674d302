"""One family of errors: everything core raises about a user's input or files derives from
`NetvladError`, whose message is one line a front can show as it is.

The fronts catch `NetvladError` and show its message; anything else escaping core is a bug
(the CLI logs its traceback, the GUI shows a notice). Errors that belong to one module stay
there (`CheckpointError` in checkpoint.py …) and derive from `NetvladError`; the ones shared
across areas live here. Each keeps its old builtin base too, so `except ValueError` still works.
"""

from __future__ import annotations


class NetvladError(Exception):
    """A failure the user can act on; ``str(exc)`` is one line that says why and what to do."""


class LibraryIndexError(NetvladError, RuntimeError):
    """An index folder that cannot be used as asked; the message says why and what to do."""


class DatasetError(NetvladError, ValueError):
    """A data source that cannot become a training or evaluation set."""


class TrainConfigError(NetvladError, ValueError):
    """A training configuration that cannot work."""


class TrainError(NetvladError, RuntimeError):
    """Training cannot go on (no usable tuples, out of memory, a run folder in the way…)."""


class WeightsUnavailableError(NetvladError, RuntimeError):
    """Pretrained weights are not on this machine and cannot be downloaded.

    Raised by model/backbones.py; here, so that a front can tell it apart without importing torch.
    """


class ConfigError(NetvladError, ValueError):
    """A setting out of its range (``--top 0``, ``--image-size 100000``…); says which and why."""
