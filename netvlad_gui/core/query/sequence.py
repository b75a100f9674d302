"""Photos located together: the most likely track through each photo's candidates.

Photos taken one after another cannot be far apart, and that constraint is evidence no single
photo has: at night a photo's best match is often wrong while the track through its neighbours'
matches is right. The model (core/query/track.py) is a hidden Markov model whose state is a
pair of places (the previous photo's and this one's), so it carries a velocity: from one photo
to the next the track keeps its step, give or take ``jitter_m`` (SeqSLAM's constant-velocity
assumption, here in metres on the references' GPS, so it needs no reference order), a step may
not exceed what the time between the photos allows (``speed_mps``, or ``untimed_step_m`` in
file order), standing still costs ``stay_penalty``, and with probability ``restart`` the track
breaks. Emissions are each photo's similarity to every reference in play (its candidates, its
neighbours' and the references near them), less the reference's hubness (its similarity to
other places: night photos all resemble a few references), over ``temperature``.
Forward-backward gives each photo the probability of each place and of a break before it.

Why this model (benchmarks/sequence.py on gardens_point, night photos against day, default
model, synthetic GPS 3 m per frame, file order; Recall@1, groups of 10 photos; README
"Sequences"):

- single photos: 0.70 (day_right), 0.55 (day_left);
- SeqSLAM's diagonal (one constant velocity along the references' order, whole group):
  0.95 and 0.75, and shuffled photos collapse to 0.08-0.16 (it always finds a diagonal);
- a first-order HMM (distance between consecutive places only): 0.80 and 0.58;
- this model: 1.00 and 0.89 (0.91 in groups of 20), shuffled photos exactly as single photos.

Where the session has verified a photo's candidates, each gains ``inlier_weight`` nats per
patch inlier above the photo's own floor (:func:`inlier_gain`): with them the session
(benchmarks/sequence_session.py) locates day_left's night photos in groups of 10 at 0.97 and
day_right's at 1.00, where the descriptors' best track for ten of day_left's photos lies 4
frames off.

A track is only believed when it explains the photos better than unrelated places would by
``min_evidence`` nats (its log marginal likelihood against each photo anywhere; shuffled
photos score below, true groups of 10 above), and a photo is decided with its neighbours only
where at least ``min_support`` others on its unbroken stretch of track have the track's place
for them among their own ``support_top`` candidates (within ``agree_radius_m``). Otherwise, and
for a photo alone, the outcome is the photo's own answer, unchanged, with the reason. numpy
only: no torch, no faiss. 1.4 CPU ms per photo for K = 20 (3-5 ms wall on a loaded 2-core
machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import LocateConfig, SequenceConfig
from ..errors import NetvladError
from ..photos import geo
from .track import Model, Window, step_reach

#: The most references one window of photos considers (the best by similarity are kept): with
#: track.MAX_NEIGHBOURS it bounds the work per photo.
MAX_STATES = 400

ALONE = "located alone: no neighbouring photo"
NO_GPS = "located alone: none of its candidates has GPS"
TOO_FEW = "located alone: {n} of its neighbours agree, fewer than {need}"
NO_TRACK = "located alone: in this order the photos fit one track no better than unrelated places"
BROKEN = "located alone: its neighbours' track does not pass here"


class SequenceError(NetvladError, ValueError):
    """Candidates or references that cannot be located as a sequence (mismatched arrays…)."""


@dataclass
class PhotoCandidates:
    """One photo's own answer: its candidates in the order that decided it (best first).

    ``inliers`` (optional) is each candidate's geometric check: its inlier count, NaN where it
    was not checked (see :func:`inlier_gain`); ``descriptor`` (optional) lets the model score
    references that are not among this photo's candidates; ``time_s`` is its capture time in
    seconds (any origin), None in file order.
    """

    ids: np.ndarray
    scores: np.ndarray
    inliers: np.ndarray | None = None
    descriptor: np.ndarray | None = None
    time_s: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.ids.shape != self.scores.shape:
            raise SequenceError(
                f"{self.name or 'a photo'}: {len(self.ids)} candidates but "
                f"{len(self.scores)} scores"
            )
        if not np.isfinite(self.scores).all():
            raise SequenceError(f"{self.name or 'a photo'}: a candidate's score is not a number")
        if self.inliers is not None:
            self.inliers = np.asarray(self.inliers, dtype=np.float64).reshape(-1)
            if self.inliers.shape != self.ids.shape:
                raise SequenceError(f"{self.name or 'a photo'}: inliers for the wrong candidates")
            if (self.inliers < 0).any():
                raise SequenceError(f"{self.name or 'a photo'}: a negative inlier count")
        if self.descriptor is not None:
            self.descriptor = np.asarray(self.descriptor, dtype=np.float32).reshape(-1)


class ReferenceInfo:
    """What the track model knows of the library's references, by id.

    ``lat``/``lon`` (NaN where a reference has no GPS: it can be no place of a track),
    optionally ``order`` (a reference's position in a sequence of its own, by capture time or
    file order; NaN where none: neighbours in that order are brought into play beside
    neighbours on the map) and ``descriptors`` (ids -> (n, D) float32 rows, e.g. from the
    index's store) to score references a photo did not list, and ``hubness`` (an array, or
    ids -> values computed once per reference as they come into play; see :func:`hubness`):
    how much a reference resembles other places, taken off every photo's similarity to it.
    """

    def __init__(
        self,
        ids: Sequence[int] | np.ndarray,
        lat: Sequence[float] | np.ndarray,
        lon: Sequence[float] | np.ndarray,
        *,
        order: Sequence[float] | np.ndarray | None = None,
        descriptors: Callable[[np.ndarray], np.ndarray] | None = None,
        hubness: Sequence[float] | np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        self.lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if not len(self.ids) == len(self.lat) == len(self.lon):
            raise SequenceError("reference ids, latitudes and longitudes differ in length")
        if len(np.unique(self.ids)) != len(self.ids):
            raise SequenceError("reference ids repeat")
        bad = ~(np.abs(self.lat) <= 90) | ~(np.abs(self.lon) <= 180)
        self.lat[bad] = self.lon[bad] = np.nan  # no GPS (NaN, or impossible): never a place
        self.order = None
        if order is not None:
            self.order = np.asarray(order, dtype=np.float64).reshape(-1)
            if self.order.shape != self.ids.shape:
                raise SequenceError("reference order has the wrong length")
        self.descriptors = descriptors
        self._hub_of = hubness if callable(hubness) else None
        self._hub = None
        if hubness is not None and not callable(hubness):
            self._hub = np.nan_to_num(np.asarray(hubness, dtype=np.float64).reshape(-1))
            if self._hub.shape != self.ids.shape:
                raise SequenceError("reference hubness has the wrong length")
        elif callable(hubness):  # computed for the references in play, once each
            self._hub = np.full(len(self.ids), np.nan)
        self._sort = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._sort]
        self._tree: geo.GeoNeighbours | None = None
        self._gps_rows: np.ndarray | None = None
        self._by_order: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def hubness(self, rows: np.ndarray) -> np.ndarray | None:
        """The hubness of these rows (0 where unknown); None when none was given."""
        if self._hub is None:
            return None
        if self._hub_of is not None:
            todo = np.unique(rows[np.isnan(self._hub[rows])])
            if len(todo):
                values = np.asarray(self._hub_of(self.ids[todo]), dtype=np.float64)
                self._hub[todo] = np.nan_to_num(values.reshape(-1))
        return np.nan_to_num(self._hub[rows])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in these arrays, -1 for an id not known."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, max(len(self._sorted_ids) - 1, 0))
        found = len(self._sorted_ids) > 0
        ok = found & (self._sorted_ids[pos] == ids) if found else np.zeros(ids.shape, bool)
        return np.where(ok, self._sort[pos] if found else -1, -1)

    def has_gps(self, rows: np.ndarray) -> np.ndarray:
        return (rows >= 0) & np.isfinite(self.lat[rows]) & np.isfinite(self.lon[rows])

    def near(self, rows: np.ndarray, radius_m: float) -> np.ndarray:
        """Rows with GPS within ``radius_m`` of any of ``rows`` (themselves included)."""
        rows = rows[self.has_gps(rows)]
        if not len(rows):
            return rows
        if self._tree is None:
            self._gps_rows = np.flatnonzero(np.isfinite(self.lat) & np.isfinite(self.lon))
            self._tree = geo.GeoNeighbours(self.lat[self._gps_rows], self.lon[self._gps_rows])
        found = self._tree.query_many(self.lat[rows], self.lon[rows], radius_m)
        return np.unique(self._gps_rows[np.concatenate(found)])

    def in_order(self, rows: np.ndarray, reach: int) -> np.ndarray:
        """Rows up to ``reach`` positions before or after each of ``rows`` in the references'
        own order (none without an order)."""
        if self.order is None or reach <= 0:
            return np.zeros(0, np.int64)
        if self._by_order is None:
            have = np.flatnonzero(np.isfinite(self.order))
            self._by_order = have[np.argsort(self.order[have], kind="stable")]
        rank = np.full(len(self.ids), -1, np.int64)
        rank[self._by_order] = np.arange(len(self._by_order))
        r = rank[rows]
        r = r[r >= 0]
        if not len(r):
            return np.zeros(0, np.int64)
        near = (r[:, None] + np.arange(-reach, reach + 1)[None, :]).reshape(-1)
        near = near[(near >= 0) & (near < len(self._by_order))]
        return np.unique(self._by_order[near])


def hubness(
    descriptors: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    pool: np.ndarray | None = None,
    pool_lat: np.ndarray | None = None,
    pool_lon: np.ndarray | None = None,
    far_m: float | None = None,
) -> np.ndarray:
    """Each reference's mean similarity to references of other places (farther than
    ``far_m``, default ``SequenceConfig.hub_far_m``): the library's own measure of how much a
    reference resembles everything.

    At night a few references score well with every photo ("hubs"), and a track that sits on
    them fits any order of photos; those are the references that resemble other places by day
    too (correlation 0.6-0.7 on gardens_point). ``pool`` (default: the references themselves)
    is what they are compared with; a random sample of a large library will do. NaN where a
    reference has no GPS or no pool member is far enough.
    """
    far_m = SequenceConfig().hub_far_m if far_m is None else float(far_m)
    desc = np.asarray(descriptors, dtype=np.float32)
    if pool is None:
        pool, pool_lat, pool_lon = desc, lat, lon
    pool = np.asarray(pool, dtype=np.float32)
    sims = desc @ pool.T  # bulk work, once per reference: BLAS pays here
    far = geo.haversine_m(
        np.asarray(lat, float)[:, None],
        np.asarray(lon, float)[:, None],
        np.asarray(pool_lat, float)[None, :],
        np.asarray(pool_lon, float)[None, :],
    )
    far = np.asarray(far) > far_m  # NaN (no GPS) compares False: never "far"
    counts = far.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (sims * far).sum(axis=1) / counts, np.nan)


#: References sampled from a library to measure each reference's hubness against.
HUB_POOL = 2_000


def library_references(
    ids: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    descriptors: Callable[[np.ndarray], np.ndarray],
    *,
    order: np.ndarray | None = None,
    pool_size: int = HUB_POOL,
) -> ReferenceInfo:
    """A library's references as the track model sees them, with their hubness measured
    against a fixed sample of ``pool_size`` references with GPS (seed 0), each reference's
    only when it first comes into play: the session (together.py) and ``netvlad eval
    --sequence`` build them the same way, so that both measure one model."""
    ids = np.asarray(ids, dtype=np.int64)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    gps = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon))
    pool_rows = gps
    if len(gps) > pool_size:
        pool_rows = np.sort(np.random.default_rng(0).choice(gps, pool_size, replace=False))
    pool = descriptors(ids[pool_rows]) if len(pool_rows) else None
    row_of = {int(i): k for k, i in enumerate(ids)}

    def hub(wanted: np.ndarray) -> np.ndarray:
        if pool is None:
            return np.full(len(wanted), np.nan)
        k = np.array([row_of[int(i)] for i in wanted])
        return hubness(descriptors(wanted), lat[k], lon[k], pool, lat[pool_rows], lon[pool_rows])

    return ReferenceInfo(ids, lat, lon, order=order, descriptors=descriptors, hubness=hub)


@dataclass
class SequenceOutcome:
    """One photo's answer from the track: what the session's "sequence" stage carries.

    ``decided`` is False when the sequence gives no evidence here (a photo alone, neighbours
    that disagree, a broken track): ``ref_id`` is then the photo's own answer, ``reason`` says
    why. ``support`` counts the neighbours on the same stretch of track whose own candidates
    agree with it; ``probability`` is the track's belief in the place (0..1).
    """

    index: int  # position in the ordered group
    ref_id: int | None  # the place: a reference id (None: the photo had no candidate)
    own_ref_id: int | None  # the photo's own answer (its first candidate)
    decided: bool = False  # decided with its neighbours
    support: int = 0
    neighbours: int = 0  # photos on its unbroken stretch of track, itself excluded
    probability: float = 0.0
    changed: bool = False  # decided, and the place is not the photo's own answer
    lat: float | None = None
    lon: float | None = None
    reason: str = ""


def locate_sequence(
    photos: Sequence[PhotoCandidates],
    refs: ReferenceInfo,
    cfg: SequenceConfig | None = None,
    *,
    agree_radius_m: float | None = None,
) -> list[SequenceOutcome]:
    """Each photo's place on the most likely track through an ordered group of photos.

    ``photos`` are one group in capture (or file) order, already split where one trip is
    impossible (core/photos/capture.py). Groups longer than ``cfg.window`` are decided in
    overlapping windows, each photo in the window where it lies most central.
    """
    cfg = (cfg or SequenceConfig()).validate()
    agree = LocateConfig().agree_radius_m if agree_radius_m is None else float(agree_radius_m)
    n = len(photos)
    outcomes = [_alone(i, p, refs, ALONE) for i, p in enumerate(photos)]
    if n < 2:
        return outcomes
    for lo, hi, keep_lo, keep_hi in _windows(n, cfg.window):
        window = _window(photos[lo:hi], refs, cfg)
        if window is None:
            continue
        found = _track(window, cfg)
        if found is None:
            for k in range(keep_lo - lo, keep_hi - lo):
                outcomes[lo + k].reason = NO_TRACK
                outcomes[lo + k].neighbours = hi - lo - 1
            continue
        place, prob, broken = found
        for k in range(keep_lo - lo, keep_hi - lo):
            outcomes[lo + k] = _outcome(
                lo + k, k, photos[lo:hi], window, place, prob, broken, refs, cfg, agree
            )
    return outcomes


def _windows(n: int, size: int) -> list[tuple[int, int, int, int]]:
    """(start, end, keep_start, keep_end): overlapping windows; each photo kept once, from the
    window where it is most central."""
    if n <= size:
        return [(0, n, 0, n)]
    stride = max(1, size // 2)
    starts = list(range(0, n - size, stride)) + [n - size]
    out = []
    for k, s in enumerate(starts):
        keep_lo = 0 if k == 0 else (s + starts[k - 1] + size) // 2
        keep_hi = n if k == len(starts) - 1 else (starts[k + 1] + s + size) // 2
        if keep_hi > keep_lo:
            out.append((s, s + size, keep_lo, keep_hi))
    return out


def _alone(index: int, photo: PhotoCandidates, refs: ReferenceInfo, reason: str):
    own = int(photo.ids[0]) if len(photo.ids) else None
    out = SequenceOutcome(index, own, own, reason=reason)
    if own is not None:
        row = int(refs.rows(np.array([own]))[0])
        if row >= 0 and refs.has_gps(np.array([row]))[0]:
            out.lat, out.lon = float(refs.lat[row]), float(refs.lon[row])
    return out


def _window(
    photos: Sequence[PhotoCandidates], refs: ReferenceInfo, cfg: SequenceConfig
) -> Window | None:
    """The references in play for these photos and each photo's log-likelihood of each."""
    own = [refs.rows(p.ids[: cfg.candidates]) for p in photos]
    listed = np.unique(np.concatenate(own)) if own else np.zeros(0, np.int64)
    listed = listed[refs.has_gps(listed)] if len(listed) else listed
    if not len(listed):
        return None
    times = [p.time_s for p in photos]
    dt = None
    if all(t is not None and math.isfinite(t) for t in times):
        dt = np.abs(np.diff(np.asarray(times, dtype=np.float64)))
    reach = step_reach(cfg, dt)
    rows = np.union1d(listed, refs.near(listed, float(reach.max())))
    rows = np.union1d(rows, refs.in_order(listed, 2))
    rows = rows[refs.has_gps(rows)]
    scores = _scores(photos, refs, rows, cfg)
    hub = refs.hubness(rows)
    if hub is not None:
        scores = scores - cfg.hub_weight * hub[None, :]
    if len(rows) > MAX_STATES:  # keep what some photo scores best, and every listed candidate
        best = scores.max(axis=0) + np.isin(rows, listed) * 10.0
        keep = np.sort(np.argsort(-best, kind="stable")[:MAX_STATES])
        rows, scores = rows[keep], scores[:, keep]
    emit = (scores - scores.max(axis=1, keepdims=True)) / cfg.temperature
    for k, p in enumerate(photos):
        gain = inlier_gain(p.inliers, cfg)
        if gain is not None:
            where = np.searchsorted(rows, refs.rows(p.ids))
            where = np.minimum(where, len(rows) - 1)
            ok = rows[where] == refs.rows(p.ids)
            emit[k, where[ok]] += gain[ok]
    lat0, lon0 = float(np.mean(refs.lat[rows])), float(np.mean(refs.lon[rows]))
    k = geo.EARTH_RADIUS_M * math.pi / 180.0
    xy = np.stack(
        [
            (refs.lon[rows] - lon0) * k * math.cos(math.radians(lat0)),
            (refs.lat[rows] - lat0) * k,
        ],
        axis=1,
    )
    return Window(rows, xy, emit, dt)


