"""References' features kept on disk (core/library/patchstore.py): reused by the next session,
never reused for another photo, model or size, bounded, and never the reason a locate fails."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
from netvlad_gui.core.errors import ConfigError
from netvlad_gui.core.library.patchstore import STORE_FILE, PatchStore
from netvlad_gui.core.query.verify import Verifier

MB = 1024 * 1024


def _copy_index(src: Path, dst: Path) -> Path:
    """The session's lund index without any store other tests' locates have filled."""
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns(f"{STORE_FILE}*")))


def _count_maps(model) -> list[int]:
    """Counts the images whose backbone maps ``model`` computes from now on: the references'
    and, when its first description was the global one alone, the query's."""
    seen: list[int] = []
    real = model.maps_of

    def counted(pixels):
        seen.append(len(pixels))
        return real(pixels)

    model.maps_of = counted
    return seen


def _open(index_dir: Path, **verify):
    from netvlad_gui.core.query.session import open_session

    cfg = LocateConfig(verify=VerifyConfig(**verify))
    status, session = open_session(index_dir, locate_cfg=cfg)
    assert status.ready and session is not None, status.problem
    return session


def _evidence(res) -> list:
    return [
        (m.path, m.inliers, None if m.ref_xy is None else m.ref_xy.tolist()) for m in res.matches
    ]


def test_a_second_session_maps_no_reference_and_finds_the_same_inliers(
    lund_index, shared_dir, tmp_path
):
    idx = _copy_index(lund_index, tmp_path / "idx")
    query = shared_dir / "data/lund_street/queries/08.jpg"
    first = _open(idx)
    maps = _count_maps(first.locator.model)
    res1 = first.locate(query)
    first.close()
    first_maps = sum(maps)
    assert res1.verified and first_maps >= VerifyConfig().top_k
    assert (idx / STORE_FILE).is_file()

    second = _open(idx)
    maps = _count_maps(second.locator.model)
    res2 = second.locate(query)
    second.close()
    # every reference's features read from the store, only the query's map computed
    assert sum(maps) == first_maps - VerifyConfig().top_k <= 1
    assert _evidence(res2) == _evidence(res1) and res2.verdict == res1.verdict
    assert max(m.inliers for m in res2.matches) >= VerifyConfig().min_inliers


def test_off_writes_nothing(lund_index, shared_dir, tmp_path):
    idx = _copy_index(lund_index, tmp_path / "idx")
    session = _open(idx, disk_cache_mb=0)
    assert session.locate(shared_dir / "data/lund_street/queries/08.jpg").verified
    session.close()
    assert not (idx / STORE_FILE).exists()
    with pytest.raises(ConfigError, match="disk cache"):
        VerifyConfig(disk_cache_mb=-1).validate()


# -- the store under a Verifier, on photos the test may change -------------------------------------
@pytest.fixture(scope="module")
def engine(lund_index, tmp_path_factory):
    """The lund index's model (ONNX Runtime) and the extraction settings a Locator uses."""
    idx = _copy_index(lund_index, tmp_path_factory.mktemp("engine") / "idx")
    session = _open(idx, disk_cache_mb=0)
    yield session.locator.model, session.locator.extract_cfg
    session.close()


@pytest.fixture
def photos(shared_dir, tmp_path, engine):
    """A query's features and three references of lund, copied where the test may overwrite
    them."""
    lund = shared_dir / "data/lund_street"
    lib = tmp_path / "lib"
    lib.mkdir()
    refs = [
        Path(shutil.copy(lund / "references" / n, lib / n)) for n in ("09.jpg", "10.jpg", "06.jpg")
    ]
    v, _ = _verifier(engine, None)
    img, orig = v._load(lund / "queries/08.jpg")
    return _Query(v.features_of_image(img, orig)), refs


class _Query:
    """The query's features, described once (so that only references' maps are counted)."""

    def __init__(self, feats):
        self.feats = feats


