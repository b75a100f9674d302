"""Issue 24: indexing and locating without torch (ONNX Runtime + numpy), ``--runtime auto``.

The model's graph is exported once per weights into the cache (torch loads for that only); then
``netvlad index`` and ``netvlad locate`` never import torch, descriptors agree with torch's at
any size, and an index never mixes precisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _library import make_library

from netvlad_gui.core import paths
from netvlad_gui.core.config import ExtractConfig, InitConfig
from netvlad_gui.core.errors import ConfigError
from netvlad_gui.core.model import ckptfile, graphs, runtime

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

#: Small photos, decoded in the calling thread: the test builds stay quick.
FAST = {"image_size": 96, "batch_size": 4, "num_workers": 0, "device": "cpu"}
INIT = InitConfig(num_images=8, descriptors_per_image=20, kmeans_iters=5)

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """This module's own user cache (graphs and bases), shared by its tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, cache):
    monkeypatch.setattr(paths, "cache_dir", lambda: cache / "netvlad-gui")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the same folder for subprocesses


def _netvlad(*argv: str) -> subprocess.CompletedProcess:
    """``netvlad ARGV`` in a fresh process that says at its end whether torch was imported."""
    code = (
        "import sys\n"
        "from netvlad_gui.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('TORCH-LOADED' if 'torch' in sys.modules else 'TORCH-FREE', file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


# -- checkpoints without torch ------------------------------------------------------------------
def test_checkpoints_are_read_and_written_without_torch_as_torch_does(tmp_path):
    import torch

    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.library.index import model_state_sha
    from netvlad_gui.core.model.checkpoint import load_checkpoint, save_checkpoint
    from netvlad_gui.core.model.network import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(num_clusters=4, whitening_dim=None), "none")
    save_checkpoint(model, tmp_path / "torch.pt")
    obj = ckptfile.read(tmp_path / "torch.pt")  # torch's file, read without torch
    state = model.state_dict()
    assert set(obj["state_dict"]) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(obj["state_dict"][key], value.numpy())
        assert obj["state_dict"][key].shape == tuple(value.shape)  # 0-d buffers stay 0-d
    assert ckptfile.state_sha(obj["state_dict"]) == model_state_sha(model)

    obj["meta"]["note"] = [1, 2.5, None, {"ok": True}]
    ckptfile.write(tmp_path / "numpy.pt", obj)  # and written without torch
    again = load_checkpoint(tmp_path / "numpy.pt")
    assert model_state_sha(again) == model_state_sha(model)
    assert again.meta["note"] == [1, 2.5, None, {"ok": True}]
    loaded = torch.load(tmp_path / "numpy.pt", weights_only=True, mmap=True)
    assert loaded["state_dict"]["pool.initialised"].dtype == torch.bool
    (tmp_path / "not.pt").write_text("not a zip")
    with pytest.raises(ckptfile.CheckpointFormatError):
        ckptfile.read(tmp_path / "not.pt")


def test_the_numpy_head_is_torchs_head():
    import torch

    from netvlad_gui.core.config import ModelConfig
    from netvlad_gui.core.model.head import Head
    from netvlad_gui.core.model.network import build_model, fit_whitening

    torch.manual_seed(1)
    model = build_model(ModelConfig(num_clusters=8), "none")
    maps = torch.randn(12, model.local_dim, 7, 5)
    with torch.inference_mode():
        fit_whitening(model, model.head(maps, whiten=False).numpy(), 6)
        want = model.head(maps).numpy()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    cfg = {"pooling": "netvlad", "num_clusters": 8}
    head = Head.from_state(cfg, state, model.local_dim)
    assert _cosines(head(maps.numpy()), want).min() > 0.99999
    fmax = Head("fmax", model.local_dim)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(maps.amax(dim=(2, 3)), dim=1).numpy()
    assert _cosines(fmax(maps.numpy()), want).min() > 0.99999


# -- the default model: ONNX Runtime against torch ------------------------------------------------
@pytest.fixture(scope="module")
def engines(cache):
    """The default model (shipped weights) run by ONNX Runtime and by torch in fp32, with a
    NetVLAD layer initialised from real photos' maps."""
    from netvlad_gui.core.model.features import TorchModel

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "cache_dir", lambda: cache / "netvlad-gui")
        ort = graphs.new_model("mobilenet_v2-netvlad", None)
    assert ort is not None and not ort.is_initialised
    rng = np.random.default_rng(0)
    maps = ort.maps_of(rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8))
    feats = maps.transpose(0, 2, 3, 1).reshape(-1, ort.local_dim)
    ort.init_netvlad(feats / np.linalg.norm(feats, axis=1, keepdims=True), INIT)
    from netvlad_gui.core.model.checkpoint import load_checkpoint

    path = cache / "init.pt"
    ort.file.write(path)
    torch_net = TorchModel(load_checkpoint(path), ExtractConfig(device="cpu", precision="fp32"))
    return ort, torch_net


