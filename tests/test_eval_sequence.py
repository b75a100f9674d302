"""`netvlad eval --sequence N`: Recall@N of queries located in groups of N consecutive photos,
through the session's own track model (issue 22), beside the single-photo figures."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _vpr_data import write_street

from netvlad_gui.cli import main
from netvlad_gui.cli.training import add_train_commands
from netvlad_gui.core.config import SequenceConfig
from netvlad_gui.core.errors import ConfigError, DatasetError
from netvlad_gui.core.training.datasets import PlaceSet, gps_to_metres
from netvlad_gui.core.training.evaluate import evaluate_descriptors
from netvlad_gui.core.training.seqeval import positions_to_latlon

N_REFS, DIM, SPACING_M = 60, 64, 5.0
# A walk past references 10..39; these photos resemble a far reference more than their own.
WALK = range(10, 40)
DECOYS = {3: 55, 6: 2, 14: 50, 21: 0, 25: 58}


def _street(seed: int = 0):
    """References every 5 m with random unit descriptors, and night-like photos of a walk past
    them: each photo is its place, faded, plus noise; the DECOYS resemble a far place more."""
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(N_REFS, DIM))
    db = (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float32)
    q = []
    for t, place in enumerate(WALK):
        v = 0.5 * db[place] + 0.05 * rng.normal(size=DIM)
        if t in DECOYS:
            v += 0.6 * db[DECOYS[t]]
        q.append(v / np.linalg.norm(v))
    return db, np.asarray(q, dtype=np.float32)


def _set(order: np.ndarray | None = None, pos_dims: int = 1) -> PlaceSet:
    """The walk as an eval set: truth by index (the photo's own place), positions of the
    references in metres along a line (frame spacing) or as GPS on the sphere."""
    order = np.arange(len(WALK)) if order is None else order
    x = SPACING_M * np.arange(N_REFS, dtype=np.float64)
    db_pos = x[:, None]
    if pos_dims == 3:  # a street running east from Lund, as GPS positions are stored
        lat = np.full(N_REFS, 55.7047)
        lon = 13.191 + np.degrees(x / (6_371_008.8 * math.cos(math.radians(55.7047))))
        db_pos = gps_to_metres(lat, lon)
    return PlaceSet(
        "street",
        [Path(f"/nowhere/ref/{i:03d}.jpg") for i in range(N_REFS)],
        [Path(f"/nowhere/night/frame_{t}.jpg") for t in order],  # file order = walk order
        db_pos,
        db_pos[[WALK[t] for t in order]],
        q_gt=[np.array([WALK[t]]) for t in order],
    )


def test_groups_of_photos_fix_what_single_photos_get_wrong():
    db, q = _street()
    res = evaluate_descriptors(_set(), db, q, sequence=SequenceConfig(eval_group=10))
    wrong = len(DECOYS) / len(WALK)
    assert res.recalls[1] == pytest.approx(1 - wrong)  # the decoys fool single photos
    assert res.sequence is not None and res.sequence.n == 10
    assert res.sequence.recalls[1] == 1.0 and res.sequence.recalls[5] == 1.0
    assert res.sequence.decided >= len(WALK) - 2 and res.sequence.changed >= len(DECOYS)
    assert res.sequence.order == "file order"  # the made-up photos have no capture time
    out = res.to_json()
    assert out["sequence"]["n"] == 10 and out["sequence"]["recall@1"] == 1.0
    assert {"recall@1", "recall@5"} <= set(out["sequence"])
    assert out["recall@1"] == pytest.approx(1 - wrong, abs=1e-6)
    assert "sequence" not in evaluate_descriptors(_set(), db, q).to_json()  # only when asked


def test_queries_are_grouped_in_file_name_order_not_list_order():
    """Given in a shuffled order, the photos are put back in file-name order (frame_9 before
    frame_10) before they are grouped: the same answers as in walk order."""
    db, q = _street()
    order = np.random.default_rng(1).permutation(len(WALK))
    res = evaluate_descriptors(_set(order), db, q[order], sequence=SequenceConfig(eval_group=10))
    assert res.sequence.recalls[1] == 1.0


def test_a_group_of_one_is_the_single_photo_figure():
    db, q = _street()
    res = evaluate_descriptors(_set(), db, q, sequence=SequenceConfig(eval_group=1))
    assert res.sequence.recalls == res.recalls
    assert res.sequence.decided == 0 and res.sequence.changed == 0


def test_gps_positions_give_the_same_answers_as_a_line():
    db, q = _street()
    line = evaluate_descriptors(_set(), db, q, sequence=SequenceConfig(eval_group=10))
    gps = evaluate_descriptors(_set(pos_dims=3), db, q, sequence=SequenceConfig(eval_group=10))
    assert gps.sequence.recalls == line.sequence.recalls
    lat, lon = positions_to_latlon(
        gps_to_metres(np.array([55.7047, -33.9]), np.array([13.19, 151.2]))
    )
    assert lat == pytest.approx([55.7047, -33.9]) and lon == pytest.approx([13.19, 151.2])
    lat, lon = positions_to_latlon(np.array([[0.0], [111_195.08]]))  # a line: 1 degree apart
    assert np.all(lat == 0) and lon[1] - lon[0] == pytest.approx(1.0, rel=1e-5)


def test_sets_the_track_cannot_measure_are_refused_in_one_line():
    db, q = _street()
    no_pos = _set()
    no_pos.db_pos = no_pos.q_pos = None
    with pytest.raises(DatasetError, match="--frame-spacing-m") as err:
        evaluate_descriptors(no_pos, db, q, sequence=SequenceConfig())
    assert "\n" not in str(err.value)
    own = _set()
    own.q_same = np.array([WALK[t] for t in range(len(WALK))])  # leave-one-out
    with pytest.raises(DatasetError, match="apart from the database"):
        evaluate_descriptors(own, db, q, sequence=SequenceConfig())
    for bad in (0, -3, 1001, 2.5, True):
        with pytest.raises(ConfigError, match="sequence group"):
            SequenceConfig(eval_group=bad).validate()


# ---- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "5000"])
def test_cli_bad_group_size_is_one_line(tmp_path, capsys, n):
    code = main(["eval", "--database", str(tmp_path), "--queries", str(tmp_path), "--sequence", n])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err == (
        f"netvlad: error: sequence group must be a whole number from 1 to 1000, not {n} "
        "(photos per group)"
    )


def test_cli_help_reads_the_default_and_range(capsys):
    ap = argparse.ArgumentParser()
    add_train_commands(ap.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        ap.parse_args(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {SequenceConfig.eval_group})" in help_text and "N from 1 to 1000" in help_text
    args = ap.parse_args(["eval", "--sequence"])  # N left out: the default
    assert args.sequence == SequenceConfig.eval_group


def test_cli_sequence_needs_one_model(tmp_path, capsys):
    code = main(
        ["eval", "--database", str(tmp_path), "--queries", str(tmp_path), "--sequence", "5",
         "--compare"]
    )  # fmt: skip
    assert code == 1 and "--sequence measures one model" in capsys.readouterr().err


def test_cli_plain_output_puts_the_groups_under_the_single_photos(tmp_path, capsys, monkeypatch):
    """The human output: the sequence's row under the model's, with how many were decided."""
    from netvlad_gui.core.training import evaluate

    write_street(tmp_path / "ref", np.arange(4) * 5.0, gps_csv=False, prefix="")
    write_street(tmp_path / "query", np.arange(4) * 5.0, gps_csv=False, prefix="", seed=1)
    db, q = _street()
    asked = {}

    def measured(model, ps, extract_cfg, **kw):  # the walk's figures, not these 4 photos'
        asked.update(kw)
        return evaluate_descriptors(_set(), db, q, sequence=kw["sequence"])

    monkeypatch.setattr(evaluate, "evaluate_model", measured)
    argv = ["eval", "--model", "alexnet-netvlad", "--backbone-weights", "none", "--database",
            str(tmp_path / "ref"), "--queries", str(tmp_path / "query"), "--frame-spacing-m", "5",
            "--sequence", "10", "-q"]  # fmt: skip
    assert main(argv) == 0
    assert asked["sequence"] == SequenceConfig(eval_group=10)
    lines = capsys.readouterr().out.splitlines()
    row = next(k for k, line in enumerate(lines) if "in groups of 10 (file order)" in line)
    assert lines[row - 1].split()[-4:] == ["83.3%", "100.0%", "100.0%", "100.0%"]
    assert lines[row].split()[-4:] == ["100.0%"] * 4
    assert re.search(r"\b\d+ of 30 decided with neighbours, [5-9] moved", lines[row + 1])


# ---- real photos: night against day on gardens_point ------------------------------------------

FRAMES = range(130, 160)  # 30 places, a stretch of the walk


@pytest.fixture(scope="module")
def gardens(shared_dir, tmp_path_factory):
    """A 30-frame stretch of day_right and night_right (symlinks) and its ground truth."""
    src = shared_dir / "data/gardens_point"
    if not src.is_dir():
        pytest.skip(f"gardens_point not found at {src}")
    root = tmp_path_factory.mktemp("gardens_seq")
    for side in ("day_right", "night_right"):
        (root / side).mkdir()
        for f in FRAMES:
            (root / side / f"Image{f}.jpg").symlink_to(src / side / f"Image{f}.jpg")
    rows = ["query,positive_refs"]
    for f in FRAMES:  # the folder's criterion: +-2 frames, clipped to this stretch
        near = range(max(FRAMES[0], f - 2), min(FRAMES[-1], f + 2) + 1)
        rows.append(
            f"night_right/Image{f}.jpg," + ";".join(f"day_right/Image{j}.jpg" for j in near)
        )
    (root / "gt.csv").write_text("\n".join(rows) + "\n")
    return root


def _eval(root: Path, *extra: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, in its own process: the CLI tunes OpenMP before torch
    loads (core/model/runtime.tune_process), which a test process that imported torch cannot."""
    argv = ["eval", "--database", str(root / "day_right"), "--queries", str(root / "night_right"),
            "--gt", str(root / "gt.csv"), "--image-size", "320", "--workers", "0", "-q",
            "--precision", "fp32", *extra]  # fmt: skip
    cmd = [sys.executable, "-m", "netvlad_gui.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_real_night_walk_in_groups_of_ten(gardens):
    run = _eval(gardens, "--frame-spacing-m", "3", "--sequence", "10", "--json")
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout.strip().splitlines()[-1])
    seq = res["sequence"]
    assert seq["n"] == 10 and seq["order"] == "file order" and res["queries"] == 30
    assert seq["recall@1"] >= res["recall@1"] and seq["recall@1"] >= 0.9
    assert seq["recall@5"] >= seq["recall@1"] and seq["decided"] >= 15
    # Without positions the sequence cannot be measured: said in one line, before any photo.
    run = _eval(gardens, "--sequence", "10")
    assert run.returncode == 1 and re.fullmatch(
        r"netvlad: error: .*--frame-spacing-m.*\n", run.stderr
    )
