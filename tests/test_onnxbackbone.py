"""Issue 14 item 5: ONNX Runtime runs the backbone (an optional extra), torch is the reference."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _library import build_small, make_library

from netvlad_gui.core import paths
from netvlad_gui.core.config import ExtractConfig, ModelConfig
from netvlad_gui.core.errors import ConfigError, NetvladError
from netvlad_gui.core.model import onnxbackbone
from netvlad_gui.core.model.features import forward, inference_model
from netvlad_gui.core.model.network import build_model

ORT = ExtractConfig(device="cpu", runtime="onnxruntime", precision="fp32")
TORCH = ExtractConfig(device="cpu", precision="fp32")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder of this module's own (paths.cache_dir is patched per test)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, cache):
    monkeypatch.setattr(paths, "cache_dir", lambda: cache)


@pytest.fixture(scope="module")
def default_arch():
    """The default model's architecture: MobileNetV2 with TF "SAME" padding, random weights."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    return build_model(ModelConfig.from_name("mobilenet_v2-netvlad"), "none", padding="tf_same")


def test_a_bad_runtime_is_a_config_error():
    with pytest.raises(ConfigError, match="runtime must be torch or onnxruntime"):
        ExtractConfig(runtime="tensorrt").validate()
    with pytest.raises(ConfigError, match="runtime"):
        ExtractConfig.from_options(runtime="tensorrt")
    assert ExtractConfig().runtime == "auto"  # issue 24: the engine is chosen per job
    assert ExtractConfig.from_options(runtime="onnxruntime").runtime == "onnxruntime"
    assert ExtractConfig.from_options(runtime="torch").runtime == "torch"


def test_without_onnxruntime_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # ``import onnxruntime`` fails
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenet_v2", num_clusters=4), "none")
    with pytest.raises(onnxbackbone.OnnxRuntimeMissing) as err:
        inference_model(model, ORT)
    assert isinstance(err.value, NetvladError)
    msg = str(err.value)
    assert "\n" not in msg and 'pip install "netvlad-gui[onnx]"' in msg
    # torch, the default, needs neither package
    assert not isinstance(inference_model(model, TORCH).backbone, onnxbackbone.OrtBackbone)


def test_bf16_and_other_devices_fall_back_to_torch(default_arch):
    bf16 = ExtractConfig(device="cpu", runtime="onnxruntime", precision="bf16")
    net = inference_model(default_arch, bf16)
    assert not isinstance(net.backbone, onnxbackbone.OrtBackbone)
    assert "fp32 only" in onnxbackbone.torch_instead(bf16, "cpu")
    assert "CPU only" in onnxbackbone.torch_instead(ORT, "cuda")
    assert onnxbackbone.runtime_used(ORT, "cpu") == "onnxruntime"
    assert onnxbackbone.runtime_used(TORCH, "cpu") == "torch"


@pytest.mark.parametrize("h, w", [(480, 640), (640, 480), (427, 640), (481, 641)])
def test_descriptors_match_torch_at_any_size(default_arch, h, w):
    """The SAME_UPPER rewrite keeps TF padding right away from the traced size (odd sizes too)."""
    torch_net, ort_net = inference_model(default_arch, TORCH), inference_model(default_arch, ORT)
    assert isinstance(ort_net.backbone, onnxbackbone.OrtBackbone)
    assert not isinstance(default_arch.backbone, onnxbackbone.OrtBackbone)  # the model is intact
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
    with torch.inference_mode():
        want, got = forward(torch_net, x, TORCH), forward(ort_net, x, ORT)
        maps_t = torch_net.local_features(x).flatten(1).numpy()
        maps_o = ort_net.local_features(x).flatten(1).numpy()
    assert got.shape == want.shape and maps_o.shape == maps_t.shape
    assert _cosines(want, got).min() >= 0.999
    assert _cosines(maps_t, maps_o).min() >= 0.999


def test_torch_padding_backbones_export_too():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    model = build_model(ModelConfig(backbone="mobilenet_v2", num_clusters=4), "none")
    assert model.padding == "torch"
    torch_net, ort_net = inference_model(model, TORCH), inference_model(model, ORT)
    x = torch.rand(1, 3, 97, 131)
    with torch.inference_mode():
        assert _cosines(forward(torch_net, x, TORCH), forward(ort_net, x, ORT)).min() >= 0.999


