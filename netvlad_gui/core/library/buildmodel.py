"""The build's model: the index's own, or a new one resolved and initialised from the library.

Also what can be known about it before torch loads: whether the network has anything to do at
all (model.pt's file stamp), and which photos it will want first (decoded while torch loads).
Descriptors of two models are never mixed: the catalogue records a hash of the weights that
made its descriptors, and every photo is extracted again when they change.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DEFAULT_MODEL, InitConfig, ModelConfig
from ..errors import LibraryIndexError
from ..model.sample import sample_positions
from .catalog import PENDING
from .index import (
    ENGINE_KEY,
    MODEL_FILE,
    MODEL_FILE_KEY,
    MODEL_SHA_KEY,
    LibraryIndex,
    file_sha256,
    model_state_sha,
)
from .searchindex import META_KEY as SEARCH_META_KEY
from .searchindex import remove_saved

log = logging.getLogger(__name__)

KEPT_MAPS_DIR = ".init-maps"  # the sampled photos' backbone maps, while a new library is built


@dataclass
class ModelJob:
    """What preparing a build's model needs: the builder fills it once, every way of preparing
    (ONNX Runtime, torch) reads it.

    With ``kept`` (a dict), a new model is initialised in one pass: the sampled photos' backbone
    maps are kept, and ``kept`` gets ``{"maps": FeatureMaps, "paths": [catalogue path, ...]}``
    so that the extraction pools them instead of running the backbone over them again (None:
    Ray's builds). ``decoder`` (core/photos/decoding.py) may have started on the sample while
    torch loaded.
    """

    index: LibraryIndex
    model_spec: object
    backbone_weights: object
    init_cfg: InitConfig
    extract_cfg: object
    library: Path
    progress: object = None
    cancel: object = None
    keep_index_model: bool = False
    warnings: list[str] = field(default_factory=list)
    kept: dict | None = None
    decoder: object = None

    @property
    def spec(self) -> str:
        return str(self.model_spec) if self.model_spec is not None else DEFAULT_MODEL

    def catalogue_paths(self) -> list[str]:
        """Every photo of the library (catalogue paths), to initialise a new NetVLAD layer."""
        rels = [row.path for row in self.index.catalog.rows()]
        if not rels:
            raise LibraryIndexError(
                f"no images in {self.library} to initialise the NetVLAD layer from"
            )
        return rels

    def init_progress(self):
        progress = self.progress
        return (lambda n, total: progress("init", n, total)) if progress else None

    def model_ready(self) -> None:
        if self.progress:
            self.progress("model", 1, 1)


def prepare_engine_model(job: ModelJob):
    """The build's model, run by the engine this job gets (``job_engine``), and the
    ExtractConfig it runs with; the engine is recorded in the index.

    ONNX Runtime: ``prepare_ort_model`` (no torch unless a graph must be exported). A model only
    torch can make (random weights, a checkpoint in torch's old format), or one that cannot be
    exported under ``--runtime auto``, runs in torch in fp32 (said in ``warnings`` when the
    export failed); with ``--runtime onnxruntime`` ONNX Runtime then runs its backbone inside
    torch. Ray's builds (``kept`` None) run torch.
    """
    import dataclasses

    from ..model.ortmodel import OnnxExportError, OnnxRuntimeMissing
    from ..model.runtime import ONNXRUNTIME, TORCH, Engine

    index, extract_cfg = job.index, job.extract_cfg
    engine = job_engine(index, job.model_spec, extract_cfg, job.warnings, ray=job.kept is None)
    log.info("%s runs the network in %s: %s", engine.runtime, engine.precision, engine.why)
    model = None
    if engine.runtime == ONNXRUNTIME:
        try:
            model = prepare_ort_model(job)
        except (OnnxRuntimeMissing, OnnxExportError) as exc:
            if extract_cfg.runtime == ONNXRUNTIME:
                raise
            job.warnings.append(f"{exc}: torch runs the model instead")
        if model is None and extract_cfg.runtime != ONNXRUNTIME:
            engine = Engine(TORCH, "fp32", f"{engine.why}; this model runs in torch")
    if model is None:
        from ..model.engine import load_engine

        load_engine()  # torch and torchvision, the collector paused: 0.6-0.9 s less
        from ..model.features import resolve_device
        from ..model.inference import torch_config

        device = resolve_device(extract_cfg.device)
        if engine.runtime == TORCH:
            extract_cfg = torch_config(extract_cfg, engine)
        else:  # --runtime onnxruntime on a model torch makes: ONNX Runtime inside torch
            extract_cfg = dataclasses.replace(extract_cfg, precision="fp32")
        model = prepare_model(job, device, extract_cfg)
    index.record_engine(engine)
    return model, extract_cfg


def prepare_model(job: ModelJob, device, extract_cfg):
    """The index's own model if it has one; else a new one, initialised from this library
    (in one pass with ``job.kept``), run by torch on ``device`` with ``extract_cfg``.

    Descriptors of two models are never mixed: the catalogue records a hash of the weights
    that made its descriptors, and when model.pt is missing (a backup or sync tool lost it) or
    holds other weights, every photo is extracted again with the model now used, and the build
    says so in ``warnings``.
    """
    from ..model.checkpoint import load_checkpoint
    from ..model.initialise import initialise_from_images, initialise_one_pass
    from ..model.resolve import resolve_model

    index, library = job.index, job.library
    path = index.dir / MODEL_FILE
    if path.exists():
        model = load_checkpoint(path)
        job.model_ready()
        _check_spec(index, job.model_spec, job.keep_index_model)
        _check_made_by(index, job.model_spec, model_state_sha(model), job.warnings, model)
        return model.to(device)
    model = resolve_model(job.spec, job.backbone_weights).to(device)
    job.model_ready()
    if not model.is_initialised:
        rels = job.catalogue_paths()
        paths = [library / rel for rel in rels]
        meta = {"library": str(library)}
        if job.kept is not None:
            job.kept["maps"] = initialise_one_pass(
                model,
                paths,
                job.init_cfg,
                extract_cfg,
                index.dir / KEPT_MAPS_DIR,
                progress=job.init_progress(),
                cancel=job.cancel,
                meta=meta,
                decoder=job.decoder,
            )
            job.kept["paths"] = rels
        else:
            initialise_from_images(
                model,
                paths,
                job.init_cfg,
                extract_cfg,
                progress=job.init_progress(),
                cancel=job.cancel,
                meta=meta,
                decoder=job.decoder,
            )
    model = model.cpu()
    _keep_new_model(job, model, model_state_sha(model))
    return model.to(device)


def _keep_new_model(job: ModelJob, saved, sha: str) -> None:
    """Save a new model (``saved``: a torch model or an ONNX Runtime model's ModelFile, whose
    weights hash to ``sha``) as the index's model.pt and record it; descriptors another model
    made are dropped first (all photos again, said in ``job.warnings``)."""
    index = job.index
    path = index.dir / MODEL_FILE
    made_by = index.catalog.get_meta(MODEL_SHA_KEY)
    has_descriptors = int(index.catalog.get_meta("store_rows", "0") or 0) > 0
    if has_descriptors and (made_by is None or made_by != sha):
        restart_all(index, job.warnings, f"{path} is missing and a new model was made")
    save_model(saved, path)
    index.record_model(None, job.spec, state_sha=sha)


def _check_spec(index: LibraryIndex, model_spec, keep_index_model: bool) -> None:
    """An index keeps its model: asking for another one is an error (unless ``keep_index_model``)."""
    recorded = index.model_name
    if keep_index_model and model_spec is not None and str(model_spec) != recorded:
        log.info("%s keeps its model %s (asked for %s)", index.dir, recorded, model_spec)
    elif model_spec is not None and recorded and str(model_spec) != recorded:
        raise LibraryIndexError(
            f"this index was built with model {recorded!r}, not {str(model_spec)!r}; "
            "use another --index folder (or delete this one) to index with a new model"
        )


def _check_made_by(index: LibraryIndex, model_spec, sha: str, warnings, model=None) -> None:
    """model.pt whose weights did not make the descriptors: all photos again (and recorded)."""
    made_by = index.catalog.get_meta(MODEL_SHA_KEY)
    if made_by is None or made_by != sha:
        if made_by is not None:
            restart_all(
                index,
                warnings,
                f"{index.model_path} is not the model that made this index's descriptors",
            )
        name = index.model_name or str(model_spec or MODEL_FILE)
        index.record_model(model, name, state_sha=sha)


def job_engine(index: LibraryIndex, model_spec, extract_cfg, warnings: list[str], *, ray: bool):
    """The engine (model.runtime.Engine) that describes this build's pending photos.

    Chosen before torch loads, from the measured rules (``runtime.choose_engine``): the
    descriptors the index holds bind the precision; a precision forced against them extracts
    every photo again with it (said in ``warnings``). Ray's workers run torch.
    """
    from ..model.runtime import TORCH, Engine, asked_precision, choose_engine

    made = index.descriptor_engine()
    asked = asked_precision(extract_cfg)
    if made is not None and asked is not None and asked != made["precision"]:
        restart_all(
            index,
            warnings,
            f"this index's descriptors were made in {made['precision']}, --precision {asked} "
            "asks for another",
            "two precisions",
        )
        made = None
    made_with = made["precision"] if made else None
    pending = len(index.catalog.rows(PENDING))
    engine = choose_engine(
        extract_cfg, backbone=backbone_of(index, model_spec), photos=pending, made_with=made_with
    )
    if ray:  # the same precision as a build here would use, so that the two never differ
        return Engine(TORCH, engine.precision, f"{engine.why}; Ray's workers run torch")
    return engine


def backbone_of(index: LibraryIndex, model_spec) -> str:
    """The backbone's name (which engine is faster depends on it), known without torch: from
    model.pt or a checkpoint named as the spec (read without torch), else from the spec's name."""
    from ..model.ckptfile import CheckpointFormatError
    from ..model.ortmodel import ModelFile
    from ..model.resolve import looks_like_file

    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    for path in (
        index.dir / MODEL_FILE,
        Path(spec).expanduser() if looks_like_file(spec) else None,
    ):
        if path is not None and path.is_file():
            try:
                return ModelFile.read(path).backbone
            except (OSError, CheckpointFormatError):
                return ""
    return spec.partition("-")[0]


def prepare_ort_model(job: ModelJob):
    """``prepare_model`` without torch: the index's model.pt or a new model, run by ONNX Runtime
    (core/model/graphs.py: torch loads only to export a missing graph, under the "prepare"
    stage); a new model is initialised from the library in one pass and saved as model.pt.

    None when this model cannot run so (a checkpoint in torch's old format, random weights):
    the caller prepares it with torch.
    """
    from ..model.ckptfile import CheckpointFormatError
    from ..model.graphs import new_model, ort_model
    from ..model.onepass import initialise_one_pass
    from ..model.ortmodel import ModelFile

    index, library = job.index, job.library
    path = index.dir / MODEL_FILE
    if path.exists():
        try:
            file = ModelFile.read(path)
        except CheckpointFormatError:
            return None
        _check_spec(index, job.model_spec, job.keep_index_model)
        model = ort_model(file, progress=job.progress)
        job.model_ready()
        _check_made_by(index, job.model_spec, model.state_sha(), job.warnings)
        return model
    model = new_model(job.spec, job.backbone_weights, progress=job.progress)
    if model is None:
        return None
    job.model_ready()
    if not model.is_initialised:
        rels = job.catalogue_paths()
        job.kept["maps"] = initialise_one_pass(
            model,
            [library / rel for rel in rels],
            job.init_cfg,
            job.extract_cfg,
            index.dir / KEPT_MAPS_DIR,
            progress=job.init_progress(),
            cancel=job.cancel,
            meta={"library": str(library)},
            decoder=job.decoder,
        )
        job.kept["paths"] = rels
    _keep_new_model(job, model.file, model.state_sha())
    return model


def nothing_to_extract(
    index: LibraryIndex, model_spec, keep_index_model: bool, extract_cfg=None
) -> bool:
    """Whether this build has nothing for the network to do, decided without torch.

    True when no photo is pending and model.pt is the file whose weights made the descriptors:
    its size and mtime as recorded (else its sha256), with the weights' hash recorded too. The
    model-name check of ``prepare_model`` is made here as well, so that asking for another model
    fails the same way whether or not there is work; and a precision forced against the
    descriptors' (``job_engine`` extracts them all again) is work too.
    """
    from ..model.runtime import asked_precision

    asked = asked_precision(extract_cfg) if extract_cfg is not None else None
    made = index.descriptor_engine() if asked else None
    if made is not None and made["precision"] != asked:
        return False
    path = index.dir / MODEL_FILE
    raw = index.catalog.get_meta(MODEL_FILE_KEY)
    if not raw or index.catalog.get_meta(MODEL_SHA_KEY) is None or index.dim is None:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    recorded = index.model_name
    asked_other = model_spec is not None and recorded and str(model_spec) != recorded
    if asked_other and not keep_index_model:
        return False  # prepare_model says why, as before
    if index.catalog.rows(PENDING):
        return False
    if index.image_size is None:  # an older index: its size is settled by extracting a few
        return False
    saved = json.loads(raw)
    if st.st_size != saved.get("size"):
        return False
    same_stamp = st.st_mtime_ns == saved.get("mtime_ns")
    return same_stamp or file_sha256(path) == saved.get("sha256")


def photos_needed_first(
    index: LibraryIndex, library: Path, model_spec, init_cfg: InitConfig, count: int, local: bool
) -> list[Path]:
    """The (up to ``count``) photos this process's network will want first, known before torch
    loads: a new NetVLAD model's initialisation sample (as ``prepare_model`` draws it), else the
    pending photos (none when ``local`` is false: Ray's workers decode those). Whether the model
    needs initialising is guessed from the spec here; a wrong guess only costs decoding on the
    core the import leaves idle."""
    from ..model.resolve import looks_like_file
    from ..model.zoo import is_downloadable

    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    fitted = (index.dir / MODEL_FILE).exists() or looks_like_file(spec) or is_downloadable(spec)
    if not fitted and ModelConfig.from_name(spec).pooling == "netvlad":
        rels = [row.path for row in index.catalog.rows()]
        rels = [rels[i] for i in sample_positions(len(rels), init_cfg)[:count]]
    elif local:
        rels = [row.path for row in index.catalog.rows(PENDING, limit=count)]
    else:
        rels = []
    return [library / rel for rel in rels]


def restart_all(
    index: LibraryIndex, warnings: list[str], why: str, mixed: str = "two models"
) -> None:
    """Drop every descriptor of the old model (or ``mixed``: whatever made them differ): all
    photos pending, store and search emptied."""
    n = index.catalog.restart_all({"store_rows": "0", SEARCH_META_KEY: "", ENGINE_KEY: ""})
    remove_saved(index.dir)
    index.invalidate()
    msg = f"{why}: extracting all {n} photos again, so that no answer mixes {mixed}"
    log.warning(msg)
    warnings.append(msg)


def save_model(model, path: Path) -> None:
    """save_checkpoint (or ``ModelFile.write``, torch-free), with a full disk said as such
    (torch says "enforce fail at …")."""
    try:
        if hasattr(model, "write"):  # a ModelFile
            model.write(path)
        else:
            from ..model.checkpoint import save_checkpoint

            save_checkpoint(model, path)
    except (OSError, RuntimeError) as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC
        if not full:
            try:
                full = shutil.disk_usage(path.parent).free < _state_bytes(model)
            except OSError:
                pass
        why = "no space left on device" if full else str(exc).strip().splitlines()[0]
        raise LibraryIndexError(
            f"cannot save the model in {path.parent}: {why}; free some space and run again"
            if full
            else f"cannot save the model in {path.parent}: {why}"
        ) from exc


def _state_bytes(model) -> int:
    if hasattr(model, "state") and isinstance(model.state, dict):  # a ModelFile
        return sum(int(a.nbytes) for a in model.state.values())
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
