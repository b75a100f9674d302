"""Every tunable default of the engine, in one place.

The CLI, the GUI and the training code build these dataclasses and pass them down; no module
keeps its own copy of a default. Option groups nest (``TrainConfig().extract.image_size``,
``TrainConfig().mining.margin``) instead of repeating another group's defaults. This module
imports nothing heavy, so the fronts can read defaults without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
TOP_N_RANGE = (1, TOP_N_MAX)
#: Matches verified per photo (``--verify-top``); each one adds to the time a photo takes.
VERIFY_TOP_RANGE = (1, 1000)
#: A video is sampled every this many seconds (SequenceConfig.every_s): from 100 frames a second
#: (finer than any camera's spacing worth locating) to one a day.
EVERY_S_RANGE = (0.01, 86_400.0)
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
    # What runs the network: "auto" picks per job and machine by measured rules
    # (core/model/runtime.py choose_engine: ONNX Runtime in fp32 on CPUs, without importing
    # torch; torch on GPUs and, with native bf16, for long jobs on heavy backbones); "torch"
    # (the reference) or "onnxruntime" (CPU and fp32 only, 1.3-1.8x torch fp32, descriptors at
    # cosine 1.0000) force one.
    runtime: str = "auto"
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
            raise ConfigError(
                f"runtime must be torch or onnxruntime (or auto), not {self.runtime!r}"
            )
        return self


PRECISIONS = ("auto", "fp32", "bf16")  # ExtractConfig.precision
RUNTIMES = ("auto", "torch", "onnxruntime")  # ExtractConfig.runtime
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
    # A dark or colourless photo (a night shot, VerdictConfig.night_*) with at least this many
    # inliers is uncertain, not "not in this library", however unlike the library it looks
    # (verdict.decide); None: off. Night photos of places in the library and night photos of
    # another city bring the same evidence (day_left night photos whose place is match #1:
    # 12-19 patch inliers; gardens night photos against the Lund library: up to 19), so a rule
    # that never calls the former "not here" says "uncertain" for a few of the latter: 16 calls
    # 3 of 85 of the former "not in this library" (9 without) and 1 of 50 of the latter
    # uncertain, never located (benchmarks/night_verdicts.py, README "Night and day"). Saying
    # "cannot tell" there is honest; a false "not here" is what the verdict must not say.
    night_inliers: int | None = 16
    # Candidates within this fraction of the best inlier count rank by global score (1: by
    # inliers alone); see verify.rerank.
    keep_ratio: float = 0.5
    cache_size: int = 256  # references' local features kept in memory (LRU)
    # ... and on disk beside the index (patches.sqlite, core/library/patchstore.py), for the next
    # process: a cold `netvlad locate` then skips the references' forward passes. Megabytes of
    # features kept (least recently used evicted; a 640x480 reference takes 0.24 MB); 0: off.
    disk_cache_mb: int = 512

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
        if self.night_inliers is not None:
            _check_int("night inliers", self.night_inliers, 0, 100_000)
        _check_float("ratio test", self.ratio, 0.0, 1.0, open_lo=True)
        _check_float("keep ratio", self.keep_ratio, 0.0, 1.0)
        _check_float("RANSAC threshold (px)", self.ransac_px, 0.0, 1000.0, open_lo=True)
        _check_int("SIFT size", self.sift_size, 16, 8192, " (pixels, longer side)")
        _check_int("SIFT keypoints", self.max_features, 1, 1_000_000)
        _check_int("verify cache size", self.cache_size, 0, 1_000_000)
        _check_int("verify disk cache (MB)", self.disk_cache_mb, 0, 1_000_000)
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
    # The photo's own light (photos/light.py, on 0..255): a photo darker than night_brightness
    # (mean luma) or greyer than night_colour (mean channel spread) is a night shot; with
    # VerifyConfig.night_inliers set (16 by default) such a photo with a few points is
    # uncertain, not "not in this library" (gardens_point night photos: grey, colour 0; daylight
    # photos here 7-52; synthetic dusk brightness 21-37, daylight 69-160). Flatter than
    # night_detail (luma std: blank images 0-1, a day photo darkened 4x 11, photos 29-108)
    # there is nothing to see and no such excuse.
    night_brightness: float = 50.0
    night_colour: float = 3.0
    night_detail: float = 5.0

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
        _check_float("night brightness", self.night_brightness, 0.0, 255.0)
        _check_float("night colour", self.night_colour, 0.0, 255.0)
        _check_float("night detail", self.night_detail, 0.0, 255.0)
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
    # them) are the places it may be; ``window`` photos are decided together, and a photo's
    # answer is final once the ``window - 1`` photos after it are in (or its trip ends).
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
    # Log-likelihood a candidate gains per patch inlier above its photo's floor (the median
    # over the photo's checked candidates; query/sequence.inlier_gain), counting at most
    # ``inlier_cap`` inliers: a verified place pulls the track, no photo outvotes the trip.
    # Measured with the session on gardens_point night photos (benchmarks/sequence_session.py,
    # README "Sequences"): 0.35-0.5 with caps of 15-30 give day_left's groups of 10
    # 0.96-0.97 and day_right 0.99-1.00 (a fixed 20-to-40-inlier scale: 0.89); 0.65 and more,
    # or no cap, cost day_left 2-5 points.
    inlier_weight: float = 0.4
    inlier_cap: int = 20
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
        _check_float("sequence inlier weight", self.inlier_weight, 0.0, 1000.0)
        _check_int("sequence inlier cap", self.inlier_cap, 0, 100_000)
        if self.restart >= 1.0:
            raise ConfigError(f"sequence restart must be below 1, not {self.restart!r}")
        _check_int("sequence support", self.min_support, 1, 1000)
        _check_int("sequence support top", self.support_top, 1, TOP_N_MAX)
        _check_float("video interval (s)", self.every_s, *EVERY_S_RANGE)
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
