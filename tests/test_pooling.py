"""NetVLAD, f_max and whitening: the maths, the paper's initialisation, the state-dict contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netvlad_gui.core.model.pooling import FMax, NetVLAD, Whitening


def _reference_netvlad(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    """Eq. (4) of the paper written as plainly as possible (loops), for comparison."""
    b, d = x.shape[:2]
    out = torch.zeros(b, layer.num_clusters, d, dtype=torch.float64)
    for i in range(b):
        desc = x[i].reshape(d, -1).T.double()
        desc = desc / desc.norm(dim=1, keepdim=True)
        logits = desc @ layer.conv.weight[:, :, 0, 0].double().T + layer.conv.bias.double()
        a = torch.softmax(logits, dim=1)
        for k in range(layer.num_clusters):
            residuals = desc - layer.centroids[k].detach().double()
            out[i, k] = (a[:, k : k + 1] * residuals).sum(0)
    out = out / out.norm(dim=2, keepdim=True)
    out = out.reshape(b, -1)
    return out / out.norm(dim=1, keepdim=True)


def _assignments(layer: NetVLAD, desc: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(desc).T.reshape(1, layer.dim, -1, 1)
    with torch.no_grad():
        return torch.softmax(layer.conv(x)[0, :, :, 0], dim=0).T.double().numpy()


def _mean_log_ratio(a: np.ndarray) -> float:
    top = -np.sort(-a, axis=1)
    return float(np.mean(np.log(top[:, 0] / top[:, 1])))


def test_netvlad_matches_reference_and_is_cluster_major() -> None:
    torch.manual_seed(0)
    layer = NetVLAD(dim=6, num_clusters=4)
    with torch.no_grad():
        layer.conv.bias.normal_()
    x = torch.randn(2, 6, 3, 5)
    out = layer(x)
    assert out.shape == (2, 24)
    torch.testing.assert_close(out.double(), _reference_netvlad(layer, x), atol=1e-5, rtol=1e-5)
    # Index k*D + d: each block of D values is one cluster, intra-normalised to 1/sqrt(K).
    blocks = out.reshape(2, 4, 6).norm(dim=2)
    torch.testing.assert_close(blocks, torch.full((2, 4), 0.5), atol=1e-5, rtol=0)


def test_netvlad_ignores_descriptor_scale_and_checks_channels() -> None:
    torch.manual_seed(1)
    layer = NetVLAD(dim=8, num_clusters=3)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(layer(x), layer(x * 7.5), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expects 8 channels"):
        layer(torch.randn(1, 5, 4, 4))


def test_netvlad_state_dict_contract_and_gradients() -> None:
    layer = NetVLAD(dim=8, num_clusters=3)
    state = layer.state_dict()
    assert set(state) == {"centroids", "conv.weight", "conv.bias", "initialised"}
    assert state["centroids"].shape == (3, 8)
    assert state["conv.weight"].shape == (3, 8, 1, 1)
    assert torch.count_nonzero(state["conv.bias"]) == 0
    assert not bool(state["initialised"])
    layer(torch.randn(2, 8, 3, 3)).sum().backward()
    assert layer.centroids.grad is not None and layer.conv.weight.grad is not None
    copy = NetVLAD(dim=8, num_clusters=3)
    state["initialised"] = torch.tensor(True)
    copy.load_state_dict(state)
    assert bool(copy.initialised)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_initialise_gives_the_papers_assignment_ratio(kind: str) -> None:
    rng = np.random.default_rng(3)
    dim, k = 16, 8
    if kind == "random":
        desc = _unit(rng.standard_normal((2000, dim)))
    else:
        centres = _unit(rng.standard_normal((k, dim)))
        desc = _unit(centres[rng.integers(0, k, 2000)] + 0.15 * rng.standard_normal((2000, dim)))
    layer = NetVLAD(dim, k)
    alpha = layer.initialise(desc, iters=20, seed=0)
    assert alpha > 0 and bool(layer.initialised)
    assert torch.count_nonzero(layer.conv.bias) == 0
    # conv weight = alpha * L2-normalised centroid
    centroids = layer.centroids.detach().numpy()
    expected = alpha * _unit(centroids)
    np.testing.assert_allclose(layer.conv.weight[:, :, 0, 0].detach().numpy(), expected, rtol=1e-5)
    # geometric mean of a1/a2 over the samples is exactly 100
    assert _mean_log_ratio(_assignments(layer, desc)) == pytest.approx(math.log(100.0), rel=1e-4)


def test_initialise_is_deterministic_and_validates() -> None:
    desc = _unit(np.random.default_rng(0).standard_normal((500, 8)))
    a, b = NetVLAD(8, 4), NetVLAD(8, 4)
    assert a.initialise(desc, seed=5) == b.initialise(desc, seed=5)
    torch.testing.assert_close(a.centroids, b.centroids, atol=0, rtol=0)
    with pytest.raises(ValueError, match="at least 4"):
        NetVLAD(8, 4).initialise(desc[:3])
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        NetVLAD(8, 4).initialise(desc[:, :5])


def test_set_clusters_for_importers() -> None:
    layer = NetVLAD(4, 2)
    layer.set_clusters(np.ones((2, 4)), np.full((2, 4), 2.0), bias=np.array([1.0, -1.0]))
    assert bool(layer.initialised)
    assert layer.conv.weight.shape == (2, 4, 1, 1) and float(layer.conv.bias[0].detach()) == 1.0
    with pytest.raises(ValueError, match="centroids"):
        layer.set_clusters(np.ones((3, 4)), np.ones((2, 4)))


def test_fmax_is_max_then_l2() -> None:
    x = torch.randn(3, 5, 4, 6)
    out = FMax()(x)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, F.normalize(x.flatten(2).max(dim=2).values, dim=1))


def _reference_whitening(x: np.ndarray, out_dim: int) -> tuple[np.ndarray, np.ndarray]:
    cov = np.cov(x.T.astype(np.float64), bias=True)
    evals, evecs = np.linalg.eigh(cov)
    return evals[::-1][:out_dim], evecs[:, ::-1][:, :out_dim]


@pytest.mark.parametrize("n, in_dim", [(400, 20), (30, 200)])  # covariance, then Gram branch
def test_whitening_fit(n: int, in_dim: int) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, in_dim)) * np.linspace(3, 0.5, in_dim) + 2.0).astype(np.float32)
    out_dim = min(10, n - 1)
    white = Whitening(in_dim, out_dim)
    white.fit(x)
    assert white.weight.shape == (out_dim, in_dim) and white.bias.shape == (out_dim,)
    with torch.no_grad():
        y = F.linear(torch.from_numpy(x), white.weight, white.bias).double().numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(out_dim), atol=1e-3)
    # same subspace and scale as the textbook covariance eigen-decomposition
    evals, evecs = _reference_whitening(x, out_dim)
    w = white.weight.detach().double().numpy()
    np.testing.assert_allclose(np.abs(w @ evecs), np.diag(1 / np.sqrt(evals)), atol=1e-3, rtol=1e-3)
    out = white(torch.from_numpy(x[:4]))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)


def test_whitening_refuses_too_few_descriptors() -> None:
    with pytest.raises(ValueError, match="at least 11 descriptors"):
        Whitening(50, 10).fit(np.random.default_rng(0).standard_normal((10, 50)))
    with pytest.raises(ValueError, match="out_dim <= in_dim"):
        Whitening(5, 6)
    assert set(Whitening(6, 3).state_dict()) == {"weight", "bias"}


def test_small_sample_initialises_without_faiss_warning(capfd) -> None:
    """A small library gives fewer than faiss's 39 samples per cluster: no faiss print on the
    console (the CLI showed "please provide at least 2496 training points" on every small one)."""
    from netvlad_gui.core.model.initialise import _per_image
    from netvlad_gui.core.model.pooling import KMEANS_POINTS_PER_CLUSTER

    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    NetVLAD(16, num_clusters=8).initialise(x, iters=5)
    out = capfd.readouterr()
    assert "please provide" not in out.out + out.err

    class _Model:
        pool = NetVLAD(16, num_clusters=64)

    from netvlad_gui.core.config import InitConfig

    # 19 photos: 100 per image would give 1 900 samples for 64 clusters; ask for enough instead
    per = _per_image(_Model(), InitConfig(), 19)
    assert per * 19 >= KMEANS_POINTS_PER_CLUSTER * 64 > 100 * 19
    assert _per_image(_Model(), InitConfig(), 500) == InitConfig().descriptors_per_image
