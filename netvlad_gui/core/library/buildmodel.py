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
from pathlib import Path

from ..config import DEFAULT_MODEL, InitConfig, ModelConfig
from ..errors import LibraryIndexError
from ..model.sample import sample_positions
from .catalog import PENDING
from .index import (
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


def prepare_model(
    index: LibraryIndex,
    model_spec,
    backbone_weights,
    device,
    init_cfg,
    extract_cfg,
    library: Path,
    progress,
    cancel,
    keep_index_model: bool = False,
    warnings: list[str] | None = None,
    kept: dict | None = None,
    decoder=None,
):
    """The index's own model if it has one; else a new one, initialised from this library.

    With ``kept`` (a dict), a new model is initialised in one pass: the sampled photos' backbone
    maps are kept, and ``kept`` gets ``{"maps": FeatureMaps, "paths": [catalogue path, ...]}``
    so that the extraction pools them instead of running the backbone over them again.
    ``decoder`` (core/photos/decoding.py) may have started on the sample while torch loaded.

    Descriptors of two models are never mixed: the catalogue records a hash of the weights
    that made its descriptors, and when model.pt is missing (a backup or sync tool lost it) or
    holds other weights, every photo is extracted again with the model now used, and the build
    says so in ``warnings``.
    """
    from ..model.checkpoint import load_checkpoint
    from ..model.initialise import initialise_from_images, initialise_one_pass
    from ..model.resolve import resolve_model

    warnings = warnings if warnings is not None else []
    path = index.dir / MODEL_FILE
    if path.exists():
        model = load_checkpoint(path)
        if progress:
            progress("model", 1, 1)
        recorded = index.model_name
        if keep_index_model and model_spec is not None and str(model_spec) != recorded:
            log.info("%s keeps its model %s (asked for %s)", index.dir, recorded, model_spec)
        elif model_spec is not None and recorded and str(model_spec) != recorded:
            raise LibraryIndexError(
                f"this index was built with model {recorded!r}, not {str(model_spec)!r}; "
                "use another --index folder (or delete this one) to index with a new model"
            )
        made_by = index.catalog.get_meta(MODEL_SHA_KEY)
        if made_by is None or made_by != model_state_sha(model):
            if made_by is not None:
                restart_all(
                    index,
                    warnings,
                    f"{path} is not the model that made this index's descriptors",
                )
            index.record_model(model, recorded or str(model_spec or MODEL_FILE))
        return model.to(device)
    spec = str(model_spec) if model_spec is not None else DEFAULT_MODEL
    model = resolve_model(spec, backbone_weights).to(device)
    if progress:
        progress("model", 1, 1)
    if not model.is_initialised:
        rels = [row.path for row in index.catalog.rows()]
        paths = [library / rel for rel in rels]
        if not paths:
            raise LibraryIndexError(f"no images in {library} to initialise the NetVLAD layer from")
        init_progress = (lambda n, total: progress("init", n, total)) if progress else None
        if kept is not None:
            kept["maps"] = initialise_one_pass(
                model,
                paths,
                init_cfg,
                extract_cfg,
                index.dir / KEPT_MAPS_DIR,
                progress=init_progress,
                cancel=cancel,
                meta={"library": str(library)},
                decoder=decoder,
            )
            kept["paths"] = rels
        else:
            initialise_from_images(
                model,
                paths,
                init_cfg,
                extract_cfg,
                progress=init_progress,
                cancel=cancel,
                meta={"library": str(library)},
                decoder=decoder,
            )
    model = model.cpu()
    made_by = index.catalog.get_meta(MODEL_SHA_KEY)
    has_descriptors = int(index.catalog.get_meta("store_rows", "0") or 0) > 0
    if has_descriptors and (made_by is None or made_by != model_state_sha(model)):
        restart_all(index, warnings, f"{path} is missing and a new model was made")
    save_model(model, path)
    index.record_model(model, spec)
    return model.to(device)


def nothing_to_extract(index: LibraryIndex, model_spec, keep_index_model: bool) -> bool:
    """Whether this build has nothing for the network to do, decided without torch.

    True when no photo is pending and model.pt is the file whose weights made the descriptors:
    its size and mtime as recorded (else its sha256), with the weights' hash recorded too. The
    model-name check of ``prepare_model`` is made here as well, so that asking for another model
    fails the same way whether or not there is work.
    """
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
    if index.image_size is None:  # an index older than that record: settled once, with torch
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
    n = index.catalog.restart_all({"store_rows": "0", SEARCH_META_KEY: ""})
    remove_saved(index.dir)
    index.invalidate()
    msg = f"{why}: extracting all {n} photos again, so that no answer mixes {mixed}"
    log.warning(msg)
    warnings.append(msg)


def save_model(model, path: Path) -> None:
    """save_checkpoint, with a full disk said as such (torch says "enforce fail at …")."""
    from ..model.checkpoint import save_checkpoint

    try:
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
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
