"""Pittsburgh / Tokyo Time Machine ``dbStruct`` .mat files as a PlaceSet, read by field name.

The paper's data sets describe database and query images with UTM positions in a MATLAB struct;
this reads the four fields it needs, whatever the struct's layout (scipy's loadmat), and finds the
image folder under the given root.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import NEGATIVE_RADIUS_M, POSITIVE_RADIUS_M
from ..errors import DatasetError
from .placeset import PlaceSet

log = logging.getLogger(__name__)

_DBSTRUCT_FIELDS = ("dbImageFns", "utmDb", "qImageFns", "utmQ")


def _mat_strings(value, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    arr = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    out = []
    for item in arr:
        while isinstance(item, np.ndarray):
            item = item.item() if item.size == 1 else "".join(map(str, item.ravel()))
        if not isinstance(item, str):
            raise DatasetError(f"dbStruct.{name} must hold file names, found {type(item).__name__}")
        out.append(item.strip())
    return out


def _mat_utm(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if n == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise DatasetError(f"dbStruct.{name} must be a 2 x N matrix, got shape {arr.shape}")
    if arr.shape[1] == n and arr.shape[0] != n:
        arr = arr.T  # MATLAB's 2 x N
    if arr.shape[0] != n:
        raise DatasetError(f"dbStruct.{name} has shape {arr.shape}, expected 2 x {n}")
    if not np.isfinite(arr).all():
        raise DatasetError(f"dbStruct.{name} holds NaN or infinite coordinates")
    return arr


def _mat_scalar(struct, name: str, default: float | None = None) -> float | None:
    value = getattr(struct, name, None)
    if value is None or np.asarray(value).size == 0:
        return default
    return float(np.asarray(value, dtype=np.float64).ravel()[0])


def read_dbstruct(path: str | Path):
    """The ``dbStruct`` of a Pittsburgh / Tokyo TM .mat as an object with named fields."""
    import scipy.io

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"dbStruct file not found: {path}")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, chars_as_strings=True)
    except NotImplementedError as exc:
        raise DatasetError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')"
        ) from exc
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError… on garbage
        raise DatasetError(
            f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from exc
    struct = mat.get("dbStruct")
    if struct is None:
        candidates = [
            v for k, v in mat.items() if not k.startswith("__") and hasattr(v, "_fieldnames")
        ]
        if len(candidates) != 1:
            raise DatasetError(f"{path}: no 'dbStruct' variable")
        struct = candidates[0]
    if not hasattr(struct, "_fieldnames"):
        raise DatasetError(f"{path}: 'dbStruct' is not a MATLAB struct")
    missing = [f for f in _DBSTRUCT_FIELDS if f not in struct._fieldnames]
    if missing:
        raise DatasetError(f"{path}: dbStruct lacks the field(s) {', '.join(missing)}")
    return struct


def _image_dir(root: Path, names: list[str], candidates: Sequence[str], what: str) -> Path:
    """The first of root/<candidate> under which the listed files exist."""
    probe = names[: min(len(names), 5)]
    for sub in candidates:
        base = root / sub if sub else root
        if all((base / n).is_file() for n in probe):
            return base
    tried = ", ".join(str(root / c) if c else str(root) for c in candidates)
    raise DatasetError(f"{what} images of the dbStruct not found under {tried} (first: {probe[0]})")


def load_dbstruct(mat: str | Path, image_root: str | Path) -> PlaceSet:
    """A Pittsburgh / Tokyo TM set: fields by name, UTM metres, the set's own thresholds.

    Positives lie within sqrt(nonTrivPosDistSqThr) (10 m) but farther than 1 m (Relja's
    "non-trivial" rule), negatives beyond posDistThr (25 m), which is also the recall radius.
    With dbTimeStamp/qTimeStamp (Tokyo TM), images of the query's own time stamp are excluded.
    """
    mat, root = Path(mat).expanduser(), Path(image_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image root not found: {root}")
    s = read_dbstruct(mat)
    db_fns = _mat_strings(s.dbImageFns, "dbImageFns")
    q_fns = _mat_strings(s.qImageFns, "qImageFns")
    for name, fns in (("numImages", db_fns), ("numQueries", q_fns)):
        n = _mat_scalar(s, name)
        if n is not None and int(n) != len(fns):
            raise DatasetError(f"{mat}: dbStruct.{name} is {int(n)} but lists {len(fns)} files")
    db_pos = _mat_utm(s.utmDb, len(db_fns), "utmDb")
    q_pos = _mat_utm(s.utmQ, len(q_fns), "utmQ")
    pos_thr = _mat_scalar(s, "posDistThr", NEGATIVE_RADIUS_M)
    pos_sq = _mat_scalar(s, "posDistSqThr")
    if pos_sq is not None and not math.isclose(pos_sq, pos_thr**2, rel_tol=1e-6):
        log.warning("%s: posDistSqThr %g is not posDistThr^2; using posDistThr", mat, pos_sq)
    nontriv_sq = _mat_scalar(s, "nonTrivPosDistSqThr", POSITIVE_RADIUS_M**2)
    db_time = q_time = None
    fields = set(s._fieldnames)
    if {"dbTimeStamp", "qTimeStamp"} <= fields:
        db_time = np.asarray(s.dbTimeStamp, dtype=np.float64).reshape(-1)
        q_time = np.asarray(s.qTimeStamp, dtype=np.float64).reshape(-1)
        if len(db_time) != len(db_fns) or len(q_time) != len(q_fns):
            raise DatasetError(f"{mat}: time stamps do not match the number of images")
    db_dir = _image_dir(root, db_fns, ("", "images", "database"), "database")
    q_dir = _image_dir(root, q_fns, ("", "queries", "queries_real", "images"), "query")
    which = str(getattr(s, "whichSet", "") or "")
    name = f"{mat.stem}" + (f" ({which})" if which and which not in mat.stem else "")
    return PlaceSet(
        name,
        [db_dir / f for f in db_fns],
        [q_dir / f for f in q_fns],
        db_pos,
        q_pos,
        db_time=db_time,
        q_time=q_time,
        pos_radius_m=math.sqrt(nontriv_sq),
        neg_radius_m=pos_thr,
        recall_radius_m=pos_thr,
        trivial_radius_m=1.0,
    )