@pytest.mark.parametrize(
    ("h", "w"),
    [(480, 640), (640, 480), (97, 131), (131, 97), (481, 641), (641, 481), (360, 640)],
)
def test_onnxruntime_and_torch_agree_at_any_size_and_aspect(shared_dir, engines, h, w):
    from PIL import Image

    ort, torch_net = engines
    photo = shared_dir / "data" / "lund_street" / "references" / "03.jpg"
    img = Image.open(photo).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)[None]
    d_ort, m_ort = ort.describe_pixels(pixels, with_map=True)
    d_torch, m_torch = torch_net.describe_pixels(pixels, with_map=True)
    assert d_ort.shape == d_torch.shape and m_ort.shape == m_torch.shape
    assert _cosines(d_ort, d_torch).min() >= 0.999
    assert _cosines(m_ort, m_torch).min() >= 0.999
    np.testing.assert_allclose(ort.pool_maps(m_torch), d_torch, atol=1e-4)


# -- the auto rules -------------------------------------------------------------------------------
@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Fake this machine's CPU flags (and no GPU)."""

    def use(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(runtime, "CPUINFO", str(path))
        monkeypatch.setattr(runtime, "gpu_present", lambda: False)
        runtime.native_bf16.cache_clear()

    yield use
    runtime.native_bf16.cache_clear()


def _pick(**kw) -> tuple[str, str]:
    cfg = ExtractConfig(**{k: kw.pop(k) for k in ("runtime", "precision", "device") if k in kw})
    e = runtime.choose_engine(cfg, **kw)
    assert e.why  # every choice says why
    return e.runtime, e.precision


def test_auto_picks_as_its_rules_say(cpu, monkeypatch):
    ort, bf16, fp32_torch = ("onnxruntime", "fp32"), ("torch", "bf16"), ("torch", "fp32")
    cpu(AVX2)  # no native bf16: ONNX Runtime fp32 for everything
    assert _pick(backbone="mobilenet_v2") == ort
    assert _pick(backbone="vgg16", photos=100_000) == ort
    assert _pick(backbone="vgg16", precision="bf16") == bf16  # forced: torch (ORT: fp32 only)
    assert _pick(backbone="vgg16", runtime="torch") == fp32_torch  # auto precision here: fp32
    cpu(SAPPHIRE)  # native bf16
    assert _pick(backbone="mobilenet_v2", photos=100_000) == ort  # ORT faster even warm
    start = runtime.BF16_PAYS_FROM["vgg16"]
    assert _pick(backbone="vgg16", photos=start - 1) == ort  # short: torch's start-up
    assert _pick(backbone="vgg16", photos=start) == bf16  # long: bf16 pays
    assert _pick(backbone="vgg16") == ort  # a locate, the window's session
    assert _pick(backbone="vgg16", photos=10**6, made_with="fp32") == ort  # the index binds
    assert _pick(backbone="mobilenet_v2", made_with="bf16") == bf16
    assert _pick(backbone="vgg16", photos=10**6, runtime="onnxruntime") == ort
    assert _pick(backbone="vgg16", runtime="torch") == bf16  # torch's own auto: bf16 here
    assert _pick(backbone="vgg16", runtime="torch", made_with="fp32") == fp32_torch
    assert _pick(backbone="mobilenet_v2", precision="fp32") == ort
    monkeypatch.setattr(runtime, "gpu_present", lambda: True)  # a GPU: torch
    monkeypatch.setattr(runtime, "backbone_precision", lambda cfg, kind: "bf16")
    assert _pick(backbone="mobilenet_v2")[0] == "torch"
    assert _pick(backbone="mobilenet_v2", device="cpu") == ort  # unless the CPU is asked for
    monkeypatch.setattr(runtime, "gpu_present", lambda: False)
    monkeypatch.setattr(runtime, "ort_installed", lambda: False)
    assert _pick(backbone="mobilenet_v2") == fp32_torch  # no onnxruntime: torch, still fp32


def test_info_says_what_runs_which_job_and_why(cpu, capsys):
    from netvlad_gui.cli import main

    cpu(SAPPHIRE)
    assert main(["info", "--json", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["runtime"], info["runtime_precision"]) == ("onnxruntime", "fp32")
    assert "mobilenet_v2" in info["runtime_why"]
    assert info["runtime_long_job"]["runtime"] == "onnxruntime"
    assert main(["info", "--json", "--device", "cpu", "--model", "vgg16-netvlad"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"] == "onnxruntime"
    assert info["runtime_long_job"] | {"why": ""} == {
        "runtime": "torch",
        "precision": "bf16",
        "why": "",
        "photos": 2000,
        "backbone": "vgg16",
    }


# -- whole commands without torch -----------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    lib = tmp_path_factory.mktemp("ortlib")
    make_library(lib, 10)
    return lib


def _index_args(lib: Path, idx: Path) -> list[str]:
    flags = ["--image-size", "96", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
    return ["index", str(lib), "--index", str(idx), "--json", "--quiet", *flags]


def test_index_and_locate_never_import_torch_once_the_graph_exists(library, tmp_path, cache):
    first = _netvlad(*_index_args(library, tmp_path / "first"))  # may export: torch loads once
    assert first.returncode == 0, first.stderr
    # a new library of the same model, then an update, then locating: no torch at all
    lib2 = tmp_path / "lib2"
    make_library(lib2, 9, seed=1)
    new = _netvlad(*_index_args(lib2, tmp_path / "idx"))
    assert new.returncode == 0, new.stderr
    assert json.loads(new.stdout)["indexed"] == 9
    assert new.stderr.strip().endswith("TORCH-FREE"), new.stderr
    make_library(lib2 / "more", 3, seed=2)
    update = _netvlad(*_index_args(lib2, tmp_path / "idx"))
    assert json.loads(update.stdout)["extracted"] == 3
    assert update.stderr.strip().endswith("TORCH-FREE"), update.stderr
    photo = str(lib2 / "img_0004.jpg")
    found = _netvlad(
        "locate", photo, "--index", str(tmp_path / "idx"), "--json", "--image-size", "96"
    )
    assert found.returncode == 0, found.stderr
    assert found.stderr.strip().endswith("TORCH-FREE"), found.stderr
    res = json.loads(found.stdout.strip().splitlines()[-1])
    assert res["matches"][0]["path"].endswith("img_0004.jpg")
    assert res["matches"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    # verification on (the default): inliers from patch maps that ONNX Runtime computed
    assert res["matches"][0]["inliers"] is not None
    # photos of one walk and a video's frames, located together and verified: no torch either
    walk = [str(lib2 / f"img_{i:04d}.jpg") for i in (2, 3, 4)]
    clip = _video(tmp_path / "walk.avi", [lib2 / f"img_{i:04d}.jpg" for i in (5, 6)])
    together = _netvlad(
        "locate", *walk, str(clip), "--sequence", "--index", str(tmp_path / "idx"), "--json", "-q"
    )
    assert together.returncode == 0, together.stderr
    assert together.stderr.strip().endswith("TORCH-FREE"), together.stderr
    rows = [json.loads(line) for line in together.stdout.strip().splitlines()]
    assert [r["query"] for r in rows[:3]] == walk
    assert [r["query"] for r in rows[3:]] == ["walk.avi@00:00.0", "walk.avi@00:01.0"]
    assert all(r["matches"][0]["inliers"] is not None and not r.get("error") for r in rows)
    # the index says what made its descriptors
    from netvlad_gui.core.library.index import LibraryIndex

    index = LibraryIndex(tmp_path / "idx")
    try:
        assert index.descriptor_engine() == {"runtime": "onnxruntime", "precision": "fp32"}
    finally:
        index.close()


def _video(path: Path, photos: list[Path]) -> Path:
    """A 2 s MJPG clip, one second per photo."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (128, 96))
    for p in photos:
        img = cv2.resize(cv2.imread(str(p)), (128, 96))
        for _ in range(2):
            writer.write(img)
    writer.release()
    return path


def test_the_window_warms_up_without_torch():
    code = (
        "import sys\n"
        "from netvlad_gui.core.preload import preload\n"
        "preload()\n"
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules, 'cv2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


# -- a missing or damaged graph -------------------------------------------------------------------
def _build(lib: Path, idx: Path, **cfg):
    from netvlad_gui.core.library.builder import build_index

    stages: list[str] = []
    summary = build_index(
        lib,
        idx,
        extract_cfg=ExtractConfig(**(FAST | cfg)),
        init_cfg=INIT,
        progress=lambda stage, done, total: stages.append(stage),
    )
    return summary, stages


def test_a_missing_or_damaged_graph_is_made_again_with_a_message(library, tmp_path, caplog):
    from netvlad_gui.core.query.session import open_session

    summary, _ = _build(library, tmp_path / "idx")
    assert summary.indexed == 10
    file = graphs.ModelFile.read(tmp_path / "idx" / "model.pt")
    graph = graphs.find_graph(graphs.graph_key(file))
    assert graph is not None

    def reopen() -> list[str]:
        stages: list[str] = []
        status, session = open_session(
            tmp_path / "idx",
            ExtractConfig(**FAST),
            progress=lambda stage, done, total: stages.append(stage),
        )
        assert session is not None, status
        try:
            res = session.locate(library / "img_0003.jpg", verify=False)
            assert res.matches[0].path.endswith("img_0003.jpg")
        finally:
            session.close()
        return stages

    assert graphs.PREPARE not in reopen()  # found in the cache: nothing to make
    graph.write_bytes(b"not an onnx graph")  # damaged
    with caplog.at_level("WARNING"):
        assert graphs.PREPARE in reopen()
    assert "cannot be loaded" in caplog.text and "exporting it again" in caplog.text
    assert graph.stat().st_size > 1000
    graph.unlink()  # missing
    assert graphs.PREPARE in reopen()
    graph.with_suffix(".json").write_text("{")  # its record damaged: made again too
    assert graphs.PREPARE in reopen()
    assert graphs.find_graph(graphs.graph_key(file)) == graph


def test_the_cli_says_when_it_prepares_the_model(library, tmp_path, cache):
    _build(library, tmp_path / "idx")
    file = graphs.ModelFile.read(tmp_path / "idx" / "model.pt")
    graphs.forget(graphs.graph_path(graphs.graph_key(file)))
    out = _netvlad(
        "locate", str(library / "img_0001.jpg"), "--index", str(tmp_path / "idx"), "--no-verify"
    )
    assert out.returncode == 0, out.stderr
    assert "preparing the model for fast inference (once)" in out.stderr
    assert out.stderr.strip().endswith("TORCH-LOADED")  # the export needs torch, once
    again = _netvlad(
        "locate", str(library / "img_0001.jpg"), "--index", str(tmp_path / "idx"), "--no-verify"
    )
    assert "preparing" not in again.stderr and again.stderr.strip().endswith("TORCH-FREE")


# -- never two precisions in one index ------------------------------------------------------------
def test_an_index_never_mixes_precisions(library, tmp_path):
    from netvlad_gui.core.library.index import LibraryIndex
    from netvlad_gui.core.query.session import open_session

    summary, _ = _build(library, tmp_path / "idx", precision="fp32")
    assert summary.extracted == 10
    with pytest.raises(ConfigError, match="made in fp32"):
        open_session(tmp_path / "idx", ExtractConfig(**FAST, precision="bf16"))
    # bf16 forced on an fp32 index: every photo again, in bf16 (torch), and said so
    summary, _ = _build(library, tmp_path / "idx", precision="bf16")
    assert summary.extracted == 10
    assert any("made in fp32" in w and "mixes two precisions" in w for w in summary.warnings)
    index = LibraryIndex(tmp_path / "idx")
    try:
        assert index.descriptor_engine() == {"runtime": "torch", "precision": "bf16"}
    finally:
        index.close()
    # auto follows the index: nothing extracted again, locating runs bf16 (torch)
    summary, _ = _build(library, tmp_path / "idx")
    assert summary.extracted == 0 and not summary.warnings
    _, session = open_session(tmp_path / "idx", ExtractConfig(**FAST))
    try:
        assert (session.locator.engine.runtime, session.locator.engine.precision) == (
            "torch",
            "bf16",
        )
        assert session.locator.model.precision == "bf16"
    finally:
        session.close()


def test_an_index_from_before_the_record_is_assumed_made_as_auto_made_it(library, tmp_path, cpu):
    from netvlad_gui.core.library.index import ENGINE_KEY, LibraryIndex

    _build(library, tmp_path / "idx")
    index = LibraryIndex(tmp_path / "idx", writable=True)
    try:
        index.catalog.set_meta(ENGINE_KEY, "")  # as an index made before issue 24
        cpu(SAPPHIRE)
        assert index.descriptor_engine()["precision"] == "bf16"  # torch's auto on such a CPU
        cpu(AVX2)
        assert index.descriptor_engine() == {
            "runtime": "torch",
            "precision": "fp32",
            "assumed": True,
        }
    finally:
        index.close()


def test_a_model_that_cannot_be_exported_runs_in_torch_under_auto(library, tmp_path, monkeypatch):
    from netvlad_gui.core.model import onnxbackbone
    from netvlad_gui.core.model.ortmodel import OnnxExportError

    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "empty-cache")  # nothing cached

    def refuse(*args, **kwargs):
        raise OnnxExportError("cannot export this backbone to ONNX (test); use --runtime torch")

    monkeypatch.setattr(onnxbackbone, "export_graph", refuse)
    summary, stages = _build(library, tmp_path / "idx")
    assert summary.indexed == 10 and graphs.PREPARE in stages
    assert any("torch runs the model instead" in w for w in summary.warnings)
    from netvlad_gui.core.library.index import LibraryIndex

    index = LibraryIndex(tmp_path / "idx")
    try:
        assert index.descriptor_engine() == {"runtime": "torch", "precision": "fp32"}
    finally:
        index.close()
    with pytest.raises(OnnxExportError):  # asked for by name: the reason, not a fallback
        _build(library, tmp_path / "idx2", runtime="onnxruntime")
