"""The process a training run lives in: its place in a torchrun job, the collectives the trainer
and the descriptor cache use, its random state (what an exact resume restores) and its
mixed-precision type.

Without torchrun (``WORLD_SIZE`` unset or 1) every collective is a no-op on rank 0 of 1.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import TrainError
from ..model.features import resolve_device
from ..trainconfig import AMP_DTYPES

# --- the job --------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in a torch.distributed job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: str = "auto") -> tuple[DistInfo, bool]:
    """Join the torchrun job named by the environment (WORLD_SIZE > 1), else a single process.

    Returns the rank's info and whether this call created the process group (and must end it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, resolve_device(device)), False
    import torch.distributed as tdist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("CUDA was asked for, but no CUDA GPU is available; use --device cpu")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    created = False
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
        created = True
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), dev), created


def end_distributed() -> None:
    import torch.distributed as tdist

    tdist.destroy_process_group()


# --- collectives ----------------------------------------------------------------------------


def barrier(dist: DistInfo) -> None:
    if dist.active:
        import torch.distributed as tdist

        tdist.barrier()


def all_reduce_sum(values: list[float], dist: DistInfo) -> list[float]:
    """Element-wise sums over the ranks (float64)."""
    if not dist.active:
        return values
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_rows(local: np.ndarray, total: int, dist: DistInfo) -> np.ndarray:
    """Rank r holds rows r, r + world, r + 2 world … of ``total``; every rank gets all of them."""
    import torch.distributed as tdist

    per_rank = -(-total // dist.world)
    padded = np.full((per_rank, local.shape[1]), np.nan, dtype=np.float32)
    padded[: len(local)] = local
    device = dist.device or torch.device("cpu")
    mine = torch.from_numpy(padded).to(device)
    parts = [torch.empty_like(mine) for _ in range(dist.world)]
    tdist.all_gather(parts, mine)
    out = np.full((total, local.shape[1]), np.nan, dtype=np.float32)
    for r, part in enumerate(parts):
        idx = np.arange(r, total, dist.world)
        out[idx] = part.cpu().numpy()[: len(idx)]
    return out


def all_gather_dicts(part: dict, dist: DistInfo) -> dict:
    """The union of every rank's dictionary."""
    import torch.distributed as tdist

    parts: list[dict | None] = [None] * dist.world
    tdist.all_gather_object(parts, part)
    merged: dict = {}
    for p in parts:
        merged.update(p or {})
    return merged


# --- precision ------------------------------------------------------------------------------

_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def amp_dtype(name: str = "auto") -> torch.dtype:
    """``auto``: bfloat16 where the GPU has it (no loss scaling needed), else float16."""
    if name in _TORCH_DTYPES:
        return _TORCH_DTYPES[name]
    if name != "auto":
        raise ValueError(f"amp dtype must be one of {AMP_DTYPES}, got {name!r}")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# --- random state ---------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python's, numpy's, torch's and CUDA's generators, as types ``weights_only`` loads."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # another number of GPUs: not worth failing for
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x
