"""Locate: the consensus rule on hand-made hits, and the real chain on lund_street."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from netvlad_gui.core.config import LocateConfig
from netvlad_gui.core.library.catalog import ImageRow
from netvlad_gui.core.library.index import SearchHit
from netvlad_gui.core.photos import geo
from netvlad_gui.core.query.locate import LocateResult, Match, predict

M_PER_DEG_LAT = 111_320.0


def _hit(i: int, score: float, north_m: float | None) -> SearchHit:
    lat = None if north_m is None else 55.7 + north_m / M_PER_DEG_LAT
    lon = None if north_m is None else 13.2
    row = ImageRow(i, f"{i}.jpg", 1, 0.0, lat, lon, None, "exif", "", "indexed", "", i)
    return SearchHit(i, score, row, Path(f"/lib/{i}.jpg"))


CAL = {"neg_median": 0.2, "neg_best_median": 0.3, "pos_best_median": 0.6}


def test_consensus_beats_a_lone_better_match():
    # One strong outlier 500 m away, three agreeing matches 0-20 m apart.
    hits = [_hit(0, 0.62, 500), _hit(1, 0.58, 0), _hit(2, 0.55, 10), _hit(3, 0.5, 20)]
    p = predict(hits, CAL)
    assert p.members == [1, 2, 3]
    w = [0.58 - 0.2, 0.55 - 0.2, 0.5 - 0.2]
    north = (0 * w[0] + 10 * w[1] + 20 * w[2]) / sum(w)
    assert geo.haversine_m(p.lat, p.lon, 55.7 + north / M_PER_DEG_LAT, 13.2) < 0.05
    agreement = sum(w) / (sum(w) + 0.62 - 0.2)
    distinct = (0.58 - 0.3) / (0.6 - 0.3)  # best agreeing score between the two levels
    assert p.confidence == pytest.approx(agreement * distinct, rel=1e-3)
    assert 10 <= p.radius_m < 25


def test_confidence_low_when_nothing_agrees_or_scores_are_background():
    scattered = [_hit(i, 0.55 - i * 0.01, i * 300) for i in range(5)]
    assert predict(scattered, CAL).confidence < 0.3
    background = [_hit(i, 0.31 - i * 0.005, i * 5) for i in range(5)]  # agree, but score like
    assert predict(background, CAL).confidence < 0.1  # a different place does


def test_no_gps_hits_give_no_prediction():
    assert predict([_hit(0, 0.9, None)], CAL) is None
    p = predict([_hit(0, 0.9, None), _hit(1, 0.5, 0)], CAL)
    assert p.members == [1]


def test_hits_30_to_40_m_apart_do_not_agree():
    # Within 25 m (NEGATIVE_RADIUS_M) two photos are one place; 30-40 m apart they are not, so
    # a lone best match wins over neighbours that would join it under a 50 m radius.
    hits = [_hit(0, 0.60, 0), _hit(1, 0.59, 35), _hit(2, 0.58, 70), _hit(3, 0.57, 105)]
    p = predict(hits, CAL)
    assert p.members == [0]
    assert geo.haversine_m(p.lat, p.lon, 55.7, 13.2) < 0.01
    w = [s - 0.2 for s in (0.60, 0.59, 0.58, 0.57)]
    assert p.confidence == pytest.approx(w[0] / sum(w) * (0.60 - 0.3) / (0.6 - 0.3), rel=1e-4)
    # 24 m apart they do agree (the radius is inclusive up to 25 m)
    near = predict([_hit(0, 0.60, 0), _hit(1, 0.59, 24), _hit(2, 0.58, 70)], CAL)
    assert near.members == [0, 1]
    wide = predict(hits, CAL, LocateConfig(agree_radius_m=40.0))
    assert wide.members == [0, 1, 2]  # the radius is the config's, not a constant


def test_confidence_without_calibration_is_agreement_halved():
    # A library without GPS pairs has no calibration: agreement alone, halved.
    agreeing = [_hit(0, 0.8, 0), _hit(1, 0.7, 5), _hit(2, 0.6, 10)]
    p = predict(agreeing, None)
    assert p.members == [0, 1, 2]
    assert p.confidence == pytest.approx(0.5, abs=1e-6)
    assert predict(agreeing, {}).confidence == pytest.approx(0.5, abs=1e-6)
    split = [_hit(0, 0.8, 0), _hit(1, 0.7, 5), _hit(2, 0.6, 500)]
    w = [0.8 - 0.55, 0.7 - 0.55, 0.6 - 0.55]  # floor: the lowest score - 0.05
    assert predict(split, None).confidence == pytest.approx(0.5 * (w[0] + w[1]) / sum(w), rel=1e-4)
    # the radius grows as confidence falls: 25 m x (1 - confidence) on top of the GPS noise
    assert p.radius_m == pytest.approx(10.0 + 25.0 * 0.5, rel=1e-3)


def test_confidence_with_negative_pairs_only():
    # Calibration from a library with different-place pairs only (no same-place pairs).
    neg_only = {"neg_median": 0.2, "neg_best_median": 0.3}
    agreeing = [_hit(0, 0.5, 0), _hit(1, 0.45, 5), _hit(2, 0.4, 10)]
    p = predict(agreeing, neg_only)
    assert p.confidence == pytest.approx((0.5 - 0.3) / (1.0 - 0.3) * 2.0, rel=1e-4)
    # a degenerate same-place level (not above the different-place one) is treated the same
    degenerate = neg_only | {"pos_best_median": 0.3}
    assert predict(agreeing, degenerate).confidence == pytest.approx(p.confidence, rel=1e-9)
    # scores like a different place: no confidence at all
    assert predict([_hit(0, 0.29, 0), _hit(1, 0.28, 5)], neg_only).confidence == 0.0


def test_min_score_drops_weak_hits_inclusively():
    # Three weak agreeing hits would outvote a strong lone one; min_score leaves them out.
    hits = [_hit(0, 0.55, 500), _hit(1, 0.45, 0), _hit(2, 0.44, 5), _hit(3, 0.43, 10)]
    assert predict(hits, CAL).members == [1, 2, 3]
    p = predict(hits, CAL, LocateConfig(min_score=0.5))
    assert p.members == [0]
    assert geo.haversine_m(p.lat, p.lon, 55.7 + 500 / M_PER_DEG_LAT, 13.2) < 0.01
    # a score equal to min_score is kept: the two hits at 0.45 outvote the lone 0.55 again
    level = [_hit(0, 0.55, 500), _hit(1, 0.45, 0), _hit(2, 0.45, 5), _hit(3, 0.43, 10)]
    assert predict(level, CAL, LocateConfig(min_score=0.45)).members == [1, 2]
    assert predict(hits, CAL, LocateConfig(min_score=0.6)) is None


def test_ties_go_to_the_better_ranked_hit():
    # Equal support at two places: the one ranked first (the search's order) wins, both ways.
    a, b = _hit(0, 0.5, 0), _hit(1, 0.5, 1000)
    p = predict([a, b], CAL)
    assert p.members == [0]
    assert geo.haversine_m(p.lat, p.lon, 55.7, 13.2) < 0.01
    b0, a1 = _hit(0, 0.5, 1000), _hit(1, 0.5, 0)
    p = predict([b0, a1], CAL)
    assert p.members == [0]
    assert geo.haversine_m(p.lat, p.lon, 55.7 + 1000 / M_PER_DEG_LAT, 13.2) < 0.01
    pairs = [_hit(0, 0.5, 0), _hit(1, 0.4, 5), _hit(2, 0.5, 800), _hit(3, 0.4, 805)]
    assert predict(pairs, CAL).members == [0, 1]


def test_json_contract_keys():
    r = LocateResult("q.jpg", 1.0, 2.0, 0.5, 12.0, None, matches=[Match(1, "a.jpg", 1, 2, 0.9, 3)])
    d = r.to_json()
    assert set(d) == {"query", "lat", "lon", "confidence", "radius_m", "error_m", "matches"}
    assert d["matches"] == [{"path": "a.jpg", "lat": 1, "lon": 2, "score": 0.9, "distance_m": 3}]


@pytest.fixture(scope="module")
def lund_index(shared_dir, tmp_path_factory):
    """Index lund_street's references with the shipped MobileNetV2 (the default model)."""
    idx = tmp_path_factory.mktemp("lund") / "index"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "index",
            str(shared_dir / "data/lund_street/references"),
            "--index",
            str(idx),
            "--json",
            "-q",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return idx, json.loads(out.stdout)


