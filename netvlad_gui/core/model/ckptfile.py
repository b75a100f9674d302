"""netvlad-gui checkpoints read and written without torch: numpy arrays in torch's zip format.

A checkpoint (core/model/checkpoint.py) is one ``torch.save``'d dict of plain types and tensors.
Its zip holds a pickle (``data.pkl``) in which each tensor is a call to
``torch._utils._rebuild_tensor_v2`` on a storage record (``data/N``, raw little-endian bytes,
64-byte aligned). Reading that pickle with only those names allowed (the same ones
``torch.load(weights_only=True)`` allows), and memory-mapping the records, gives the arrays with
no torch import: the torch-free inference path (core/model/ortmodel.py) finds a model's cached
graph and its NetVLAD head this way, and writes a new library's initialised model.pt.

Files written here load with ``torch.load(weights_only=True, mmap=True)`` like torch's own
(tests/test_ckptfile.py); a file torch wrote in its older, non-zip format is refused with
:class:`CheckpointFormatError`, and the caller loads it with torch instead.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import secrets
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NetvladError
from ..paths import atomic_open

#: numpy dtype <-> torch's typed storage name (what the pickle names) and dtype (as str() says).
_STORAGES = {
    np.dtype(np.float32): ("FloatStorage", "torch.float32"),
    np.dtype(np.float64): ("DoubleStorage", "torch.float64"),
    np.dtype(np.float16): ("HalfStorage", "torch.float16"),
    np.dtype(np.int64): ("LongStorage", "torch.int64"),
    np.dtype(np.int32): ("IntStorage", "torch.int32"),
    np.dtype(np.int16): ("ShortStorage", "torch.int16"),
    np.dtype(np.int8): ("CharStorage", "torch.int8"),
    np.dtype(np.uint8): ("ByteStorage", "torch.uint8"),
    np.dtype(np.bool_): ("BoolStorage", "torch.bool"),
}
_BY_STORAGE = {name: dtype for dtype, (name, _) in _STORAGES.items()}
ALIGN = 64  # torch aligns every record's data to this many bytes (mmap loading relies on it)


class CheckpointFormatError(NetvladError, ValueError):
    """A file this reader cannot take (not a zip checkpoint, or a type it does not know)."""


def _contiguous(value) -> np.ndarray:
    """``value`` as a C-contiguous array of the same shape (0-d stays 0-d)."""
    arr = np.asarray(value)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def torch_dtype_name(dtype: np.dtype) -> str:
    """What ``str(tensor.dtype)`` says for an array of ``dtype`` ("torch.float32")."""
    try:
        return _STORAGES[np.dtype(dtype)][1]
    except KeyError:
        raise CheckpointFormatError(f"no torch storage for numpy dtype {dtype}") from None


def state_sha(state: dict[str, np.ndarray]) -> str:
    """``index.model_state_sha`` of a model whose state dict is ``state``, without torch.

    The same bytes in the same order (names sorted; "name:(shape):torch.dtype;" then the values),
    so the hash recorded by a torch build and one computed here agree.
    """
    h = hashlib.sha256()
    for name, value in sorted(state.items()):
        arr = _contiguous(value)
        h.update(f"{name}:{tuple(arr.shape)}:{torch_dtype_name(arr.dtype)};".encode())
        h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


# -- reading ------------------------------------------------------------------------------------
class _Storage:
    """A persistent id's storage: its record's bytes seen as ``numel`` values of ``dtype``."""

    def __init__(self, dtype: np.dtype, numel: int, data: np.ndarray) -> None:
        self.array = data[: numel * dtype.itemsize].view(dtype)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    arr = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return arr[offset : offset + 1].reshape(())
    contiguous = stride == tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    if contiguous:
        return arr[offset : offset + int(np.prod(size))].reshape(size)
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(
        arr[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return view.copy(order="C")


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _BY_STORAGE[name]


class _Unpickler(pickle.Unpickler):
    """Only what a checkpoint of plain types and tensors needs (no code runs)."""

    def __init__(self, file, records: dict[str, np.ndarray]) -> None:
        super().__init__(file)
        self._records = records

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _BY_STORAGE:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise CheckpointFormatError(f"a checkpoint that names {module}.{name}: not read here")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unknown storage in the checkpoint: {pid!r}")
        try:
            data = self._records[str(key)]
        except KeyError:
            raise CheckpointFormatError(f"the checkpoint lacks its storage {key}") from None
        return _Storage(storage_type.dtype, int(numel), data)


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict with numpy arrays for tensors (memory-mapped, read-only).

    Raises CheckpointFormatError for a file this reader does not take (the caller falls back
    to torch, which says what is wrong with it) and OSError when it cannot be read at all.
    """
    path = Path(path)
    try:
        return _read(path)
    except CheckpointFormatError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, struct.error) as exc:
        raise CheckpointFormatError(f"{path}: unreadable checkpoint ({exc})") from None
    except (ValueError, TypeError, KeyError, IndexError, EOFError) as exc:  # damaged inside
        raise CheckpointFormatError(f"{path}: damaged checkpoint ({exc})") from None


