"""A training run's folder: the files training writes there (named in model/runfiles.py), where
runs and their indexes go, and the words a run's outcome is said in (the CLI and the Retrain
panel say them alike).

Torch-free, so the Retrain panel can name these files without loading the trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import paths
from ..model.runfiles import BEST, FINAL, INIT, LAST

__all__ = [
    "BEST",
    "FINAL",
    "INIT",
    "LAST",
    "NOTHING_TO_LEARN",
    "NO_PLACE_SEEN_TWICE",
    "has_state",
    "heldout_change",
    "heldout_summary",
    "model_index_dir",
    "new_run_dir",
]

#: What a run says when its first mining pass finds nothing to learn, and when no place is seen
#: twice; both begin with "nothing to learn", which the fronts recognise.
NOTHING_TO_LEARN = (
    "nothing to learn: the model already tells every place here from the others; retraining "
    "helps when the photos show the same places at other times, seasons or light"
)
NO_PLACE_SEEN_TWICE = (
    "nothing to learn: retraining needs places photographed two or more times (within {pos:g} m "
    "of each other), best at other times, seasons or light, and places farther apart than "
    "{neg:g} m"
)


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


def _r1(figure: dict | None) -> float | None:
    r = (figure or {}).get("recall@1")
    return None if r is None else 100 * float(r)


def heldout_change(heldout: dict | None, arrow: str = "→") -> str:
    """One line: Recall@1 on the held-out places before -> after ("" without either)."""
    heldout = heldout or {}
    r0, r1 = _r1(heldout.get("before")), _r1(heldout.get("after"))
    if r1 is None:
        return "" if r0 is None else f"Recall@1 {r0:.0f} % before training"
    if r0 is None:
        return f"Recall@1 {r1:.0f} %"
    return f"Recall@1 {r0:.0f} % before {arrow} {r1:.0f} % with this model ({r1 - r0:+.0f} points)"


def heldout_summary(heldout: dict | None) -> str:
    """The held-out figure in a sentence a user decides by ("" when there is none)."""
    heldout = heldout or {}
    after = heldout.get("after") or {}
    r0, r1 = _r1(heldout.get("before")), _r1(after)
    if r1 is None:
        return ""
    text = (
        f"On {int(after.get('queries') or 0)} photos of places it never trained on, the right "
        f"place comes first for {r1:.0f} %"
    )
    if r0 is not None:
        verdict = (
            "better than" if r1 > r0 + 0.5 else "worse than" if r1 < r0 - 0.5 else "the same as"
        )
        text += f" ({r0:.0f} % before training: {verdict} the model it started from)"
    return text + "."
