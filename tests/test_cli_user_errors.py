"""A user's mistake is never called a bug: a device this machine lacks and a setting out of range
are one `netvlad: error:` line (issue 20), from core's NetvladError family."""

from __future__ import annotations

import pytest
import torch
from _library import build_small, make_library

from netvlad_gui.cli import main
from netvlad_gui.core.errors import DeviceUnavailableError, NetvladError
from netvlad_gui.core.model.features import resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _one_user_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("netvlad: error: "), err
    assert "internal error" not in err and "\n" not in err
    return err


@no_cuda
def test_device_cuda_without_cuda_is_a_user_error_for_index(tmp_path, capsys):
    make_library(tmp_path / "lib", 3)
    argv = ["index", str(tmp_path / "lib"), "--index", str(tmp_path / "idx"), "--device", "cuda"]
    assert main([*argv, "--backbone-weights", "none", "--image-size", "96", "-q"]) == 1
    err = _one_user_error(capsys)
    assert "CUDA was asked for, but no CUDA GPU is available; use --device cpu" in err


@no_cuda
def test_device_cuda_without_cuda_is_a_user_error_for_locate(tmp_path, capsys):
    photos = make_library(tmp_path / "lib", 4)
    build_small(tmp_path / "lib", tmp_path / "idx", init_images=4)
    argv = ["locate", str(photos[0]), "--index", str(tmp_path / "idx"), "--device", "cuda", "-q"]
    assert main(argv) == 1
    assert "no CUDA GPU is available" in _one_user_error(capsys)


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_resolve_device_names_the_missing_cuda_device(device):
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is available") as err:
        resolve_device(device)
    assert isinstance(err.value, NetvladError) and isinstance(err.value, RuntimeError)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has mps")
def test_resolve_device_refuses_mps_where_there_is_none():
    with pytest.raises(DeviceUnavailableError, match="mps .*not available here"):
        resolve_device("mps")


def test_cpu_and_auto_still_resolve():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
