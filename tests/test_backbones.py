"""Backbone registry, weight loading (file, sidecar, download, offline) and TF "SAME" padding.

Nothing here touches the outside network: downloads go to a server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from netvlad_gui.core import paths
from netvlad_gui.core.model import backbones
from netvlad_gui.core.model.backbones import (
    IMAGENET,
    Backbone,
    BackboneError,
    Normalization,
    TFSameConv2d,
    WeightsUnavailableError,
    apply_tf_same_padding,
    load_backbone,
)

SHIPPED = paths.models_dir() / "mobilenet_v2_imagenet.pth"


@pytest.mark.parametrize(
    "name, first_key, dim",
    [
        ("vgg16", "28.weight", 512),
        ("alexnet", "10.weight", 256),
        ("resnet18", "layer4.1.bn2.weight", 512),
        ("resnet50", "layer4.2.conv3.weight", 2048),
        ("mobilenet_v2", "13.conv.3.weight", 96),
    ],
)
def test_registry_builds_random_backbones(name: str, first_key: str, dim: int) -> None:
    torch.manual_seed(0)
    bb = load_backbone(name, "none")
    assert isinstance(bb, Backbone) and isinstance(bb.module, nn.Sequential)
    module, out_dim, norm, padding, source = bb  # also unpacks as a tuple
    assert out_dim == dim == backbones.BACKBONES[name].dim
    assert norm == IMAGENET and padding == "torch" and source == "random"
    assert first_key in module.state_dict()
    assert not module.training
    with torch.no_grad():
        out = module(torch.rand(1, 3, 64, 64))
    assert out.shape[1] == dim and torch.isfinite(out).all()


def test_cut_points_match_torchvision_layers() -> None:
    vgg = load_backbone("vgg16", "none").module
    assert isinstance(vgg[28], nn.Conv2d) and len(vgg) == 29  # conv5_3, before ReLU / pool
    alex = load_backbone("alexnet", "none").module
    assert isinstance(alex[10], nn.Conv2d) and len(alex) == 11
    mnv2 = load_backbone("mobilenet_v2", "none").module
    assert len(mnv2) == 14  # no activation after the linear bottleneck: signed outputs
    with torch.no_grad():
        assert (mnv2(torch.rand(1, 3, 64, 64)) < 0).any()
    assert list(load_backbone("resnet18", "none").module._modules)[-1] == "layer4"


def test_unknown_backbone_and_bad_normalization() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'nope'"):
        load_backbone("nope", "none")
    with pytest.raises(BackboneError, match="padding"):
        load_backbone("alexnet", "none", padding="reflect")
    with pytest.raises(BackboneError, match="positive"):
        Normalization(mean=(0, 0, 0), std=(1, 0, 1))


# --- TF "SAME" padding ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(9, 8), (7, 7)])
def test_tf_same_conv_pads_bottom_right(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    tf = nn.Sequential(conv)
    x = torch.randn(1, 3, *size)
    before = conv(x)
    assert apply_tf_same_padding(tf) == 1
    assert isinstance(tf[0], TFSameConv2d) and tf[0].weight is conv.weight
    ih, iw = size
    ph = max((-(-ih // 2) - 1) * 2 + 3 - ih, 0)
    pw = max((-(-iw // 2) - 1) * 2 + 3 - iw, 0)
    hand = F.conv2d(
        F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv.weight, conv.bias, stride=2
    )
    after = tf(x)
    torch.testing.assert_close(after, hand)
    assert after.shape == before.shape
    if size[0] % 2 == 0 or size[1] % 2 == 0:  # an odd total padding: the two conventions differ
        assert not torch.allclose(after, before)


def test_tf_same_keeps_state_dict_keys() -> None:
    module = load_backbone("mobilenet_v2", "none").module
    keys = list(module.state_dict())
    swapped = apply_tf_same_padding(module)
    assert swapped == 14  # the stem conv and 13 depthwise convs; 1x1 convs are untouched
    assert list(module.state_dict()) == keys


def test_shipped_mobilenet_loads_strictly_with_its_sidecar() -> None:
    bb = load_backbone("mobilenet_v2")
    assert bb.padding == "tf_same" and bb.source == "shipped:mobilenet_v2_imagenet.pth"
    assert bb.normalization.mean == pytest.approx((0.50196,) * 3)
    assert bb.normalization.std == pytest.approx((0.50196,) * 3)
    assert sum(isinstance(m, TFSameConv2d) for m in bb.module.modules()) == 14
    state = torch.load(SHIPPED, weights_only=True)
    for key, value in bb.module.state_dict().items():
        assert torch.equal(value, state[f"features.{key}"]), key
    with torch.no_grad():
        out = bb.module((torch.rand(1, 3, 96, 128) - 0.50196) / 0.50196)
    assert out.shape == (1, 96, 6, 8)
    # without tf_same the same weights give other features
    plain = load_backbone("mobilenet_v2", padding="torch")
    assert plain.padding == "torch"
    assert not any(isinstance(m, TFSameConv2d) for m in plain.module.modules())


# --- weights files and sidecars -------------------------------------------------------------


def _save_random(name: str, path: Path, wrap: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    torch.save({"state_dict": state} if wrap else state, path)
    return state


@pytest.mark.parametrize("wrap", [False, True])
def test_weights_file_with_sidecar(tmp_path: Path, wrap: bool) -> None:
    path = tmp_path / "converted.pth"
    state = _save_random("resnet18", path, wrap=wrap)
    bb = load_backbone("resnet18", path)
    assert bb.padding == "torch" and bb.normalization == IMAGENET
    assert bb.source == f"file:{path.resolve()}"
    assert torch.equal(
        bb.module.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"]
    )
    sidecar = {"padding": "tf_same", "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}
    (tmp_path / "converted.json").write_text(json.dumps(sidecar))
    bb = load_backbone("resnet18", str(path))
    assert bb.padding == "tf_same" and bb.normalization.mean == (0.5, 0.4, 0.3)
    assert isinstance(bb.module.conv1, TFSameConv2d)


def test_sidecar_checks(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    _save_random("mobilenet_v2", path)
    sidecar = tmp_path / "w.json"
    sidecar.write_text(json.dumps({"arch": "vgg16"}))
    with pytest.raises(BackboneError, match="for 'vgg16', not 'mobilenet_v2'"):
        load_backbone("mobilenet_v2", path)
    sidecar.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(BackboneError, match="sha256"):
        load_backbone("mobilenet_v2", path)
    sidecar.write_text(json.dumps({"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    assert load_backbone("mobilenet_v2", path).dim == 96
    sidecar.write_text("{broken")
    with pytest.raises(BackboneError, match="unreadable sidecar"):
        load_backbone("mobilenet_v2", path)


def test_bad_weights_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="--backbone-weights FILE"):
        load_backbone("alexnet", tmp_path / "missing.pth")
    wrong = tmp_path / "mnv2.pth"
    _save_random("mobilenet_v2", wrong)
    with pytest.raises(BackboneError, match=r"mnv2\.pth: not a alexnet state dict \(\d+ missing"):
        load_backbone("alexnet", wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 50)
    with pytest.raises(BackboneError, match="garbage.pth: not a readable state dict"):
        load_backbone("alexnet", garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(SHIPPED.read_bytes()[:100_000])
    with pytest.raises(BackboneError, match="truncated.pth"):
        load_backbone("mobilenet_v2", truncated)


# --- torchvision download: offline, and through a local server ------------------------------


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("name, weights", [("resnet18", None), ("mobilenet_v2", "torchvision")])
def test_offline_download_explains_the_three_ways(monkeypatch, name, weights) -> None:
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone(name, weights)
    message = str(err.value)
    assert "\n" not in message and "URLError" in message
    assert "go online once" in message
    assert "--backbone-weights FILE" in message and "--backbone-weights none" in message
    assert isinstance(err.value, RuntimeError)


@pytest.fixture
def local_server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_torchvision_download_via_local_server(monkeypatch, tmp_path, local_server) -> None:
    root, base = local_server
    state = _save_random("mobilenet_v2", root / "mobilenet_v2-test.pth")
    label = "torchvision:MobileNet_V2_Weights.TEST"
    monkeypatch.setattr(
        backbones, "torchvision_weights_url", lambda name: (f"{base}/{name}-test.pth", label)
    )
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    bb = load_backbone("mobilenet_v2", "torchvision", progress=False)
    assert bb.source == label and bb.padding == "torch" and bb.normalization == IMAGENET
    assert torch.equal(bb.module.state_dict()["0.0.weight"], state["features.0.0.weight"])
    assert (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-test.pth").is_file()  # cached
    (root / "mobilenet_v2-test.pth").unlink()  # a second load needs no server
    assert load_backbone("mobilenet_v2", "torchvision", progress=False).source == label
    monkeypatch.setattr(backbones, "torchvision_weights_url", lambda name: (f"{base}/x.pth", label))
    with pytest.raises(WeightsUnavailableError, match="HTTPError"):
        load_backbone("mobilenet_v2", "torchvision", progress=False)


def test_torchvision_urls_come_from_the_weights_api() -> None:
    url, label = backbones.torchvision_weights_url("vgg16")
    assert url.startswith("https://download.pytorch.org/") and label.startswith("torchvision:VGG16")


def _zip_bomb(path: Path, floats: int) -> Path:
    """A torch.save'd state dict whose entries are deflated: 256 MB of zeros in ~250 KB."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"features.0.0.weight": torch.zeros(floats)}, plain)
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            with zin.open(info) as src, zout.open(info.filename, "w", force_zip64=True) as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
    plain.unlink()
    return path