def _verifier(engine, store, model_key="m1", extract_cfg=None):
    model, ec = engine
    v = Verifier(model, extract_cfg or ec, VerifyConfig(), store=store, model_key=model_key)
    seen: list[int] = []
    real = v._maps
    v._maps = lambda images: seen.append(len(images)) or real(images)
    return v, seen


def _inliers(checks) -> list:
    return [(c.inliers, c.ref_xy.tolist()) for c in checks]


def test_a_changed_reference_is_mapped_again(engine, photos, tmp_path):
    query, refs = photos
    v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    v.verify(query.feats, refs[:2])
    assert sum(seen) == 2
    shutil.copyfile(refs[2], refs[0])  # another photo at the same path
    v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    stored = v.verify(query.feats, refs[:2])
    assert sum(seen) == 1  # only the changed one
    fresh, _ = _verifier(engine, None)
    assert _inliers(stored) == _inliers(fresh.verify(query.feats, refs[:2]))
    v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    v.verify(query.feats, refs[:2])
    assert sum(seen) == 0  # its row was replaced


def test_features_of_another_model_or_size_are_not_reused(engine, photos, tmp_path):
    query, refs = photos
    store = PatchStore(tmp_path, 64 * MB)
    _, ec = engine
    small = ExtractConfig(**{**ec.__dict__, "image_size": 256})
    for key, cfg, want in [
        ("m1", None, 2),
        ("m2", None, 2),  # another model file, engine or precision
        ("m1", small, 2),  # another input size
        ("m1", None, 0),
        ("m2", None, 0),
        ("m1", small, 0),
    ]:
        v, seen = _verifier(engine, store, key, cfg)
        v.verify(query.feats, refs[:2])
        assert sum(seen) == want, (key, cfg)


def _read_only(monkeypatch) -> None:
    """Say "read-only" as a share or a disc would (tests may run as root, which writes)."""
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw)
    )