#: A photo's inliers count only when at least this many of its candidates were checked: the
#: median of fewer is no measure of what unrelated places reach.
MIN_CHECKED = 3


def inlier_gain(inliers: np.ndarray | None, cfg: SequenceConfig) -> np.ndarray | None:
    """Log-likelihood each candidate gains from its geometric check: ``cfg.inlier_weight``
    nats per inlier above the photo's own floor (the median over its checked candidates), at
    most ``cfg.inlier_cap`` inliers' worth, 0 where unchecked or below; None when too few were
    checked.

    The floor is the photo's, not a fixed count, because what unrelated places reach depends
    on the photo: at night on gardens_point they reach 7-12 patch inliers and the right place
    15-18, by day 15-25 and 40 or more. Against the verdict's fixed scale (a logistic from
    ``min_inliers`` 20 to ``located_inliers`` 40) a night photo's 15-18 weighed almost
    nothing, and the track followed the descriptors 4 frames off (benchmarks/README
    "Sequences"). The cap keeps one photo's strong match from outvoting the trip: a place
    20 inliers above the floor is verified anyway, and strong wrong matches exist (repeated
    façades; gardens_point's night frames 179 and 183 are the same file).
    """
    if inliers is None:
        return None
    checked = np.isfinite(inliers)
    if checked.sum() < MIN_CHECKED:
        return None
    floor = float(np.median(inliers[checked]))
    above = np.clip(np.nan_to_num(inliers - floor, nan=0.0), 0.0, cfg.inlier_cap)
    return cfg.inlier_weight * above


