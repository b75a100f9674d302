"""Every tunable default of the engine, in one place.

The CLI, the GUI and the training code build these dataclasses and pass them down; no module
keeps its own copy of a default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

#: The model a fresh install uses: it needs no download (weights ship in models/).
DEFAULT_MODEL = "mobilenet_v2-netvlad"

#: The paper's rules for weak supervision and evaluation (Arandjelović et al. 2016, sec. 4).
POSITIVE_RADIUS_M = 10.0
NEGATIVE_RADIUS_M = 25.0
RECALL_RADIUS_M = 25.0

#: Input sizes every backbone can take: AlexNet's stride-4 11x11 stem and pools need about 32
#: pixels; above 4096 a VGG16 forward alone needs gigabytes per image (100 000 was OOM-killed).
IMAGE_SIZE_RANGE = (32, 4096)
TOP_N_MAX = 1000  # matches per photo: faiss asserts on 0, and memory grows with it


def _check_int(name: str, value: object, lo: int, hi: int, why: str = "") -> None:
    """Raise ConfigError unless ``lo <= value <= hi`` for an int (bool is no int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}{why}")


def _check_float(name: str, value: object, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo < value if open_lo else lo <= value) or value > hi:
        low = f"above {lo:g}" if open_lo else f"from {lo:g}"
        raise ConfigError(f"{name} must be a number {low} to {hi:g}, not {value!r}")


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
    # Speed switches. fp32 on a full decode is the reference path; each switch below was measured
    # against it (benchmarks/README.md), and only those that keep descriptors equivalent are on.
    jpeg_draft: bool = False  # decode big JPEGs at 1/2-1/8 scale (Image.draft), then resize
    fold_batchnorm: bool = True  # fold each BatchNorm into its conv: the same fp32 map, one pass
    channels_last: bool = True  # NHWC convs: fp32, rounding depends a little on the batch size
    bf16: bool = False  # bfloat16 autocast for the backbone (pooling stays fp32); 10x slower
    # without native bf16 instructions (AVX2-only CPUs): turn on for AVX-512 BF16 / AMX or GPUs

    def validate(self) -> ExtractConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        lo, hi = IMAGE_SIZE_RANGE
        _check_int("image size", self.image_size, lo, hi, " (pixels, longer side)")
        _check_int("batch size", self.batch_size, 1, 4096)
        _check_int("decoding workers", self.num_workers, 0, 256)
        _check_int("max pixels", self.max_pixels, self.image_size, 10**10)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps") or _is_cuda(self.device)
        ):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        return self


def _is_cuda(device: str) -> bool:
    kind, _, number = device.partition(":")
    return kind == "cuda" and (number == "" or number.isdigit())


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

    def validate(self) -> LocateConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_int("top", self.top_n, 1, TOP_N_MAX, " (matches per photo)")
        _check_float("agreement radius (m)", self.agree_radius_m, 0.0, 20_000_000.0, open_lo=True)
        # Scores are cosine similarities: a floor outside [-1, 1] keeps all or nothing.
        _check_float("minimum score", self.min_score, -1.0, 1.0)
        return self


@dataclass
class IndexConfig:
    """Which faiss index searches a library, chosen by its size (see core/searchindex.py).

    Up to ``flat_max`` references: exact inner-product search over the float32 descriptors in
    RAM (24 KB each for 6144-D). Above: IVF-PQ codes (``pq_m * pq_bits / 8`` bytes each),
    persisted in the index folder, whose top ``rerank`` candidates are re-scored exactly from the
    descriptor store.
    """

    kind: str = "auto"  # "auto", "flat", "ivfpq" or "hnsw"
    flat_max: int = 50_000  # auto: exact flat search up to this many references
    # PQ over the full descriptor by default: a PCA fitted on the library throws away the
    # directions in which a photo and its true match agree but the library varies little.
    pca_dim: int = 0  # > 0: reduce (PCA + random rotation) to this size first
    # 1024 sub-quantisers x 4 bits = 512 bytes per code, scanned with faiss's SIMD "fast scan":
    # at 1 M references 8x faster than 512 x 8 bits at the same size and R@1 (benchmarks/).
    pq_m: int = 1024  # IVF-PQ sub-quantisers
    pq_bits: int = 4  # 4: fast-scan codes; 8: classic PQ (pq_m bytes per code)
    nlist: int = 0  # IVF lists; 0 picks about sqrt(N), bounded by the training sample
    nprobe: int = 128  # IVF lists visited per query (an eighth of them at 1 M references)
    hnsw_m: int = 32  # HNSW links per node
    ef_search: int = 128  # HNSW candidate list size per query
    train_size: int = 50_000  # references sampled to train IVF and PQ (float32 in RAM)
    pca_train_size: int = 20_000  # references sampled to fit the PCA, when there is one
    kmeans_iters: int = 10  # IVF and PQ k-means iterations (each one a pass over the sample)
    retrain_growth: float = 2.0  # retrain from scratch once the library outgrows this factor
    rerank: int = 128  # re-score this many candidates with the exact stored descriptors; 0: off
    seed: int = 0


@dataclass
class DistributedConfig:
    """Extraction on Ray Data (core/distributed.py): on this machine, or on a cluster."""

    address: str | None = None  # None: start Ray here; else a cluster ("auto", "ray://head:10001")
    num_cpus: int | None = None  # a local Ray's CPUs (None: all of this machine's)
    actors: int = 0  # model-holding actors; 0: one per GPU, or one per ``cpus_per_actor`` CPUs
    cpus_per_actor: int = 1  # CPU actors: cores (torch threads) each one uses
    wave_size: int = 20_000  # photos per Ray job; a killed build loses at most one wave
    rows_per_shard: int = 2_048  # descriptors per parquet shard file
