"""Importers: the paper's MATLAB models, pytorch-NetVlad and Patch-NetVLAD checkpoints, our own."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
import torchvision
from _mat_models import (
    AVERAGE_RGB,
    average_image,
    cell,
    head_layers,
    save_net,
    vgg16_layers,
    write_mat_model,
)

from netvlad_gui.core.config import ModelConfig
from netvlad_gui.core.model import importers
from netvlad_gui.core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from netvlad_gui.core.model.network import build_model

K, OUT = 4, 16


@pytest.fixture(scope="module")
def mat_model(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("mat") / "Pitts30K_struct.mat"
    head = write_mat_model(path, k=K, out=OUT, seed=0)
    return path, head


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))


def matlab_reference(path: Path, images: torch.Tensor, *, d_major: bool = True) -> torch.Tensor:
    """The MATLAB/hloc pipeline with plain torch ops, VLAD flattened D-major (d*K + k)."""
    net = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)["net"]
    layers = list(net.layers)
    # MATLAB subtracts averageImage(1,1,:), hloc and netvlad_tf_open averageImage[0, 0]
    avg = torch.tensor(np.asarray(net.meta.normalization.averageImage, np.float32)[0, 0])
    x = images * 255.0 - avg.view(1, 3, 1, 1)
    for layer in layers[:29]:
        if layer.type == "conv":
            w = torch.from_numpy(np.asarray(layer.weights[0])).permute(3, 2, 0, 1)
            x = F.conv2d(x, w, torch.from_numpy(np.asarray(layer.weights[1])), padding=1)
        elif layer.type == "relu":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2, 2)
    x = x.flatten(2)  # (B, D, N)
    x = x / x.norm(dim=1, keepdim=True)
    assign_w = torch.from_numpy(np.asarray(layers[30].weights[0]))  # (D, K)
    centroids = -torch.from_numpy(np.asarray(layers[30].weights[1]))  # (D, K)
    a = torch.softmax(torch.einsum("dk,bdn->bkn", assign_w, x), dim=1)  # (B, K, N)
    resid = x.unsqueeze(2) - centroids.view(1, *centroids.shape, 1)  # (B, D, K, N)
    vlad = (a.unsqueeze(1) * resid).sum(-1)  # (B, D, K)
    vlad = vlad / vlad.norm(dim=1, keepdim=True)  # intra-normalisation over D
    flat = vlad.reshape(len(x), -1) if d_major else vlad.transpose(1, 2).reshape(len(x), -1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    w = torch.from_numpy(np.asarray(layers[33].weights[0]))  # (K*D, OUT), D-major rows
    y = flat @ w + torch.from_numpy(np.asarray(layers[33].weights[1]))
    return y / y.norm(dim=1, keepdim=True)


# --- MATLAB --------------------------------------------------------------------------------


def test_matlab_model_matches_hand_computed_forward(mat_model, images):
    path, head = mat_model
    assert importers.detect_format(path) == importers.FORMAT_MATLAB
    model = importers.load_any(path)
    assert model.config == ModelConfig("vgg16", "netvlad", num_clusters=K, whitening_dim=OUT)
    assert model.is_initialised
    assert model.meta["source_format"] == "matlab"
    np.testing.assert_allclose(model.normalization.mean, np.array(AVERAGE_RGB) / 255, rtol=1e-6)
    np.testing.assert_allclose(model.normalization.std, [1 / 255] * 3, rtol=1e-6)
    np.testing.assert_allclose(
        model.pool.centroids.detach().numpy(), head["centroids"].T, rtol=0, atol=0
    )
    with torch.no_grad():
        ours = model(images)
        ref = matlab_reference(path, images)
        wrong_order = matlab_reference(path, images, d_major=False)
    assert ours.shape == (2, OUT)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # The test can tell the two flattening orders apart (so it checks the permutation).
    assert (ref - wrong_order).abs().max() > 1e-2


def test_read_matlab_info(mat_model):
    info = importers.read_matlab_info(mat_model[0])
    assert (info.backbone, info.num_clusters, info.dim, info.whitening_dim) == (
        "vgg16",
        K,
        512,
        OUT,
    )


def test_import_matlab_to_our_checkpoint(mat_model, images, tmp_path):
    out = importers.import_checkpoint(mat_model[0], tmp_path / "pitts.pt")
    assert out == tmp_path / "pitts.pt"
    assert importers.detect_format(out) == importers.FORMAT_NATIVE
    model = load_checkpoint(out)
    assert model.meta["source_name"] == "Pitts30K_struct.mat"
    assert model.meta["source_format"] == "matlab"
    again = importers.load_any(out)
    with torch.no_grad():
        torch.testing.assert_close(
            again(images), matlab_reference(mat_model[0], images), atol=1e-5, rtol=0
        )


def test_matlab_mean_is_the_first_pixel_of_average_image(tmp_path, images):
    """MATLAB subtracts averageImage(1,1,:), as hloc and netvlad_tf_open do; the mean over all
    pixels differs as soon as the mean image is not constant (cosine 0.65 to hloc's)."""
    average = average_image()
    assert average.shape == (6, 4, 3)  # H x W x 3, as in the real files
    average[1:] = (10.0, 200.0, 30.0)
    average[0, 1:] = (250.0, 5.0, 60.0)
    path = tmp_path / "mean_image.mat"
    write_mat_model(path, k=K, out=OUT, seed=0, average=average)
    model = importers.load_any(path)
    np.testing.assert_allclose(model.normalization.mean, np.array(AVERAGE_RGB) / 255, rtol=1e-6)
    assert model.meta["average_rgb"] == [round(v, 4) for v in np.float32(AVERAGE_RGB).tolist()]
    with torch.no_grad():
        torch.testing.assert_close(model(images), matlab_reference(path, images), atol=1e-5, rtol=0)


def test_matlab_without_whitening(tmp_path, images):
    rng = np.random.default_rng(3)
    assign = rng.standard_normal((512, 2)).astype(np.float32)
    cents = rng.standard_normal((512, 2)).astype(np.float32)
    path = save_net(
        tmp_path / "novlad_white.mat", vgg16_layers(rng) + head_layers(assign, cents, None, None)
    )
    model = importers.load_any(path)
    assert model.config.whitening_dim is None and model.whiten is None
    assert model(images[:1]).shape == (1, 2 * 512)


def test_matlab_wrong_structure_names_the_layer(tmp_path):
    layers = vgg16_layers(None)
    bad = dict(layers[2])
    bad["weights"] = cell(np.zeros((3, 3, 64, 32), np.float32), np.zeros(32, np.float32))
    layers[2] = bad
    path = save_net(
        tmp_path / "bad.mat",
        layers + head_layers(np.zeros((512, 2)), np.zeros((512, 2)), None, None),
    )
    with pytest.raises(CheckpointError, match=r"bad\.mat.*layer 2 \(conv1_2, conv\).*VGG16"):
        importers.load_any(path)


def test_matlab_mismatches(tmp_path):
    short = save_net(tmp_path / "short.mat", vgg16_layers(None)[:5])
    with pytest.raises(CheckpointError, match=r"short\.mat.*5 layers"):
        importers.read_matlab_info(short)
    layers = vgg16_layers(None) + head_layers(
        np.zeros((256, 4), np.float32), np.zeros((256, 4), np.float32), None, None
    )
    with pytest.raises(CheckpointError, match=r"vlad:core.*D=512"):
        importers.read_matlab_info(save_net(tmp_path / "d256.mat", layers))
    layers = vgg16_layers(None) + head_layers(
        np.zeros((512, 4), np.float32),
        np.zeros((512, 4), np.float32),
        np.zeros((100, 8), np.float32),
        np.zeros(8, np.float32),
    )
    with pytest.raises(CheckpointError, match=r"WPCA.*2048-D"):
        importers.read_matlab_info(save_net(tmp_path / "wpca.mat", layers))
    no_net = tmp_path / "other.mat"
    scipy.io.savemat(str(no_net), {"x": np.zeros(3)})
    with pytest.raises(CheckpointError, match=r"other\.mat.*no MatConvNet 'net'"):
        importers.load_any(no_net)


def test_truncated_mat(mat_model, tmp_path):
    data = mat_model[0].read_bytes()
    cut = tmp_path / "cut.mat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.mat: cannot read the \.mat file"):
        importers.load_any(cut)


