"""Speed switches: each is off by default and keeps descriptors equivalent when on."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, ModelConfig
from netvlad_gui.core.model.features import extract, extract_one, inference_model
from netvlad_gui.core.model.network import build_model
from netvlad_gui.core.photos.images import load_image
from netvlad_gui.core.training.train import TrainConfig


def _photo(path, size=(2600, 1950)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def test_defaults_fp32_unless_native_bf16_and_draft_decoding_of_big_jpegs_only():
    cfg = ExtractConfig()
    assert cfg.jpeg_draft and not cfg.bf16 and cfg.precision == "auto"  # issue 14
    # Folding and NHWC are fp32 too: same map, other rounding (checked below).
    assert cfg.fold_batchnorm and cfg.channels_last


def test_training_cache_runs_nchw_so_ddp_ranks_match_one_process():
    assert not TrainConfig().extract_config().channels_last


def test_folding_batchnorm_keeps_descriptors_and_leaves_the_model_alone(tmp_path):
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="mobilenet_v2", num_clusters=8), "none", progress=False)
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)  # make the fold do something
        bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    paths = [_photo(tmp_path / f"p{i}.jpg", (320, 240)) for i in range(2)]
    # fp32 pinned: the test compares arithmetic, and precision auto is bf16 on AMX CPUs
    base = ExtractConfig(
        image_size=160, batch_size=2, num_workers=0, device="cpu", precision="fp32"
    )

    def run(**switches):
        cfg = ExtractConfig(**(base.__dict__ | switches))
        out = {e.index: e.descriptor for e in extract(m, paths, cfg)}
        return np.stack([out[i] for i in range(len(paths))])

    ref = run(fold_batchnorm=False, channels_last=False)
    folded = run(fold_batchnorm=True, channels_last=False)
    assert np.abs(folded - ref).max() < 1e-5
    both = run(fold_batchnorm=True, channels_last=True)
    assert np.min(np.sum(ref * both, 1)) > 0.9999
    # The caller's model keeps its BatchNorms, weights and layout (it may be in training).
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    conv = next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    net = inference_model(m, base)
    assert fold_count(net) == 0 and inference_model(net, base) is net  # no second copy
    assert np.allclose(extract_one(net, paths[0], base), both[0], atol=1e-5)


def fold_count(model) -> int:
    return sum(isinstance(x, torch.nn.BatchNorm2d) for x in model.modules())


def test_jpeg_draft_decodes_smaller_but_gives_the_same_picture(tmp_path):
    p = _photo(tmp_path / "big.jpg")
    full = np.asarray(load_image(p, 640), np.float32)
    draft = np.asarray(load_image(p, 640, draft=True), np.float32)
    assert full.shape == draft.shape == (480, 640, 3)
    assert np.abs(full - draft).mean() < 3.0  # of 255
    png = tmp_path / "big.png"
    Image.open(p).save(png)
    assert load_image(png, 640, draft=True).size == (640, 480)  # not a JPEG: unaffected
    # under twice the input size (lund's 1024x768 for 640): decoded in full, the same pixels
    mid = _photo(tmp_path / "mid.jpg", (1024, 768))
    same = np.asarray(load_image(mid, 640, draft=True)) == np.asarray(load_image(mid, 640))
    assert same.all()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(ModelConfig(num_clusters=8), "none", progress=False)
    return m.eval()


def test_channels_last_and_bf16_stay_close_to_fp32(tmp_path, model):
    paths = [_photo(tmp_path / f"p{i}.jpg", (320, 240)) for i in range(3)]
    base = ExtractConfig(image_size=160, batch_size=3, num_workers=0, device="cpu")

    def run(**switches):
        cfg = ExtractConfig(**(base.__dict__ | {"channels_last": False} | switches))
        out = {e.index: e.descriptor for e in extract(model, paths, cfg)}
        return np.stack([out[i] for i in range(len(paths))])

    ref = run()
    assert np.min(np.sum(ref * run(channels_last=True), 1)) > 0.9999
    bf = run(channels_last=True, bf16=True)
    assert np.min(np.sum(ref * bf, 1)) > 0.98  # random weights; trained ones: benchmarks/
    one = extract_one(model, paths[0], ExtractConfig(**(base.__dict__ | {"bf16": True})))
    assert one.shape == ref[0].shape and np.isclose(np.linalg.norm(one), 1.0, atol=1e-4)
    model.to(memory_format=torch.contiguous_format)


def test_tune_process_sets_passive_openmp_unless_turned_off():
    code = (
        "import os; from netvlad_gui.core.model.runtime import tune_process; tune_process(); "
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NETVLAD_NO_TUNE")}

    def policy(**extra) -> str:
        cmd = [sys.executable, "-c", code]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env | extra, check=True)
        return run.stdout.strip()

    assert policy() == "PASSIVE"
    assert policy(NETVLAD_NO_TUNE="1") == "None"
    assert policy(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # a user's choice wins


def test_single_query_search_leaves_faiss_threads_as_they_were():
    import faiss

    from netvlad_gui.core.config import IndexConfig
    from netvlad_gui.core.library.searchindex import SearchIndex, build_flat

    x = np.eye(8, dtype=np.float32)
    ids, rows = np.arange(8), np.arange(8)
    si = SearchIndex("flat", build_flat(None, ids, rows, 8), ids, rows, IndexConfig())
    si.index.add_with_ids(x, ids)
    before = faiss.omp_get_max_threads()
    _, got = si.search(None, x[:1], 1)
    assert got[0, 0] == 0 and faiss.omp_get_max_threads() == before
