"""An index build fills patches.sqlite (core/library/patchfill.py): the first verified locate of
a freshly indexed library computes no reference map and finds the inliers it finds without
the store; the store's bound is never exceeded nor evicted from; a broken store never fails a
build."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
from _lund import TEST_IMAGE_SIZE

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
from netvlad_gui.core.library.patchfill import PatchFill
from netvlad_gui.core.library.patchstore import STORE_FILE, PatchStore
from netvlad_gui.core.model.patches import LocalFeatures
from netvlad_gui.core.photos.decoding import decode
from netvlad_gui.core.photos.images import to_pixels
from netvlad_gui.core.query.verify import Verifier


def _rows(index_dir: Path) -> int:
    with sqlite3.connect(index_dir / STORE_FILE) as db:
        return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]


def _session(index_dir: Path, **verify):
    from netvlad_gui.core.query.session import open_session

    status, session = open_session(
        index_dir, locate_cfg=LocateConfig(verify=VerifyConfig(**verify))
    )
    assert status.ready and session is not None, status.problem
    return session


def _locate(index_dir: Path, query: Path, **verify):
    """(result, images whose backbone maps were computed) of one photo in a new session."""
    session = _session(index_dir, **verify)
    seen: list[int] = []
    model = session.locator.model
    real = model.maps_of
    model.maps_of = lambda pixels: seen.append(len(pixels)) or real(pixels)
    try:
        return session.locate(query), sum(seen)
    finally:
        session.close()


def _evidence(res) -> list:
    return [
        (m.path, m.inliers, None if m.ref_xy is None else m.ref_xy.tolist()) for m in res.matches
    ]


def _same_answer_from_the_store(index_dir: Path, shared_dir: Path, tmp_path: Path) -> None:
    query = shared_dir / "data/lund_street/queries/08.jpg"
    bare = Path(
        shutil.copytree(
            index_dir, tmp_path / "bare", ignore=shutil.ignore_patterns(f"{STORE_FILE}*")
        )
    )
    want, _ = _locate(bare, query, disk_cache_mb=0)  # every reference mapped by the verifier
    filled = Path(shutil.copytree(index_dir, tmp_path / "filled"))
    got, mapped = _locate(filled, query)
    assert want.verified and got.verified
    assert mapped <= 1  # at most the query's own map: no reference's
    assert _evidence(got) == _evidence(want) and got.verdict == want.verdict
    assert max(m.inliers for m in got.matches) >= VerifyConfig().min_inliers


def test_a_new_index_fills_the_store_from_the_maps_it_pools(lund_index, shared_dir, tmp_path):
    """lund's first build: a new model, every photo's map kept by the one-pass initialisation."""
    assert _rows(lund_index) == 19
    _same_answer_from_the_store(lund_index, shared_dir, tmp_path)


def test_a_build_through_the_network_fills_it_and_a_broken_store_fails_nothing(
    lund_index, shared_dir, tmp_path
):
    from netvlad_gui.core.library.builder import build_index

    library = shared_dir / "data" / "lund_street" / "references"
    cfg = ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0)
    broken = tmp_path / "broken"
    (broken / STORE_FILE).mkdir(parents=True)  # neither a store nor removable: not used
    s = build_index(library, broken, model_spec=lund_index / "model.pt", extract_cfg=cfg)
    assert s.indexed == 19 and not s.failed and (broken / STORE_FILE).is_dir()

    idx = tmp_path / "idx"  # an initialised model: each photo through the whole network
    s = build_index(library, idx, model_spec=lund_index / "model.pt", extract_cfg=cfg)
    assert s.indexed == 19 and _rows(idx) == 19
    _same_answer_from_the_store(idx, shared_dir, tmp_path)


def test_the_build_decodes_the_pixels_the_verifier_reads(lund_index, shared_dir):
    session = _session(lund_index, disk_cache_mb=0)
    try:
        ec = session.locator.extract_cfg
        v = Verifier(session.locator.model, ec, VerifyConfig())
        for name in ("01.jpg", "09.jpg"):
            path = shared_dir / "data/lund_street/references" / name
            pixels, err = decode(path, ec)
            img, _ = v._load(path)
            assert not err and np.array_equal(pixels, to_pixels(img))
    finally:
        session.close()


def _feats(n: int) -> LocalFeatures:
    rng = np.random.default_rng(n)
    desc = rng.standard_normal((100, 16)).astype(np.float16)
    return LocalFeatures(np.zeros((100, 2), np.float32), desc, (1.0, 1.0), (64, 48))


def test_filling_stops_at_the_bound_and_evicts_nothing(tmp_path, monkeypatch):
    from netvlad_gui.core.library import patchfill

    each = _feats(0).nbytes  # 4000 B
    store = PatchStore(tmp_path, 5 * each)
    store.put([("old.jpg", "1:2:3", _feats(1))], "another recipe")
    monkeypatch.setattr(patchfill, "patch_features", lambda m, w, o: _feats(int(m)))
    monkeypatch.setattr(patchfill, "oriented_size", lambda p: (64, 48))
    fill = PatchFill(store, "r")
    for n in range(10):
        photo = tmp_path / f"{n}.jpg"
        photo.write_bytes(b"x")
        fill.add(photo, np.array(n + 2), (64, 48))
    fill.flush()
    assert fill.full and fill.added == 4  # room for four beside the row already there
    assert store.stored_bytes() == 5 * each <= store.max_bytes
    assert store.get([("old.jpg", "1:2:3")], "another recipe")  # never evicted for the fill
    store.close()
