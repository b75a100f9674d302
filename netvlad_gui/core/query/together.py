"""The sequence stage of a session: photos of one trip located together (issue 22).

sequence.py finds the most likely track through a group's candidates; this module connects it
to a library and to the session's results: the references' positions, descriptors and hubness
from the index (read once per session, when a first group needs them), each photo's candidates
from its own answer, and each photo's final result from the track's outcome. A photo the track
cannot decide (alone, neighbours that disagree, a broken track) keeps its own answer exactly.
A decided photo takes the track's place; its verdict may rest on the neighbours' agreement when
its own evidence is weak, and its reason says so.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..config import LocateConfig, SequenceConfig
from ..library.catalog import INDEXED
from ..photos import geo
from ..photos.capture import natural_key
from .answer import Evidence
from .consensus import GPS_NOISE_M
from .result import SEQUENCE, LocateResult, Match, SequenceInfo
from .sequence import (
    PhotoCandidates,
    ReferenceInfo,
    SequenceOutcome,
    library_references,
    locate_sequence,
)
from .verdict import LOCATED, UNCERTAIN

log = logging.getLogger(__name__)

AGREES = "{own}; {support} of the {around} photos around it agree"
DECIDED = (
    "decided with its neighbours: {support} of the {around} photos around it agree on this "
    "place (its own evidence: {own})"
)
DISAGREES = (
    "its own evidence points elsewhere than its neighbours' track ({support} of {around} agree "
    "with the track)"
)


class References:
    """The library as the track model sees it, built on first use and kept for the session."""

    def __init__(self, index) -> None:
        self.index = index
        self._info: ReferenceInfo | None = None
        self._store_row: dict[int, int] = {}

    def info(self) -> ReferenceInfo:
        if self._info is None:
            self._info = self._build()
        return self._info

    def _build(self) -> ReferenceInfo:
        rows = [r for r in self.index.catalog.rows(INDEXED) if r.row is not None]
        rows.sort(key=lambda r: natural_key(r.path))  # the references' own order: file order
        ids = np.array([r.id for r in rows], np.int64)
        lat = np.array([r.lat if r.has_gps else np.nan for r in rows], np.float64)
        lon = np.array([r.lon if r.has_gps else np.nan for r in rows], np.float64)
        self._store_row = {r.id: r.row for r in rows}
        store = self.index.store()

        def descriptors(wanted: np.ndarray) -> np.ndarray:
            return store.read([self._store_row[int(i)] for i in wanted])

        order = np.arange(len(ids), dtype=np.float64)
        return library_references(ids, lat, lon, descriptors, order=order)


def candidates(
    ev: Evidence, descriptor: np.ndarray, time_s: float | None, name: str
) -> PhotoCandidates:
    """A photo's candidates for the track: its search hits with their scores and, where
    verified, their inlier counts."""
    hits = ev.hits
    inliers = np.full(len(hits), np.nan)
    for i, check in enumerate(ev.checks or []):
        if check is not None:
            inliers[i] = check.inliers
    return PhotoCandidates(
        ids=[h.id for h in hits],
        scores=[h.score for h in hits],
        inliers=inliers,
        descriptor=descriptor,
        time_s=time_s,
        name=name,
    )


def decide_group(photos: list[PhotoCandidates], refs: References, cfg: SequenceConfig):
    """The track's outcome for each photo of an ordered group (a photo alone: its own)."""
    return locate_sequence(photos, refs.info(), cfg)


def sequence_result(
    own: LocateResult,
    outcome: SequenceOutcome,
    group: int,
    descriptor: np.ndarray,
    refs: References,
    cfg: LocateConfig,
) -> LocateResult:
    """The photo's final result: its own answer, or the track's place where the track decided."""
    if not outcome.decided or outcome.lat is None:
        return own  # located alone: exactly its own answer
    res = dataclasses.replace(own, matches=list(own.matches), stage=SEQUENCE, final=True)
    res.sequence = SequenceInfo(
        group, outcome.index, outcome.support, outcome.neighbours, outcome.changed
    )
    words = {"support": outcome.support, "around": outcome.neighbours}
    if own.verdict == LOCATED:  # the photo's own evidence holds: the track can only agree
        own_here = own.lat is not None and (
            geo.haversine_m(own.lat, own.lon, outcome.lat, outcome.lon) <= cfg.agree_radius_m
        )
        if not own_here:  # geometry says one place, the neighbours another: say so
            res.verdict = UNCERTAIN
            res.verdict_reason = DISAGREES.format(**words)
            return res
        res.verdict_reason = AGREES.format(own=own.verdict_reason or own.verdict, **words)
        res.matches = _track_first(res.matches, outcome, descriptor, refs, res, cfg)
        return res
    # Weak evidence of its own (night, season, a texture-poor view): the track decides.
    res.lat, res.lon = outcome.lat, outcome.lon
    res.confidence = float(outcome.probability)
    res.radius_m = GPS_NOISE_M + cfg.agree_radius_m * (1.0 - res.confidence)
    res.error_m = None
    if res.true_lat is not None:
        res.error_m = float(geo.haversine_m(res.lat, res.lon, res.true_lat, res.true_lon))
    res.verdict = LOCATED if outcome.probability >= 0.5 else UNCERTAIN
    res.verdict_reason = DECIDED.format(own=own.verdict_reason or own.verdict or "none", **words)
    res.matches = _track_first(res.matches, outcome, descriptor, refs, res, cfg)
    return res


def _track_first(
    matches: list[Match],
    outcome: SequenceOutcome,
    descriptor: np.ndarray,
    refs: References,
    res: LocateResult,
    cfg: LocateConfig,
) -> list[Match]:
    """The matches with the track's reference first (added when the photo did not list it),
    their distances and agreement measured from the track's place."""
    lead = next((m for m in matches if m.id == outcome.ref_id), None)
    rest = [m for m in matches if m is not lead]
    if lead is None:
        row = refs.index.catalog.by_ids([outcome.ref_id]).get(outcome.ref_id)
        if row is None:
            return matches
        score = float(refs.info().descriptors(np.array([outcome.ref_id]))[0] @ descriptor)
        path = (refs.index.library or Path(".")) / row.path
        lead = Match(0, str(path), row.lat, row.lon, score, None, row.id)
        rest = rest[: max(len(matches) - 1, 0)]
    out = []
    for rank, m in enumerate([lead, *rest], 1):
        m = dataclasses.replace(m, rank=rank)
        m.distance_m = None
        if m.lat is not None and m.lon is not None:
            m.distance_m = float(geo.haversine_m(m.lat, m.lon, res.lat, res.lon))
        m.agrees = m.distance_m is not None and m.distance_m <= cfg.agree_radius_m
        out.append(m)
    return out