def test_the_cached_file_is_reused_and_replaced_when_the_weights_change(
    default_arch, cache, monkeypatch
):
    first = inference_model(default_arch, ORT).backbone.path
    assert first.parent == cache / "onnx" and first.exists()
    stamp = first.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("exported again")

    with monkeypatch.context() as m:
        m.setattr(onnxbackbone, "export", no_export)
        assert inference_model(default_arch, ORT).backbone.path == first
    assert first.stat().st_mtime_ns == stamp

    changed = build_model(ModelConfig.from_name("mobilenet_v2-netvlad"), "none", padding="tf_same")
    changed.load_state_dict(default_arch.state_dict())
    with torch.no_grad():
        next(changed.backbone.parameters()).add_(0.01)
    net = inference_model(changed, ORT)
    assert net.backbone.path != first and net.backbone.path.exists()
    x = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        want = forward(inference_model(changed, TORCH), x, TORCH)
        assert _cosines(want, forward(net, x, ORT)).min() >= 0.999
    # No temporary files left behind.
    assert {p.suffix for p in (cache / "onnx").iterdir()} == {".onnx"}


def test_a_prepared_copy_goes_back_to_torch(default_arch):
    ort_net = inference_model(default_arch, ORT)
    assert inference_model(ort_net, ORT) is ort_net  # prepared once
    back = inference_model(ort_net, TORCH)
    assert not isinstance(back.backbone, onnxbackbone.OrtBackbone)


def test_an_index_builds_and_locates_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.model.checkpoint import load_checkpoint
    from netvlad_gui.core.model.features import extract_one
    from netvlad_gui.core.query.locate import Locator
    from netvlad_gui.core.query.session import LocateSession

    paths_ = make_library(tmp_path / "lib", 6)
    cfg = ExtractConfig(  # fp32 pinned: on a CPU with native bf16 "auto" would mean bf16
        image_size=96,
        batch_size=4,
        num_workers=0,
        device="cpu",
        runtime="onnxruntime",
        precision="fp32",
    )
    torch.manual_seed(0)
    s = build_small(tmp_path / "lib", tmp_path / "idx", extract_cfg=cfg, init_images=6)
    assert s.indexed == 6 and not s.failed
    index = LibraryIndex(tmp_path / "idx")
    rows = {r.path: r.row for r in index.catalog.rows()}
    stored = index.store().read([rows[p.name] for p in paths_])
    # torch, the reference, gives the same descriptors with the index's model
    model = load_checkpoint(index.model_path)
    torch_cfg = ExtractConfig(image_size=96, num_workers=0, device="cpu", precision="fp32")
    again = np.stack([extract_one(model, p, torch_cfg) for p in paths_])
    assert _cosines(stored, again).min() >= 0.999

    loc = Locator(index, extract_cfg=cfg)
    assert loc.model.runtime == "onnxruntime"  # issue 24: the Locator runs an InferenceModel
    res = LocateSession(loc).locate(paths_[2], verify=False)
    assert res.matches[0].path.endswith(paths_[2].name)
    assert res.matches[0].score == pytest.approx(1.0, abs=1e-3)


def test_same_upper_does_not_depend_on_the_traced_size(default_arch, monkeypatch):
    """Traced at an odd size, TFSameConv2d pads symmetrically inside the conv (no Pad node):
    the rewrite must fix those convs too, not only the Pad -> Conv pairs."""
    monkeypatch.setattr(onnxbackbone, "TRACE_SIZE", (97, 131))
    monkeypatch.setattr(onnxbackbone, "FORMAT", -1)  # a cache file of its own
    net = inference_model(default_arch, ORT)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        want = inference_model(default_arch, TORCH).local_features(x).flatten(1).numpy()
        got = net.local_features(x).flatten(1).numpy()
    assert _cosines(want, got).min() >= 0.999


def test_info_says_which_runtime_runs(monkeypatch, capsys):
    import json

    from netvlad_gui.cli import main

    assert main(["info", "--json", "--runtime", "onnxruntime", "--precision", "fp32"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime_asked"] == "onnxruntime"
    assert info["runtime"] == ("onnxruntime" if info["device"] == "cpu" else "torch")
    assert main(["info", "--json", "--runtime", "torch"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == "torch"
    assert main(["info", "--json"]) == 0  # auto: ONNX Runtime on a CPU (the default model)
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"] == ("onnxruntime" if info["device"] == "cpu" else "torch")
    monkeypatch.setattr(onnxbackbone, "installed_version", lambda: None)
    said = onnxbackbone.describe(ORT, "cpu")
    assert said["onnxruntime"] is None and 'pip install "netvlad-gui[onnx]"' in said["runtime_note"]


def test_an_export_failure_is_one_line_and_leaves_no_file(default_arch, cache, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("Exporting the operator 'aten::foo' is not supported\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setattr(onnxbackbone, "FORMAT", -2)  # not in the cache
    before = set((cache / "onnx").glob("*")) if (cache / "onnx").exists() else set()
    with pytest.raises(onnxbackbone.OnnxExportError) as err:
        inference_model(default_arch, ORT)
    assert isinstance(err.value, NetvladError) and "\n" not in str(err.value)
    assert "aten::foo" in str(err.value) and "--runtime torch" in str(err.value)
    assert set((cache / "onnx").glob("*")) == before
