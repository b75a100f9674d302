"""The netvlad CLI: one-line errors with a non-zero exit, and the commands that need no model."""

from __future__ import annotations

import json

import pytest

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
    assert not plain.jpeg_draft and plain.image_size == 640
