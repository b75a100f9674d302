"""Recall@N by hand, exact search with exclusions, and `netvlad eval` (single model and --compare)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from _vpr_data import write_street

from netvlad_gui.cli.training import add_train_commands
from netvlad_gui.core.training.datasets import PlaceSet
from netvlad_gui.core.training.evaluate import (
    correct_references,
    evaluate_descriptors,
    recall_at_n,
    search,
)


def test_recall_at_n_hand_worked() -> None:
    # 4 queries; ranked database indices, best first.
    ranked = np.array(
        [
            [3, 1, 4, 0, 2],  # correct {1}: first hit at rank 2 -> counts from N=2
            [0, 2, 1, 3, 4],  # correct {0}: rank 1
            [4, 3, 2, 1, 0],  # correct {0}: rank 5
            [1, 2, 3, 4, 0],  # correct {}: never
        ]
    )
    correct = [np.array([1]), np.array([0]), np.array([0]), np.array([], dtype=np.int64)]
    r = recall_at_n(ranked, correct, ns=(1, 2, 5))
    assert r == {1: 0.25, 2: 0.5, 5: 0.75}


def test_search_is_exact_and_honours_exclusions() -> None:
    db = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]], np.float32)
    q = np.array([[0.9, 0], [2.9, 0]], np.float32)
    assert search(db, q, 3).tolist() == [[1, 0, 2], [3, 2, 1]]
    assert search(db, q, 3, [np.array([1]), np.array([])]).tolist() == [[0, 2, 3], [3, 2, 1]]
    assert search(db[:2], q, 3).tolist() == [[1, 0, -1], [1, 0, -1]]


def test_evaluate_by_position_and_by_ground_truth() -> None:
    db_pos = np.array([[0.0], [20.0], [100.0], [130.0]])
    q_pos = np.array([[1.0], [120.0], [500.0]])
    paths = [Path(f"/d/{i}") for i in range(4)]
    qs = [Path(f"/q/{i}") for i in range(3)]
    ps = PlaceSet("p", paths, qs, db_pos, q_pos)
    assert [c.tolist() for c in correct_references(ps)] == [[0, 1], [2, 3], []]
    db = np.eye(4, dtype=np.float32)
    q = np.array([[0.3, 0, 0.9, 0], [0, 0, 0.2, 0.8], [1, 0, 0, 0]], np.float32)
    res = evaluate_descriptors(ps, db, q, ns=(1, 2, 3))
    # q0: ranks 2 (wrong), then 0 (right at N=2); q1: 3 (right); q2: no correct reference.
    assert res.recalls == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: pytest.approx(2 / 3),
    }
    assert (res.queries, res.no_positive) == (3, 1)
    gt = PlaceSet("g", paths, qs, q_gt=[np.array([2]), np.array([0]), np.array([3])])
    assert evaluate_descriptors(gt, db, q, ns=(1,)).recalls == {1: pytest.approx(1 / 3)}
    # an unreadable query is left out; an unreadable database image is never returned
    q_bad = q.copy()
    q_bad[2] = np.nan
    db_bad = db.copy()
    db_bad[2] = np.nan
    res = evaluate_descriptors(ps, db_bad, q_bad, ns=(1,))
    assert (res.queries, res.failed) == (2, 1)
    assert res.recalls[1] == 1.0  # q0 now finds 0 first; q1 finds 3
    assert res.to_json() == {"recall@1": 1.0, "queries": 2, "failed": 1}


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    add_train_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pair")
    write_street(root / "ref", np.arange(12) * 5.0, gps_csv=False, prefix="")
    write_street(root / "query", np.arange(12) * 5.0 + 1.0, gps_csv=False, prefix="", seed=0)
    rows = ["query,positive_refs"]
    for i in range(12):
        refs = ";".join(f"ref/{j:03d}.jpg" for j in range(max(0, i - 1), min(12, i + 2)))
        rows.append(f"query/{i:03d}.jpg,{refs}")
    (root / "gt.csv").write_text("\n".join(rows) + "\n")
    return root


COMMON = [
    "--backbone-weights",
    "none",
    "--image-size",
    "96",
    "--workers",
    "0",
    "-q",
    "--init-images",
    "12",
    "--num-clusters",
    "4",
]


def test_cli_eval_json_with_gt(pair: Path, capsys) -> None:
    argv = [
        "eval",
        "--model",
        "alexnet-netvlad",
        "--database",
        str(pair / "ref"),
        "--queries",
        str(pair / "query"),
        "--gt",
        str(pair / "gt.csv"),
        "--json",
        *COMMON,
    ]
    assert _run(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"recall@1", "recall@5", "recall@10", "recall@20", "queries"}
    # 12 references: recall@20 is 1 for any ranking; the ranking itself is checked by
    # test_cli_eval_recall_tells_right_rankings_from_wrong.
    assert (
        out["queries"] == 12 and 0 <= out["recall@1"] <= out["recall@5"] <= out["recall@20"] == 1.0
    )


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """Queries that are the references' own frames, named in a shuffled order.

    With one positive per query (a permutation), only the right ranking gives recall@1 = 1: the
    identical frame is always the nearest, so every query's first hit is its positive exactly
    when the search ranks nearest first and the ground truth is read right.
    """
    root = tmp_path_factory.mktemp("mirror")
    refs = write_street(root / "ref", np.arange(12) * 5.0, gps_csv=False, prefix="")
    perm = np.random.default_rng(5).permutation(12)
    (root / "query").mkdir()
    rows = ["query,positive_refs"]
    wrong = ["query,positive_refs"]
    for k, j in enumerate(perm):
        (root / "query" / f"q{k:02d}.jpg").write_bytes(refs[j].read_bytes())
        rows.append(f"query/q{k:02d}.jpg,ref/{j:03d}.jpg")
        wrong.append(f"query/q{k:02d}.jpg,ref/{(j + 6) % 12:03d}.jpg")  # 30 m off: never nearest
    (root / "gt.csv").write_text("\n".join(rows) + "\n")
    (root / "wrong.csv").write_text("\n".join(wrong) + "\n")
    return root


def test_cli_eval_recall_tells_right_rankings_from_wrong(mirror: Path, capsys) -> None:
    """recall@20 on 12 references is 1 for any ranking; recall@1 here is 1 only for the right one."""

    def recalls(gt: str) -> dict:
        argv = ["eval", "--model", "alexnet-netvlad", "--database", str(mirror / "ref")]
        argv += ["--queries", str(mirror / "query"), "--gt", str(mirror / gt), "--json", *COMMON]
        assert _run(argv) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    right = recalls("gt.csv")
    assert right["queries"] == 12
    assert right["recall@1"] == 1.0 and right["recall@5"] == 1.0
    wrong = recalls("wrong.csv")  # the same ranking judged against the wrong references
    assert wrong["recall@1"] == 0.0 and wrong["recall@20"] == 1.0


def test_cli_eval_compare_by_frame_spacing(pair: Path, capsys) -> None:
    argv = [
        "eval",
        "--model",
        "alexnet-netvlad",
        "--database",
        str(pair / "ref"),
        "--queries",
        str(pair / "query"),
        "--frame-spacing-m",
        "10",
        "--split-fractions",
        "0.5,0,0.5",
        "--split",
        "test",
        "--compare",
        "--json",
        *COMMON,
    ]
    assert _run(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(out["models"]) == ["fmax", "netvlad-off-the-shelf", "alexnet-netvlad (model)"]
    assert out["set"]["database"] == 4  # 6 test frames minus 2 within 25 m of training frames
    for res in out["models"].values():
        assert res["queries"] == out["set"]["queries"] > 0


def test_cli_eval_needs_one_source(capsys) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        _run(["eval", "--model", "alexnet-fmax", "--backbone-weights", "none"])


def test_eval_set_falls_back_to_leave_one_out_on_a_small_library(shared_dir: Path) -> None:
    """Issue 12: `netvlad eval --data LIBRARY` on the 19-photo library just trained on has no
    test queries; the default split then measures the whole folder leave-one-out, and says so."""
    from netvlad_gui.core.errors import DatasetError
    from netvlad_gui.core.training.datasets import SplitConfig, eval_set, load_folder

    library = shared_dir / "data" / "lund_street" / "references"
    if not library.is_dir():
        pytest.skip(f"lund_street data not found at {library}")
    ps = load_folder(library)
    chosen, note = eval_set(ps, None, SplitConfig(), "test")
    assert chosen is ps and chosen.num_queries == chosen.num_db == 19
    assert "leave-one-out" in note and "0 queries" in note
    assert all(chosen.excluded(q).tolist() == [q] for q in range(19))  # never its own file
    # A split the user names is measured as named, or refused with what to do.
    with pytest.raises(DatasetError, match="try --split all"):
        eval_set(ps, "test", SplitConfig(), "test")
    whole, note = eval_set(ps, "all", SplitConfig(), "test")
    assert whole is ps and note == ""


def test_cli_eval_data_on_a_small_library_measures_it_leave_one_out(
    shared_dir: Path, capsys
) -> None:
    """The README's `netvlad eval --model M --data LIBRARY` on the 19-photo lund library, which
    is too small for a test split: it measures all 19 leave-one-out and says so on stderr."""
    library = shared_dir / "data" / "lund_street" / "references"
    if not library.is_dir():
        pytest.skip(f"lund_street data not found at {library}")
    argv = ["eval", "--model", "alexnet-netvlad", "--data", str(library), "--json", *COMMON]
    assert _run(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["queries"] == 19
    assert "leave-one-out" in captured.err


def test_cli_eval_verify_reranks_within_the_top_k_only(shared_dir: Path, capsys) -> None:
    """`eval --verify` reports Recall@N after geometric re-ranking beside the plain figures;
    it only reorders each query's top K (10), so Recall@10 and @20 cannot change."""
    library = shared_dir / "data" / "lund_street" / "references"
    if not library.is_dir():
        pytest.skip(f"lund_street data not found at {library}")
    argv = ["eval", "--model", "alexnet-netvlad", "--data", str(library), "--json", *COMMON]
    assert _run([*argv, "--verify"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    verified = out["verified"]
    assert set(verified) == {"recall@1", "recall@5", "recall@10", "recall@20"}
    assert verified["recall@10"] == out["recall@10"] and verified["recall@20"] == out["recall@20"]
    assert all(0.0 <= v <= 1.0 for v in verified.values())
    from netvlad_gui.cli.common import CliError

    with pytest.raises(CliError, match="leave out --compare"):
        _run([*argv, "--verify", "--compare"])
