"""Training and evaluation sets: database and query photos with positions in metres, or index truth.

Sources (see :class:`DataSpec`):

- a geotagged photo folder (GPS from EXIF, XMP or gps.csv), split by geography;
- a pair of folders, database/ and queries/, with GPS, with frames ``--frame-spacing-m`` apart on a
  line, or with index ground truth (gt.csv);
- a Pittsburgh / Tokyo Time Machine ``dbStruct`` .mat plus an image root, read by field name.

Every position is Cartesian metres, so each rule of the paper is a Euclidean distance: GPS becomes
a point on a sphere of the earth's radius (the chord equals the great-circle distance to 1e-9 at
these ranges, and it stays right across a whole continent, unlike a local flat projection), UTM is
used as it is, and frame ``i`` of a sequence sits at ``i * spacing`` metres along a line.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..errors import DatasetError
from ..photos.geo import EARTH_RADIUS_M, SIDECAR_NAME, read_gps
from ..photos.images import list_images
from ..trainconfig import NO_SPLIT, SPLITS, DataSpec, SplitConfig
from .placeset import PlaceSet

log = logging.getLogger(__name__)

# Re-exported: the set, its sources and its split are named from here by callers and tests.
__all__ = [
    "NO_SPLIT",
    "SPLITS",
    "DataSpec",
    "DatasetError",
    "PlaceSet",
    "SplitConfig",
    "eval_set",
    "gps_to_metres",
    "load_folder",
    "load_pair",
    "load_spec",
    "read_gt_csv",
    "select",
    "split_set",
]


# --- positions ------------------------------------------------------------------------------


def gps_to_metres(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """(N, 3) points on a sphere of the earth's radius: chord distance = ground distance."""
    phi, lam = np.radians(np.asarray(lats, float)), np.radians(np.asarray(lons, float))
    unit = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)
    return unit.reshape(-1, 3) * EARTH_RADIUS_M


