"""Locating photos together: a made walk whose single-photo answers are wrong is fixed by the
track; photos alone, unrelated photos and shuffled photos come out exactly as located alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netvlad_gui.core.config import SequenceConfig
from netvlad_gui.core.query.sequence import (
    ALONE,
    NO_GPS,
    NO_TRACK,
    PhotoCandidates,
    ReferenceInfo,
    SequenceError,
    _windows,
    hubness,
    inlier_gain,
    locate_sequence,
)

LAT0, LON0 = 55.7047, 13.1910  # Lund
SPACING_M = 5.0
N_REFS, DIM, K = 80, 64, 20


def east(metres: np.ndarray | float) -> np.ndarray:
    """Longitudes ``metres`` east of LON0 on the LAT0 parallel."""
    return LON0 + np.degrees(np.asarray(metres) / (6_371_008.8 * math.cos(math.radians(LAT0))))


class Street:
    """References every 5 m along a street, with random unit descriptors (ids 1000 + i)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        d = rng.normal(size=(N_REFS, DIM))
        self.desc = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
        self.ids = 1000 + np.arange(N_REFS)
        self.lat = np.full(N_REFS, LAT0)
        self.lon = east(SPACING_M * np.arange(N_REFS))
        self.rng = rng

    def refs(self, *, dense: bool = True, hub: bool = True) -> ReferenceInfo:
        return ReferenceInfo(
            self.ids,
            self.lat,
            self.lon,
            descriptors=(lambda ids: self.desc[np.asarray(ids) - 1000]) if dense else None,
            hubness=hubness(self.desc, self.lat, self.lon) if hub else None,
        )

    def photo(self, place: int, decoy: int | None = None, *, time_s=None) -> PhotoCandidates:
        """A photo of reference ``place``; with ``decoy``, it resembles that one more."""
        q = 0.5 * self.desc[place] + 0.05 * self.rng.normal(size=DIM)
        if decoy is not None:
            q += 0.6 * self.desc[decoy]
        q = (q / np.linalg.norm(q)).astype(np.float32)
        sims = self.desc @ q
        top = np.argsort(-sims, kind="stable")[:K]
        return PhotoCandidates(self.ids[top], sims[top], descriptor=q, time_s=time_s)


def walk(street: Street, start: int = 10, n: int = 10, decoys: dict | None = None, **kw):
    """Photos of consecutive places from ``start``; ``decoys`` maps photo -> a far place."""
    decoys = decoys or {}
    return [street.photo(start + t, decoys.get(t), **kw) for t in range(n)]


def places(outcomes) -> list[int]:
    return [o.ref_id - 1000 for o in outcomes]


def test_the_track_fixes_wrong_single_answers():
    street = Street()
    photos = walk(street, decoys={3: 70, 6: 2})
    assert [int(p.ids[0]) - 1000 for p in photos] == [10, 11, 12, 70, 14, 15, 2, 17, 18, 19]
    out = locate_sequence(photos, street.refs())
    assert places(out) == list(range(10, 20))
    assert all(o.decided and o.support >= 2 for o in out)
    assert [o.changed for o in out] == [t in (3, 6) for t in range(10)]
    assert out[3].own_ref_id == 1070 and out[3].lat == pytest.approx(LAT0)
    assert out[3].lon == pytest.approx(east(13 * SPACING_M))
    assert all(0 < o.probability <= 1 for o in out) and out[0].reason == ""


def test_without_descriptors_or_hubness_the_listed_scores_do():
    street = Street(1)
    photos = walk(street, decoys={2: 60, 7: 75})
    out = locate_sequence(photos, street.refs(dense=False, hub=False))
    assert places(out) == list(range(10, 20))


def test_capture_times_walking_pace():
    street = Street(2)
    # A step of 5 m every 3 s (1.7 m/s); the track may move 15 m/s x 3 s at most.
    photos = walk(street, decoys={4: 70}, time_s=None)
    for t, p in enumerate(photos):
        p.time_s = 1_700_000_000.0 + 3.0 * t
    assert places(locate_sequence(photos, street.refs())) == list(range(10, 20))


def test_a_walk_in_the_other_direction():
    street = Street(3)
    photos = walk(street, decoys={5: 3})[::-1]
    assert places(locate_sequence(photos, street.refs())) == list(range(19, 9, -1))


def test_a_long_group_is_decided_in_overlapping_windows():
    street = Street(4)
    photos = walk(street, start=5, n=27, decoys={1: 70, 13: 2, 24: 75})
    out = locate_sequence(photos, street.refs(), SequenceConfig(window=8))
    assert places(out) == list(range(5, 32))
    assert [o.index for o in out] == list(range(27))


