"""Every tunable default of the engine, in one place.

The CLI, the GUI and the training code build these dataclasses and pass them down; no module
keeps its own copy of a default. Option groups nest (``TrainConfig().extract.image_size``,
``TrainConfig().mining.margin``) instead of repeating another group's defaults. This module
imports nothing heavy, so the fronts can read defaults without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DatasetError

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
TOP_N_RANGE = (1, TOP_N_MAX)
#: Matches verified per photo (``--verify-top``); each one adds to the time a photo takes.
VERIFY_TOP_RANGE = (1, 1000)
#: Photos per group in ``netvlad eval --sequence N`` (SequenceConfig.eval_group); 1 is each
#: photo alone, the single-photo figure.
SEQUENCE_GROUP_RANGE = (1, 1000)


def _check_int(name: str, value: object, lo: int, hi: int, why: str = "") -> None:
    """Raise ConfigError unless ``lo <= value <= hi`` for an int (bool is no int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}{why}")


def _check_float(name: str, value: object, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo < value if open_lo else lo <= value) or value > hi:
        low = f"above {lo:g}" if open_lo else f"from {lo:g}"
        raise ConfigError(f"{name} must be a number {low} to {hi:g}, not {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        words = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ConfigError(f"{name} must be {words}, not {value!r}")


#: What builds a global descriptor from the backbone's map (ModelConfig.pooling).
POOLINGS = ("netvlad", "fmax")


#: The most NetVLAD clusters a model may have: 16x the paper's 64, a 1.3-million-dimension
#: descriptor (5 MB per photo) with MobileNetV2. More is a damaged or hostile file (one asked for
#: 10^8 clusters: 38 GB), refused before anything is allocated.
MAX_CLUSTERS = 1024


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

    def validate(self) -> ModelConfig:
        """Raise ConfigError naming the first setting that builds no model; returns self.

        The backbone's name and the whitening size's upper bound are checked where the model
        is built (they need the backbone's table and output size).
        """
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")
        if self.pooling == "netvlad":
            _check_int("NetVLAD clusters (--num-clusters)", self.num_clusters, 1, MAX_CLUSTERS)
        if self.whitening_dim is not None:
            _check_int("whitening_dim (--whitening-dim)", self.whitening_dim, 1, 10**7)
        return self


@dataclass
class ExtractConfig:
    """How images are fed to the model."""

    image_size: int = 640  # longer side in pixels, the paper's 640x480
    batch_size: int = 8
    num_workers: int = 1  # decoding threads (core/photos/decoding.py); 0: in the calling thread
    # Photos a build decodes while torch loads (3-4 s, one core busy), before the network asks;
    # ~0.9 MB each at 640 px (3 x 640 x 480 bytes). Later, decoding keeps two batches ahead.
    decode_ahead: int = 64
    device: str = "auto"  # one of DEVICES, or "cuda:N"
    max_pixels: int = 180_000_000  # larger images are refused as decompression bombs
    # Speed switches. fp32 on a full decode is the reference path; each switch below was measured
    # against it (benchmarks/README.md), and only those that keep descriptors equivalent are on.
    # A JPEG at least twice the model input (both sides) decodes at 1/2-1/8 scale (Image.draft),
    # never under twice the input, then is resized: 4-5x faster on 8 MP photos, descriptors at
    # cosine 0.998+ to a full decode; smaller photos (corridor, lund: Recall@1 unchanged) are
    # never affected. False: full decode.
    jpeg_draft: bool = True
    fold_batchnorm: bool = True  # fold each BatchNorm into its conv: the same fp32 map, one pass
    channels_last: bool = True  # NHWC convs: fp32, rounding depends a little on the batch size
    # The backbone's precision (pooling and whitening always run in fp32): "auto" is bf16 where
    # the CPU (AVX-512 BF16, AMX) or GPU runs it natively, fp32 elsewhere (10x slower without
    # native bf16: AVX2-only CPUs); "fp32" or "bf16" force one (core/model/runtime.py decides "auto").
    precision: str = "auto"
    bf16: bool = False  # the older switch: True is precision="bf16"
    # What runs the backbone: "torch" (the reference) or "onnxruntime" (an optional extra,
    # core/model/onnxbackbone.py): 1.78x torch on the default model, descriptors at cosine
    # 1.000000; CPU and fp32 only, elsewhere torch runs it.
    runtime: str = "torch"
    # Whether a front's option asked for ``image_size`` (``from_options``) rather than leaving
    # the default: an index records the size its descriptors were made at, and a build asked
    # for another one refuses, while an index's own size is used when none was asked for.
    image_size_asked: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def from_options(
        cls,
        *,
        device: str | None = None,
        image_size: int | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        jpeg_draft: bool | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ) -> ExtractConfig:
        """What a front's options ask for: None (or 0 for the sizes) keeps the default.

        The one rule the CLI (flags) and the GUI (settings) share; ``num_workers=0`` is a
        request (decode in the calling thread), not "unset".
        """
        cfg = cls()
        if device:
            cfg.device = device
        if image_size:
            cfg.image_size = image_size
            cfg.image_size_asked = True
        if batch_size:
            cfg.batch_size = batch_size
        if num_workers is not None:
            cfg.num_workers = num_workers
        if jpeg_draft is not None:
            cfg.jpeg_draft = bool(jpeg_draft)
        if precision:
            cfg.precision = precision
        if runtime:
            cfg.runtime = runtime
        return cfg.validate()

    def validate(self) -> ExtractConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        lo, hi = IMAGE_SIZE_RANGE
        _check_int("image size", self.image_size, lo, hi, " (pixels, longer side)")
        _check_int("batch size", self.batch_size, 1, 4096)
        _check_int("decoding workers", self.num_workers, 0, 256)
        _check_int("photos decoded ahead", self.decode_ahead, 1, 100_000)
        _check_int("max pixels", self.max_pixels, self.image_size, 10**10)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps") or _is_cuda(self.device)
        ):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be torch or onnxruntime, not {self.runtime!r}")
        return self


