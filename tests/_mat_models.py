"""Small stand-ins for the paper's MATLAB models (``Pitts30K_struct.mat``) for importer and zoo tests.

The layout follows the real files (uzh-rpg/netvlad_tf_open exports, as hloc reads them): 35
MatConvNet layers — VGG16 conv1_1 .. conv5_3 (0..28), preL2, vlad:core (assignment D x K and
NEGATED centroids D x K), vlad intra-norm, postL2, WPCA (1 x 1 x K*D x OUT conv), finalL2 — and
``net.meta.normalization.averageImage`` (an H x W x 3 image; MATLAB, hloc and netvlad_tf_open
subtract its first pixel). Only K, the whitening size and the mean image's size are shrunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
AVERAGE_RGB = (122.68, 116.67, 104.01)
AVERAGE_SIZE = (6, 4)  # averageImage is H x W x 3 in the real files (constant there), not 1x1x3


def cell(*arrays: np.ndarray) -> np.ndarray:
    out = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        out[0, i] = a
    return out


def vgg16_layers(rng: np.random.Generator | None) -> list[dict]:
    """conv1_1 .. conv5_3 as MatConvNet structs; weights random (He scale) or zero (rng None)."""
    layers: list[dict] = []
    in_ch, block, j = 3, 1, 1
    for item in VGG16_CFG:
        if item == "M":
            layers.append(
                {
                    "name": f"pool{block}",
                    "type": "pool",
                    "method": "max",
                    "pool": [2.0, 2.0],
                    "stride": [2.0, 2.0],
                    "pad": [0.0, 0.0, 0.0, 0.0],
                }
            )
            block, j = block + 1, 1
            continue
        shape = (3, 3, in_ch, item)
        if rng is None:
            w = np.zeros(shape, np.float32)
            b = np.zeros(item, np.float32)
        else:
            w = (rng.standard_normal(shape) * np.sqrt(2.0 / (9 * in_ch))).astype(np.float32)
            b = (rng.standard_normal(item) * 0.01).astype(np.float32)
        layers.append(
            {
                "name": f"conv{block}_{j}",
                "type": "conv",
                "weights": cell(w, b),
                "pad": [1.0, 1.0, 1.0, 1.0],
                "stride": [1.0, 1.0],
            }
        )
        layers.append({"name": f"relu{block}_{j}", "type": "relu", "leak": 0.0})
        in_ch, j = item, j + 1
    return layers[:-1]  # conv5_3 without its ReLU, as the NetVLAD nets are cut


def head_layers(
    assign: np.ndarray, neg_centroids: np.ndarray, wpca: np.ndarray | None, bias: np.ndarray | None
) -> list[dict]:
    norm = [1024.0, 1e-12, 1.0, 0.5]
    d, k = assign.shape
    layers = [
        {"name": "preL2", "type": "normalize", "param": norm},
        {
            "name": "vlad:core",
            "type": "custom",
            "K": float(k),
            "D": float(d),
            "weights": cell(assign, neg_centroids),
        },
        {"name": "vlad:intranorm", "type": "normalize", "param": norm},
        {"name": "postL2", "type": "custom"},
    ]
    if wpca is not None:
        layers += [
            {
                "name": "WPCA",
                "type": "conv",
                "weights": cell(wpca[None, None], bias),
                "pad": 0.0,
                "stride": 1.0,
            },
            {"name": "finalL2", "type": "custom"},
        ]
    return layers


def average_image(rgb=AVERAGE_RGB, size: tuple[int, int] = AVERAGE_SIZE) -> np.ndarray:
    """A constant H x W x 3 mean image, as the real files store the RGB mean."""
    return np.broadcast_to(np.asarray(rgb, np.float32), (*size, 3)).copy()


def save_net(path: Path, layers: list[dict], average=None, compress: bool = False) -> Path:
    """``average``: the H x W x 3 ``averageImage`` (default: constant AVERAGE_RGB)."""
    average = average_image() if average is None else np.asarray(average, np.float32)
    assert average.ndim == 3 and average.shape[-1] == 3, "averageImage is H x W x 3"
    net = {
        "layers": cell(*layers),
        "meta": {"normalization": {"averageImage": average}},
    }
    scipy.io.savemat(str(path), {"net": net}, do_compression=compress)
    return path


def write_mat_model(
    path: Path,
    *,
    k: int = 4,
    out: int = 16,
    seed: int | None = 0,
    compress: bool = False,
    average: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Write a VGG16 NetVLAD .mat; seed None gives all-zero weights (compresses to ~70 KB).

    Returns the head weights in MATLAB's own orientation, for reference computations.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    d = 512
    if rng is None:
        assign = np.zeros((d, k), np.float32)
        centroids = np.zeros((d, k), np.float32)
        wpca = np.zeros((k * d, out), np.float32)
        bias = np.zeros(out, np.float32)
    else:
        assign = (rng.standard_normal((d, k)) * 0.5).astype(np.float32)
        centroids = rng.standard_normal((d, k)).astype(np.float32)
        centroids /= np.linalg.norm(centroids, axis=0, keepdims=True)
        wpca = (rng.standard_normal((k * d, out)) / np.sqrt(k * d)).astype(np.float32)
        bias = (rng.standard_normal(out) * 0.01).astype(np.float32)
    layers = vgg16_layers(rng) + head_layers(assign, -centroids, wpca, bias)
    save_net(path, layers, average, compress=compress)
    return {"assign": assign, "centroids": centroids, "wpca": wpca, "bias": bias}
