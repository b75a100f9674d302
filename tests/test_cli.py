"""The netvlad CLI: one-line errors with a non-zero exit, and the commands that need no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from netvlad_gui.cli import main


def test_models_lists_named_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("mobilenet_v2-netvlad", "vgg16-netvlad", "vgg16-fmax", "vgg16-netvlad-pitts30k"):
        assert name in out


def test_missing_index_is_one_line_error(tmp_path, capsys):
    assert main(["locate", str(tmp_path / "a.jpg"), "--index", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("netvlad: error: no index in") and "\n" not in err


def test_unknown_model_and_missing_library(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    assert (
        main(
            [
                "index",
                str(tmp_path / "lib"),
                "--index",
                str(tmp_path / "i"),
                "--model",
                "nosuchnet-netvlad",
                "-q",
            ]
        )
        == 1
    )
    assert "unknown model" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nope"), "--index", str(tmp_path / "i2"), "-q"]) == 1
    assert "library folder not found" in capsys.readouterr().err


def test_offline_torchvision_weights_error_lists_the_three_ways(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torch.hub

    def offline(*a, **k):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from _library import make_library

    make_library(tmp_path / "lib", 2)
    assert (
        main(
            [
                "index",
                str(tmp_path / "lib"),
                "--index",
                str(tmp_path / "i"),
                "--model",
                "alexnet-netvlad",
                "-q",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "go online" in err and "--backbone-weights FILE" in err and "none" in err


def test_info_json(tmp_path, capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_model"] == "mobilenet_v2-netvlad" and info["device"] in ("cpu", "cuda")


@pytest.mark.parametrize("argv", [["locate"], ["bogus"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_runtime_options_reach_the_extraction_config():
    from netvlad_gui.cli import build_parser, extract_cfg

    args = build_parser().parse_args(
        ["index", "LIB", "--jpeg-draft", "--image-size", "480", "--device", "cpu"]
    )
    cfg = extract_cfg(args)
    assert cfg.jpeg_draft and cfg.image_size == 480 and cfg.device == "cpu"
    plain = extract_cfg(build_parser().parse_args(["locate", "x.jpg", "--index", "I"]))
    assert plain.jpeg_draft and plain.image_size == 640  # on by default since issue 14
    full = extract_cfg(build_parser().parse_args(["index", "LIB", "--no-jpeg-draft"]))
    assert not full.jpeg_draft


def _locate(lund_index, *items, json_out=False, size=320):
    argv = ["locate", *map(str, items), "--index", str(lund_index), "--image-size", str(size)]
    return main([*argv, "--workers", "0", "-q", *(["--json"] if json_out else [])])


def test_locate_lists_failures_and_fails_only_when_all_do(lund_index, shared_dir, tmp_path, capsys):
    query = min((shared_dir / "data/lund_street/queries").glob("*.jpg"))
    named = tmp_path / "a\nb.jpg"  # a file name with a newline stays on one line of output
    named.write_bytes(query.read_bytes())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "notes.txt").write_text("x")
    missing = tmp_path / "missing.jpg"

    assert _locate(lund_index, named, broken, missing, tmp_path / "notes.txt") == 0
    out = capsys.readouterr().out
    assert "a\\nb.jpg" in out and "a\nb.jpg" not in out
    assert f"{missing}\n  cannot locate: file not found" in out
    assert "notes.txt\n  cannot locate: not a photo" in out
    assert "broken.jpg\n  cannot locate: " in out
    assert "  location   " in out and " m  confidence " in out

    assert _locate(lund_index, broken, missing, json_out=True) == 1  # every photo failed
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {Path(r["query"]).name: r["error"] for r in results}["missing.jpg"] == "file not found"
    assert len(results) == 2 and all(r["lat"] is None for r in results)


def test_overlapping_folders_locate_each_photo_once(lund_index, shared_dir, capsys):
    queries = shared_dir / "data/lund_street/queries"
    one = min(queries.glob("*.jpg"))
    assert _locate(lund_index, queries, one, queries / ".", json_out=True) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(results) == len(list(queries.glob("*.jpg")))


def test_help_reads_defaults_from_the_dataclasses(capsys):
    from netvlad_gui.core.config import ExtractConfig, LocateConfig
    from netvlad_gui.core.training.train import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"training tuples per SGD step (default {TrainConfig.batch_size})" in text
    assert f"(default {TrainConfig.epochs})" in text or f"default {TrainConfig.epochs}" in text
    with pytest.raises(SystemExit):
        main(["locate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {LocateConfig.top_n})" in text
    assert f"longer side in pixels (default {ExtractConfig.image_size})" in text


def test_a_bug_prints_one_line_and_the_log_of_its_traceback(tmp_path, capsys, monkeypatch):
    import platformdirs

    from netvlad_gui.cli import library

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(library, "cmd_info", boom)
    monkeypatch.setattr(platformdirs, "user_log_dir", lambda *a, **k: str(tmp_path / "logs"))
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "internal error" in err and "ZeroDivisionError" in err
    log = Path(err.rsplit(" ", 1)[-1])
    assert log.parent == tmp_path / "logs" and "in boom" in log.read_text()
    with pytest.raises(ZeroDivisionError):
        main(["--verbose", "info"])  # developers get the traceback


def test_file_system_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from netvlad_gui.cli import library

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "idx"))

    monkeypatch.setattr(library, "cmd_info", denied)
    monkeypatch.setattr("platformdirs.user_log_dir", lambda *a, **k: str(tmp_path / "logs"))
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"netvlad: error: [Errno 13] Permission denied: '{tmp_path / 'idx'}'"
    assert not (tmp_path / "logs").exists()


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    from netvlad_gui.cli import library

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(library, "cmd_info", interrupted)
    assert main(["info"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_index_prints_the_builds_warnings_and_info_the_dead_rows(tmp_path, capsys):
    """A lost model.pt: the rebuild says every photo is extracted again; info shows dead rows."""
    from _library import make_library

    make_library(tmp_path / "lib", 6)
    fast = ["--backbone-weights", "none", "--image-size", "96", "--workers", "0", "-q"]
    argv = ["index", str(tmp_path / "lib"), "--index", str(tmp_path / "idx"), *fast]
    assert main(argv) == 0
    capsys.readouterr()
    (tmp_path / "idx" / "model.pt").unlink()
    assert main(argv) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning")]
    assert warnings and "again" in warnings[0], out
    assert main(["info", "--index", str(tmp_path / "idx"), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)["index"]
    assert index["indexed"] == 6 and index["dead_rows"] >= 0 and 0 <= index["dead_share"] <= 1


def test_locate_leads_with_the_verdict_and_never_places_a_far_away_photo(
    lund_index_640, shared_dir, capsys
):
    """Issue 11: Berlin against a Lund library is "not found", with no location line; the JSON
    gains "verdict" per photo and "inliers" per match (null when not verified), issue 21 the
    reason. At the default 640 px: at 320 the global score cannot tell Berlin from Lund."""
    lund_index = lund_index_640
    berlin = min((shared_dir / "data/exif/gps_photos/opensfm_berlin").glob("*.jpg"))
    lund = min((shared_dir / "data/lund_street/queries").glob("*.jpg"))
    assert _locate(lund_index, berlin, lund, size=640) == 0
    out = capsys.readouterr().out
    far, near = out.split(str(lund))
    assert far.splitlines()[1].startswith("  verdict    Not found in this library")
    assert far.splitlines()[2].startswith("  why        no matching points")  # issue 21
    assert "  location " not in far and "  guess      " in far
    assert near.splitlines()[1].startswith("  verdict    Located (verified)")
    assert near.splitlines()[2].startswith("  why        ") and "matching points" in near
    assert " inliers" in near

    assert _locate(lund_index, berlin, lund, json_out=True, size=640) == 0
    far_j, near_j = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert far_j["verdict"] == "not_found" and near_j["verdict"] == "located"
    # issue 21: every verdict says why, in words (the reasons are core/query/verdict.py's)
    assert "looks like no photo of this library" in far_j["verdict_reason"]
    assert "matching points" in near_j["verdict_reason"]
    assert all(isinstance(m["inliers"], int) for m in near_j["matches"])

    assert _locate(lund_index, lund, "--no-verify", json_out=True, size=640) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"] in ("located", "uncertain", "not_found")
    assert res["verdict_reason"].startswith("not verified")
    assert all(m["inliers"] is None for m in res["matches"])


def test_the_command_exits_with_mains_code_and_spares_the_final_collection(monkeypatch):
    import gc

    from netvlad_gui import cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    try:
        with pytest.raises(SystemExit) as ended:
            cli.run()
        assert ended.value.code == 3
        # what the process holds is out of the collector's reach before teardown walks it
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_output_survives_an_ascii_stdout(lund_index, shared_dir, tmp_path):
    # PYTHONIOENCODING=ascii: the index summary and every located result crashed on "±".
    import os
    import subprocess
    import sys

    from _library import make_library

    env = os.environ | {"PYTHONIOENCODING": "ascii"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "netvlad_gui.cli", *args]
        return subprocess.run(
            cmd, check=False, capture_output=True, env=env, timeout=600, encoding="ascii"
        )

    query = shared_dir / "data/lund_street/queries/02.jpg"
    out = cli(
        "locate", str(query), "--index", str(lund_index), "--no-verify", "--image-size", "320"
    )
    assert out.returncode == 0, out.stderr
    assert "Located" in out.stdout and " +/-" in out.stdout  # "±", as ASCII can say it
    lib = tmp_path / "lib"
    make_library(lib, 3)
    Image.open(lib / "img_0000.jpg").save(lib / "café ±.jpg")  # not in gps.csv: listed
    out = cli(
        *("index", str(lib), "--index", str(tmp_path / "idx"), "--backbone-weights", "none"),
        *("--image-size", "96", "--workers", "0", "-q"),
    )
    assert out.returncode == 0, out.stderr
    assert "no GPS  cafe +/-.jpg" in out.stdout


def test_locate_exports_csv_and_geojson_with_the_core_writer(lund_index_640, shared_dir, tmp_path):
    # Issue 23: the CLI writes the files the GUI's File → Export writes, Berlin without a Point
    # (at the default 640 px: at 320 px the library cannot tell Berlin from Lund, "uncertain").
    import csv

    lund_index = lund_index_640

    berlin = min((shared_dir / "data/exif/gps_photos/opensfm_berlin").glob("*.jpg"))
    lund = min((shared_dir / "data/lund_street/queries").glob("*.jpg"))
    out_csv, out_geo = tmp_path / "r.csv", tmp_path / "r.geojson"
    args = [berlin, lund, tmp_path / "missing.jpg", "--csv", out_csv, "--geojson", out_geo]
    assert _locate(lund_index, *args) == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [Path(r["query"]).name for r in rows] == ["missing.jpg", berlin.name, lund.name]
    missing, far, near = rows
    assert missing["error"] == "file not found" and missing["verdict"] == ""
    assert far["verdict"] == "not_found" and far["lat"] == "" and far["guess_lat"] != ""
    assert near["verdict"] == "located" and float(near["lat"]) == pytest.approx(55.698, abs=0.01)
    features = json.loads(out_geo.read_text(encoding="utf-8"))["features"]
    assert [f["geometry"] is None for f in features] == [True, True, False]
    with pytest.raises(SystemExit) as bad:  # a typo is refused before any photo is located
        _locate(lund_index, lund, "--csv", tmp_path / "no" / "such" / "dir.csv")
    assert bad.value.code == 2