PRECISIONS = ("auto", "fp32", "bf16")  # ExtractConfig.precision
RUNTIMES = ("torch", "onnxruntime")  # ExtractConfig.runtime
#: Where the network runs, as the fronts offer it (ExtractConfig also takes "cuda:N" and "mps").
DEVICES = ("auto", "cpu", "cuda")


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

    def validate(self) -> InitConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_int("images sampled for k-means (--init-images)", self.num_images, 1, 10**8)
        _check_int("descriptors per image", self.descriptors_per_image, 1, 10**6)
        _check_int("k-means iterations", self.kmeans_iters, 1, 10_000)
        _check_int("k-means seed", self.seed, 0, 2**32 - 1)
        return self


@dataclass
class VerifyConfig:
    """Geometric verification of the top matches (core/query/verify.py) and the counts the
    verdict reads. Defaults are for the default features, ``patch``; ``for_features("sift")``
    gives SIFT's own. Measured in benchmarks/night_evidence.py and daynight.py
    (benchmarks/README.md, "Night and day") and benchmarks/verify.py ("Geometric verification").
    """

    enabled: bool = True
    top_k: int = 10  # candidates verified (the global search's best K)
    # "patch": the model's own feature map (the map NetVLAD pools), one descriptor per cell;
    # finds the right place at night where SIFT finds nothing (night -> day R@1 0.67 -> 0.9x).
    # "sift": OpenCV's SIFT, more precise on well-lit photos, blind at night.
    features: str = "patch"
    geometry: str = "homography"  # "homography" or "fundamental", fitted with USAC MAGSAC
    sift_size: int = 320  # SIFT runs on this longer side (it doubles the image internally)
    max_features: int = 1000  # SIFT keypoints kept per image
    # Grey levels before SIFT: "stretch" maps the 1st..99th percentile to 0..255, so that SIFT's
    # absolute contrast threshold keeps a dark photo's keypoints (dusk: 5/5 lund queries
    # located instead of 1/5); "none" leaves them. benchmarks/verify_appearance.py.
    sift_contrast: str = "stretch"
    # Ratio test, both ways (nearest < ratio x second nearest); 1: mutual nearest neighbours
    # only. Patches: 1, a ratio test throws away most true night matches (0.9: R@1 0.94 -> 0.82).
    ratio: float = 1.0
    ransac_px: float = 3.0  # inlier threshold, in pixels of a 640 px image (patches: >= a cell)
    # Inlier counts: fewer than min_inliers is no geometric evidence (photos of Berlin and
    # Portland reach PATCH_MIN against the lund library); located_inliers verify the place.
    min_inliers: int = 20
    located_inliers: int = 40
    # Candidates within this fraction of the best inlier count rank by global score (1: by
    # inliers alone); see verify.rerank.
    keep_ratio: float = 0.5
    cache_size: int = 256  # references' local features kept in memory (LRU)

    @classmethod
    def for_features(cls, features: str, **overrides: Any) -> VerifyConfig:
        """The defaults measured for ``features`` ("patch" or "sift"), then ``overrides``."""
        if features not in FEATURE_DEFAULTS:
            raise ConfigError(
                f"verify features must be one of {', '.join(VERIFY_FEATURES)}, not {features!r}"
            )
        return cls(**{"features": features, **FEATURE_DEFAULTS[features], **overrides})

    def validate(self) -> VerifyConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        if self.features not in VERIFY_FEATURES:
            raise ConfigError(
                f"verify features must be one of {', '.join(VERIFY_FEATURES)}, not {self.features!r}"
            )
        if self.sift_contrast not in SIFT_CONTRASTS:
            raise ConfigError(
                f"verify sift_contrast must be one of {', '.join(SIFT_CONTRASTS)}, "
                f"not {self.sift_contrast!r}"
            )
        if self.geometry not in VERIFY_GEOMETRIES:
            raise ConfigError(
                f"verify geometry must be homography or fundamental, not {self.geometry!r}"
            )
        _check_int("verify top", self.top_k, *VERIFY_TOP_RANGE)
        _check_int("minimum inliers", self.min_inliers, 0, 100_000)
        _check_int("located inliers", self.located_inliers, self.min_inliers, 100_000)
        _check_float("ratio test", self.ratio, 0.0, 1.0, open_lo=True)
        _check_float("keep ratio", self.keep_ratio, 0.0, 1.0)
        _check_float("RANSAC threshold (px)", self.ransac_px, 0.0, 1000.0, open_lo=True)
        _check_int("SIFT size", self.sift_size, 16, 8192, " (pixels, longer side)")
        _check_int("SIFT keypoints", self.max_features, 1, 1_000_000)
        _check_int("verify cache size", self.cache_size, 0, 1_000_000)
        return self


