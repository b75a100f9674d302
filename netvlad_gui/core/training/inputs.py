"""What a run's steps start from: the frozen layers' output of every photo it uses (the store,
frozen.py), NetVLAD's k-means sample from it, and the held-out figure of the model the run
starts from (what a user has before retraining).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.checkpoint import save_checkpoint
from ..model.initialise import samples_per_image
from ..model.network import PlaceModel, init_netvlad, sample_from_feature_maps
from ..model.sample import sample_positions
from ..trainconfig import TrainConfig
from .augment import augmenter
from .finish import heldout_recalls, set_descriptors, set_keys
from .frozen import FrozenStore, Key, Prefix, Tail, frozen_split
from .placeset import PlaceSet
from .runs import INIT
from .trainenv import DistInfo

log = logging.getLogger(__name__)


class RunInputs:
    """The store of one run (a file in its folder, removed by ``close``), and what is read from
    it: NetVLAD's k-means sample, descriptor caches, the held-out "before" figure.

    ``initialised_here``: the trainer sets it when this run initialised NetVLAD, which makes
    the "before" figure that of the database-only initialisation an index would have made.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: PlaceModel,
        train: PlaceSet,
        val: PlaceSet | None,
        run_dir: Path,
        dist: DistInfo,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        emit: Callable[..., None],
    ) -> None:
        self.cfg, self.train, self.val, self.run_dir = cfg, train, val, run_dir
        self.dist, self.device, self.amp_dtype, self.emit = dist, device, amp_dtype, emit
        self.rank0 = dist.rank == 0
        self.ecfg = cfg.extract_config()
        self.split = frozen_split(model)  # after set_trainable: what trains is not frozen
        self.prefix = Prefix(model, self.split).to(device)
        self.tail = Tail(model, self.split, amp_dtype)
        suffix = f"-rank{dist.rank}" if dist.active else ""
        self.store = FrozenStore(run_dir / f".frozen{suffix}.f16")
        self.initialised_here = False

    def close(self) -> None:
        self.store.close()

    def init_keys(self) -> list[Key]:
        """The photos NetVLAD's k-means samples: the training database, and with
        ``init_from_queries`` its queries too (variants included), so that the clusters cover
        every condition the photos show (night queries of a day library: their local features
        fall outside clusters made from daylight alone)."""
        db, q = set_keys(self.train)
        if not self.cfg.init_from_queries:
            return db
        return db + [q[i] for i in np.flatnonzero(self.train.q_same < 0)]

    def fill_order(self) -> tuple[list[Key], list[Key]]:
        """Every photo the run uses, in the order the store is filled: first the k-means sample,
        then the training database, its queries and the held-out places.

        A fresh run fills the sample while it initialises NetVLAD; a resumed one fills it first
        too, so both run the frozen layers over the same batches (an exact resume).
        """
        init = self.init_keys()
        sample = [init[i] for i in sample_positions(len(init), self.cfg.init)]
        rest: list[Key] = []
        for ps in (self.train, self.val):
            if ps is not None:
                pdb, pq = set_keys(ps)
                rest += pdb + pq
        return sample, rest

    def fill(self, keys: Sequence[Key], epoch: int, quiet: bool = False) -> None:
        """Run the frozen layers over the photos of ``keys`` not in the store yet."""
        total = len({k for k in keys if k not in self.store and k not in self.store.errors})
        if not total:
            return
        last = [-1]

        def progress(done: int, _total: int) -> None:
            if done != last[0] and not quiet:
                last[0] = done
                self.emit("cache", epoch=epoch + 1, done=min(done, total), total=total)

        self.store.build(
            self.prefix,
            keys,
            self.ecfg,
            augment=augmenter(self.cfg.augment, self.cfg.seed),
            autocast=self.amp_dtype,
            progress=progress,
        )
        if self.rank0:
            for (path, _), reason in list(self.store.errors.items())[:20]:
                log.warning("%s: %s", path, reason)

    def maps(self, keys: Sequence[Key], quiet: bool = True) -> Iterator[torch.Tensor | None]:
        """Backbone maps of photos from the store (NetVLAD's k-means), in order."""
        self.fill(keys, 0, quiet=quiet)  # "init" is the first event a run sends
        with torch.inference_mode():
            for key in keys:
                if key not in self.store:
                    yield None
                    continue
                yield self.tail.blocks(self.store.get(key)[None].to(self.device))[0].float()

    def starting_point(self, model: PlaceModel) -> PlaceModel:
        """The model a user has before this run, for the held-out "before" figure.

        A model this run initialised from its database and queries stands for what the app
        would have made of the database alone (an index initialises from its library's photos),
        so that the figure counts the new clusters as part of what retraining brings.
        """
        extra = len(self.init_keys()) > self.train.num_db
        if not (self.initialised_here and extra):
            return model
        reference = copy.deepcopy(model)
        db = [(str(p), 0) for p in self.train.db_paths]
        pick = sample_positions(len(db), self.cfg.init)
        maps = (m for m in self.maps([db[i] for i in pick]) if m is not None)
        per_image = samples_per_image(model, self.cfg.init, len(pick))
        samples = sample_from_feature_maps(maps, per_image, self.cfg.init.seed, model.local_dim)
        init_netvlad(reference, samples, self.cfg.init)
        return reference

    def before(self, model: PlaceModel) -> dict[str, Any]:
        """Recall@N on the held-out places of the starting point; kept in init.pt's meta, so a
        resume from there says the same."""
        start = self.starting_point(model)
        tail = Tail(start, self.split, self.amp_dtype) if start is not model else self.tail
        before = heldout_recalls(tail, self.store, self.val, self.ecfg.batch_size, self.dist)
        figure = before.to_json()
        if self.initialised_here and self.rank0:
            model.meta["heldout_before"] = figure
            save_checkpoint(model, self.run_dir / INIT)
        return figure

    def describe(self, ps: PlaceSet, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        db, q = set_descriptors(self.tail, self.store, ps, self.ecfg.batch_size, self.dist)
        self.emit("cache", epoch=epoch + 1, done=ps.num_db, total=ps.num_db)
        return db, q
