"""Data sources for training/eval: folders with GPS, pairs, frame spacing, gt.csv, dbStruct .mat, splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from _vpr_data import write_street
from PIL import Image

from netvlad_gui.core.training.datasets import (
    DatasetError,
    DataSpec,
    PlaceSet,
    SplitConfig,
    gps_to_metres,
    load_folder,
    load_pair,
    load_spec,
    read_gt_csv,
    select,
    split_set,
)
from netvlad_gui.core.training.dbstruct import load_dbstruct


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def test_gps_to_metres_matches_ground_distance() -> None:
    pts = gps_to_metres(
        np.array([55.7, 55.7 + 10 / 111_195.0, 55.7]), np.array([13.19, 13.19, 14.19])
    )
    assert _dist(pts[0], pts[1]) == pytest.approx(10.0, rel=1e-4)
    # 1 degree of longitude at 55.7 N: 111.195 km * cos(55.7 deg)
    assert _dist(pts[0], pts[2]) == pytest.approx(
        111_195.0 * math.cos(math.radians(55.7)), rel=1e-3
    )


def test_folder_reads_gps_csv_and_skips_photos_without_gps(tmp_path: Path) -> None:
    folder = tmp_path / "street"
    write_street(folder, np.arange(6) * 5.0)
    Image.new("RGB", (32, 32)).save(folder / "zz_nogps.jpg")
    ps = load_folder(folder)
    assert ps.num_db == ps.num_queries == 6
    assert ps.queries_are_db and list(ps.q_same) == list(range(6))
    assert [p for p, _ in ps.skipped] == [str(folder / "zz_nogps.jpg")]
    assert _dist(ps.db_pos[0], ps.db_pos[1]) == pytest.approx(5.0, rel=1e-3)
    assert list(ps.excluded(2)) == [2]


def test_folder_without_any_gps_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="GPS"):
        load_folder(tmp_path)


def test_pair_with_frame_spacing_and_gps_csv_one_folder_up(tmp_path: Path) -> None:
    write_street(tmp_path / "database", np.arange(5) * 5.0, gps_csv=False)
    write_street(tmp_path / "queries", np.arange(3) * 5.0, gps_csv=False, prefix="q")
    ps = load_pair(tmp_path / "database", tmp_path / "queries", frame_spacing_m=10)
    assert ps.db_pos[:, 0].tolist() == [0, 10, 20, 30, 40]
    assert ps.q_pos[:, 0].tolist() == [0, 10, 20]
    assert not ps.queries_are_db
    # GPS in a gps.csv beside the two folders (paths relative to it), as in lund_street
    rows = ["file,lat,lon"] + [f"database/img{i:03d}.jpg,55.7,{13.19 + i * 1e-4}" for i in range(5)]
    rows += [f"queries/q{i:03d}.jpg,55.7,{13.19 + i * 1e-4}" for i in range(3)]
    (tmp_path / "gps.csv").write_text("\n".join(rows) + "\n")
    ps = load_pair(tmp_path / "database", tmp_path / "queries")
    assert ps.num_db == 5 and ps.num_queries == 3 and ps.db_pos.shape == (5, 3)


def test_same_folder_twice_is_leave_one_out(tmp_path: Path) -> None:
    write_street(tmp_path / "s", np.arange(4) * 5.0)
    ps = load_pair(tmp_path / "s", tmp_path / "s")
    assert ps.queries_are_db


def test_gt_csv(tmp_path: Path) -> None:
    write_street(tmp_path / "ref", np.arange(4) * 5.0, gps_csv=False, prefix="")
    write_street(tmp_path / "query", np.arange(2) * 5.0, gps_csv=False, prefix="")
    (tmp_path / "gt.csv").write_text(
        "query,positive_refs\nquery/000.jpg,ref/000.jpg;ref/001.jpg\nquery/001.jpg,ref/003.jpg\n"
        "query/999.jpg,ref/000.jpg\n"  # a query this set does not hold: ignored
    )
    ps = load_pair(tmp_path / "ref", tmp_path / "query", gt_csv=tmp_path / "gt.csv")
    assert [g.tolist() for g in ps.q_gt] == [[0, 1], [3]]
    assert ps.db_pos is None
    (tmp_path / "gt2.csv").write_text("query,positive_refs\nquery/000.jpg,ref/000.jpg\n")
    with pytest.raises(DatasetError, match="no ground-truth row"):
        read_gt_csv(tmp_path / "gt2.csv", ps.db_paths, ps.q_paths)


def test_corridor_gt_csv(shared_dir: Path) -> None:
    root = shared_dir / "data" / "corridor"
    ps = load_pair(root / "ref", root / "query", gt_csv=root / "gt.csv")
    assert ps.num_db == ps.num_queries == 111
    assert ps.q_gt[0].tolist() == [0, 1, 2]
    assert ps.q_gt[50].tolist() == [48, 49, 50, 51, 52]


def test_lund_street_pair_has_gps(shared_dir: Path) -> None:
    root = shared_dir / "data" / "lund_street"
    ps = load_pair(root / "references", root / "queries")
    assert (ps.num_db, ps.num_queries, len(ps.skipped)) == (19, 5, 0)
    d = np.linalg.norm(ps.q_pos[:, None] - ps.db_pos[None], axis=2)
    within = (d <= 25).sum(axis=1)
    assert within.min() >= 3 and within.max() <= 8  # as its README says


def _images(root: Path, names: list[str]) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(root / n)


def _cell(names: list[str]) -> np.ndarray:
    return np.array(names, dtype=object)


def test_dbstruct_pittsburgh_by_name(tmp_path: Path) -> None:
    db = [f"000/{i:06d}_pitch1_yaw1.jpg" for i in range(4)]
    q = ["000/q0.jpg", "000/q1.jpg"]
    _images(tmp_path / "root" / "images", db)
    _images(tmp_path / "root" / "queries", q)
    utm_db = np.array([[0.0, 5.0, 12.0, 40.0], [0.0, 0.0, 0.0, 0.0]]) + [[585000.0], [4477000.0]]
    utm_q = np.array([[0.5, 39.0], [0.0, 0.0]]) + [[585000.0], [4477000.0]]
    struct = {
        "whichSet": "train",
        "dbImageFns": _cell(db),
        "utmDb": utm_db,
        "qImageFns": _cell(q),
        "utmQ": utm_q,
        "numImages": 4,
        "numQueries": 2,
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    scipy.io.savemat(tmp_path / "pitts30k_train.mat", {"dbStruct": struct})
    ps = load_dbstruct(tmp_path / "pitts30k_train.mat", tmp_path / "root")
    assert ps.db_paths[0] == tmp_path / "root" / "images" / db[0]
    assert ps.q_paths[1] == tmp_path / "root" / "queries" / q[1]
    assert ps.db_pos.shape == (4, 2) and ps.q_pos[0, 0] == 585000.5
    assert (ps.pos_radius_m, ps.neg_radius_m, ps.recall_radius_m) == (10.0, 25.0, 25.0)
    assert ps.trivial_radius_m == 1.0 and ps.db_time is None


def test_dbstruct_tokyo_time_machine_fields_in_another_order(tmp_path: Path) -> None:
    names = [f"images/{i:03d}.jpg" for i in range(5)]
    _images(tmp_path, names)
    # Tokyo TM: time stamps sit between the other fields, so reading by position breaks.
    struct = {
        "whichSet": "val",
        "dbImageFns": _cell(names),
        "utmDb": np.array([[0.0, 1, 2, 3, 100], [0] * 5]),
        "dbTimeStamp": np.array([200801, 200801, 201005, 201005, 201005]),
        "qImageFns": _cell(names[:2]),
        "utmQ": np.array([[0.0, 1], [0, 0]]),
        "qTimeStamp": np.array([200801, 200801]),
        "numImages": 5,
        "numQueries": 2,
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    scipy.io.savemat(tmp_path / "tokyoTM_val.mat", {"dbStruct": struct})
    ps = load_dbstruct(tmp_path / "tokyoTM_val.mat", tmp_path)
    assert ps.db_time.tolist() == [200801, 200801, 201005, 201005, 201005]
    assert ps.excluded(0).tolist() == [0, 1]  # its own time stamp


def test_dbstruct_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match="readable"):
        load_dbstruct(tmp_path / "bad.mat", tmp_path)
    scipy.io.savemat(tmp_path / "partial.mat", {"dbStruct": {"dbImageFns": _cell(["a.jpg"])}})
    with pytest.raises(DatasetError, match="lacks"):
        load_dbstruct(tmp_path / "partial.mat", tmp_path)
    struct = {
        "dbImageFns": _cell(["a.jpg"]),
        "utmDb": np.zeros((2, 1)),
        "qImageFns": _cell(["b.jpg"]),
        "utmQ": np.zeros((2, 1)),
    }
    scipy.io.savemat(tmp_path / "noimg.mat", {"dbStruct": struct})
    with pytest.raises(DatasetError, match="not found"):
        load_dbstruct(tmp_path / "noimg.mat", tmp_path)


def _line_set(n: int, spacing: float = 5.0) -> PlaceSet:
    paths = [Path(f"/x/{i:03d}.jpg") for i in range(n)]
    pos = np.arange(n, dtype=float)[:, None] * spacing
    return PlaceSet("line", paths, list(paths), pos, pos.copy(), q_same=np.arange(n))


def test_track_split_keeps_places_apart() -> None:
    ps = _line_set(100)
    cfg = SplitConfig(fractions=(0.6, 0.2, 0.2), gap_m=25, query_every=4)
    parts = split_set(ps, cfg)
    train, val, test = parts["train"], parts["val"], parts["test"]
    assert train.queries_are_db and train.num_db == 60
    for other in (val, test):
        assert not (other.q_same >= 0).any()
        assert not set(other.q_paths) & set(other.db_paths)  # own queries and database
        pts = np.concatenate([other.db_pos, other.q_pos])
        gap = np.abs(pts[:, None, 0] - train.db_pos[None, :, 0]).min()
        assert gap > 25
    assert val.num_queries == 4 and val.num_db == 11  # 20 minus 5 within 25 m; 1 in 4 asks
    assert select(ps, "test", cfg).q_paths == test.q_paths
    assert select(ps, "all", None) is ps


def test_grid_split_assigns_whole_cells() -> None:
    rng = np.random.default_rng(0)
    n = 300
    pos = rng.uniform(0, 1000, size=(n, 2))
    paths = [Path(f"/g/{i}.jpg") for i in range(n)]
    ps = PlaceSet("grid", paths, list(paths), pos, pos.copy(), q_same=np.arange(n))
    parts = split_set(ps, SplitConfig(method="grid", cell_m=100, gap_m=0))
    cells = {
        name: {tuple(c) for c in np.floor(p.db_pos / 100).astype(int)} for name, p in parts.items()
    }
    assert not cells["train"] & cells["val"] and not cells["train"] & cells["test"]
    sizes = [parts[s].num_db + parts[s].num_queries for s in ("train", "val", "test")]
    assert sizes[0] > sizes[1] > 0 and sizes[2] > 0


def test_pair_split_follows_the_route_and_gt() -> None:
    db = [Path(f"/r/{i:03d}.jpg") for i in range(20)]
    q = [Path(f"/q/{i:03d}.jpg") for i in range(20)]
    gt = [np.arange(max(0, i - 2), min(20, i + 3)) for i in range(20)]
    ps = PlaceSet("c", db, q, q_gt=gt)
    parts = split_set(ps, SplitConfig(fractions=(0.5, 0.1, 0.4)))
    assert parts["train"].num_db == 10 and parts["test"].num_db == 8
    test = parts["test"]
    assert all(len(g) and g.max() < test.num_db for g in test.q_gt)


def test_dataspec_names_one_source() -> None:
    with pytest.raises(DatasetError, match="exactly one"):
        DataSpec(data="a", database="b").kind  # noqa: B018
    with pytest.raises(DatasetError, match="together"):
        load_spec(DataSpec(database="b"))
    assert DataSpec(data="x").default_split() == "test"
    assert DataSpec(database="a", queries="b").default_fractions() == (1.0, 0.0, 0.0)