@pytest.mark.parametrize(("n", "size"), [(5, 10), (10, 10), (11, 10), (27, 8), (100, 10)])
def test_windows_keep_every_photo_once(n, size):
    kept = []
    for lo, hi, keep_lo, keep_hi in _windows(n, size):
        assert 0 <= lo <= keep_lo < keep_hi <= hi <= n and hi - lo == min(n, size)
        kept.extend(range(keep_lo, keep_hi))
    assert kept == list(range(n))


def test_a_photo_alone_is_unchanged():
    street = Street(5)
    photo = street.photo(12, decoy=70)
    (out,) = locate_sequence([photo], street.refs())
    assert out.ref_id == out.own_ref_id == 1070
    assert not out.decided and not out.changed and out.support == 0 and out.reason == ALONE


def test_unrelated_photos_are_unchanged():
    """Photos of places far apart along the street, in no trip order: each keeps its own answer."""
    street = Street(6)
    spots = [3, 60, 22, 75, 40, 9, 51, 30]
    photos = [
        street.photo(p, decoy=(p + 37) % N_REFS if i % 3 == 0 else None)
        for i, p in enumerate(spots)
    ]
    out = locate_sequence(photos, street.refs())
    assert [o.ref_id for o in out] == [int(p.ids[0]) for p in photos]
    assert not any(o.decided or o.changed for o in out)
    assert all(o.reason for o in out)


def test_shuffled_walk_is_unchanged():
    street = Street(7)
    photos = walk(street, decoys={3: 70, 6: 2})
    order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]
    shuffled = [photos[i] for i in order]
    out = locate_sequence(shuffled, street.refs())
    assert [o.ref_id for o in out] == [int(p.ids[0]) for p in shuffled]
    assert not any(o.changed for o in out)
    assert {o.reason for o in out} == {NO_TRACK}


def test_photos_of_another_city_stay_as_they_were():
    """Candidates with GPS far from each other (another city) give no track and no change."""
    street = Street(8)
    lat = street.lat.copy()
    lat[40:] += 2.0  # half the library 220 km north
    refs = ReferenceInfo(street.ids, lat, street.lon, descriptors=lambda i: street.desc[i - 1000])
    photos = [street.photo(p) for p in (5, 45, 6, 46, 7, 47)]
    out = locate_sequence(photos, refs)
    assert [o.ref_id for o in out] == [int(p.ids[0]) for p in photos]
    assert not any(o.changed for o in out)


def test_candidates_without_gps():
    street = Street(9)
    refs = ReferenceInfo(street.ids, np.full(N_REFS, np.nan), street.lon)
    out = locate_sequence(walk(street, n=4), refs)
    assert all(not o.decided and o.ref_id == o.own_ref_id for o in out)
    assert all(o.lat is None for o in out) and all(o.reason for o in out)
    assert NO_GPS  # the words exist for the fronts


def test_a_photo_without_candidates():
    street = Street(10)
    photos = walk(street, n=5)
    photos[2] = PhotoCandidates([], [])
    out = locate_sequence(photos, street.refs(dense=False))
    assert out[2].own_ref_id is None
    assert places([o for i, o in enumerate(out) if i != 2]) == [10, 11, 13, 14]


def test_bad_input_is_refused_in_words():
    with pytest.raises(SequenceError, match="3 candidates but 2 scores"):
        PhotoCandidates([1, 2, 3], [0.1, 0.2])
    with pytest.raises(SequenceError, match="not a number"):
        PhotoCandidates([1, 2], [0.1, float("nan")])
    with pytest.raises(SequenceError, match="repeat"):
        ReferenceInfo([1, 1], [0, 0], [1, 1])
    with pytest.raises(SequenceError, match="differ in length"):
        ReferenceInfo([1, 2], [0], [1, 1])


def test_hubness_marks_a_reference_that_resembles_everything():
    street = Street(11)
    desc = street.desc.copy()
    common = desc.mean(axis=0)
    desc[30] = (desc[30] + 8 * common) / np.linalg.norm(desc[30] + 8 * common)
    h = hubness(desc, street.lat, street.lon, far_m=20.0)
    assert int(np.argmax(h)) == 30
    lat = street.lat.copy()
    lat[5] = np.nan
    assert np.isnan(hubness(desc, lat, street.lon)[5])


def test_a_long_walk_end_to_end():
    street = Street(12)
    photos = walk(street, start=0, n=60, decoys={t: (t + 40) % N_REFS for t in range(2, 60, 7)})
    out = locate_sequence(photos, street.refs())
    assert places(out) == list(range(60))
    assert sum(o.changed for o in out) == len(range(2, 60, 7))