VERIFY_FEATURES = ("patch", "sift")  # VerifyConfig.features
#: Where another feature's measured settings differ from VerifyConfig's (the patches'); see
#: VerifyConfig.for_features. SIFT: unrelated photos reach 4-6 inliers, true lund matches 30-66;
#: 12 instead of 15 let corridor's near-duplicate frames reorder (R@1 0.955 -> 0.946).
FEATURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "patch": {},
    "sift": {"ratio": 0.85, "min_inliers": 15, "located_inliers": 24, "keep_ratio": 0.5},
}
VERIFY_GEOMETRIES = ("homography", "fundamental")  # VerifyConfig.geometry
SIFT_CONTRASTS = ("stretch", "none")  # VerifyConfig.sift_contrast


@dataclass
class VerdictConfig:
    """When a photo is ``located``, ``uncertain`` or ``not_found`` (core/query/verdict.py).

    Confidences are ``locate.predict``'s (calibrated on the library's own pairs); the
    similarity is ``verdict.calibrated_similarity`` of match #1 (0: the library's typical best
    different-place score, 1: its typical best same-place score). Inlier counts live in
    VerifyConfig, beside the features they count. Figures: benchmarks/README.md, "Night and day".
    """

    # Unverified: at or above, located (Berlin and Portland photos against the lund library
    # score 0.00-0.14, lund queries 0.87-1.00); under not_found_confidence, not found.
    located_confidence: float = 0.5
    not_found_confidence: float = 0.2
    # No geometric support: at or above this similarity (half-way from the library's typical
    # best different-place pair to its typical best same-place pair) the photo looks like the
    # library, so it is uncertain (e.g. night vs day), not "not in this library". Berlin and
    # Portland against lund score 0-0.18 at 640 px; at 320 px the global score cannot tell them
    # from Lund (0.41-1.0), so there they are uncertain, never located.
    look_alike: float = 0.5

    def validate(self) -> VerdictConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_float("located confidence", self.located_confidence, 0.0, 1.0)
        _check_float("not-found confidence", self.not_found_confidence, 0.0, 1.0)
        if self.not_found_confidence > self.located_confidence:
            raise ConfigError(
                f"the not-found confidence ({self.not_found_confidence:g}) must not exceed the "
                f"located confidence ({self.located_confidence:g})"
            )
        _check_float("look-alike similarity", self.look_alike, 0.0, 1.0)
        return self


