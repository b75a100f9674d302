"""Settings out of range are refused by core with a one-line ConfigError, before any work.

`--top 0` once raised an AssertionError inside faiss and `--image-size 100000` was OOM-killed at
about 20 GB (issue 13, item 10); both fronts build these configs and pass them to core.
"""

from __future__ import annotations

import pytest
from _library import make_library

from netvlad_gui.core.config import ExtractConfig, LocateConfig, ModelConfig
from netvlad_gui.core.errors import ConfigError, NetvladError
from netvlad_gui.core.library.builder import build_index
from netvlad_gui.core.library.index import LibraryIndex
from netvlad_gui.core.model.features import extract, extract_one
from netvlad_gui.core.model.network import build_model
from netvlad_gui.core.query.locate import Locator


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"image_size": 100_000}, r"image size must be a whole number from 32 to 4096, not 100000"),
        ({"image_size": 16}, "image size"),
        ({"image_size": 640.0}, "image size"),
        ({"batch_size": 0}, "batch size"),
        ({"num_workers": -1}, "decoding workers"),
        ({"max_pixels": 0}, "max pixels"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ],
)
def test_extract_config_out_of_range(changes, pattern):
    cfg = ExtractConfig(**changes)
    with pytest.raises(ConfigError, match=pattern) as err:
        cfg.validate()
    assert isinstance(err.value, NetvladError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"top_n": 0}, r"top must be a whole number from 1 to 1000, not 0"),
        ({"top_n": -5}, "top"),
        ({"top_n": 10**6}, "top"),
        ({"agree_radius_m": 0.0}, "agreement radius"),
        ({"agree_radius_m": float("nan")}, "agreement radius"),
        ({"min_score": 1.5}, "minimum score"),
        ({"min_score": float("nan")}, "minimum score"),
    ],
)
def test_locate_config_out_of_range(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        LocateConfig(**changes).validate()


def test_defaults_and_edges_are_valid():
    assert ExtractConfig().validate() == ExtractConfig()
    assert LocateConfig().validate() == LocateConfig()
    ExtractConfig(image_size=32, batch_size=1, num_workers=0, device="cuda:1").validate()
    ExtractConfig(image_size=4096, device="cpu").validate()
    LocateConfig(top_n=1000, min_score=-1.0, agree_radius_m=0.5).validate()


def test_locator_refuses_bad_settings_before_any_work(tmp_path):
    """The core entry the CLI and the GUI share: refused before the model is even looked for."""
    index = LibraryIndex(tmp_path / "idx", create=True)  # empty: no model in it
    try:
        with pytest.raises(ConfigError, match="top must be"):
            Locator(index, locate_cfg=LocateConfig(top_n=0))
        with pytest.raises(ConfigError, match="image size"):
            Locator(index, extract_cfg=ExtractConfig(image_size=100_000))
        with pytest.raises(FileNotFoundError, match="no model"):  # good settings get further
            Locator(index)
    finally:
        index.close()


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig("alexnet", "fmax"), "none")


def test_extraction_refuses_bad_settings(tmp_path, model, monkeypatch):
    paths = make_library(tmp_path, 2, size=64)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a photo with settings out of range")

    monkeypatch.setattr("netvlad_gui.core.model.features.load_tensor", no_decoding)
    with pytest.raises(ConfigError, match="image size"):
        next(extract(model, paths, ExtractConfig(image_size=100_000, num_workers=0)))
    with pytest.raises(ConfigError, match="batch size"):
        next(extract(model, paths, ExtractConfig(batch_size=0, num_workers=0)))
    with pytest.raises(ConfigError, match="image size"):
        extract_one(model, paths[0], ExtractConfig(image_size=100_000))


def test_locate_top_n_argument_is_checked(tmp_path, model):
    from netvlad_gui.core.query.session import LocateSession

    class _Bare(LocateSession):
        def __init__(self):  # no index or model: only the argument check is under test
            self.cfg = LocateConfig().validate()

    with pytest.raises(ConfigError, match="top must be .* not 0"):
        _Bare().locate(tmp_path / "x.jpg", top_n=0)


def test_build_index_refuses_an_oversized_image_size(tmp_path):
    library = tmp_path / "lib"
    make_library(library, 3, size=64)
    with pytest.raises(ConfigError, match="image size"):
        build_index(
            library,
            tmp_path / "idx",
            model_spec="alexnet-fmax",
            backbone_weights="none",
            extract_cfg=ExtractConfig(image_size=100_000, num_workers=0, device="cpu"),
        )


# -- issue 23: model inputs that ended in "internal error (a bug…)" ----------------------------
def test_a_checkpoint_asking_for_10_to_the_8_clusters_is_refused_before_allocating(tmp_path):
    # It tried to allocate 38 GB, then "internal error (a bug, please report it)".
    import torch

    from netvlad_gui.core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = build_model(ModelConfig(num_clusters=4), "none", progress=False)
    path = tmp_path / "huge.pt"
    save_checkpoint(model, path)
    obj = torch.load(path, weights_only=True)
    obj["config"]["num_clusters"] = 10**8
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="clusters .* from 1 to 1024") as err:
        load_checkpoint(path)
    assert "use another checkpoint" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(NetvladError, match="from 1 to 1024"):
        build_model(ModelConfig(num_clusters=10**8), "none", progress=False)


def test_a_library_of_unreadable_photos_says_so_in_one_line(tmp_path, capsys):
    from netvlad_gui.cli import main

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        (lib / f"p{i}.jpg").write_text(f"a note, not a photo {i}\n")
    code = main(
        ["index", str(lib), "--index", str(tmp_path / "idx"), "--backbone-weights", "none"]
        + ["--image-size", "96", "--workers", "0", "--device", "cpu", "-q"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "internal error" not in err and "\n" not in err
    assert "none of the 3 photos sampled to set up the model could be read" in err
    assert "p0.jpg: not an image this app can read: the file is a text file" in err


def test_a_library_too_small_to_set_up_the_model_says_so(tmp_path):
    from _library import build_small

    lib = tmp_path / "lib"
    make_library(lib, 1, size=64)  # one small photo: 30 local descriptors for 64 clusters
    with pytest.raises(NetvladError, match="too few photos to set up the model: 1 readable"):
        build_small(lib, tmp_path / "idx")


def test_device_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    import torch

    from netvlad_gui.core.model.features import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NetvladError, match="no CUDA GPU is available; use --device cpu"):
        resolve_device("cuda")
