"""PlaceModel: the name contract, descriptors, NetVLAD initialisation and whitening."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netvlad_gui.core.config import InitConfig, ModelConfig
from netvlad_gui.core.model.backbones import IMAGENET, Normalization, TFSameConv2d
from netvlad_gui.core.model.network import (
    ModelConfigError,
    PlaceModel,
    build_model,
    fit_whitening,
    init_netvlad,
    sample_local_descriptors,
)
from netvlad_gui.core.model.pooling import FMax, NetVLAD


def _images(n: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def alexnet_vlad() -> PlaceModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")


def test_state_dict_names_are_the_contract() -> None:
    model = build_model(ModelConfig(backbone="vgg16", num_clusters=4, whitening_dim=16), "none")
    keys = set(model.state_dict())
    for key in [
        "backbone.0.weight",  # conv1_1
        "backbone.28.weight",  # conv5_3
        "pool.centroids",
        "pool.conv.weight",
        "pool.conv.bias",
        "pool.initialised",
        "whiten.weight",
        "whiten.bias",
        "input_mean",
        "input_std",
    ]:
        assert key in keys, key
    assert model.state_dict()["pool.conv.weight"].shape == (4, 512, 1, 1)
    assert model.state_dict()["input_mean"].shape == (3,)
    mnv2 = build_model(ModelConfig(num_clusters=4), "none")
    assert "backbone.0.0.weight" in mnv2.state_dict()
    resnet = build_model(ModelConfig(backbone="resnet18", pooling="fmax"), "none")
    assert {"backbone.conv1.weight", "backbone.layer4.1.conv2.weight"} <= set(resnet.state_dict())


def test_netvlad_forward(alexnet_vlad: PlaceModel) -> None:
    model = alexnet_vlad
    assert not model.training and model.whiten is None
    assert (model.local_dim, model.pool_dim, model.dim) == (256, 1024, 1024)
    assert not model.is_initialised
    assert model.normalization.mean == pytest.approx(IMAGENET.mean)
    assert model.normalization.std == pytest.approx(IMAGENET.std)
    assert model.meta["backbone_weights"] == "random"
    images = _images()
    with torch.inference_mode():
        out = model(images)
        local = model.local_features(images)
    assert out.shape == (2, 1024) and local.shape[:2] == (2, 256)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        model(images[:, :1])


def test_normalisation_buffers_are_applied() -> None:
    norm = Normalization(mean=(0.2, 0.3, 0.4), std=(0.5, 0.25, 2.0))
    model = build_model(ModelConfig(backbone="alexnet", pooling="fmax"), "none", normalization=norm)
    images = _images(1)
    expected = (images - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        torch.testing.assert_close(model.local_features(images), model.backbone(expected))


def test_fmax_model_and_bad_configs() -> None:
    model = build_model(ModelConfig(backbone="alexnet", pooling="fmax"), "none")
    assert isinstance(model.pool, FMax) and model.is_initialised and model.dim == 256
    with torch.inference_mode():
        assert model(_images()).shape == (2, 256)
    with pytest.raises(ModelConfigError, match="unknown pooling"):
        build_model(ModelConfig(backbone="alexnet", pooling="gem"), "none")
    with pytest.raises(ModelConfigError, match="whitening_dim"):
        build_model(ModelConfig(backbone="alexnet", pooling="fmax", whitening_dim=300), "none")
    with pytest.raises(ModelConfigError, match="only NetVLAD"):
        init_netvlad(model, np.zeros((10, 256), np.float32), InitConfig())


def test_padding_override() -> None:
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none", padding="tf_same")
    assert model.padding == "tf_same"
    assert isinstance(model.backbone[0], TFSameConv2d)


def test_sample_local_descriptors(alexnet_vlad: PlaceModel) -> None:
    images = _images(3, 96, 96)
    desc = sample_local_descriptors(alexnet_vlad, [images[:2], images[2]], per_image=5, seed=1)
    assert desc.shape == (15, 256) and desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, rtol=1e-5)
    again = sample_local_descriptors(alexnet_vlad, [images[:2], images[2]], per_image=5, seed=1)
    np.testing.assert_array_equal(desc, again)
    other = sample_local_descriptors(alexnet_vlad, [images[:2], images[2]], per_image=5, seed=2)
    assert not np.array_equal(desc, other)
    everything = sample_local_descriptors(alexnet_vlad, [images[0]], per_image=10_000, seed=0)
    h, w = alexnet_vlad.local_features(images[:1]).shape[2:]
    assert everything.shape == (h * w, 256)


def test_init_netvlad_and_whitening() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    images = [_images(2, 96, 96, seed=s) for s in range(3)]
    desc = sample_local_descriptors(model, images, per_image=20, seed=0)
    alpha = init_netvlad(model, desc, InitConfig(kmeans_iters=10, seed=0))
    assert model.is_initialised and alpha > 0 and model.meta["netvlad_alpha"] == alpha
    # the paper's 100:1 top-1/top-2 soft assignment over the sampled descriptors
    x = torch.from_numpy(desc).T.reshape(1, 256, -1, 1)
    with torch.no_grad():
        a = torch.softmax(model.pool.conv(x)[0, :, :, 0], dim=0).T.double()
    top = a.topk(2, dim=1).values
    assert torch.log(top[:, 0] / top[:, 1]).mean().item() == pytest.approx(math.log(100), rel=1e-4)

    with torch.inference_mode():
        pooled = torch.cat([model.pooled(batch) for batch in images]).numpy()
    fit_whitening(model, pooled, out_dim=4096)
    assert model.config.whitening_dim == 5 == model.dim  # N - 1
    assert set(model.whiten.state_dict()) == {"weight", "bias"}
    with torch.inference_mode():
        out = model(images[0])
    assert out.shape == (2, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    fit_whitening(model, pooled, out_dim=3)
    assert model.dim == 3 == model.config.whitening_dim
    with pytest.raises(ValueError, match="un-whitened"):
        fit_whitening(model, pooled[:, :10])


def test_shipped_mobilenet_default() -> None:
    model = build_model(ModelConfig())
    assert model.config.backbone == "mobilenet_v2" and model.dim == 64 * 96 == 6144
    assert model.padding == "tf_same" and model.meta["backbone_weights"].startswith("shipped:")
    assert model.input_mean.tolist() == pytest.approx([0.50196] * 3)
    assert isinstance(model.pool, NetVLAD)
    images = _images(2, 96, 128)
    with torch.inference_mode():
        local = model.local_features(images)
        out = model(images)
    assert local.shape == (2, 96, 6, 8) and (local < 0).any()  # signed linear bottleneck
    assert torch.isfinite(out).all() and out.shape == (2, 6144)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_model_on_cuda() -> None:
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    images = _images()
    with torch.inference_mode():
        cpu = model(images)
    model.to("cuda")  # outside inference mode, so parameters stay ordinary tensors
    with torch.inference_mode():
        gpu = model(images.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
    desc = sample_local_descriptors(model, [images], per_image=30, seed=0)
    init_netvlad(model, desc, InitConfig(kmeans_iters=5))
    assert model.pool.centroids.is_cuda and model.is_initialised
