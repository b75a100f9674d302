"""Local features of a photo from the model's backbone map, and the recipe that names them.

Here, below the library and the query layers, because two places make the same features: the
verifier (core/query/verify.py) from the maps it computes, and an index build
(core/library/patchfill.py) from the maps its forward pass already gives, stored in the index's
``patches.sqlite`` so that the first verified locate computes none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..config import ExtractConfig, VerifyConfig
from .head import l2_normalise


@dataclass
class LocalFeatures:
    """Keypoints of one image: positions in working pixels, descriptors, the scale to original."""

    # (N, 2) float32 in the working image, continuous pixel coordinates: (0, 0) is the top-left
    # corner of the first pixel and (w, h) the bottom-right one, as QPainter draws.
    xy: np.ndarray
    desc: np.ndarray  # (N, D): uint8 SIFT, or float16 L2-normalised patches
    to_original: tuple[float, float]  # (sx, sy): working pixels -> original (oriented) pixels
    work_size: tuple[int, int]  # (w, h) of the working image

    @property
    def nbytes(self) -> int:
        return int(self.xy.nbytes + self.desc.nbytes)

    def original_xy(self, idx: np.ndarray) -> np.ndarray:
        sx, sy = self.to_original
        return (self.xy[idx] * np.array([sx, sy], np.float32)).astype(np.float32)


def patch_features(
    local_map: np.ndarray, work_size: tuple[int, int], original_size: tuple[int, int]
) -> LocalFeatures:
    """One L2-normalised descriptor per cell of a (D, H', W') feature map, at the cell centres.

    ``work_size`` is the (w, h) of the image the map was computed from.
    """
    local_map = np.asarray(local_map, dtype=np.float32)
    d, mh, mw = local_map.shape
    x = l2_normalise(local_map.reshape(d, -1), 0)
    desc = np.ascontiguousarray(x.T).astype(np.float16)
    w, h = work_size
    gx, gy = np.meshgrid((np.arange(mw) + 0.5) * w / mw, (np.arange(mh) + 0.5) * h / mh)
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    return LocalFeatures(xy, desc, (original_size[0] / w, original_size[1] / h), (int(w), int(h)))


def feature_recipe(extract_cfg: ExtractConfig, cfg: VerifyConfig, model_key: str) -> str:
    """A digest of everything that shapes a reference's features: the key of a stored row.

    ``model_key`` names the weights and the engine (``LibraryIndex.model_key``).
    """
    ec, c = extract_cfg, cfg
    what: dict = {"features": c.features, "max_pixels": ec.max_pixels}
    if c.features == "patch":
        what |= {"model": model_key, "size": ec.image_size, "draft": bool(ec.jpeg_draft)}
    else:
        import cv2

        what |= {
            "sift_size": c.sift_size,
            "max_features": c.max_features,
            "contrast": c.sift_contrast,
            "opencv": cv2.__version__,
        }
    text = json.dumps(what, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