def _scores(
    photos: Sequence[PhotoCandidates], refs: ReferenceInfo, rows: np.ndarray, cfg: SequenceConfig
) -> np.ndarray:
    """(w, u) similarity of each photo to each reference in play.

    With descriptors (the photo's and the references') every pair is scored; otherwise a
    reference a photo did not list gets the photo's lowest listed score, the most it can have.
    """
    if refs.descriptors is not None and all(p.descriptor is not None for p in photos):
        dense = np.asarray(refs.descriptors(refs.ids[rows]), dtype=np.float32)
        # einsum, not BLAS: a product this small gains nothing from threads, and OpenBLAS's
        # threads on a busy 2-core machine made it 50x slower (317 ms vs 6 ms, 10 x 100 x 6144).
        q = np.stack([p.descriptor for p in photos])
        return np.einsum("wd,ud->wu", q, dense).astype(np.float64)
    out = np.empty((len(photos), len(rows)), np.float64)
    for k, p in enumerate(photos):
        out[k] = p.scores.min() if len(p.scores) else 0.0
        own = refs.rows(p.ids)
        where = np.searchsorted(rows, own)
        where = np.minimum(where, len(rows) - 1)
        ok = (own >= 0) & (rows[where] == own)
        out[k, where[ok]] = p.scores[ok]
    return out


