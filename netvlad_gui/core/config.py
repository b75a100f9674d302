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
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .training.datasets import DataSpec, SplitConfig

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
            _check_int("NetVLAD clusters (--num-clusters)", self.num_clusters, 1, 65_536)
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
    """Geometric verification of the top matches (core/query/verify.py) and the verdict it supports.

    Defaults measured in benchmarks/verify.py (benchmarks/README.md, "Geometric verification").
    """

    enabled: bool = True
    top_k: int = 10  # candidates verified (the global search's best K)
    features: str = "sift"  # "sift" (OpenCV) or "patch" (the model's own feature map)
    geometry: str = "homography"  # "homography" or "fundamental", fitted with USAC MAGSAC
    sift_size: int = 320  # SIFT runs on this longer side (it doubles the image internally)
    max_features: int = 1000  # SIFT keypoints kept per image
    # Grey levels before SIFT: "stretch" maps the 1st..99th percentile to 0..255, so that SIFT's
    # absolute contrast threshold keeps a dark photo's keypoints (dusk: 5/5 lund queries
    # located instead of 1/5); "none" leaves them. benchmarks/verify_appearance.py.
    sift_contrast: str = "stretch"
    ratio: float = 0.85  # Lowe's ratio test (SIFT); patches: best / second-best similarity
    ransac_px: float = 3.0  # inlier threshold, in pixels of a 640 px image
    # Counts for the default (SIFT): unrelated photos reach 4-6, true lund matches 30-66; 12
    # instead of 15 let corridor's near-duplicate frames reorder (R@1 0.955 -> 0.946).
    min_inliers: int = 15  # fewer: no geometric evidence for the place
    located_inliers: int = 24  # at least: the place is verified
    # Candidates within this fraction of the best inlier count rank by global score (1: by
    # inliers alone); see verify.rerank.
    keep_ratio: float = 0.5
    cache_size: int = 256  # references' local features kept in memory (LRU)

    def validate(self) -> VerifyConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        if self.features not in ("sift", "patch"):
            raise ConfigError(f"verify features must be sift or patch, not {self.features!r}")
        if self.sift_contrast not in ("stretch", "none"):
            raise ConfigError(
                f"verify sift_contrast must be stretch or none, not {self.sift_contrast!r}"
            )
        if self.geometry not in ("homography", "fundamental"):
            raise ConfigError(
                f"verify geometry must be homography or fundamental, not {self.geometry!r}"
            )
        _check_int("verify top", self.top_k, *VERIFY_TOP_RANGE)
        _check_int("minimum inliers", self.min_inliers, 0, 100_000)
        _check_int("located inliers", self.located_inliers, self.min_inliers, 100_000)
        _check_float("ratio test", self.ratio, 0.0, 1.0, open_lo=True)
        return self


@dataclass
class LocateConfig:
    """How the top matches become one predicted location."""

    top_n: int = 5
    agree_radius_m: float = NEGATIVE_RADIUS_M  # matches this close count as one place
    min_score: float = 0.0
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def validate(self) -> LocateConfig:
        """Raise ConfigError naming the first setting out of range; returns self."""
        _check_int("top", self.top_n, *TOP_N_RANGE, " (matches per photo)")
        _check_float("agreement radius (m)", self.agree_radius_m, 0.0, 20_000_000.0, open_lo=True)
        # Scores are cosine similarities: a floor outside [-1, 1] keeps all or nothing.
        _check_float("minimum score", self.min_score, -1.0, 1.0)
        self.verify.validate()
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
SPLIT_METHODS = ("track", "grid")  # datasets.SplitConfig.method
#: The Retrain panel's suggestion: a short run on a personal library (the paper trains 30).
QUICK_EPOCHS = 5


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


def _training_extract(**options: Any) -> ExtractConfig:
    # NCHW: channels_last rounds a little differently per batch size, and the cache of a DDP rank
    # (its share of the batches) must equal a single process's.
    return ExtractConfig(**{**options, "channels_last": False})


def _data_spec() -> DataSpec:
    from .training.datasets import (
        DataSpec,  # lazy: datasets pulls numpy, scipy and the image decoder
    )

    return DataSpec()


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
    """Every knob of a training run; defaults are the paper's (``trainWeakly.m``).

    Build it with field names or with the flat names of :data:`FLAT_TRAIN_OPTIONS`
    (``TrainConfig(image_size=320)`` sets ``extract.image_size``), which is what the CLI's flags
    and runs saved before the grouping hold.
    """

    data: DataSpec = field(default_factory=_data_spec)
    val: DataSpec = field(default_factory=_data_spec)  # an explicit validation set (optional)
    split: SplitConfig | None = None  # None: the source's default (a folder 70/15/15, else whole)
    model: str = DEFAULT_MODEL
    backbone_weights: str | None = None  # None: the shipped / torchvision weights
    num_clusters: int | None = None  # None: the model's own (ModelConfig.num_clusters)
    epochs: int = 30
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
    keep_epoch_checkpoints: bool = False
    mining: MiningConfig = field(default_factory=MiningConfig)
    extract: ExtractConfig = field(default_factory=_training_extract)  # the descriptor cache
    init: InitConfig = field(default_factory=InitConfig)

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
        from .training.datasets import DataSpec, SplitConfig

        d = dict(d)
        groups = {
            "data": DataSpec,
            "val": DataSpec,
            "init": InitConfig,
            "mining": MiningConfig,
            "extract": _training_extract,
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
