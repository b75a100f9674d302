"""Recall@N of queries located together: ``netvlad eval --sequence N`` (issue 22).

The queries, in capture order (else file name; core/photos/capture.py, which also splits them
where the time between two makes one trip impossible), are cut into groups of N consecutive
photos, and each group goes through the session's own track model
(core/query/sequence.locate_sequence, references and hubness built by the same
``library_references``) on each photo's global search candidates. A photo the track decides
ranks the track's reference first, then its own ranking; any other photo keeps its own
ranking. N = 1 is each photo alone: the single-photo figure, exactly.

The track needs the references' positions: GPS (metres on the sphere) or ``--frame-spacing-m``
(metres along a line), turned back into latitude and longitude here. The queries' positions
are the ground truth and are never used. There is no geometric evidence in this figure (the
session adds each candidate's inliers when it verifies), so it measures the track on the global
search alone. Sets whose queries are database photos (leave-one-out) or share their time
stamps are refused: the track scores every reference near a photo's candidates, the query's
own file among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import SequenceConfig
from ..errors import DatasetError
from ..photos.capture import natural_key, order_photos, read_capture_time
from ..photos.geo import EARTH_RADIUS_M
from ..query.sequence import PhotoCandidates, library_references, locate_sequence
from .placeset import PlaceSet

NO_POSITIONS = (
    "{name}: --sequence needs the database photos' positions: GPS, or --frame-spacing-m "
    "for an image sequence (with --gt too when the truth is by index)"
)
OWN_PHOTOS = (
    "{name}: --sequence needs queries apart from the database; here queries are database "
    "photos themselves (leave-one-out) or share their time stamps"
)


@dataclass
class SequenceRecall:
    """Recall@N of the queries located in groups of ``n`` consecutive photos."""

    n: int
    recalls: dict[int, float]
    decided: int = 0  # photos the track decided (the rest kept their own ranking)
    changed: int = 0  # decided, on a reference that was not the photo's own first
    order: str = ""  # capture time or file order (core/photos/capture.py)

    def to_json(self) -> dict:
        out: dict = {"n": self.n}
        out.update({f"recall@{k}": round(float(r), 6) for k, r in sorted(self.recalls.items())})
        out.update(decided=self.decided, changed=self.changed, order=self.order)
        return out


def check_sequence_set(ps: PlaceSet) -> None:
    """Raise DatasetError (one line) when ``ps`` cannot be measured as sequences."""
    if ps.db_pos is None:
        raise DatasetError(NO_POSITIONS.format(name=ps.source))
    if any(len(ps.excluded(q)) for q in range(ps.num_queries)):
        raise DatasetError(OWN_PHOTOS.format(name=ps.source))


def positions_to_latlon(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude of a set's positions in metres, distances kept.

    (N, 3): points on the earth's sphere (GPS, datasets.gps_to_metres), exactly; (N, 1) or
    (N, 2): metres on a line or a plane (frame spacing, UTM), laid around (0, 0), where a
    degree is the same length both ways to within 1e-4 over a few tens of kilometres.
    """
    pos = np.asarray(pos, dtype=np.float64)
    pos = pos[:, None] if pos.ndim == 1 else pos
    if pos.shape[1] == 3:
        r = np.linalg.norm(pos, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            lat = np.degrees(np.arcsin(np.clip(pos[:, 2] / r, -1.0, 1.0)))
        return lat, np.degrees(np.arctan2(pos[:, 1], pos[:, 0]))
    if pos.shape[1] not in (1, 2):
        raise DatasetError(f"positions of {pos.shape[1]} dimensions cannot be placed on a map")
    metres_per_degree = EARTH_RADIUS_M * math.pi / 180.0
    local = pos - np.nanmean(pos, axis=0) if len(pos) else pos
    lon = local[:, 0] / metres_per_degree
    lat = local[:, 1] / metres_per_degree if pos.shape[1] == 2 else np.zeros(len(pos))
    return lat, lon


def sequence_ranking(
    ps: PlaceSet,
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    good_db: np.ndarray,
    good_q: np.ndarray,
    ranked: np.ndarray,
    cfg: SequenceConfig,
) -> tuple[np.ndarray, int, int, str]:
    """Each readable query's ranking after its group's track: (ranked, decided, changed, order).

    ``ranked`` (len(good_q), K) holds database indices best first (-1 where fewer), as
    evaluate.search gives them; groups have ``cfg.eval_group`` photos.
    """
    cfg = cfg.validate()
    check_sequence_set(ps)
    lat, lon = positions_to_latlon(ps.db_pos[good_db])
    by_name = sorted(range(len(good_db)), key=lambda k: natural_key(str(ps.db_paths[good_db[k]])))
    file_rank = np.empty(len(good_db), np.float64)  # the references' own order: file order
    file_rank[by_name] = np.arange(len(good_db))
    refs = library_references(
        good_db, lat, lon, lambda ids: db_desc[np.asarray(ids, np.int64)], order=file_rank
    )
    names = [str(ps.q_paths[int(q)]) for q in good_q]
    ordering = order_photos(names, [read_capture_time(p) for p in names], None, cfg)
    q_good = q_desc[good_q]
    out = ranked.copy()
    decided = changed = 0
    for trip in ordering.groups:
        for lo in range(0, len(trip), cfg.eval_group):
            group = trip[lo : lo + cfg.eval_group]
            photos = [_candidates(k, ranked, db_desc, q_good, ordering.times, names) for k in group]
            for k, outcome in zip(group, locate_sequence(photos, refs, cfg), strict=True):
                if not outcome.decided or outcome.ref_id is None:
                    continue
                decided += 1
                changed += bool(outcome.changed)
                out[k] = _lead(ranked[k], outcome.ref_id)
    return out, decided, changed, ordering.by


def _candidates(
    k: int,
    ranked: np.ndarray,
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    times: Sequence[float | None],
    names: Sequence[str],
) -> PhotoCandidates:
    """Query ``k``'s search hits with their cosine similarities, as the session gives them."""
    ids = ranked[k][ranked[k] >= 0]
    scores = db_desc[ids] @ q_desc[k] if len(ids) else np.zeros(0)
    return PhotoCandidates(ids, scores, descriptor=q_desc[k], time_s=times[k], name=names[k])


def _lead(row: np.ndarray, ref: int) -> np.ndarray:
    """``row`` with ``ref`` first (added when the photo did not list it), same length."""
    rest = row[(row != ref) & (row >= 0)]
    new = np.full(len(row), -1, dtype=row.dtype)
    merged = np.concatenate([[ref], rest])[: len(row)]
    new[: len(merged)] = merged
    return new