def _track(window: Window, cfg: SequenceConfig):
    """The window's track: (place, probability, break probability per photo), or None when
    one track explains the photos no better than unrelated places, by ``cfg.min_evidence``."""
    model = Model(window, cfg)
    alphas, steps, log_z = model.forward(window.emit, window.dt)
    if model.evidence(window.emit, log_z) < cfg.min_evidence:
        return None
    return model.posterior(window.emit, alphas, steps)


def _outcome(
    index: int,
    k: int,
    photos: Sequence[PhotoCandidates],
    window: Window,
    place: np.ndarray,
    prob: np.ndarray,
    broken: np.ndarray,
    refs: ReferenceInfo,
    cfg: SequenceConfig,
    agree: float,
) -> SequenceOutcome:
    """Photo ``k`` of the window: decided with its neighbours when enough of them agree."""
    photo = photos[k]
    out = _alone(index, photo, refs, "")
    # Its unbroken stretch: neighbours not separated from it by a likely break.
    lo = k
    while lo > 0 and broken[lo] < 0.5:
        lo -= 1
    hi = k
    while hi + 1 < len(photos) and broken[hi + 1] < 0.5:
        hi += 1
    others = [m for m in range(lo, hi + 1) if m != k]
    out.neighbours = len(others)
    if not others:
        out.reason = BROKEN if len(photos) > 1 else ALONE
        return out
    rows = window.rows
    support = 0
    for m in others:
        own = refs.rows(photos[m].ids[: cfg.support_top])
        own = own[refs.has_gps(own)] if len(own) else own
        if not len(own):
            continue
        r = rows[place[m]]
        if agree > 0:
            d = geo.haversine_m(refs.lat[r], refs.lon[r], refs.lat[own], refs.lon[own])
            support += bool(np.min(d) <= agree)
        else:
            support += bool(np.isin(r, own))
    out.support = support
    if support < cfg.min_support:
        out.reason = TOO_FEW.format(n=support, need=cfg.min_support)
        return out
    r = int(rows[place[k]])
    out.decided, out.probability = True, float(prob[k])
    out.ref_id = int(refs.ids[r])
    out.lat, out.lon = float(refs.lat[r]), float(refs.lon[r])
    out.changed = out.ref_id != out.own_ref_id
    return out
