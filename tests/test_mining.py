"""Positives within 10 m, negatives beyond 25 m, hard-negative mining, the descriptor cache, init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _vpr_data import write_street

from netvlad_gui.core.config import ExtractConfig, InitConfig, ModelConfig
from netvlad_gui.core.errors import DatasetError
from netvlad_gui.core.model.initialise import initialise_from_images
from netvlad_gui.core.model.network import build_model
from netvlad_gui.core.training.datasets import PlaceSet, load_folder
from netvlad_gui.core.training.descriptors import set_descriptors
from netvlad_gui.core.training.mining import (
    GroundTruth,
    MiningConfig,
    mine_tuple,
    new_negative_cache,
)


def _random_set(n_db: int = 300, n_q: int = 60, seed: int = 0) -> PlaceSet:
    rng = np.random.default_rng(seed)
    db_pos = rng.uniform(0, 200, size=(n_db, 2))
    # queries near database images, so most have positives
    q_pos = db_pos[rng.integers(0, n_db, n_q)] + rng.normal(0, 6, size=(n_q, 2))
    return PlaceSet(
        "rand",
        [Path(f"/d/{i}.jpg") for i in range(n_db)],
        [Path(f"/q/{i}.jpg") for i in range(n_q)],
        db_pos,
        q_pos,
    )


def _dist(ps: PlaceSet, q: int, idx) -> np.ndarray:
    return np.linalg.norm(ps.db_pos[np.asarray(idx, dtype=int)] - ps.q_pos[q], axis=1)


def test_positives_and_negatives_follow_the_10_and_25_m_rules() -> None:
    ps = _random_set()
    gt = GroundTruth(ps)
    rng = np.random.default_rng(1)
    d_all = np.linalg.norm(ps.db_pos[None] - ps.q_pos[:, None], axis=2)
    for q in range(ps.num_queries):
        pos = gt.positives[q]
        assert np.array_equal(pos, np.flatnonzero(d_all[q] <= 10))
        negs = gt.sample_negatives(q, 50, rng)
        assert len(negs) == len(np.unique(negs)) <= 50
        assert (_dist(ps, q, negs) > 25).all()
        assert not np.intersect1d(negs, pos).size
        # asking for more than there are gives all of them
        every = gt.sample_negatives(q, 10_000, rng)
        assert np.array_equal(every, np.flatnonzero(d_all[q] > 25))


def test_mined_tuples_never_mix_positives_and_negatives() -> None:
    ps = _random_set(seed=3)
    gt = GroundTruth(ps)
    rng = np.random.default_rng(0)
    db_desc = rng.normal(size=(ps.num_db, 16)).astype(np.float32)
    db_desc /= np.linalg.norm(db_desc, axis=1, keepdims=True)
    q_desc = db_desc[rng.integers(0, ps.num_db, ps.num_queries)]
    cfg = MiningConfig(neg_samples=100, neg_cache=10, neg_per_tuple=10, margin=0.5)
    cache = new_negative_cache(ps.num_queries, cfg.neg_cache)
    reasons = []
    for epoch in range(2):  # the second pass also ranks the cached hardest negatives
        for q in range(ps.num_queries):
            t, why = mine_tuple(
                q, gt, q_desc, db_desc, cache, np.random.default_rng([epoch, q]), cfg
            )
            reasons.append(why)
            if t is None:
                continue
            assert _dist(ps, q, [t.positive])[0] <= 10
            assert (_dist(ps, q, t.negatives) > 25).all()
            assert t.positive not in t.negatives and not np.isin(t.negatives, gt.positives[q]).any()
            assert 1 <= len(t.negatives) <= cfg.neg_per_tuple
            assert (_dist(ps, q, cache[q][cache[q] >= 0]) > 25).all()
    assert "" in reasons and reasons.count("no_positive") > 0


def test_mining_picks_the_nearest_positive_and_hardest_violators() -> None:
    # database on a line every 5 m; query at 0 m; positives 0, 1, 2 (0, 5, 10 m)
    n = 40
    pos = np.arange(n, dtype=float)[:, None] * 5
    ps = PlaceSet(
        "line", [Path(f"/d/{i}") for i in range(n)], [Path("/q/0")], pos, np.zeros((1, 1))
    )
    gt = GroundTruth(ps)
    assert gt.positives[0].tolist() == [0, 1, 2]
    assert gt.non_negatives[0].tolist() == [0, 1, 2, 3, 4, 5]
    db = np.zeros((n, 2), np.float32)
    db[:, 0] = 10.0  # far from the query by default
    db[1] = [0.1, 0]  # the best positive in descriptor space
    db[0] = [0.5, 0]
    db[3] = [0.0, 0.05]  # within 25 m: not a negative even though it is close
    db[20], db[21], db[22] = [0.2, 0], [0.25, 0], [0.3, 0]  # violate 0.01 + 0.1 (squared)
    q = np.zeros((1, 2), np.float32)
    cfg = MiningConfig(neg_samples=1000, neg_cache=2, neg_per_tuple=2, margin=0.1)
    cache = new_negative_cache(1, cfg.neg_cache)
    t, why = mine_tuple(0, gt, q, db, cache, np.random.default_rng(0), cfg)
    assert why == "" and t.positive == 1
    assert t.negatives.tolist() == [20, 21]  # d² 0.04, 0.0625 < 0.01 + 0.1; capped at 2
    assert cache[0].tolist() == [20, 21]
    # without violators the query is skipped as easy
    db[20:23] = 10.0
    t, why = mine_tuple(0, gt, q, db, cache, np.random.default_rng(0), cfg)
    assert t is None and why == "easy"


def test_trivial_radius_and_own_time_stamp_are_not_positives() -> None:
    pos = np.array([[0.0], [0.5], [5.0], [8.0]])
    ps = PlaceSet(
        "tm",
        [Path(f"/d/{i}") for i in range(4)],
        [Path("/q")],
        pos,
        np.zeros((1, 1)),
        db_time=np.array([1, 2, 1, 2]),
        q_time=np.array([1]),
        trivial_radius_m=1.0,
    )
    assert GroundTruth(ps).positives[0].tolist() == [3]  # 0: own stamp, 1: within 1 m, 2: own stamp


def test_training_needs_positions() -> None:
    ps = PlaceSet("gt", [Path("/d")], [Path("/q")], q_gt=[np.array([0])])
    with pytest.raises(DatasetError, match="positions"):
        GroundTruth(ps)


def test_set_descriptors_reuses_queries_and_marks_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write_street(folder, np.arange(5) * 5.0)
    ps = load_folder(folder)
    (folder / "img002.jpg").write_bytes(b"truncated")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="alexnet", pooling="fmax"), "none")
    db, q, errors = set_descriptors(model, ps, ExtractConfig(image_size=64, num_workers=0))
    assert db.shape == (5, 256) and np.array_equal(q, db, equal_nan=True)
    assert np.isnan(db[2]).all() and np.isfinite(np.delete(db, 2, axis=0)).all()
    assert list(errors) == [str(folder / "img002.jpg")]
    assert not GroundTruth(ps, np.isfinite(db).all(axis=1)).usable_db[2]


def test_initialise_from_images(tmp_path: Path) -> None:
    paths = write_street(tmp_path / "s", np.arange(6) * 5.0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    assert not model.is_initialised
    alpha = initialise_from_images(
        model,
        paths,
        InitConfig(num_images=4, descriptors_per_image=10),
        ExtractConfig(image_size=64, num_workers=0),
    )
    assert model.is_initialised and alpha > 0 and model.meta["init"]["images"] == 4


def _line(positions: list[float], name: str = "line") -> PlaceSet:
    pos = np.array(positions)[:, None]
    paths = [Path(f"/d/{i}.jpg") for i in range(len(pos))]
    return PlaceSet(name, paths, paths, pos, pos, q_same=np.arange(len(pos)))


def test_untrainable_data_says_what_it_lacks() -> None:
    # Photos 30 m apart: nobody has a second photo of its place.
    apart = GroundTruth(_line([0, 30, 60, 90, 120]))
    why = apart.why_untrainable()
    assert why.startswith("line: no training query has a potential positive within 10 m")
    assert "none of its 5 queries has another photo within 10 m" in why
    assert "(0 of 5 places have two or more photos)" in why
    # Pairs 4 m apart, but all within 25 m of each other: nothing is a negative.
    close = GroundTruth(_line([0, 4, 8, 12]))
    assert "all 4 queries with a positive lie within 25 m of every photo" in close.why_untrainable()
    # Two places 100 m apart, two photos each: trainable, nothing to say.
    assert GroundTruth(_line([0, 4, 100, 104])).why_untrainable() == ""
    # Queries elsewhere than the database's one repeated place: the count says so.
    db = [Path("/d/0.jpg"), Path("/d/1.jpg"), Path("/d/2.jpg")]
    ps = PlaceSet("pair", db, [Path("/q/0.jpg")], np.array([[0.0], [4.0], [300.0]]), [[150.0]])
    assert "(1 of 2 places have two or more photos)" in GroundTruth(ps).why_untrainable()
