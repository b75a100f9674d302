"""Global pooling heads: NetVLAD (the paper's layer), f_max (its baseline) and PCA-whitening.

Parameter names are a contract with the checkpoint importers: ``centroids``, ``conv.weight``,
``conv.bias`` and ``initialised`` for NetVLAD; ``weight`` and ``bias`` for Whitening.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import InitConfig, ModelConfig
from .head import (  # noqa: F401 - ASSIGNMENT_RATIO, KMEANS_POINTS_PER_CLUSTER: former home
    ASSIGNMENT_RATIO,
    KMEANS_POINTS_PER_CLUSTER,
    alpha_for_ratio,
    kmeans_netvlad,
)


class NetVLAD(nn.Module):
    """NetVLAD pooling (Arandjelović et al. 2016, eq. 4) over a (B, D, H, W) feature map.

    Output index ``k * D + d`` (cluster-major, as in the PyTorch ports), intra-normalised per
    cluster, then L2-normalised as a whole.
    """

    def __init__(self, dim: int, num_clusters: int = ModelConfig.num_clusters) -> None:
        super().__init__()
        if dim < 1 or num_clusters < 1:
            raise ValueError(
                f"NetVLAD needs dim >= 1 and num_clusters >= 1, got {dim}, {num_clusters}"
            )
        self.dim = dim
        self.num_clusters = num_clusters
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        # The paper's layer has no bias; it is kept (zero) so checkpoints that have one load as is.
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=True)
        nn.init.zeros_(self.conv.bias)
        # Persisted so a loaded model knows whether k-means initialisation (or training) happened.
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_clusters={self.num_clusters}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d = x.shape[:2]
        if d != self.dim:
            raise ValueError(f"NetVLAD expects {self.dim} channels, got {d}")
        x = F.normalize(x, p=2, dim=1)
        assign = F.softmax(self.conv(x).flatten(2), dim=1)  # (B, K, N)
        x = x.flatten(2)  # (B, D, N)
        # sum_n a_kn (x_n - c_k) = sum_n a_kn x_n - (sum_n a_kn) c_k, for all k at once.
        vlad = torch.einsum("bkn,bdn->bkd", assign, x)
        vlad = vlad - assign.sum(-1, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation
        return F.normalize(vlad.reshape(b, -1), p=2, dim=1)

    def set_clusters(
        self,
        centroids: torch.Tensor | np.ndarray,
        weight: torch.Tensor | np.ndarray,
        bias: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Set centroids and the assignment conv (weight (K, D) or (K, D, 1, 1)); marks initialised."""
        k, d = self.num_clusters, self.dim
        centroids = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32).reshape(-1)
        if centroids.shape != (k, d) or weight.numel() != k * d:
            raise ValueError(
                f"NetVLAD expects centroids ({k}, {d}) and weight ({k}, {d}), got "
                f"{tuple(centroids.shape)} and {weight.numel()} values"
            )
        if bias is not None:
            bias = torch.as_tensor(np.asarray(bias), dtype=torch.float32).reshape(k)
        # A model moved to a device inside inference_mode holds inference tensors, which only
        # inference_mode may update in place.
        inference = self.centroids.is_inference()
        with torch.inference_mode() if inference else torch.no_grad():
            self.centroids.copy_(centroids)
            self.conv.weight.copy_(weight.reshape(k, d, 1, 1))
            if bias is None:
                self.conv.bias.zero_()
            else:
                self.conv.bias.copy_(bias)
            self.initialised.fill_(True)

    def initialise(
        self,
        descriptors: np.ndarray,
        *,
        iters: int = InitConfig.kmeans_iters,
        seed: int = InitConfig.seed,
    ) -> float:
        """The paper's initialisation from sampled local descriptors (N, D); returns alpha.

        k-means on L2-normalised descriptors gives the centroids; the assignment conv gets
        ``alpha * c_k / |c_k|`` and no bias (``head.kmeans_netvlad``, shared with the torch-free
        path, says why).
        """
        x = np.asarray(descriptors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"NetVLAD init expects descriptors of shape (N, {self.dim}), got {x.shape}"
            )
        centroids, weight, alpha = kmeans_netvlad(x, self.num_clusters, iters=iters, seed=seed)
        self.set_clusters(centroids, weight)
        return alpha


_alpha_for_ratio = alpha_for_ratio  # the former name


class FMax(nn.Module):
    """Global max-pooling over H, W then L2 (the paper's f_max baseline); output size D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.amax(dim=(2, 3)), p=2, dim=1)


class Whitening(nn.Module):
    """PCA-whitening to ``out_dim`` then L2, as the paper does before retrieval (sec. 5.2)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if not 1 <= out_dim <= in_dim:
            raise ValueError(f"Whitening needs 1 <= out_dim <= in_dim, got {out_dim} > {in_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        # Until fitted: a plain projection onto the first out_dim coordinates.
        self.weight = nn.Parameter(torch.eye(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.linear(x, self.weight, self.bias), p=2, dim=1)

    @torch.no_grad()
    def fit(self, descriptors: np.ndarray, eps: float = 1e-9) -> None:
        """Fit on (N, in_dim) descriptors: weight = diag(1/sqrt(l + eps)) U^T, bias = -weight @ mean.

        When N < in_dim (e.g. 32768-D NetVLAD) the eigenvectors come from the N x N Gram matrix,
        which is much cheaper than the in_dim x in_dim covariance. ``eps`` is relative to the
        largest eigenvalue.
        """
        x = np.asarray(descriptors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"Whitening expects descriptors (N, {self.in_dim}), got {x.shape}")
        n = x.shape[0]
        if self.out_dim > min(n - 1, self.in_dim):
            raise ValueError(
                f"Whitening to {self.out_dim} dimensions needs at least {self.out_dim + 1} "
                f"descriptors of dimension >= {self.out_dim}; got {n} of dimension {self.in_dim} "
                f"(use out_dim <= min(N-1, in_dim) = {max(min(n - 1, self.in_dim), 0)})"
            )
        if not np.isfinite(x).all():
            raise ValueError("Whitening: descriptors contain NaN or infinity")
        mean = x.mean(axis=0, dtype=np.float64)
        xc = x - mean.astype(np.float32)
        if n < self.in_dim:
            gram = (xc @ xc.T).astype(np.float64) / n
            evals, evecs = np.linalg.eigh(gram)
            evals, evecs = evals[::-1][: self.out_dim], evecs[:, ::-1][:, : self.out_dim]
            evals = np.maximum(evals, 0.0)
            # u_i = X^T v_i / sqrt(N l_i): the unit eigenvectors of the covariance X^T X / N.
            u = (xc.T @ evecs.astype(np.float32)).astype(np.float64)
            u /= np.maximum(np.linalg.norm(u, axis=0, keepdims=True), 1e-30)
        else:
            cov = (xc.T @ xc).astype(np.float64) / n
            evals, evecs = np.linalg.eigh(cov)
            evals, u = evals[::-1][: self.out_dim], evecs[:, ::-1][:, : self.out_dim]
            evals = np.maximum(evals, 0.0)
        # Deterministic signs: the largest-magnitude component of each eigenvector is positive.
        signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
        u = u * np.where(signs == 0, 1.0, signs)
        scale = 1.0 / np.sqrt(evals + eps * max(float(evals[0]), 1e-30))
        weight = scale[:, None] * u.T
        self.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        self.bias.copy_(torch.from_numpy((-weight @ mean).astype(np.float32)))