@dataclass
class LocateConfig:
    """How the top matches become one predicted location."""

    top_n: int = 5
    agree_radius_m: float = NEGATIVE_RADIUS_M  # matches this close count as one place
    min_score: float = 0.0
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)

    def validate(self) -> LocateConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_int("top", self.top_n, *TOP_N_RANGE, " (matches per photo)")
        _check_float("agreement radius (m)", self.agree_radius_m, 0.0, 20_000_000.0, open_lo=True)
        # Scores are cosine similarities: a floor outside [-1, 1] keeps all or nothing.
        _check_float("minimum score", self.min_score, -1.0, 1.0)
        self.verify.validate()
        self.verdict.validate()
        return self


@dataclass
class SequenceConfig:
    """Photos located together: a walk, a burst, a video's frames (issue 22).

    Ordering and splitting live in core/photos/capture.py, the track model in
    core/query/sequence.py, video sampling in core/photos/video.py. The track model's defaults
    were measured on gardens_point (benchmarks/sequence.py, benchmarks/README.md).
    """

    enabled: bool = True
    # Splitting a group where one trip is impossible: consecutive capture times farther apart
    # than this, or the photos' own GPS implying a faster journey than max_speed_mps.
    max_gap_s: float = 600.0
    max_speed_mps: float = 70.0  # 250 km/h: a fast train; anything faster is another trip
    # The track model: each photo's best ``candidates`` references (plus the references near
    # them) are the places it may be; ``window`` photos are decided together.
    candidates: int = 20
    window: int = 10
    # How far apart two consecutive photos' places may lie: ``speed_mps`` times the time between
    # them (capture times), or ``untimed_step_m`` per photo in file order (no times).
    speed_mps: float = 15.0
    untimed_step_m: float = 30.0
    # Photos of a sequence move: consecutive places at least this far apart (a path that stays
    # on one reference is how a "hub" that scores well with every night photo wins).
    min_step_m: float = 1.5
    # Log-likelihood a track pays per photo that does not move: 50 forbids it where the
    # references allow a moving track (2 and 5 let night photos' tracks sit on hubs).
    stay_penalty: float = 50.0
    jitter_m: float = 1.5  # how much the step may change from one photo to the next
    # A reference's mean similarity to references farther than ``hub_far_m`` (other places;
    # query/sequence.hubness) is taken off every photo's similarity to it, times
    # ``hub_weight``: a reference that resembles everything is no evidence. Measured: 0.5 and
    # 50 m (1.0 fixed the shuffled control on day_right too but cost day_left 3 points).
    hub_weight: float = 0.5
    hub_far_m: float = 50.0
    temperature: float = 0.02  # similarity units per factor e of likelihood
    restart: float = 1e-3  # chance per photo that the track breaks (unrelated photos)
    # Photos are decided together only when one track explains them better than unrelated
    # places do, by at least this much (log-likelihood, nats): shuffled photos stay alone.
    min_evidence: float = 5.0
    # Log-likelihood added to a candidate per unit of its geometric evidence (0..1, inliers):
    # a verified place pulls the track. Not measured on gardens_point (no verification there).
    evidence_weight: float = 2.0
    # A photo is decided with its neighbours only when at least ``min_support`` of them agree:
    # their own ``support_top`` best candidates include the track's place for them.
    min_support: int = 2
    support_top: int = 5
    every_s: float = 1.0  # a video is sampled every this many seconds
    # ``netvlad eval --sequence``: queries located in groups of this many consecutive photos
    # (the target: Recall@1 >= 0.95 in groups of at most 10).
    eval_group: int = 10

    def validate(self) -> SequenceConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_float("sequence gap (s)", self.max_gap_s, 0.0, 1e9, open_lo=True)
        _check_float("sequence top speed (m/s)", self.max_speed_mps, 0.0, 1e5, open_lo=True)
        _check_int("sequence candidates", self.candidates, 1, TOP_N_MAX)
        _check_int("sequence window", self.window, 2, 1000, " (photos decided together)")
        _check_float("sequence speed (m/s)", self.speed_mps, 0.0, 1e5, open_lo=True)
        _check_float("sequence step (m)", self.untimed_step_m, 0.0, 1e7, open_lo=True)
        _check_float("sequence min step (m)", self.min_step_m, 0.0, 1e7)
        _check_float("sequence stay penalty", self.stay_penalty, 0.0, 1e6)
        _check_float("sequence jitter (m)", self.jitter_m, 0.0, 1e7, open_lo=True)
        _check_float("sequence hub weight", self.hub_weight, 0.0, 100.0)
        _check_float("sequence hub distance (m)", self.hub_far_m, 0.0, 2e7, open_lo=True)
        _check_float("sequence temperature", self.temperature, 0.0, 10.0, open_lo=True)
        _check_float("sequence restart", self.restart, 0.0, 1.0, open_lo=True)
        _check_float("sequence minimum evidence", self.min_evidence, -1e6, 1e6)
        _check_float("sequence evidence weight", self.evidence_weight, 0.0, 1000.0)
        if self.restart >= 1.0:
            raise ConfigError(f"sequence restart must be below 1, not {self.restart!r}")
        _check_int("sequence support", self.min_support, 1, 1000)
        _check_int("sequence support top", self.support_top, 1, TOP_N_MAX)
        _check_float("video interval (s)", self.every_s, 0.0, 86_400.0, open_lo=True)
        _check_int("sequence group", self.eval_group, *SEQUENCE_GROUP_RANGE, " (photos per group)")
        if self.min_step_m >= self.untimed_step_m:
            raise ConfigError(
                f"sequence min step ({self.min_step_m:g} m) must be below the step "
                f"({self.untimed_step_m:g} m)"
            )
        return self