def test_a_zip_bomb_as_backbone_weights_is_refused_before_it_inflates(tmp_path: Path) -> None:
    # A 9.7 MB bomb grew to 10.5 GB before its refusal; as --model it was refused at once.
    import subprocess
    import sys

    bomb = _zip_bomb(tmp_path / "bomb.pth", 64 << 20)
    assert bomb.stat().st_size < 2 << 20
    code = (
        "import resource, sys, torch\n"
        "from netvlad_gui.core.model.backbones import BackboneError, load_backbone\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_backbone('mobilenet_v2', sys.argv[1])\n"
        "except BackboneError as exc:\n"
        "    print(exc)\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(grew // 1024)\n"
    )
    cmd = [sys.executable, "-c", code, str(bomb)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    message, grew_mb = out.stdout.strip().splitlines()
    assert "compressed" in message and "zip bomb" in message and str(bomb) in message
    assert int(grew_mb) < 100  # the 256 MB inside were never inflated


def test_old_style_weights_files_still_load(tmp_path: Path) -> None:
    full = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "legacy.pth"
    torch.save(full.state_dict(), path, _use_new_zipfile_serialization=False)
    bb = load_backbone("mobilenet_v2", path)
    assert torch.equal(bb.module[0][0].weight, full.features[0][0].weight)


def test_a_zip_bomb_as_model_says_what_it_is(tmp_path: Path) -> None:
    from netvlad_gui.core.model.checkpoint import CheckpointError
    from netvlad_gui.core.model.importers import load_any

    bomb = _zip_bomb(tmp_path / "bomb.pth", 1 << 20)
    with pytest.raises(CheckpointError, match=r"compressed, which torch.save never does"):
        load_any(bomb)