def _warnings(caplog) -> list[str]:
    """What was said at WARNING or above (an earlier test may have let INFO through)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_read_only_folder_is_read_and_never_written(
    engine, photos, tmp_path, monkeypatch, caplog
):
    query, refs = photos
    empty, filled = tmp_path / "empty", tmp_path / "filled"
    empty.mkdir()
    filled.mkdir()
    v, _ = _verifier(engine, PatchStore(filled, 64 * MB))
    want = _inliers(v.verify(query.feats, refs[:2]))
    v.store.close()
    before = _snapshot(filled)
    _read_only(monkeypatch)
    with caplog.at_level(logging.WARNING):
        v, seen = _verifier(engine, PatchStore(empty, 64 * MB))
        assert _inliers(v.verify(query.feats, refs[:2])) == want and sum(seen) == 2
        v, seen = _verifier(engine, PatchStore(filled, 64 * MB))
        assert _inliers(v.verify(query.feats, refs)) != []
        assert sum(seen) == 1  # two read from the file, the third computed and not written
    assert not list(empty.iterdir())
    assert _snapshot(filled) == before
    assert not _warnings(caplog)


@pytest.mark.parametrize("content", ["garbage", "foreign", "truncated"])
def test_a_damaged_or_foreign_file_is_made_anew_and_said_once(
    engine, photos, tmp_path, caplog, content
):
    query, refs = photos
    path = tmp_path / STORE_FILE
    if content == "foreign":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE photos (name TEXT)")
        db.close()
    else:
        v, _ = _verifier(engine, PatchStore(tmp_path, 64 * MB))
        v.verify(query.feats, refs[:2])
        v.store.close()
        raw = path.read_bytes()
        path.write_bytes(b"\x00garbage" * 64 if content == "garbage" else raw[: len(raw) // 3])
    fresh, _ = _verifier(engine, None)
    want = _inliers(fresh.verify(query.feats, refs[:2]))
    with caplog.at_level(logging.WARNING):
        v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
        assert _inliers(v.verify(query.feats, refs[:2])) == want
        assert _inliers(v.verify(query.feats, refs[:2])) == want
    said = _warnings(caplog)
    assert len(said) == 1 and "made it anew" in said[0], said
    if content == "foreign":
        assert sum(seen) == 2
    v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    v.verify(query.feats, refs[:2])
    assert sum(seen) == 0  # the new file holds them


def test_a_row_that_fails_its_checksum_is_mapped_again(engine, photos, tmp_path, caplog):
    query, refs = photos
    v, _ = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    want = _inliers(v.verify(query.feats, refs[:1]))
    v.store.close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        (desc,) = db.execute("SELECT desc FROM features").fetchone()
        flipped = bytearray(desc)
        flipped[100] ^= 0x40
        db.execute("UPDATE features SET desc = ?", (bytes(flipped),))
    db.close()
    with caplog.at_level(logging.WARNING):
        v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
        assert _inliers(v.verify(query.feats, refs[:1])) == want and sum(seen) == 1
    assert any("checksum" in m for m in _warnings(caplog))


def test_the_bound_evicts_the_least_recently_used(engine, photos, tmp_path):
    query, refs = photos
    store = PatchStore(tmp_path, 64 * MB)
    v, _ = _verifier(engine, store)
    v.verify(query.feats, refs[:1])
    one = store.stored_bytes()
    assert one == 20 * 15 * (96 * 2 + 2 * 4)  # cells at 320x240: float16 descriptors, positions
    store.max_bytes = int(2.5 * one)
    for ref in refs:  # 09, 10, 06: 09 is the oldest when 06 comes
        v, _ = _verifier(engine, store)
        v.verify(query.feats, [ref])
    assert store.stored_bytes() <= store.max_bytes
    for ref, want in [(refs[2], 0), (refs[1], 0), (refs[0], 1)]:
        v, seen = _verifier(engine, store)
        v.verify(query.feats, [ref])
        assert sum(seen) == want, ref.name
    store.max_bytes = 0  # nothing fits: nothing is written, nothing fails
    v, seen = _verifier(engine, store)
    assert v.verify(query.feats, refs)[0] is not None


def test_a_locked_or_full_file_only_costs_the_write(engine, photos, tmp_path, caplog):
    query, refs = photos
    store = PatchStore(tmp_path, 64 * MB)
    fresh, _ = _verifier(engine, None)
    want = _inliers(fresh.verify(query.feats, refs))
    other = sqlite3.connect(tmp_path / STORE_FILE, timeout=0)
    other.execute("BEGIN EXCLUSIVE")  # another process writing for longer than we wait
    v, seen = _verifier(engine, store)
    assert _inliers(v.verify(query.feats, refs[:1])) == want[:1] and sum(seen) == 1
    other.rollback()
    other.close()
    assert store.stored_bytes() == 0
    store._db.execute("PRAGMA max_page_count = 8")  # the disk is full
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            v, seen = _verifier(engine, store)
            assert _inliers(v.verify(query.feats, refs)) == want and sum(seen) == 3
    said = _warnings(caplog)
    assert len(said) == 1 and "cannot write" in said[0], said
    assert np.isfinite(store.stored_bytes())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_really_read_only_folder(engine, photos, tmp_path):
    query, refs = photos
    v, _ = _verifier(engine, PatchStore(tmp_path, 64 * MB))
    want = _inliers(v.verify(query.feats, refs[:2]))
    v.store.close()
    before = _snapshot(tmp_path)
    tmp_path.chmod(0o555)
    try:
        v, seen = _verifier(engine, PatchStore(tmp_path, 64 * MB))
        assert _inliers(v.verify(query.feats, refs))[:2] == want and sum(seen) == 1
        assert _snapshot(tmp_path) == before
    finally:
        tmp_path.chmod(0o755)