@dataclass
class IndexConfig:
    """Which faiss index searches a library, chosen by its size (see core/library/searchindex.py).

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

    def validate(self) -> IndexConfig:
        """Raise ConfigError naming the first setting that builds no index; returns self."""
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; choose one of {INDEX_KINDS}")
        _check_int("index flat_max", self.flat_max, 0, 10**12)
        _check_int("index pca_dim", self.pca_dim, 0, 10**7)
        _check_int("index pq_m", self.pq_m, 1, 10**6)
        _check_int("index pq_bits", self.pq_bits, 1, 16)
        _check_int("index nlist", self.nlist, 0, 10**9)
        _check_int("index nprobe", self.nprobe, 1, 10**9)
        _check_int("index hnsw_m", self.hnsw_m, 2, 4096)
        _check_int("index ef_search", self.ef_search, 1, 10**7)
        _check_int("index train_size", self.train_size, 1, 10**12)
        _check_int("index pca_train_size", self.pca_train_size, 1, 10**12)
        _check_int("index kmeans_iters", self.kmeans_iters, 1, 10_000)
        _check_float("index retrain_growth", self.retrain_growth, 1.0, 1e6, open_lo=True)
        _check_int("index rerank", self.rerank, 0, 10**7)
        return self


#: Search index types (IndexConfig.kind; core/library/searchindex.py builds them).
INDEX_KINDS = ("auto", "flat", "ivfpq", "hnsw")


@dataclass
class DistributedConfig:
    """Extraction on Ray Data (core/library/distributed.py): on this machine, or on a cluster."""

    address: str | None = None  # None: start Ray here; else a cluster ("auto", "ray://head:10001")
    num_cpus: int | None = None  # a local Ray's CPUs (None: all of this machine's)
    actors: int = 0  # model-holding actors; 0: one per GPU, or one per ``cpus_per_actor`` CPUs
    cpus_per_actor: int = 1  # CPU actors: cores (torch threads) each one uses
    wave_size: int = 20_000  # photos per Ray job; a killed build loses at most one wave
    rows_per_shard: int = 2_048  # descriptors per parquet shard file

    def validate(self) -> DistributedConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(
                f"Ray address (--ray) must be a cluster address, not {self.address!r}"
            )
        if self.num_cpus is not None:
            _check_int("Ray CPUs", self.num_cpus, 1, 1_000_000)
        _check_int("Ray actors (--ray-actors)", self.actors, 0, 1_000_000)
        _check_int("CPUs per Ray actor", self.cpus_per_actor, 1, 1_000_000)
        _check_int("Ray wave size", self.wave_size, 1, 10**9)
        _check_int("rows per shard", self.rows_per_shard, 1, 10**9)
        return self


# --- training -------------------------------------------------------------------------------

LOSSES = ("squared", "unsquared")
TRAIN_LAYERS = ("last_block", "pooling", "all")
AMP_DTYPES = ("auto", "bfloat16", "float16")  # TrainConfig.amp_dtype
SPLIT_METHODS = ("track", "grid")  # SplitConfig.method
SPLITS = ("train", "val", "test")
NO_SPLIT = (1.0, 0.0, 0.0)  # SplitConfig.fractions of a source used whole
#: A pair of folders trains on the first three quarters of the route and keeps the last quarter
#: out, so that a run can say what it reaches on places it never saw (the held-out figure).
PAIR_HOLDOUT = (0.75, 0.25, 0.0)
#: A run's epochs (the paper trains 30 on Pittsburgh): on day/night photos of one walk the held-out
#: Recall@1 gain comes within 1-4 epochs (benchmarks/README.md, "Retraining"), in minutes on a CPU.
QUICK_EPOCHS = 4


@dataclass
class MiningConfig:
    """Weak supervision's tuples and their loss (sec. 4; Relja's ``trainWeakly.m`` names)."""

    neg_samples: int = 1000  # nNegChoice: random negatives ranked per query
    neg_cache: int = 10  # nNegCache: hardest negatives remembered per query
    neg_per_tuple: int = 10  # nNegCap: violating negatives kept per tuple
    cache_refresh_queries: int = 1000  # compFeatsFrequency: queries between descriptor caches
    loss: str = "squared"  # "squared" (the paper) or "unsquared" (the PyTorch ports)
    margin: float | None = None  # None: default_margin(loss)

    @staticmethod
    def default_margin(loss: str = "squared") -> float:
        """The paper's m = 0.1 on squared distances; the ports' sqrt(0.1) on plain ones."""
        return 0.1 if loss == "squared" else math.sqrt(0.1)

    @property
    def squared(self) -> bool:
        return self.loss == "squared"

    @property
    def effective_margin(self) -> float:
        return float(self.margin) if self.margin is not None else self.default_margin(self.loss)

    def validate(self) -> MiningConfig:
        """Raise ConfigError naming the first setting out of range (by its CLI flag); self."""
        _check_choice("loss (--loss)", self.loss, LOSSES)
        for name, value in (
            ("negative samples (--neg-samples)", self.neg_samples),
            ("negatives per tuple (--neg-per-tuple)", self.neg_per_tuple),
            ("queries between descriptor caches (--cache-refresh)", self.cache_refresh_queries),
        ):
            _positive(name, value)
        _at_least_0("negatives cached (--neg-cache)", self.neg_cache)
        if not self.effective_margin > 0:
            raise ConfigError(f"margin (--margin) must be > 0, got {self.margin}")
        return self


def _positive(name: str, value: object) -> None:
    """Training's rule for counts and rates: any number above 0."""
    if isinstance(value, bool) or not (isinstance(value, int | float) and value > 0):
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _at_least_0(name: str, value: object) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and value >= 0):
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