# --- pytorch-NetVlad / Patch-NetVLAD --------------------------------------------------------


def nanne_reference(arch: str, state: dict, images: torch.Tensor, wpca=None) -> torch.Tensor:
    """pytorch-NetVlad's pipeline: ImageNet normalisation, features[:-2], K-major NetVLAD."""
    tv = getattr(torchvision.models, arch)(weights=None)
    encoder = tv.features[:-2]
    encoder.load_state_dict(
        {k.replace("encoder.module.", ""): v for k, v in state.items() if k.startswith("encoder.")}
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = encoder((images - mean) / std).flatten(2)
    x = x / x.norm(dim=1, keepdim=True)
    c = state["pool.module.centroids"]  # (K, D)
    w = state["pool.module.conv.weight"][:, :, 0, 0]
    a = torch.softmax(torch.einsum("kd,bdn->bkn", w, x), dim=1)
    vlad = (a.unsqueeze(2) * (x.unsqueeze(1) - c.view(1, *c.shape, 1))).sum(-1)  # (B, K, D)
    vlad = vlad / vlad.norm(dim=2, keepdim=True)
    flat = vlad.reshape(len(x), -1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    if wpca is not None:
        flat = F.conv2d(flat[:, :, None, None], *wpca).flatten(1)
        flat = flat / flat.norm(dim=1, keepdim=True)
    return flat


def nanne_state(arch: str, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DataParallel-wrapped pytorch-NetVlad state_dict (vladv1: no assignment bias)."""
    g = torch.Generator().manual_seed(seed)
    tv = getattr(torchvision.models, arch)(weights=None)
    state = {f"encoder.module.{n}": p.detach() for n, p in tv.features[:-2].state_dict().items()}
    d = state[[n for n in state if n.endswith("weight")][-1]].shape[0]
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    state["pool.module.centroids"] = c
    state["pool.module.conv.weight"] = (3.0 * c)[:, :, None, None].clone()
    return state


@pytest.fixture(scope="module")
def alexnet_state() -> dict[str, torch.Tensor]:
    return nanne_state("alexnet", K)


def test_nanne_checkpoint(alexnet_state, images, tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1, 2]}]}
    torch.save(
        {
            "epoch": 7,
            "state_dict": alexnet_state,
            "best_score": np.float64(0.8125),
            "optimizer": optimizer,
        },
        path,
    )
    assert importers.detect_format(path) == importers.FORMAT_NANNE
    model = importers.load_any(path)
    assert model.config == ModelConfig("alexnet", "netvlad", num_clusters=K)
    assert model.meta["source_epoch"] == 7 and model.meta["source_best_score"] == 0.8125
    assert model.is_initialised
    with torch.no_grad():
        torch.testing.assert_close(
            model(images), nanne_reference("alexnet", alexnet_state, images), atol=1e-5, rtol=0
        )
    # import keeps the source in meta and saves only plain types
    out = importers.import_checkpoint(path, tmp_path / "alex.pt")
    assert load_checkpoint(out).meta["source_format"] == importers.FORMAT_NANNE


def test_patch_netvlad_checkpoint(alexnet_state, images, tmp_path):
    g = torch.Generator().manual_seed(5)
    kd = K * 256
    wpca = (torch.randn(12, kd, 1, 1, generator=g) / kd**0.5, torch.randn(12, generator=g) * 0.01)
    state = {k.replace(".module", ""): v for k, v in alexnet_state.items()}
    state |= {"WPCA.0.weight": wpca[0], "WPCA.0.bias": wpca[1]}
    path = tmp_path / "pittsburgh_WPCA12.pth.tar"
    torch.save({"epoch": 1, "state_dict": state}, path)
    assert importers.detect_format(path) == importers.FORMAT_PATCH
    model = importers.load_any(path)
    assert model.config == ModelConfig("alexnet", "netvlad", num_clusters=K, whitening_dim=12)
    with torch.no_grad():
        ref = nanne_reference("alexnet", alexnet_state, images, wpca=wpca)
        torch.testing.assert_close(model(images), ref, atol=1e-5, rtol=0)


def test_nanne_vgg16_is_recognised(tmp_path):
    state = nanne_state("vgg16", 2)
    path = tmp_path / "vgg.pth.tar"
    torch.save({"state_dict": state}, path)
    model = importers.load_any(path)
    assert model.config == ModelConfig("vgg16", "netvlad", num_clusters=2)
    assert torch.equal(model.backbone[28].weight, state["encoder.module.28.weight"])


def test_nanne_mismatch(alexnet_state, tmp_path):
    state = dict(alexnet_state)
    state["pool.module.centroids"] = torch.zeros(K, 100)
    path = tmp_path / "mismatch.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"mismatch\.pth\.tar: pool\.centroids has shape"):
        importers.load_any(path)
    state["pool.module.centroids"] = torch.full((K, 256), float("nan"))
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"mismatch\.pth\.tar: pool\.centroids contains NaN"):
        importers.load_any(path)
    del state["pool.module.centroids"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"mismatch\.pth\.tar: not a NetVLAD checkpoint"):
        importers.load_any(path)


# --- our own format and damaged files -------------------------------------------------------


def test_native_checkpoint_roundtrip(tmp_path, images):
    model = build_model(ModelConfig("alexnet", "netvlad", num_clusters=2), "none", progress=False)
    save_checkpoint(model, tmp_path / "ours.pt")
    assert importers.detect_format(tmp_path / "ours.pt") == importers.FORMAT_NATIVE
    loaded = importers.load_any(tmp_path / "ours.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


class NotAWeight:
    pass


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("empty", "file is empty"),
        ("garbage", "not a model file this app reads"),
        ("truncated", "cannot read the PyTorch checkpoint"),
        ("pickled_object", "refused to load"),
        ("tensor", "not a model checkpoint"),
        ("missing", "no such file"),
    ],
)
def test_damaged_files(kind, pattern, tmp_path, alexnet_state):
    path = tmp_path / f"{kind}.pth.tar"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01 this is not a model" * 10)
    elif kind == "truncated":
        buf = io.BytesIO()
        torch.save({"state_dict": alexnet_state}, buf)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        assert not zipfile.is_zipfile(path)
    elif kind == "pickled_object":
        torch.save({"state_dict": alexnet_state, "args": NotAWeight()}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=rf"{kind}\.pth\.tar.*{pattern}"):
        importers.load_any(path)


def test_matlab_v73_is_refused_clearly(tmp_path):
    path = tmp_path / "v73.mat"
    path.write_bytes(
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n"
    )
    with pytest.raises(CheckpointError, match=r"v73\.mat: MATLAB v7\.3 \(HDF5\)"):
        importers.load_any(path)


def test_import_refuses_to_overwrite_source(mat_model):
    with pytest.raises(CheckpointError, match="overwrite"):
        importers.import_checkpoint(mat_model[0], mat_model[0])


def test_pickled_object_refusal_names_what_was_blocked(tmp_path, alexnet_state):
    """Not torch's documentation line: the blocked object, and that only weights are loaded."""
    path = tmp_path / "odd.pth.tar"
    torch.save({"state_dict": alexnet_state, "args": NotAWeight()}, path)
    with pytest.raises(CheckpointError) as err:
        importers.load_any(path)
    message = str(err.value)
    assert message.endswith(
        "refused to load: this file contains code (pickle object test_importers.NotAWeight); "
        "only plain weights are loaded"
    ), message
    assert "documentation" not in message and "\n" not in message
