"""The netvlad-gui checkpoint: exact round trip, atomic writes, and every way a file can be bad."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from netvlad_gui.core.config import InitConfig, ModelConfig
from netvlad_gui.core.model.backbones import Normalization, TFSameConv2d
from netvlad_gui.core.model.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    ForeignCheckpointError,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from netvlad_gui.core.model.network import (
    PlaceModel,
    build_model,
    fit_whitening,
    init_netvlad,
    sample_local_descriptors,
)


def _images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trained() -> PlaceModel:
    """A small model with every part set: initialised NetVLAD, fitted whitening, custom input."""
    torch.manual_seed(0)
    norm = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    config = ModelConfig(backbone="alexnet", num_clusters=4)
    model = build_model(config, "none", normalization=norm, padding="tf_same")
    images = [_images(s) for s in range(4)]
    init_netvlad(model, sample_local_descriptors(model, images, 10, 0), InitConfig(kmeans_iters=5))
    with torch.inference_mode():
        pooled = torch.cat([model.pooled(x) for x in images]).numpy()
    fit_whitening(model, pooled, out_dim=6)
    return model


@pytest.fixture(scope="module")
def saved(trained: PlaceModel, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(trained, path, extra={"epoch": 3, "recall": [0.5, 0.75]})
    return path


def test_round_trip_is_exact(trained: PlaceModel, saved: Path) -> None:
    loaded = load_checkpoint(saved)
    assert loaded.config == trained.config and loaded.config.whitening_dim == 6
    assert loaded.padding == "tf_same" and isinstance(loaded.backbone[0], TFSameConv2d)
    assert loaded.meta == trained.meta and loaded.meta["backbone_weights"] == "random"
    assert loaded.extra == {"epoch": 3, "recall": [0.5, 0.75]}
    assert loaded.is_initialised and not loaded.training
    assert loaded.normalization == trained.normalization
    images = _images(9)
    with torch.inference_mode():
        assert torch.equal(loaded(images), trained(images))
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_header_and_plain_payload(saved: Path) -> None:
    header = read_checkpoint_header(saved)
    assert header["format"] == FORMAT and header["version"] == VERSION
    assert header["config"]["backbone"] == "alexnet" and "state_dict" not in header
    assert header["normalization"]["mean"] == pytest.approx([0.5, 0.4, 0.3])
    raw = torch.load(saved, weights_only=True)  # plain types and tensors only
    assert set(raw) == {
        "format", "version", "config", "padding", "normalization", "meta", "state_dict", "extra"
    }  # fmt: skip


def test_save_is_atomic_and_overwrites(trained: PlaceModel, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(trained, path)
    path.write_bytes(b"old")
    save_checkpoint(trained, path)
    assert load_checkpoint(path).dim == 6
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left over
    trained.meta["bad"] = Path("x")
    try:
        with pytest.raises(TypeError, match="meta"):
            save_checkpoint(trained, tmp_path / "other.pt")
    finally:
        del trained.meta["bad"]
    assert not (tmp_path / "other.pt").exists() and len(list(tmp_path.iterdir())) == 1


class _Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _Plain:
    """A harmless class: still code that unpickling would import and call."""


def test_bad_files(tmp_path: Path, saved: Path) -> None:
    def expect(path: Path, pattern: str, kind: type = CheckpointError) -> None:
        with pytest.raises(kind, match=pattern) as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value)

    expect(tmp_path / "missing.pt", "not found")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    expect(truncated, "unreadable checkpoint .truncated or corrupt")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    expect(noise, "unreadable checkpoint")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Evil(marker)}, evil)
    expect(evil, "refused for safety")
    # what was blocked, not torch's advice and documentation link
    expect(evil, r"this file contains code \(pickle object [\w.]*getattr\); only plain weights")
    evil_pickle = tmp_path / "evil.pkl"
    evil_pickle.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    expect(evil_pickle, "refused for safety")
    expect(evil_pickle, r"pickle object [\w.]*getattr\)")
    odd = tmp_path / "odd.pt"
    torch.save({"format": FORMAT, "payload": _Plain()}, odd)
    expect(
        odd, r"^[^(]*: refused for safety: this file contains code \(pickle object [\w.]*_Plain\)"
    )
    assert not marker.exists()
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, foreign)
    expect(foreign, "not a netvlad-gui checkpoint", ForeignCheckpointError)
    with pytest.raises(ForeignCheckpointError):
        read_checkpoint_header(foreign)


def _rewrite(saved: Path, target: Path, **changes) -> Path:
    raw = torch.load(saved, weights_only=True)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = raw[key] | value
        else:
            raw[key] = value
    torch.save(raw, target)
    return target


def test_version_and_shape_checks(tmp_path: Path, saved: Path) -> None:
    newer = _rewrite(saved, tmp_path / "newer.pt", version=VERSION + 1)
    with pytest.raises(CheckpointError, match="newer netvlad-gui"):
        load_checkpoint(newer)
    with pytest.raises(CheckpointError, match="newer"):
        read_checkpoint_header(newer)
    shapes = _rewrite(saved, tmp_path / "shapes.pt", config={"num_clusters": 8})
    with pytest.raises(CheckpointError, match=r"do not match alexnet-netvlad .*wrong shape"):
        load_checkpoint(shapes)
    unknown = _rewrite(saved, tmp_path / "unknown.pt", config={"backbone": "vgg99"})
    with pytest.raises(CheckpointError, match="invalid model description.*vgg99"):
        load_checkpoint(unknown)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, saved: Path, bad: float) -> None:
    """NaN weights once loaded fine and filled the index with NaN ("no match" for every photo)."""
    raw = torch.load(saved, weights_only=True)
    key = next(k for k, v in raw["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    raw["state_dict"][key] = raw["state_dict"][key].clone()
    raw["state_dict"][key].view(-1)[1] = bad
    path = tmp_path / "diverged.pt"
    torch.save(raw, path)
    with pytest.raises(
        CheckpointError, match=rf"NaN or infinity \(1 tensors, first: {key}\)"
    ) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    read_checkpoint_header(path)  # the header alone (no weights) still reads