@dataclass
class AugmentConfig:
    """Synthetic-night variants of the training database photos, as extra queries (augment.py).

    Ranges are (low, high) drawn uniformly per variant; probabilities in [0, 1].
    """

    variants: int = 0  # per database photo; 0: none
    gamma: tuple[float, float] = (1.5, 3.0)  # darkens the mid-tones
    gain: tuple[float, float] = (0.25, 0.6)
    colour: float = 0.2  # per-channel gain within 1 +- this
    blur: float = 0.5  # chance of a 5-pixel box blur
    noise: tuple[float, float] = (0.01, 0.04)  # Gaussian sigma, in [0, 1] pixel units
    grey: float = 0.5  # chance of greyscale
    stretch: bool = True  # 1st..99th percentile to 0..1, as brightness-normalised night photos


def _training_extract(**options: Any) -> ExtractConfig:
    # NCHW: channels_last rounds a little differently per batch size, and the cache of a DDP rank
    # (its share of the batches) must equal a single process's.
    return ExtractConfig(**{**options, "channels_last": False})


@dataclass
class SplitConfig:
    """How one source becomes train / val / test places that do not overlap.

    ``track`` cuts the route (file-name order of the database) into consecutive stretches;
    ``grid`` deals square cells of ``cell_m`` to the splits. Validation and test images within
    ``gap_m`` of any training image are dropped, so their places are unseen in training. A folder
    that is its own query set trains leave-one-out; its val/test splits make every
    ``query_every``-th photo a query and keep the rest as their database.
    (core/training/datasets.py splits a set by these.)
    """

    method: str = "track"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    cell_m: float = 100.0
    gap_m: float = NEGATIVE_RADIUS_M
    query_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.fractions = tuple(float(f) for f in self.fractions)  # type: ignore[assignment]
        if self.method not in SPLIT_METHODS:
            raise DatasetError(f"split method must be one of {SPLIT_METHODS}, got {self.method!r}")
        if len(self.fractions) != 3 or any(f < 0 or not math.isfinite(f) for f in self.fractions):
            raise DatasetError(f"split fractions must be 3 numbers >= 0, got {self.fractions}")
        if sum(self.fractions) <= 0:
            raise DatasetError("split fractions must not all be 0")
        if self.query_every < 2:
            raise DatasetError(f"query_every must be >= 2, got {self.query_every}")


