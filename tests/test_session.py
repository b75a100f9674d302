"""The locate session (issue 20): a photo's stages from one description, one search, one GPS read.

The global answer comes first and is provisional (no verdict) while the geometric check runs;
the verified answer is final, lists its matches in the order that decided it, and names as
match #1 the match whose inliers the verdict rests on.
"""

from __future__ import annotations

import pytest
from _lund import TEST_IMAGE_SIZE

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
from netvlad_gui.core.query.result import GLOBAL, VERIFIED
from netvlad_gui.core.query.verdict import LOCATED, NOT_FOUND

FAST = ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0)


@pytest.fixture(scope="module")
def session(lund_index):
    from netvlad_gui.core.query.session import open_session

    status, session = open_session(lund_index, FAST)
    assert status.ready and session is not None
    yield session
    session.close()


@pytest.fixture
def counted(session, monkeypatch):
    """Calls to the steps that must happen once per photo: describe, search, read the GPS."""
    from netvlad_gui.core.photos import geo
    from netvlad_gui.core.query import session as session_module

    calls = {"describe": 0, "search": 0, "gps": 0}
    loc = session.locator

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(loc, "describe", count("describe", loc.describe))
    monkeypatch.setattr(loc, "search", count("search", loc.search))
    monkeypatch.setattr(session_module.geo, "read_gps", count("gps", geo.read_gps))
    return calls


def test_stages_come_in_order_from_one_description_search_and_gps_read(session, counted, queries):
    stages = list(session.stages(queries / "02.jpg"))
    assert [s.stage for s in stages] == [GLOBAL, VERIFIED]
    assert [s.final for s in stages] == [False, True]
    assert counted == {"describe": 1, "search": 1, "gps": 1}
    quick, final = stages
    # the provisional stage never carries a verdict; the final one does, with the evidence
    assert quick.verdict is None and quick.provisional and not quick.verified
    assert all(m.inliers is None for m in quick.matches)
    assert final.verdict == LOCATED and final.verified and not final.provisional
    assert final.true_lat is not None and final.error_m < 25


def test_without_verification_the_one_stage_is_final(session, counted, queries):
    cfg = LocateConfig(verify=VerifyConfig(enabled=False))
    (only,) = session.stages(queries / "02.jpg", cfg)
    assert only.final and only.stage == GLOBAL and only.verdict is not None
    assert only.best_inliers is None
    assert counted == {"describe": 1, "search": 1, "gps": 1}


@pytest.mark.parametrize("name", ["02.jpg", "05.jpg", "08.jpg", "11.jpg", "14.jpg"])
def test_match_one_carries_the_best_inliers_the_verdict_rests_on(session, queries, name):
    """The header's "best match N points" is match #1's N (02.jpg once showed #1 22, #2 44)."""
    final = session.locate(queries / name)
    inliers = [m.inliers for m in final.matches]
    assert final.best_inliers == inliers[0] == max(n for n in inliers if n is not None)
    assert [m.rank for m in final.matches] == list(range(1, len(final.matches) + 1))
    assert final.matches[0].agrees  # the evidence is part of the predicted place


def test_a_far_away_photo_is_never_uncertain_on_its_way_to_not_found(lund_index_640, shared_dir):
    """At the default 640 px (at the tests' 320 px Berlin looks too much like Lund for the
    calibration to rule it out: its honest verdict there is uncertain)."""
    from netvlad_gui.core.query.session import open_session

    berlin = min((shared_dir / "data/exif/gps_photos/opensfm_berlin").glob("*.jpg"))
    _, session = open_session(lund_index_640, ExtractConfig(num_workers=0))
    try:
        quick, final = session.stages(berlin)
    finally:
        session.close()
    assert quick.verdict is None and quick.provisional  # no amber "Uncertain" while checking
    assert final.verdict == NOT_FOUND and final.guess


def test_stop_between_stages_ends_on_the_global_answer_and_says_so(session, queries):
    from netvlad_gui.core.query.session import STOPPED_BEFORE_CHECK

    stop = {"now": False}
    out = []
    for stage in session.stages(queries / "08.jpg", cancel=lambda: stop["now"]):
        out.append(stage)
        stop["now"] = True
    assert [s.final for s in out] == [False, True]
    assert out[1].stage == GLOBAL and not out[1].verified and out[1].verdict is not None
    assert out[1].verdict_reason.startswith(STOPPED_BEFORE_CHECK)


def test_an_unreadable_photo_gives_one_final_result_with_its_reason(session, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    (only,) = session.stages(bad)
    assert only.final and only.error and only.verdict is None and not only.provisional


def test_run_relays_every_stage_and_stops_between_photos(session, queries):
    paths = [queries / "02.jpg", queries / "05.jpg", queries / "08.jpg"]
    seen = []
    for i, res in session.run(paths, cancel=lambda: len(seen) >= 2):
        seen.append((i, res.final))
    # photo 0: both of its stages; the stop comes before photo 1 starts
    assert seen == [(0, False), (0, True)]


def test_nothing_verified_when_no_reference_photo_can_be_read(session, queries, monkeypatch):
    """Issue 23: after the library moved, "Located (verified)" came with every inlier null."""
    from netvlad_gui.core.query.answer import NO_REFERENCE_READ

    verifier = session.locator.verifier
    monkeypatch.setattr(verifier, "reference_features", lambda paths: [None] * len(paths))
    final = session.locate(queries / "02.jpg")
    assert not final.verified and final.verdict_reason.startswith(NO_REFERENCE_READ)
    assert all(m.inliers is None for m in final.matches)


def test_a_library_without_gps_shows_similar_photos_never_not_found(tmp_path):
    """Issue 23 item 7: corridor-like libraries have no GPS; "not in this library" was false."""
    from _library import build_small, make_library

    from netvlad_gui.core.query.answer import NO_GPS_LIBRARY
    from netvlad_gui.core.query.session import open_session
    from netvlad_gui.core.query.verdict import SIMILAR_ONLY
    from netvlad_gui.core.query.wording import NO_PLACE, coordinates_kind

    paths = make_library(tmp_path / "lib", 8, gps=False)
    build_small(tmp_path / "lib", tmp_path / "idx", init_images=8)
    cfg = ExtractConfig(image_size=96, num_workers=0, device="cpu")
    status, session = open_session(tmp_path / "idx", cfg)
    try:
        assert status.cannot_place
        for verify in (True, False):
            res = session.locate(paths[3], verify=verify)
            assert res.verdict == SIMILAR_ONLY and res.verdict_reason == NO_GPS_LIBRARY
            assert res.lat is None and coordinates_kind(res) == NO_PLACE and not res.guess
            assert res.matches and res.matches[0].path.endswith(paths[3].name)
            assert res.to_json(evidence=True)["verdict"] == "similar_only"
    finally:
        session.close()
