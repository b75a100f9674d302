"""Geometric verification, the verdict rules, and the Locator's verified results (no network)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
from netvlad_gui.core.library.catalog import ImageRow
from netvlad_gui.core.library.index import SearchHit
from netvlad_gui.core.query.verdict import (
    LOCATED,
    NOT_FOUND,
    UNCERTAIN,
    decide,
    inlier_evidence,
    predict_verified,
)
from netvlad_gui.core.query.verify import (
    Verifier,
    VerifyConfigError,
    check_config,
    oriented_size,
    rerank,
)

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
    verifier = Verifier(None, ExtractConfig(), VerifyConfig(features="sift"))
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
    verifier = Verifier(None, ExtractConfig(), VerifyConfig(features="sift"))
    for v in verifier.verify_paths(lund, [berlin, portland]):
        assert v.inliers < VerifyConfig().min_inliers, v.inliers


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
    for how in ("none", "stretch"):
        v = Verifier(None, ExtractConfig(), VerifyConfig(sift_contrast=how))
        q = v.features_of_image(Image.open(dark).convert("RGB"), oriented_size(dark))
        out[how] = (len(q.xy), v.verify(q, [near])[0].inliers)
    # measured: 80 keypoints and 19 inliers as is, 384 and 51 stretched
    assert out["stretch"][0] >= 3 * out["none"][0], out
    assert out["stretch"][1] >= max(2 * out["none"][1], VerifyConfig().located_inliers), out


def test_unreadable_reference_is_none_and_cache_is_bounded(shared_dir, tmp_path):
    refs = sorted((shared_dir / "data/lund_street/references").glob("*.jpg"))[:3]
    verifier = Verifier(None, ExtractConfig(), VerifyConfig(cache_size=2))
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
    ):
        with pytest.raises(VerifyConfigError):
            check_config(bad)
    with pytest.raises(VerifyConfigError, match="need the model"):
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


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        (
            {"has_location": False, "confidence": 0.0, "inliers": 99},
            NOT_FOUND,
        ),
        # verified
        (
            {"has_location": True, "confidence": 0.9, "inliers": 30},
            LOCATED,
        ),
        (
            {"has_location": True, "confidence": 0.4, "inliers": 80},
            UNCERTAIN,
        ),
        (
            {"has_location": True, "confidence": 0.5, "inliers": 20},
            UNCERTAIN,
        ),
        (
            {"has_location": True, "confidence": 0.0, "inliers": 14},
            NOT_FOUND,
        ),
        (  # no geometry: not found, even where the global score looked strong
            {"has_location": True, "confidence": 0.1, "inliers": 3},
            NOT_FOUND,
        ),
        # not verified: the calibrated global confidence alone
        (
            {"has_location": True, "confidence": 0.5, "inliers": None},
            LOCATED,
        ),
        (
            {"has_location": True, "confidence": 0.3, "inliers": None},
            UNCERTAIN,
        ),
        (
            {"has_location": True, "confidence": 0.14, "inliers": None},
            NOT_FOUND,
        ),
    ],
)
def test_verdict_rules(kw, want):
    assert decide(**kw, cfg=CFG) == want


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


def test_locator_says_not_found_for_another_city(shared_dir, locator):
    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin/02.jpg"
    res = locator.locate(berlin)
    assert res.verdict == NOT_FOUND and res.confidence < 0.25
    assert res.lat is not None  # the nearest guess is kept, labelled by the verdict
    assert all(m.inliers < VerifyConfig().min_inliers for m in res.matches)


def test_rerank_ranked_puts_the_verified_reference_first(shared_dir):
    from netvlad_gui.core.query.verify import rerank_ranked

    refs = sorted((shared_dir / "data/lund_street/references").glob("*.jpg"))
    berlin = shared_dir / "data/exif/gps_photos/opensfm_berlin/01.jpg"
    db = [berlin, refs[3], refs[0]]
    ranked = np.array([[0, 2, 1], [0, 1, -1]])  # query 0 is refs[0], query 1 unreadable
    verifier = Verifier(None, ExtractConfig(), VerifyConfig(top_k=2))
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