@dataclass
class DataSpec:
    """Where a set comes from, as the CLI names it; plain fields so a checkpoint can store it.

    core/training/datasets.py's ``load_spec`` reads the photos it names.
    """

    data: str | None = None  # a geotagged folder
    database: str | None = None
    queries: str | None = None
    frame_spacing_m: float | None = None
    gt: str | None = None
    dbstruct: str | None = None
    image_root: str | None = None

    @property
    def kind(self) -> str:
        given = [
            k
            for k, v in (
                ("folder", self.data),
                ("pair", self.database or self.queries),
                ("dbstruct", self.dbstruct),
            )
            if v
        ]
        if len(given) != 1:
            raise DatasetError(
                "name exactly one data source: --data DIR, --database DIR --queries DIR, "
                "or --dbstruct MAT --image-root DIR"
            )
        return given[0]

    @property
    def given(self) -> bool:
        return bool(self.data or self.database or self.queries or self.dbstruct)

    def default_fractions(self) -> tuple[float, float, float]:
        """A folder is split 70/15/15 by default; a pair or a dbStruct is used whole."""
        return SplitConfig.fractions if self.kind == "folder" else NO_SPLIT

    def training_fractions(self, val_given: bool = False) -> tuple[float, float, float]:
        """How a training run splits this source by default: a folder 70/15/15, a pair
        :data:`PAIR_HOLDOUT` (whole when a validation set is named), a dbStruct whole (the
        paper's sets come with their own validation set)."""
        if self.kind == "pair":
            return NO_SPLIT if val_given else PAIR_HOLDOUT
        return self.default_fractions()

    def default_split(self) -> str:
        """What ``eval`` measures by default: the held-out test places of a folder, else all."""
        return "test" if self.kind == "folder" else "all"

    def absolute(self) -> DataSpec:
        """The same spec with absolute paths, so a run can be resumed from any folder."""
        fix = lambda v: str(Path(v).expanduser().absolute()) if v else v
        return dataclasses.replace(
            self,
            data=fix(self.data),
            database=fix(self.database),
            queries=fix(self.queries),
            gt=fix(self.gt),
            dbstruct=fix(self.dbstruct),
            image_root=fix(self.image_root),
        )

    def describe(self) -> str:
        kind = self.kind
        if kind == "folder":
            return str(self.data)
        if kind == "pair":
            return f"{self.database} + {self.queries}"
        return f"{self.dbstruct} @ {self.image_root}"


#: Flat option names (the CLI's flags, and runs saved before the options were grouped) and the
#: group field each one sets.
FLAT_TRAIN_OPTIONS: dict[str, tuple[str, str]] = {
    "image_size": ("extract", "image_size"),
    "cache_batch_size": ("extract", "batch_size"),
    "num_workers": ("extract", "num_workers"),
    "device": ("extract", "device"),
    "neg_samples": ("mining", "neg_samples"),
    "neg_cache": ("mining", "neg_cache"),
    "neg_per_tuple": ("mining", "neg_per_tuple"),
    "cache_refresh_queries": ("mining", "cache_refresh_queries"),
    "loss": ("mining", "loss"),
    "margin": ("mining", "margin"),
    "augment_variants": ("augment", "variants"),
}
#: Options that may change when a run is resumed (they do not change the steps already taken);
#: everything else must stay as it was.
RESUMABLE_OVERRIDES = (
    "epochs",
    "device",
    "num_workers",
    "cache_batch_size",
    "amp",
    "amp_dtype",
    "whitening_dim",
    "keep_epoch_checkpoints",
)