def test_end_to_end_lund(shared_dir, lund_index):
    idx, summary = lund_index
    assert summary["indexed"] == 19 and summary["with_gps"] == 19 and not summary["failed"]
    assert summary["model"] == "mobilenet_v2-netvlad"
    queries = shared_dir / "data/lund_street/queries"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "locate",
            str(queries),
            "--index",
            str(idx),
            "--json",
            "--top",
            "5",
            "-q",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == 5
    truth = {}
    for line in (shared_dir / "data/lund_street/gps.csv").read_text().splitlines()[1:]:
        f, lat, lon, _ = line.split(",")
        truth[f] = (float(lat), float(lon))
    hits_at_1 = 0
    for r in results:
        # issue 11's contract: the old keys, plus "verdict" per photo and "inliers" per match;
        # issue 21's "verdict_reason" (why, in words) and issue 22's "sequence" (null: alone)
        keys = {"query", "lat", "lon", "confidence", "radius_m", "error_m", "matches", "verdict"}
        assert set(r) == keys | {"verdict_reason", "sequence"} and r["verdict"] == "located"
        assert "matching points" in r["verdict_reason"] and r["sequence"] is None
        assert math.isfinite(r["error_m"]) and 0 <= r["confidence"] <= 1 and r["radius_m"] > 0
        assert len(r["matches"]) == 5
        # Verification (on by default) re-ranks the matches by inliers, so global scores are
        # no longer sorted; the order is tested in test_verify.py.
        assert len({m["path"] for m in r["matches"]}) == 5
        for m in r["matches"]:
            assert set(m) == {"path", "lat", "lon", "score", "distance_m", "inliers"}
            assert Path(m["path"]).exists()
        q = truth["queries/" + Path(r["query"]).name]
        assert geo.haversine_m(*q, r["lat"] - 0, r["lon"]) == pytest.approx(r["error_m"], abs=0.01)
        top = r["matches"][0]
        hits_at_1 += geo.haversine_m(*q, top["lat"], top["lon"]) <= 25
    assert hits_at_1 >= 4  # measured 5/5; a real model, so allow one miss


def test_photo_from_another_city_is_not_confident(shared_dir, lund_index):
    idx, _ = lund_index
    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin"
    bad = shared_dir / "data/exif/edge_cases/pillow/truncated_jpeg.jpg"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvlad_gui.cli",
            "locate",
            str(berlin),
            str(bad),
            "--index",
            str(idx),
            "--json",
            "-q",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == 4
    for r in results[:3]:
        assert r["confidence"] < 0.25, r
        assert r["error_m"] > 300_000  # Berlin is ~350 km from Lund
    assert "truncated" in results[3]["error"] and results[3]["lat"] is None


@pytest.mark.parametrize(
    ("metres", "decimals", "text"),
    [
        (3.04, 1, "3.0 m"),
        (999.9, 1, "999.9 m"),
        (999.96, 1, "1.0 km"),
        (353_912, 1, "353.9 km"),
        (42.4, 0, "42 m"),
        (1500, 0, "1.5 km"),
    ],
)
def test_format_distance(metres, decimals, text):
    assert geo.format_distance(metres, decimals) == text
