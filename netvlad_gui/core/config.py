"""Every tunable default of the engine, in one place.

The CLI, the GUI and the training code build these dataclasses and pass them down; no module
keeps its own copy of a default.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The model a fresh install uses: it needs no download (weights ship in models/).
DEFAULT_MODEL = "mobilenet_v2-netvlad"

#: The paper's rules for weak supervision and evaluation (Arandjelović et al. 2016, sec. 4).
POSITIVE_RADIUS_M = 10.0
NEGATIVE_RADIUS_M = 25.0
RECALL_RADIUS_M = 25.0


@dataclass
class ModelConfig:
    """What network turns an image into a global descriptor."""

    backbone: str = "mobilenet_v2"
    pooling: str = "netvlad"  # "netvlad" or "fmax" (the paper's baseline)
    num_clusters: int = 64
    whitening_dim: int | None = None  # PCA-whitening output size; None keeps the raw descriptor

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.pooling}"

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelConfig:
        """Parse ``BACKBONE-POOLING`` (e.g. ``vgg16-netvlad``); a bare backbone means NetVLAD."""
        backbone, _, pooling = name.partition("-")
        return cls(backbone=backbone, pooling=pooling or "netvlad", **overrides)


@dataclass
class ExtractConfig:
    """How images are fed to the model."""

    image_size: int = 640  # longer side in pixels, the paper's 640x480
    batch_size: int = 8
    num_workers: int = 1  # DataLoader decode workers; 0 decodes in the calling thread
    device: str = "auto"  # "auto", "cpu" or "cuda"
    max_pixels: int = 180_000_000  # larger images are refused as decompression bombs


@dataclass
class InitConfig:
    """The paper's k-means + alpha initialisation of an untrained NetVLAD layer."""

    num_images: int = 500  # images sampled from the library
    descriptors_per_image: int = 100
    kmeans_iters: int = 25
    seed: int = 0


@dataclass
class LocateConfig:
    """How the top matches become one predicted location."""

    top_n: int = 5
    agree_radius_m: float = NEGATIVE_RADIUS_M  # matches this close count as one place
    min_score: float = 0.0
