"""PlaceModel.describe: the one forward head (pool, then whiten, in fp32) that extraction, the
one-pass initialisation and the locator share, with the backbone map on request in any precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netvlad_gui.core.config import ExtractConfig, InitConfig, ModelConfig
from netvlad_gui.core.model.features import describe_batch, forward, inference_model
from netvlad_gui.core.model.initialise import pool_feature_map
from netvlad_gui.core.model.network import (
    PlaceModel,
    build_model,
    fit_whitening,
    init_netvlad,
    sample_local_descriptors,
)

FP32 = ExtractConfig(precision="fp32", device="cpu")
BF16 = ExtractConfig(precision="bf16", device="cpu")


def _images(n: int = 3, size: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> PlaceModel:
    """A NetVLAD model with its layer initialised and whitening fitted: every part of the head."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    batches = [_images(2, 96, seed=s) for s in range(4)]
    init_netvlad(m, sample_local_descriptors(m, batches, 20, 0), InitConfig(seed=0))
    with torch.inference_mode():
        pooled = torch.cat([m.pooled(b) for b in batches]).numpy()
    fit_whitening(m, pooled, out_dim=5)
    return m


def _old_fp32(m: PlaceModel, x: torch.Tensor) -> torch.Tensor:
    """How the descriptor was computed before the head (network.forward, locate, features)."""
    return m.whiten(m.pool(m.local_features(x)))


def test_fp32_descriptor_is_the_old_paths_and_the_map_its_backbones(model):
    x = _images()
    with torch.inference_mode():
        old = _old_fp32(model, x)
        out = model.describe(x, with_map=True)
        plain = model.describe(x)
    assert torch.equal(out.descriptors, old) and torch.equal(model(x), old)
    assert out.descriptors.shape == (3, 5) and out.descriptors.dtype == torch.float32
    assert torch.equal(out.maps, model.local_features(x)) and plain.maps is None
    with torch.inference_mode():
        assert torch.equal(model.pooled(x), model.pool(model.local_features(x)))
        assert torch.equal(model.describe(x, whiten=False).descriptors, model.pooled(x))


def test_the_extraction_path_gives_the_same_descriptor_with_or_without_the_map(model):
    x = _images()
    net = inference_model(model, FP32)  # folded BatchNorm, channels_last: as extraction runs it
    with torch.inference_mode():
        desc, maps = describe_batch(net, x, FP32, with_map=True)
        alone = forward(net, x, FP32)
        old = _old_fp32(model, x).numpy()
    np.testing.assert_array_equal(desc, alone)
    np.testing.assert_allclose(desc, old, atol=1e-5)
    assert maps.shape == model.local_features(x).shape and maps.device.type == "cpu"
    np.testing.assert_allclose(pool_feature_map(model, maps[0].numpy()), desc[0], atol=1e-5)


def test_bf16_still_gives_the_map_and_pools_it_in_fp32(model):
    """The locator dropped the map under bf16 and then described the photo a second time."""
    x = _images()
    net = inference_model(model, BF16)
    with torch.inference_mode():
        desc, maps = describe_batch(net, x, BF16, with_map=True)
        alone = forward(net, x, BF16)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as model_forward did it before
            feats = net.local_features(x)
        old = net.whiten(net.pool(feats.float())).numpy()
        from_map = net.head(maps)
    assert maps is not None and maps.dtype == torch.float32
    assert maps.shape == model.local_features(x).shape
    np.testing.assert_array_equal(desc, alone)  # the map costs no other descriptor
    np.testing.assert_array_equal(desc, old)
    np.testing.assert_allclose(from_map.numpy(), desc, atol=1e-5)  # the descriptor is this map's
    fp32 = _old_fp32(model, x).detach().numpy()
    cos = (desc * fp32).sum(1) / np.linalg.norm(desc, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.95  # bf16 backbone, not a different answer


def test_the_head_runs_in_fp32_inside_a_callers_autocast(model):
    x = _images()
    with torch.inference_mode():
        maps = model.local_features(x)
        want = model.head(maps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.head(maps.to(torch.bfloat16))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-2)