def _read(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointFormatError(f"{path}: no data.pkl in the checkpoint")
        root = pkl[0][: -len("data.pkl")]
        order = zf.read(f"{root}byteorder") if f"{root}byteorder" in names else b"little"
        if order != b"little":
            raise CheckpointFormatError(f"{path}: a big-endian checkpoint")
        whole = np.memmap(path, dtype=np.uint8, mode="r")
        records: dict[str, np.ndarray] = {}
        prefix = f"{root}data/"
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.compress_type != zipfile.ZIP_STORED:
                continue
            start = _data_offset(whole, info)
            if start + info.file_size > len(whole):
                raise CheckpointFormatError(f"{path}: truncated ({info.filename})")
            records[info.filename[len(prefix) :]] = whole[start : start + info.file_size]
        return _Unpickler(io.BytesIO(zf.read(pkl[0])), records).load()


def _data_offset(whole: np.ndarray, info: zipfile.ZipInfo) -> int:
    """Where a stored record's bytes start: after its local header (its own name and extra
    field lengths, which may differ from the central directory's)."""
    head = bytes(whole[info.header_offset : info.header_offset + 30])
    if head[:4] != b"PK\x03\x04":
        raise CheckpointFormatError(f"damaged zip record {info.filename}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


# -- writing ------------------------------------------------------------------------------------
class _Global:
    """A name the pickle refers to (GLOBAL module name) without importing its module."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants reduce functions to be callables
        raise TypeError("a stand-in for a name in a checkpoint")


_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")


class _Tensor:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array

    def __reduce__(self):
        shape = tuple(int(s) for s in self.array.shape)
        stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        storage = _StorageRef(self.key, self.array)
        return _REBUILD, (storage, 0, shape, stride, False, collections.OrderedDict())


class _StorageRef:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Pickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            name = _STORAGES[obj.array.dtype][0]
            return ("storage", _Global("torch", name), obj.key, "cpu", int(obj.array.size))
        return None


def write(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain types; numpy arrays for tensors) as torch.save would, atomically.

    The zip's layout is torch's (version 3, little-endian, records aligned to 64 bytes), so
    ``torch.load(path, weights_only=True, mmap=True)`` reads it.
    """
    arrays: list[np.ndarray] = []

    def convert(value):
        if isinstance(value, np.ndarray):
            arr = _contiguous(value)
            if arr.dtype not in _STORAGES:
                raise CheckpointFormatError(f"cannot store arrays of dtype {arr.dtype}")
            arrays.append(arr)
            return _Tensor(str(len(arrays) - 1), arr)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise CheckpointFormatError(f"cannot store {type(value).__name__} in a checkpoint")

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(convert(payload))
    root = "archive/"
    records: list[tuple[str, bytes | np.ndarray]] = [
        (f"{root}data.pkl", buf.getvalue()),
        (f"{root}.format_version", b"1"),
        (f"{root}.storage_alignment", str(ALIGN).encode()),
        (f"{root}byteorder", b"little"),
        *[(f"{root}data/{i}", arr) for i, arr in enumerate(arrays)],
        (f"{root}version", b"3\n"),
        (f"{root}.data/serialization_id", str(secrets.randbits(128)).zfill(40).encode()),
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(Path(path), "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            _write_record(zf, fh, name, data)


def _write_record(zf: zipfile.ZipFile, fh, name: str, data) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    view = memoryview(data.reshape(-1).view(np.uint8)) if isinstance(data, np.ndarray) else data
    info.file_size = len(view)
    # Pad the local header's extra field ("FB", as torch does) so the data starts aligned.
    start = fh.tell() + 30 + len(name.encode()) + 4
    info.extra = b"FB" + struct.pack("<H", (-start) % ALIGN) + b"Z" * ((-start) % ALIGN)
    with zf.open(info, "w") as out:
        out.write(view)
