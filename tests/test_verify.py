"""Geometric verification, the verdict rules, and the Locator's verified results (no network)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerdictConfig, VerifyConfig
from netvlad_gui.core.errors import ConfigError
from netvlad_gui.core.library.catalog import ImageRow
from netvlad_gui.core.library.index import SearchHit
from netvlad_gui.core.photos.light import Light, measure_light
from netvlad_gui.core.query.verdict import (
    LOCATED,
    NOT_FOUND,
    UNCERTAIN,
    Evidence,
    calibrated_similarity,
    decide,
    inlier_evidence,
    light_change,
    predict_verified,
)
from netvlad_gui.core.query.verify import Verifier, oriented_size, rerank

M_PER_DEG_LAT = 111_320.0
CFG = VerifyConfig(min_inliers=15, located_inliers=30)  # the made-up cases below use these
LCFG = LocateConfig(verify=CFG)


# -- image pairs made for the purpose ----------------------------------------------------------
@pytest.fixture(scope="module")
def warped_pair(shared_dir, tmp_path_factory):
    """A lund photo and a perspective-warped copy; H maps the original's pixels to the copy's."""
    src = shared_dir / "data/lund_street/references/06.jpg"
    img = cv2.imread(str(src))
    h, w = img.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = np.float32([[60, 30], [w - 20, 70], [w - 90, h - 10], [30, h - 60]])
    hom = cv2.getPerspectiveTransform(corners, moved)
    warped = cv2.warpPerspective(img, hom, (w, h))
    out = tmp_path_factory.mktemp("warp") / "warped.jpg"
    cv2.imwrite(str(out), warped, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return src, out, hom


def _reprojection_px(v, hom) -> np.ndarray:
    """Distance of each reference point from where H^-1 sends its query point (original px)."""
    back = cv2.perspectiveTransform(v.query_xy.reshape(-1, 1, 2), np.linalg.inv(hom)).reshape(-1, 2)
    return np.linalg.norm(back - v.ref_xy, axis=1)


def test_warped_copy_verifies_with_many_inliers_sift(warped_pair):
    src, warped, hom = warped_pair
    verifier = Verifier(None, ExtractConfig(), VerifyConfig.for_features("sift"))
    (v,) = verifier.verify_paths(warped, [src])
    assert v.inliers >= 100, v.inliers
    assert v.query_xy.shape == v.ref_xy.shape == (v.inliers, 2)
    # Correspondences are in the original photos' pixels (1024x768), not the working size.
    assert np.median(_reprojection_px(v, hom)) < 4.0
    assert v.ref_xy[:, 0].max() > 600


def test_warped_copy_verifies_with_many_inliers_patch(warped_pair):
    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.model.network import build_model

    src, warped, hom = warped_pair
    model = build_model(ModelConfig(), progress=False)
    verifier = Verifier(model, ExtractConfig(image_size=320), VerifyConfig(features="patch"))
    (v,) = verifier.verify_paths(warped, [src])
    assert v.inliers >= 60, v.inliers  # 20x15 cells at 320 px
    # Cell centres are 16 working px (51 original px) apart: agreement to within a cell.
    assert np.median(_reprojection_px(v, hom)) < 51


def test_unrelated_photos_do_not_verify(shared_dir):
    lund = shared_dir / "data/lund_street/references/06.jpg"
    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin/01.jpg"
    portland = shared_dir / "data/exif/gps_photos/mapillary_tools/DSC00001.JPG"
    cfg = VerifyConfig.for_features("sift")
    verifier = Verifier(None, ExtractConfig(), cfg)
    for v in verifier.verify_paths(lund, [berlin, portland]):
        assert v.inliers < cfg.min_inliers, v.inliers


@pytest.fixture(scope="module")
def patch_verifier():
    """The default verifier (the model's own patches) with the shipped model, at 640 px."""
    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.model.network import build_model

    model = build_model(ModelConfig(), progress=False)
    return Verifier(model, ExtractConfig(precision="fp32"), VerifyConfig())


def _night_copy(src: Path, out: Path) -> Path:
    """``src`` as if taken at night a step aside: 5x darker with crushed shadows, a sodium-lamp
    orange cast, sensor noise, and the frame shifted 8 % right and 5 % down."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    img = img.crop((int(0.08 * w), int(0.05 * h), w, h)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, np.float32) / 255.0
    arr = 0.2 * arr**2.2 * np.array([1.3, 1.0, 0.6], np.float32)
    arr = arr + np.random.default_rng(1).normal(0.0, 0.01, arr.shape)
    Image.fromarray((np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)).save(out, quality=90)
    return out


def test_a_darkened_retoned_shifted_copy_verifies_with_patches(
    shared_dir, tmp_path, patch_verifier
):
    """Issue 21: the default verifier finds the place through a change of light and a step
    aside; SIFT, blind in the dark, finds much less on the same pair."""
    src = shared_dir / "data/lund_street/references/09.jpg"
    night = _night_copy(src, tmp_path / "night.jpg")
    (v,) = patch_verifier.verify_paths(night, [src])
    assert v.inliers >= VerifyConfig().located_inliers, v.inliers
    sift = Verifier(None, ExtractConfig(), VerifyConfig.for_features("sift"))
    (s,) = sift.verify_paths(night, [src])
    assert s.inliers < v.inliers, (s.inliers, v.inliers)


def test_unrelated_photos_do_not_verify_with_patches(shared_dir, tmp_path, patch_verifier):
    lund = shared_dir / "data/lund_street/references/06.jpg"
    far = [
        shared_dir / "data/exif/gps_photos/opensfm_berlin/01.jpg",
        shared_dir / "data/exif/gps_photos/mapillary_tools/DSC00001.JPG",
    ]
    for v in patch_verifier.verify_paths(lund, far):
        assert v.inliers < VerifyConfig().min_inliers, v.inliers
    # nor does a darkened photo of one place verify against another city
    night = _night_copy(lund, tmp_path / "night.jpg")
    for v in patch_verifier.verify_paths(night, far):
        assert v.inliers < VerifyConfig().min_inliers, v.inliers


def test_real_night_photo_verifies_against_its_day_photo(shared_dir, patch_verifier):
    """gardens_point: the same place by night and by day (aligned frames) shares points; a
    place 30 frames along the walk shares fewer than with the right one."""
    gp = shared_dir / "data/gardens_point"
    if not (gp / "night_right").is_dir():
        pytest.skip(f"gardens_point not found in {gp}")
    night = gp / "night_right/Image150.jpg"
    right, other = patch_verifier.verify_paths(
        night, [gp / "day_right/Image150.jpg", gp / "day_right/Image180.jpg"]
    )
    assert right.inliers >= VerifyConfig().min_inliers, right.inliers
    assert right.inliers > other.inliers, (right.inliers, other.inliers)


def test_dark_copy_keeps_its_keypoints_when_contrast_is_stretched(shared_dir, tmp_path):
    """SIFT's contrast threshold is absolute: an underexposed, noisy copy of a photo (dusk)
    keeps few keypoints as is, and verifies against a neighbouring view once it is stretched."""
    src = shared_dir / "data/lund_street/references/09.jpg"
    arr = np.asarray(Image.open(src).convert("RGB"), np.float32) / 255.0
    arr = 0.4 * arr**1.8 + np.random.default_rng(0).normal(0.0, 0.02, arr.shape)
    dark = tmp_path / "dark.jpg"
    Image.fromarray((np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)).save(dark, quality=90)
    near = shared_dir / "data/lund_street/references/10.jpg"  # 4 m away: another view
    out = {}
    sift = VerifyConfig.for_features("sift")
    for how in ("none", "stretch"):
        v = Verifier(None, ExtractConfig(), replace(sift, sift_contrast=how))
        q = v.features_of_image(Image.open(dark).convert("RGB"), oriented_size(dark))
        out[how] = (len(q.xy), v.verify(q, [near])[0].inliers)
    # measured: 80 keypoints and 19 inliers as is, 384 and 51 stretched
    assert out["stretch"][0] >= 3 * out["none"][0], out
    assert out["stretch"][1] >= max(2 * out["none"][1], sift.located_inliers), out


def test_unreadable_reference_is_none_and_cache_is_bounded(shared_dir, tmp_path):
    refs = sorted((shared_dir / "data/lund_street/references").glob("*.jpg"))[:3]
    verifier = Verifier(None, ExtractConfig(), VerifyConfig.for_features("sift", cache_size=2))
    out = verifier.verify_paths(refs[0], [*refs, tmp_path / "gone.jpg"])
    assert out[0].inliers > 100  # the photo against itself
    assert out[3] is None
    assert len(verifier._cache) == 2


def test_oriented_size_swaps_for_rotated_exif(tmp_path):
    img = Image.new("RGB", (40, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    img.save(tmp_path / "r.jpg", exif=exif)
    img.save(tmp_path / "n.jpg")
    assert oriented_size(tmp_path / "r.jpg") == (30, 40)
    assert oriented_size(tmp_path / "n.jpg") == (40, 30)


def test_bad_config_is_refused():
    for bad in (
        VerifyConfig(features="orb"),
        VerifyConfig(geometry="affine"),
        VerifyConfig(sift_contrast="auto"),
        VerifyConfig(top_k=0),
        VerifyConfig(min_inliers=40, located_inliers=30),
        VerifyConfig(ratio=0),
        VerifyConfig(keep_ratio=1.5),
    ):
        with pytest.raises(ConfigError):
            bad.validate()
        with pytest.raises(ConfigError):  # the Verifier and the Locator refuse it alike
            LocateConfig(verify=bad).validate()
    for bad in (
        VerdictConfig(located_confidence=1.5),
        VerdictConfig(not_found_confidence=0.6, located_confidence=0.5),
        VerdictConfig(look_alike=-0.1),
    ):
        with pytest.raises(ConfigError):
            LocateConfig(verdict=bad).validate()
    with pytest.raises(ConfigError, match="need the model"):
        Verifier(None, cfg=VerifyConfig(features="patch"))


# -- re-ranking and the verdict rules, on made-up figures ----------------------------------------
def test_rerank_by_inliers_then_score():
    scores = [0.9, 0.8, 0.7, 0.6]
    assert rerank(scores, [5, 40, 40, None]) == [1, 2, 0, 3]
    assert rerank(scores, [None, None, None, None]) == [0, 1, 2, 3]
    assert rerank(scores, [5, 14, 9, 16], min_inliers=15) == [3, 0, 1, 2]  # noise: score order
    assert rerank(scores, [20, 60, 100, 45], 15, keep_ratio=1.0) == [2, 1, 3, 0]
    # Within half of the best count, the global score ranks; the rest follow by inliers.
    assert rerank(scores, [20, 60, 100, 45], 15, keep_ratio=0.5) == [1, 2, 3, 0]


def test_inlier_evidence_is_a_monotone_number_in_0_1():
    values = [inlier_evidence(n, CFG) for n in range(0, 200, 5)]
    assert all(0 <= v <= 1 for v in values) and values == sorted(values)
    assert inlier_evidence(CFG.min_inliers, CFG) < 0.15
    assert inlier_evidence(CFG.located_inliers, CFG) > 0.85


def _hit(i: int, score: float, north_m: float | None) -> SearchHit:
    lat = None if north_m is None else 55.7 + north_m / M_PER_DEG_LAT
    lon = None if north_m is None else 13.2
    row = ImageRow(i, f"{i}.jpg", 1, 0.0, lat, lon, None, "exif", "", "indexed", "", i)
    return SearchHit(i, score, row, Path(f"/lib/{i}.jpg"))


def test_verified_consensus_follows_inliers_not_scores():
    hits = [_hit(0, 0.6, 500), _hit(1, 0.5, 0), _hit(2, 0.45, 10), _hit(3, 0.4, None)]
    p = predict_verified(hits, [8, 120, 60, 200], LCFG)
    assert p.members == [1, 2] and p.inliers == 120  # 0 is under min_inliers, 3 has no GPS
    assert 0 < (p.lat - 55.7) * M_PER_DEG_LAT < 10  # between the two, nearer the 120
    assert p.confidence > 0.9 and 10 <= p.radius_m < 15


def test_verified_consensus_split_between_places_is_not_confident():
    hits = [_hit(0, 0.6, 500), _hit(1, 0.5, 0)]
    p = predict_verified(hits, [100, 95], LCFG)
    assert p.members == [0] and 0.4 < p.confidence < 0.6


def test_no_verified_evidence_gives_no_verified_prediction():
    assert predict_verified([_hit(0, 0.6, 0)], [CFG.min_inliers - 1], LCFG) is None
    assert predict_verified([_hit(0, 0.6, 0)], [None], LCFG) is None


VCFG = LocateConfig(verify=CFG, verdict=VerdictConfig(look_alike=0.3))
NIGHT = LocateConfig(verify=replace(CFG, night_inliers=12), verdict=VerdictConfig(look_alike=0.3))
STRONG, WEAK = 0.6, 0.1  # calibrated global similarity of match #1: looks like the library or not


@pytest.mark.parametrize(
    ("kw", "want", "why"),
    [
        ({"has_location": False, "confidence": 0.0, "similarity": 0.9, "best_inliers": 99},
         NOT_FOUND, "GPS"),
        # geometric support
        ({"has_location": True, "confidence": 0.9, "similarity": WEAK, "best_inliers": 30},
         LOCATED, "30 matching points"),
        ({"has_location": True, "confidence": 0.9, "similarity": None, "best_inliers": 30},
         LOCATED, "30 matching points"),  # geometry needs no calibration
        ({"has_location": True, "confidence": 0.4, "similarity": STRONG, "best_inliers": 80},
         UNCERTAIN, "different places"),
        ({"has_location": True, "confidence": 0.5, "similarity": WEAK, "best_inliers": 20},
         UNCERTAIN, "only 20 matching points"),
        # no geometric support: the global likeness decides between uncertain and not found
        ({"has_location": True, "confidence": 0.0, "similarity": STRONG, "best_inliers": 3},
         UNCERTAIN, "night and day"),
        ({"has_location": True, "confidence": 0.0, "similarity": WEAK, "best_inliers": 14},
         NOT_FOUND, "looks like no photo"),
        ({"has_location": True, "confidence": 0.0, "similarity": None, "best_inliers": 0},
         UNCERTAIN, "cannot tell"),  # no calibration: never "not here" on a guess
        # not verified: the calibrated global confidence alone
        ({"has_location": True, "confidence": 0.5, "similarity": STRONG, "best_inliers": None},
         LOCATED, "not verified"),
        ({"has_location": True, "confidence": 0.3, "similarity": STRONG, "best_inliers": None},
         UNCERTAIN, "not verified"),
        ({"has_location": True, "confidence": 0.14, "similarity": WEAK, "best_inliers": None},
         NOT_FOUND, "not verified"),
        # no calibration: never located (nor not found) on the global score alone
        ({"has_location": True, "confidence": 0.5, "similarity": None, "best_inliers": None},
         UNCERTAIN, "cannot tell"),
    ],
)  # fmt: skip
def test_verdict_rules(kw, want, why):
    verdict, reason = decide(Evidence(**kw), VCFG)
    assert verdict == want
    assert why in reason


@pytest.mark.parametrize(
    ("kw", "want", "why"),
    [
        # weak global likeness, some points, and the photo's light explains why so few
        ({"has_location": True, "confidence": 0.0, "similarity": WEAK, "best_inliers": 14,
          "light": "colourless"}, UNCERTAIN, "colourless (e.g. taken at night)"),
        ({"has_location": True, "confidence": 0.0, "similarity": 0.0, "best_inliers": 12,
          "light": "dark"}, UNCERTAIN, "only 12 matching points, but the photo is dark"),
        # fewer than night_inliers (12): nothing to go on, even in the dark
        ({"has_location": True, "confidence": 0.0, "similarity": 0.0, "best_inliers": 11,
          "light": "colourless"}, NOT_FOUND, "looks like no photo"),
        # ordinary light: the excuse does not apply
        ({"has_location": True, "confidence": 0.0, "similarity": WEAK, "best_inliers": 14},
         NOT_FOUND, "looks like no photo"),
        # a strong likeness or enough points decide as without the light
        ({"has_location": True, "confidence": 0.0, "similarity": STRONG, "best_inliers": 3,
          "light": "dark"}, UNCERTAIN, "night and day"),
        ({"has_location": True, "confidence": 0.9, "similarity": WEAK, "best_inliers": 30,
          "light": "dark"}, LOCATED, "30 matching points"),
        # not verified: no points, no excuse
        ({"has_location": True, "confidence": 0.14, "similarity": WEAK, "best_inliers": None,
          "light": "dark"}, NOT_FOUND, "not verified"),
    ],
)  # fmt: skip
def test_night_rule_when_switched_on(kw, want, why):
    verdict, reason = decide(Evidence(**kw), NIGHT)
    assert verdict == want
    assert why in reason


def test_night_rule_default_and_off():
    """On by default at 16 points (config.py says why); 14 points stay not found; None is off."""
    assert VerifyConfig().night_inliers == 16
    cfg = LocateConfig(verdict=VerdictConfig(look_alike=0.3))  # min_inliers 20
    few = Evidence(True, 0.0, WEAK, 14, light="colourless")
    some = Evidence(True, 0.0, WEAK, 16, light="colourless")
    assert decide(few, cfg).verdict == NOT_FOUND
    assert decide(some, cfg).verdict == UNCERTAIN
    off = replace(cfg, verify=replace(cfg.verify, night_inliers=None))
    assert decide(some, off).verdict == NOT_FOUND
    with pytest.raises(ConfigError, match="night inliers"):
        VerifyConfig(night_inliers=-1).validate()


@pytest.mark.parametrize(
    ("light", "want"),
    [
        (Light(brightness=20.0, colour=30.0, detail=40.0), "dark"),
        (Light(brightness=120.0, colour=0.0, detail=60.0), "colourless"),
        (Light(brightness=120.0, colour=25.0, detail=60.0), None),  # daylight colour
        (Light(brightness=0.0, colour=0.0, detail=0.0), None),  # blank: nothing to excuse
        (None, None),  # not measured
    ],
)
def test_light_change(light, want):
    assert light_change(light, VerdictConfig()) == want


def test_measured_light_of_night_and_day_photos(shared_dir):
    """gardens_point's night photos are grey (brightness-normalised), its day photos colour; a
    darkened copy of a day photo is dark; a black image shows nothing."""
    gp = shared_dir / "data/gardens_point"
    if not (gp / "night_right").is_dir():
        pytest.skip(f"gardens_point not found in {gp}")
    vd = VerdictConfig()
    day = Image.open(gp / "day_right/Image150.jpg")
    assert light_change(measure_light(Image.open(gp / "night_right/Image150.jpg")), vd) == (
        "colourless"
    )
    assert light_change(measure_light(day), vd) is None
    dusk = Image.fromarray((np.asarray(day.convert("RGB"), np.float32) * 0.25).astype(np.uint8))
    assert light_change(measure_light(dusk), vd) == "dark"
    assert light_change(measure_light(Image.new("RGB", (64, 48))), vd) is None


def test_calibrated_similarity_needs_different_place_pairs():
    cal = {"neg_best_median": 0.2, "pos_best_median": 0.6}
    assert calibrated_similarity(0.4, cal) == pytest.approx(0.5)
    assert calibrated_similarity(0.1, cal) == 0.0 and calibrated_similarity(0.9, cal) == 1.0
    assert calibrated_similarity(0.6, {"neg_best_median": 0.2}) == pytest.approx(1.0)
    # photos all within 25 m of each other: same-place pairs only, no calibration
    assert calibrated_similarity(0.9, {"pos_best_median": 0.6}) is None
    assert calibrated_similarity(0.9, {}) is None and calibrated_similarity(0.9, None) is None


# -- the Locator on the lund library ---------------------------------------------------------------
@pytest.fixture(scope="module")
def locator(lund_index):
    from _lund import TEST_IMAGE_SIZE

    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    index = LibraryIndex(lund_index)
    yield LocateSession(
        Locator(
            index,
            extract_cfg=ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0),
            locate_cfg=LocateConfig(),
        )
    )
    index.close()


def test_locator_result_carries_verdict_and_inliers(shared_dir, locator):
    query = shared_dir / "data/lund_street/queries/05.jpg"
    res = locator.locate(query)
    assert res.verified and res.verdict == LOCATED and res.error_m < 25
    assert len(res.matches) == LocateConfig().top_n
    inl = [m.inliers for m in res.matches]
    assert all(isinstance(n, int) for n in inl) and max(inl) >= VerifyConfig().located_inliers
    assert inl[0] >= LocateConfig().verify.keep_ratio * max(inl)  # re-ranked by inliers
    top = res.matches[0]
    assert top.query_xy.shape == top.ref_xy.shape == (top.inliers, 2)
    d = res.to_json(evidence=True)
    assert d["verdict"] == LOCATED and d["matches"][0]["inliers"] == top.inliers
    assert set(res.to_json()) == {
        "query",
        "lat",
        "lon",
        "confidence",
        "radius_m",
        "error_m",
        "matches",
    }

    plain = locator.locate(query, verify=False)
    assert not plain.verified and plain.verdict in (LOCATED, UNCERTAIN, NOT_FOUND)
    assert all(m.inliers is None and m.query_xy is None for m in plain.matches)
    assert [m.rank for m in plain.matches] == [m.score_rank for m in plain.matches]


def test_locator_says_not_found_for_another_city(shared_dir, lund_index_640, locator):
    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin/02.jpg"
    index = LibraryIndex(lund_index_640)
    try:
        loc = Locator(index, extract_cfg=ExtractConfig(num_workers=0))  # the default 640 px
        res = LocateSession(loc).locate(berlin)
    finally:
        index.close()
    assert res.verdict == NOT_FOUND and res.confidence < 0.25
    assert "looks like no photo of this library" in res.verdict_reason
    assert res.lat is not None  # the nearest guess is kept, labelled by the verdict
    assert all(m.inliers < VerifyConfig().min_inliers for m in res.matches)
    # At 320 px the global score cannot tell Berlin from Lund: no shared points then says
    # "cannot tell", never "located" (nor a false "not here" for a photo that looks alike).
    small = locator.locate(berlin)
    assert small.verdict in (NOT_FOUND, UNCERTAIN) and small.verdict_reason
    assert all(m.inliers < VerifyConfig().min_inliers for m in small.matches)


def test_a_grey_photo_of_another_city_with_the_night_rule(shared_dir, lund_index_640, tmp_path):
    """End to end through a session: the photo's light reaches the verdict. A grey copy of a
    Berlin photo is "not in this library" by default (fewer chance points than night_inliers'
    16); with night_inliers 0, its few chance points are enough for "uncertain, it may be
    night" (why the rule needs a floor)."""
    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    grey = tmp_path / "berlin_grey.jpg"
    Image.open(shared_dir / "data/exif/gps_photos/opensfm_berlin/02.jpg").convert("L").save(grey)
    index = LibraryIndex(lund_index_640)
    try:
        loc = Locator(index, extract_cfg=ExtractConfig(num_workers=0))
        plain = LocateSession(loc).locate(grey)
        night_cfg = LocateConfig(verify=VerifyConfig(night_inliers=0))
        night = LocateSession(loc, night_cfg).locate(grey)
    finally:
        index.close()
    assert plain.verdict == NOT_FOUND and "looks like no photo" in plain.verdict_reason
    assert night.verdict == UNCERTAIN
    assert "the photo is colourless (e.g. taken at night)" in night.verdict_reason


def test_rerank_ranked_puts_the_verified_reference_first(shared_dir):
    from netvlad_gui.core.query.verify import rerank_ranked

    refs = sorted((shared_dir / "data/lund_street/references").glob("*.jpg"))
    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin/01.jpg"
    db = [berlin, refs[3], refs[0]]
    ranked = np.array([[0, 2, 1], [0, 1, -1]])  # query 0 is refs[0], query 1 unreadable
    verifier = Verifier(None, ExtractConfig(), VerifyConfig.for_features("sift", top_k=2))
    seen = []
    out = rerank_ranked(
        verifier, [refs[0], shared_dir / "missing.jpg"], db, ranked, lambda n, t: seen.append(n)
    )
    assert out.tolist() == [[2, 0, 1], [0, 1, -1]]  # itself first; beyond top_k untouched
    assert seen == [1, 2]


def test_quick_then_verified_locate_describes_the_photo_once_with_patches(
    shared_dir, lund_index, monkeypatch
):
    """The GUI shows the global answer at once and then the verified one; with patch features
    the verified stage used to run the network on the photo a second time (and did so on every
    CPU with native bf16). One session describes it once, whatever the precision."""
    from _lund import TEST_IMAGE_SIZE

    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    index = LibraryIndex(lund_index)
    try:
        loc = Locator(
            index,
            extract_cfg=ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0),
            locate_cfg=LocateConfig(verify=VerifyConfig(features="patch")),
        )
        calls = []
        real = loc.describe_image
        monkeypatch.setattr(loc, "describe_image", lambda *a, **k: calls.append(a) or real(*a, **k))
        query = shared_dir / "data/lund_street/queries/05.jpg"
        quick, refined = LocateSession(loc).stages(query)
        assert len(calls) == 1
        assert not quick.verified and refined.verified and refined.verdict == LOCATED
    finally:
        index.close()


def test_patch_matching_without_ratio_test_is_mutual_nearest_neighbours():
    """The similarity shortcut (ratio 1) pairs exactly what distances pair."""
    from netvlad_gui.core.query.verify import LocalFeatures, _ratio_mutual, match_patches

    rng = np.random.default_rng(3)

    def feats(n: int) -> LocalFeatures:
        d = rng.standard_normal((n, 16)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return LocalFeatures(np.zeros((n, 2), np.float32), d.astype(np.float16), (1, 1), (1, 1))

    q, r = feats(300), feats(250)
    sim = q.desc.astype(np.float32) @ r.desc.astype(np.float32).T
    want = _ratio_mutual(np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None)), 1.0)
    got = match_patches(q, r, 1.0)
    assert len(got[0]) > 20
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert all(len(x) == 0 for x in match_patches(feats(1), r, 1.0))
