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


# -- settings out of range: one ConfigError line that names the setting -----------------------
def test_every_config_dataclass_validates_one_way():
    """``validate()`` on each, returning the config itself; defaults are valid."""
    import dataclasses

    from netvlad_gui.core import config, trainconfig

    classes = [
        c
        for module in (config, trainconfig)
        for c in vars(module).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == module.__name__
    ]
    assert {c.__name__ for c in classes} >= {
        "ModelConfig",
        "ExtractConfig",
        "InitConfig",
        "VerifyConfig",
        "LocateConfig",
        "IndexConfig",
        "DistributedConfig",
        "MiningConfig",
        "TrainConfig",
        "AugmentConfig",
        "SplitConfig",
        "DataSpec",
    }
    for cls in classes:
        cfg = cls() if cls is not trainconfig.TrainConfig else cls(data=_data_spec())
        assert cfg.validate() is cfg, cls.__name__


def _data_spec():
    from netvlad_gui.core.training.datasets import DataSpec

    return DataSpec(data="photos")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda c: c.ModelConfig(num_clusters=0), "NetVLAD clusters (--num-clusters)"),
        (lambda c: c.ModelConfig(pooling="gem"), "unknown pooling 'gem'"),
        (lambda c: c.InitConfig(num_images=0), "images sampled for k-means (--init-images)"),
        (lambda c: c.MiningConfig(loss="cosine"), "loss (--loss) must be squared or unsquared"),
        (lambda c: c.MiningConfig(neg_cache=-1), "negatives cached (--neg-cache) must be >= 0"),
        (lambda c: c.MiningConfig(margin=-0.1), "margin (--margin) must be > 0"),
        (lambda c: c.IndexConfig(kind="lsh"), "unknown index kind 'lsh'"),
        (lambda c: c.IndexConfig(nprobe=0), "index nprobe must be a whole number"),
        (lambda c: c.DistributedConfig(actors=-1), "Ray actors (--ray-actors)"),
        (lambda c: c.LocateConfig(top_n=0), "top must be a whole number from 1 to 1000"),
        (lambda c: c.VerifyConfig(top_k=0), "verify top must be a whole number from 1 to 1000"),
        (lambda c: c.TrainConfig(data=_data_spec(), lr=0), "learning rate (--lr) must be > 0"),
        (
            lambda c: c.TrainConfig(data=_data_spec(), lr_gamma=2.0),
            "lr factor (--lr-gamma) must be in (0, 1], got 2.0",
        ),
        (
            lambda c: c.TrainConfig(data=_data_spec(), train_layers="head"),
            "layers to train (--train-layers) must be last_block, pooling or all, not 'head'",
        ),
        (lambda c: c.TrainConfig(data=_data_spec(), image_size=100_000), "image size"),
        (lambda c: c.AugmentConfig(variants=-1), "synthetic nights per photo (--augment)"),
    ],
)
def test_config_errors_name_the_setting(make, words):
    from types import SimpleNamespace

    from netvlad_gui.core import config, trainconfig
    from netvlad_gui.core.errors import ConfigError

    both = SimpleNamespace(**{**vars(config), **vars(trainconfig)})
    with pytest.raises(ConfigError) as err:
        make(both).validate()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_old_error_names_are_the_one_config_error():
    from netvlad_gui.core.errors import ConfigError, TrainConfigError
    from netvlad_gui.core.library.searchindex import IndexConfigError
    from netvlad_gui.core.model.network import ModelConfigError

    assert TrainConfigError is ConfigError is IndexConfigError is ModelConfigError


def test_a_setting_out_of_range_is_a_user_error_in_the_cli(tmp_path, capsys):
    make_library(tmp_path / "lib", 3)
    argv = ["index", str(tmp_path / "lib"), "--index", str(tmp_path / "idx"), "-q"]
    assert main([*argv, "--image-size", "100000"]) == 1
    assert "image size must be a whole number from 32 to 4096" in _one_user_error(capsys)
    assert not (tmp_path / "idx" / "model.pt").exists()  # refused before any work
    run = ["train", "--data", str(tmp_path / "lib"), "--out", str(tmp_path / "run")]
    assert main([*run, "--lr-gamma", "2"]) == 1
    assert "lr factor (--lr-gamma) must be in (0, 1], got 2.0" in _one_user_error(capsys)