def test_hubness_computed_as_references_come_into_play():
    street = Street(13)
    asked: list[int] = []
    whole = hubness(street.desc, street.lat, street.lon)

    def lazily(ids):
        asked.extend(int(i) for i in ids)
        return whole[np.asarray(ids) - 1000]

    refs = ReferenceInfo(
        street.ids,
        street.lat,
        street.lon,
        descriptors=lambda i: street.desc[i - 1000],
        hubness=lazily,
    )
    photos = walk(street, decoys={3: 70, 6: 2})
    assert places(locate_sequence(photos, refs)) == list(range(10, 20))
    first = len(asked)
    assert first == len(set(asked)) > 0  # once each reference
    locate_sequence(photos, refs)
    assert len(asked) == first  # nothing asked again


def night_twins(street: Street, seed: int, supported: int = 0) -> list[PhotoCandidates]:
    """Night photos of places 10-19 that look as much like the place 4 on as like their own
    (gardens_point day_left), their first 10 candidates checked as at night: 7-12 inliers, 17 at
    the place ``supported`` frames from their own."""
    noise = np.random.default_rng(seed)
    photos = []
    for t in range(10, 20):
        q = street.desc[t] + street.desc[t + 4] + 0.1 * street.rng.normal(size=DIM)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        sims = street.desc @ q
        top = np.argsort(-sims, kind="stable")[:K]
        inliers = np.full(K, np.nan)
        inliers[:10] = noise.integers(7, 13, size=10)
        inliers[street.ids[top] == 1000 + t + supported] = 17
        photos.append(PhotoCandidates(street.ids[top], sims[top], inliers, q))
    return photos


def test_verified_evidence_decides_between_two_tracks():
    """A few inliers above what a photo's other candidates reach pick the track, whichever of
    two equally similar ones they support."""
    street = Street(5)
    refs = street.refs()
    assert places(locate_sequence(night_twins(street, 5, 0), refs)) == list(range(10, 20))
    assert places(locate_sequence(night_twins(street, 5, 4), refs)) == list(range(14, 24))


def test_inlier_gain_counts_from_the_photos_own_floor():
    cfg = SequenceConfig(inlier_weight=0.5, inlier_cap=20)
    nan = float("nan")
    gain = inlier_gain(np.array([9, 8, 17, 10, 60, nan, 3.0]), cfg)
    # floor: the median of the six checked (3, 8, 9, 10, 17, 60 -> 9.5); unchecked gains nothing
    assert gain == pytest.approx([0, 0, 0.5 * 7.5, 0.25, 0.5 * 20, 0, 0])
    assert inlier_gain(np.array([40.0, 12.0, nan]), cfg) is None  # two checked: no floor
    assert inlier_gain(None, cfg) is None
    with pytest.raises(SequenceError, match="negative inlier"):
        PhotoCandidates([1, 2], [0.5, 0.4], inliers=[3, -1])


def test_strong_wrong_matches_do_not_outvote_the_trip():
    """Two night photos whose checks find 130 inliers at a place 30 m behind (the same view
    twice; gardens_point's night frames 179 and 183 are one file): capped at ``inlier_cap``,
    the trip still decides every photo on the track; uncapped, it did not."""
    street = Street(1)
    photos = night_twins(street, 1)
    for t in (4, 5):
        p, wrong = photos[t], 1000 + 10 + t - 6
        if wrong not in p.ids:
            p.ids[9] = wrong
        p.inliers[p.ids == wrong] = 130
    refs = street.refs()
    out = locate_sequence(photos, refs)
    assert places(out) == list(range(10, 20)) and all(o.decided for o in out)
    uncapped = locate_sequence(photos, refs, SequenceConfig(inlier_cap=100_000))
    assert places(uncapped) != list(range(10, 20)) or not all(o.decided for o in uncapped)


@pytest.mark.parametrize("seed", range(3))
def test_a_sparse_walk_keeps_its_own_answers(seed):
    """Ten photos of one street in walk order but 5-200 m apart (a folder without times): no
    steady pace fits them, so the track must not move a photo off its own (right) answer."""
    street = Street(seed)
    rng = np.random.default_rng(seed)
    spots = np.sort(rng.choice(np.arange(2, 75), 10, replace=False))
    photos = []
    for t in spots:
        p = street.photo(int(t))
        p.inliers = np.full(len(p.ids), np.nan)
        p.inliers[:10] = rng.integers(7, 13, 10)
        p.inliers[p.ids == 1000 + t] = 17
        photos.append(p)
    assert [int(p.ids[0]) - 1000 for p in photos] == list(spots)
    assert places(locate_sequence(photos, street.refs())) == list(spots)
