"""A training run's folder: the files training writes there (named in model/runfiles.py), and where
runs and their indexes go.

Torch-free, so the Retrain panel can name these files without loading the trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import paths
from ..model.runfiles import BEST, FINAL, INIT, LAST

__all__ = ["BEST", "FINAL", "INIT", "LAST", "has_state", "model_index_dir", "new_run_dir"]


def new_run_dir() -> Path:
    """A fresh run folder under the user data directory, named by the time."""
    return paths.data_dir() / "runs" / time.strftime("%Y%m%d-%H%M%S")


def has_state(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that ``--resume`` can continue."""
    run_dir = Path(run_dir)
    return (run_dir / LAST).is_file() or (run_dir / INIT).is_file()


def model_index_dir(library: str | Path, model_path: str | Path) -> Path:
    """Where the library's index for a trained model goes: its default index folder + the run.

    An index keeps the model its descriptors came from, so a new model needs its own folder.
    """
    base = paths.default_index_dir(library)
    run = Path(model_path).expanduser().resolve().parent.name or "model"
    return base.with_name(f"{base.name}-{paths.safe_name(run)}")