@dataclass(init=False)
class TrainConfig:
    """Every knob of a training run; defaults are the paper's (``trainWeakly.m``) except the
    number of epochs and NetVLAD's k-means on the queries too (benchmarks/README.md, "Retraining").

    Build it with field names or with the flat names of :data:`FLAT_TRAIN_OPTIONS`
    (``TrainConfig(image_size=320)`` sets ``extract.image_size``), which is what the CLI's flags
    and runs saved before the grouping hold.
    """

    data: DataSpec = field(default_factory=DataSpec)
    val: DataSpec = field(default_factory=DataSpec)  # an explicit validation set (optional)
    split: SplitConfig | None = None  # None: the source's default (a folder 70/15/15, else whole)
    model: str = DEFAULT_MODEL
    backbone_weights: str | None = None  # None: the shipped / torchvision weights
    num_clusters: int | None = None  # None: the model's own (ModelConfig.num_clusters)
    epochs: int = QUICK_EPOCHS
    batch_size: int = 4  # training tuples per SGD step
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    train_layers: str = "last_block"  # "last_block", "pooling" (NetVLAD only) or "all"
    train_assignment_bias: bool = False  # Relja's layerVLAD keeps b_k = 0
    amp: bool = True  # mixed precision on CUDA
    amp_dtype: str = "auto"  # "auto" (bfloat16 where supported, else float16 + loss scaling)
    seed: int = 0
    whitening_dim: int | None = 4096  # None or 0: no PCA-whitening
    # NetVLAD's k-means on the queries too (every condition the photos show: night queries of a
    # day library), not on the database alone; benchmarks/README.md, "Retraining".
    init_from_queries: bool = True
    keep_epoch_checkpoints: bool = False
    mining: MiningConfig = field(default_factory=MiningConfig)
    extract: ExtractConfig = field(default_factory=_training_extract)  # the descriptor cache
    init: InitConfig = field(default_factory=InitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __init__(self, **options: Any) -> None:
        for f in dataclasses.fields(self):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            setattr(self, f.name, default)
        self.set_options(**options)

    def set_options(self, **options: Any) -> None:
        """Set fields and flat options; whole groups first, so a flat name refines its group."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names - set(FLAT_TRAIN_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        for key in sorted(options, key=lambda k: k in FLAT_TRAIN_OPTIONS):
            if key in names:
                setattr(self, key, options[key])
            else:
                group, name = FLAT_TRAIN_OPTIONS[key]  # a copy: the caller's group stays as is
                setattr(
                    self, group, dataclasses.replace(getattr(self, group), **{name: options[key]})
                )

    def option(self, key: str) -> Any:
        """A field's or a flat option's value."""
        if key in FLAT_TRAIN_OPTIONS:
            group, name = FLAT_TRAIN_OPTIONS[key]
            return getattr(getattr(self, group), name)
        return getattr(self, key)

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first setting out of range (by its CLI flag, which the
        GUI's "More options" also takes); returns self."""
        e = self.extract
        for name, value in (
            ("epochs (--epochs)", self.epochs),
            ("batch size (--batch-size)", self.batch_size),
            ("learning rate (--lr)", self.lr),
            ("epochs between lr decays (--lr-step)", self.lr_step_epochs),
            ("image size (--image-size)", e.image_size),
            ("cache batch size (--cache-batch-size)", e.batch_size),
        ):
            _positive(name, value)
        self.mining.validate()
        _check_choice("layers to train (--train-layers)", self.train_layers, TRAIN_LAYERS)
        _check_choice("mixed-precision type (--amp-dtype)", self.amp_dtype, AMP_DTYPES)
        if not isinstance(self.momentum, int | float) or not (
            0 < self.momentum < 1 or self.momentum == 0
        ):
            raise ConfigError(f"momentum (--momentum) must be in [0, 1), got {self.momentum!r}")
        _at_least_0("weight decay (--weight-decay)", self.weight_decay)
        if not isinstance(self.lr_gamma, int | float) or not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr factor (--lr-gamma) must be in (0, 1], got {self.lr_gamma!r}")
        _at_least_0("decoding workers (--workers)", e.num_workers)
        if self.whitening_dim is not None:
            _at_least_0("whitening size (--whitening-dim)", self.whitening_dim)
        if self.num_clusters is not None:
            _positive("NetVLAD clusters (--num-clusters)", self.num_clusters)
        self.init.validate()
        e.validate()
        self.data.kind  # noqa: B018 - raises when no (or several) sources are named
        return self

    def check(self) -> TrainConfig:
        """The former name of :meth:`validate` (training's entry still calls it)."""
        return self.validate()

    def extract_config(self) -> ExtractConfig:
        """How the descriptor cache is computed (always NCHW, see ``_training_extract``)."""
        return _training_extract(**dataclasses.asdict(self.extract))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config saved by ``to_dict``, grouped or flat (runs saved before the grouping)."""
        d = dict(d)
        groups = {
            "data": DataSpec,
            "val": DataSpec,
            "init": InitConfig,
            "mining": MiningConfig,
            "extract": _training_extract,
            "augment": AugmentConfig,
        }
        try:
            for name, make in groups.items():
                if name in d:
                    d[name] = make(**(d[name] or {}))
            if d.get("split") is not None:
                d["split"] = SplitConfig(**d["split"])
        except TypeError as exc:
            raise ConfigError(f"unreadable training options: {exc}") from None
        return cls(**d)
