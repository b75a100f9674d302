"""Every default of a training run, in one place (config.py's training half).

Plain dataclasses like config.py's, and on the same floor of the house: the CLI's ``train`` and
``eval`` flags, the Retrain panel's form and the training code read them; nothing here imports
torch or training code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_MODEL,
    NEGATIVE_RADIUS_M,
    ExtractConfig,
    InitConfig,
    _check_choice,
)
from .errors import ConfigError, DatasetError

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

    def validate(self) -> AugmentConfig:
        """Raise ConfigError naming the first setting out of range; self."""
        _at_least_0("synthetic nights per photo (--augment)", self.variants)
        for name, (lo, hi) in (("gamma", self.gamma), ("gain", self.gain), ("noise", self.noise)):
            if not (isinstance(lo, int | float) and isinstance(hi, int | float) and 0 <= lo <= hi):
                raise ConfigError(f"augment {name} must be a range 0 <= low <= high, got {lo, hi}")
        for name, p in (("colour", self.colour), ("blur", self.blur), ("grey", self.grey)):
            if not (isinstance(p, int | float) and 0 <= p <= 1):
                raise ConfigError(f"augment {name} must be in [0, 1], got {p!r}")
        return self


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
        self.validate()  # built straight from flags and saved runs: refuse a bad one at once

    def validate(self) -> SplitConfig:
        """Raise DatasetError (a ConfigError's sibling the CLI shows alike) naming what is wrong."""
        if self.method not in SPLIT_METHODS:
            raise DatasetError(f"split method must be one of {SPLIT_METHODS}, got {self.method!r}")
        if len(self.fractions) != 3 or any(f < 0 or not math.isfinite(f) for f in self.fractions):
            raise DatasetError(f"split fractions must be 3 numbers >= 0, got {self.fractions}")
        if sum(self.fractions) <= 0:
            raise DatasetError("split fractions must not all be 0")
        if self.query_every < 2:
            raise DatasetError(f"query_every must be >= 2, got {self.query_every}")
        return self


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

    def validate(self) -> DataSpec:
        """An empty spec is valid (no validation set named); a given one names exactly one
        source, else DatasetError; self."""
        if self.given:
            self.kind  # noqa: B018 - raises when several sources are named
        return self

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
        self.augment.validate()
        self.val.validate()
        e.validate()
        self.data.kind  # noqa: B018 - raises when no (or several) sources are named
        return self

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