def _plane(pos: np.ndarray) -> np.ndarray:
    """2-D east/north metres for grid cells (exact enough to bin places, not to measure them)."""
    if pos.shape[1] == 1:
        return np.concatenate([pos, np.zeros_like(pos)], axis=1)
    if pos.shape[1] == 2:
        return pos
    centre = pos.mean(axis=0)
    centre /= np.linalg.norm(centre)
    east = np.cross([0.0, 0.0, 1.0], centre)
    if np.linalg.norm(east) < 1e-9:  # a pole: any east will do
        east = np.array([1.0, 0.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)
    return np.stack([pos @ east, pos @ north], axis=1)


def _read_positions(
    paths: Sequence[Path], root: Path
) -> tuple[list[int], np.ndarray, list[tuple[str, str]]]:
    """GPS of each photo (EXIF, XMP, <root>/gps.csv, then gps.csv one folder up)."""
    keep, lats, lons, skipped = [], [], [], []
    parent_csv = (root.parent / SIDECAR_NAME).is_file() and root.parent != root
    for i, path in enumerate(paths):
        res = read_gps(path, root=root)
        if not res.ok and parent_csv:
            res = read_gps(path, root=root.parent)
        if res.ok:
            keep.append(i)
            lats.append(res.point.lat)
            lons.append(res.point.lon)
        else:
            skipped.append((str(path), f"no usable GPS: {res.reason}"))
    pos = gps_to_metres(np.asarray(lats), np.asarray(lons)) if keep else np.zeros((0, 3))
    return keep, pos, skipped


def _images_in(folder: str | Path, what: str) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    found = list_images(folder)
    if not found:
        raise DatasetError(f"no images in {what} folder {folder}")
    return found


def load_folder(root: str | Path) -> PlaceSet:
    """A geotagged folder: every photo is database and query at once (leave-one-out).

    Photos without usable GPS are skipped and listed in ``skipped``; the file-name order is the
    order along the track (phones and cameras number shots in sequence).
    """
    root = Path(root).expanduser()
    paths = _images_in(root, "photo")
    keep, pos, skipped = _read_positions(paths, root)
    if not keep:
        raise DatasetError(f"no photo in {root} has usable GPS (EXIF, XMP or {SIDECAR_NAME})")
    paths = [paths[i] for i in keep]
    n = len(paths)
    return PlaceSet(
        root.name or str(root),
        paths,
        list(paths),
        pos,
        pos.copy(),
        q_same=np.arange(n),
        skipped=skipped,
    )


def load_pair(
    database: str | Path,
    queries: str | Path,
    *,
    frame_spacing_m: float | None = None,
    gt_csv: str | Path | None = None,
) -> PlaceSet:
    """database/ and queries/ folders; positions from GPS, from frame spacing, or none (gt only).

    With ``frame_spacing_m`` S, the i-th image of each folder (file-name order) sits at i*S metres
    on a line, so the 10 m / 25 m rules apply to image sequences without GPS. The same folder
    given twice is used leave-one-out.
    """
    database, queries = Path(database).expanduser(), Path(queries).expanduser()
    db_paths = _images_in(database, "database")
    q_paths = _images_in(queries, "queries")
    skipped: list[tuple[str, str]] = []
    db_pos = q_pos = None
    if frame_spacing_m is not None:
        if not (math.isfinite(frame_spacing_m) and frame_spacing_m > 0):
            raise DatasetError(
                f"--frame-spacing-m must be a positive number, got {frame_spacing_m}"
            )
        db_pos = np.arange(len(db_paths), dtype=np.float64)[:, None] * frame_spacing_m
        q_pos = np.arange(len(q_paths), dtype=np.float64)[:, None] * frame_spacing_m
    elif gt_csv is None:
        keep_db, db_pos, skip_db = _read_positions(db_paths, database)
        keep_q, q_pos, skip_q = _read_positions(q_paths, queries)
        db_paths = [db_paths[i] for i in keep_db]
        q_paths = [q_paths[i] for i in keep_q]
        skipped = skip_db + skip_q
        if not db_paths or not q_paths:
            which = "database" if not db_paths else "query"
            raise DatasetError(
                f"no {which} photo has usable GPS; give --frame-spacing-m for an image sequence, "
                "or --gt for index ground truth"
            )
    db_index = {p.resolve(): i for i, p in enumerate(db_paths)}
    q_same = np.array([db_index.get(p.resolve(), -1) for p in q_paths], dtype=np.int64)
    q_gt = read_gt_csv(gt_csv, db_paths, q_paths) if gt_csv is not None else None
    return PlaceSet(
        f"{database.name}+{queries.name}",
        db_paths,
        q_paths,
        db_pos,
        q_pos,
        q_gt=q_gt,
        q_same=q_same,
        skipped=skipped,
    )


def read_gt_csv(
    path: str | Path, db_paths: Sequence[Path], q_paths: Sequence[Path]
) -> list[np.ndarray]:
    """Index ground truth: a header row, then ``query,ref1;ref2;…`` relative to the CSV's folder.

    Returns the correct database indices of every query in ``q_paths`` (each must be listed).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"ground-truth file not found: {path}")
    base = path.parent
    db_index = {Path(p).resolve(): i for i, p in enumerate(db_paths)}
    q_index = {Path(p).resolve(): i for i, p in enumerate(q_paths)}
    gt: list[np.ndarray | None] = [None] * len(q_paths)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable ground truth ({exc})") from exc
    unknown_refs = 0
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise DatasetError(
                f"{path} line {line}: expected 2 columns (query, refs separated by ';')"
            )
        q = q_index.get((base / row[0].strip()).resolve())
        if q is None:
            continue  # a query this split does not use
        refs = []
        for ref in filter(None, (r.strip() for r in row[1].split(";"))):
            i = db_index.get((base / ref).resolve())
            if i is None:
                unknown_refs += 1
            else:
                refs.append(i)
        gt[q] = np.unique(np.asarray(refs, dtype=np.int64))
    missing = [str(q_paths[i]) for i, g in enumerate(gt) if g is None]
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} queries have no ground-truth row (first: {missing[0]})"
        )
    if unknown_refs:
        log.info("%s: %d references are not in this database and were ignored", path, unknown_refs)
    return gt  # type: ignore[return-value]


# --- geographic split -----------------------------------------------------------------------


def _track_coords(ps: PlaceSet) -> tuple[np.ndarray, np.ndarray]:
    """Position along the route in [0, 1): database order; queries follow their database match."""
    n = ps.num_db
    t_db = np.arange(n, dtype=np.float64) / max(n, 1)
    t_q = np.full(ps.num_queries, np.nan)
    same = ps.q_same >= 0
    t_q[same] = t_db[ps.q_same[same]]
    rest = np.flatnonzero(~same)
    if len(rest) and n:
        if ps.has_positions:
            _, nearest = cKDTree(ps.db_pos).query(ps.q_pos[rest])
            t_q[rest] = t_db[nearest]
        elif ps.q_gt is not None:
            for i in rest:
                if len(ps.q_gt[i]):
                    t_q[i] = float(np.mean(t_db[ps.q_gt[i]]))
    return t_db, t_q


def _grid_labels(ps: PlaceSet, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    if not ps.has_positions:
        raise DatasetError("a grid split needs positions (GPS, UTM or --frame-spacing-m)")
    plane = _plane(np.concatenate([ps.db_pos, ps.q_pos]))
    cells = np.floor(plane / cfg.cell_m).astype(np.int64)
    uniq, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    order = np.random.default_rng(cfg.seed).permutation(len(uniq))
    target = np.asarray(cfg.fractions) / sum(cfg.fractions) * len(plane)
    have = np.zeros(3)
    label = np.zeros(len(uniq), dtype=np.int64)
    for c in order:  # greedy: the split furthest below its share takes the next cell
        s = int(np.argmax(target - have))
        label[c] = s
        have[s] += counts[c]
    lab = label[inverse.reshape(-1)]
    return lab[: ps.num_db], lab[ps.num_db :]


def split_set(ps: PlaceSet, cfg: SplitConfig) -> dict[str, PlaceSet]:
    """``{"train", "val", "test"}`` subsets of ``ps`` by geography (see :class:`SplitConfig`)."""
    if cfg.method == "grid":
        lab_db, lab_q = _grid_labels(ps, cfg)
    else:
        t_db, t_q = _track_coords(ps)
        cuts = np.cumsum(cfg.fractions) / sum(cfg.fractions)
        lab_db = np.searchsorted(cuts, t_db, side="right").clip(0, 2)
        lab_q = np.where(np.isnan(t_q), -1, np.searchsorted(cuts, np.nan_to_num(t_q), side="right"))
        lab_q = np.where(lab_q >= 0, lab_q.clip(0, 2), -1)
    keep_db = np.ones(ps.num_db, dtype=bool)
    keep_q = lab_q >= 0
    if cfg.gap_m > 0 and ps.has_positions:
        train_pts = np.concatenate([ps.db_pos[lab_db == 0], ps.q_pos[lab_q == 0]])
        if len(train_pts):
            tree = cKDTree(train_pts)
            d_db, _ = tree.query(ps.db_pos, distance_upper_bound=cfg.gap_m * (1 + 1e-9))
            d_q, _ = tree.query(ps.q_pos, distance_upper_bound=cfg.gap_m * (1 + 1e-9))
            keep_db &= (lab_db == 0) | ~np.isfinite(d_db)
            keep_q &= (lab_q == 0) | ~np.isfinite(d_q)
    dropped = int((~keep_db).sum() + (~keep_q).sum())
    if dropped:
        log.info(
            "%s: %d images within %.0f m of the training split left out",
            ps.name,
            dropped,
            cfg.gap_m,
        )
    out: dict[str, PlaceSet] = {}
    for s, name in enumerate(SPLITS):
        db_idx = np.flatnonzero(keep_db & (lab_db == s))
        q_idx = np.flatnonzero(keep_q & (lab_q == s))
        if ps.queries_are_db and name != "train":
            # Its own queries: every query_every-th photo asks, the others answer.
            picked = db_idx[cfg.query_every // 2 :: cfg.query_every]
            q_idx = np.asarray(
                [i for i in np.flatnonzero(np.isin(ps.q_same, picked)) if keep_q[i]], dtype=np.int64
            )
            db_idx = np.setdiff1d(db_idx, picked)
            sub = ps.subset(db_idx, q_idx, f"{ps.name}/{name}")
            sub.q_same = np.full(len(q_idx), -1, dtype=np.int64)
        else:
            sub = ps.subset(db_idx, q_idx, f"{ps.name}/{name}")
        out[name] = sub
    return out


# --- what a command names -------------------------------------------------------------------


def load_spec(spec: DataSpec) -> PlaceSet:
    """The set a :class:`~netvlad_gui.core.trainconfig.DataSpec` names, read from its files."""
    kind = spec.kind
    if kind == "folder":
        if spec.gt or spec.frame_spacing_m is not None:
            raise DatasetError("--gt and --frame-spacing-m go with --database/--queries")
        return load_folder(spec.data)
    if kind == "pair":
        if not (spec.database and spec.queries):
            raise DatasetError("--database and --queries go together")
        return load_pair(
            spec.database, spec.queries, frame_spacing_m=spec.frame_spacing_m, gt_csv=spec.gt
        )
    if not spec.image_root:
        raise DatasetError(
            "--dbstruct needs --image-root DIR (the folder the file names are under)"
        )
    from .dbstruct import load_dbstruct

    return load_dbstruct(spec.dbstruct, spec.image_root)


def select(ps: PlaceSet, which: str, cfg: SplitConfig | None) -> PlaceSet:
    """One split of ``ps`` (``all``, or ``train``/``val``/``test`` by ``cfg``)."""
    if which == "all":
        return ps
    if which not in SPLITS:
        raise DatasetError(f"split must be one of all, {', '.join(SPLITS)}; got {which!r}")
    if cfg is None:
        raise DatasetError(f"split {which!r} needs split fractions")
    return split_set(ps, cfg)[which]


def eval_set(
    ps: PlaceSet, which: str | None, cfg: SplitConfig, default: str
) -> tuple[PlaceSet, str]:
    """The set ``eval`` measures, and a note ("" if none) when it is not the split asked for.

    ``which`` is the split the user named (None: ``default``). A folder too small for its default
    test split (a handful of places, as a library just trained on) is measured whole instead,
    leave-one-out: every photo asks, its own file is never a match. The note says so, because
    that set includes the photos a model was trained on.
    """
    chosen = select(ps, which or default, cfg)
    if chosen.num_db and chosen.num_queries:
        return chosen, ""
    if which is None and default != "all" and ps.queries_are_db and ps.num_db > 1:
        return ps, (
            f"the {default} split of {ps.name} has {chosen.num_queries} queries and "
            f"{chosen.num_db} database images, too few to measure: measured all "
            f"{ps.num_db} photos leave-one-out instead (each photo's own file excluded; this "
            "includes any photos a model was trained on)"
        )
    raise DatasetError(
        f"{chosen.name}: no database or no query images to evaluate "
        f"({chosen.num_db} database, {chosen.num_queries} queries); try --split all"
    )
