"""Synthetic-night variants for training: deterministic per seed, photo and variant, and joined
to the training queries at their photo's place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from netvlad_gui.core.trainconfig import AugmentConfig
from netvlad_gui.core.training.augment import augmenter
from netvlad_gui.core.training.mining import GroundTruth
from netvlad_gui.core.training.placeset import PlaceSet


def _photo() -> torch.Tensor:
    return torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))


def test_augmentation_is_deterministic_with_a_seed() -> None:
    photo, cfg = _photo(), AugmentConfig(variants=2)
    one, again, other_seed = augmenter(cfg, 7), augmenter(cfg, 7), augmenter(cfg, 8)
    night = one(photo, "a/x.jpg", 1)
    assert torch.equal(night, again(photo, "a/x.jpg", 1))  # same seed, photo, variant
    assert not torch.equal(night, one(photo, "a/x.jpg", 2))  # another variant
    assert not torch.equal(night, one(photo, "a/y.jpg", 1))  # another photo
    assert not torch.equal(night, other_seed(photo, "a/x.jpg", 1))  # another seed
    assert night.shape == photo.shape and 0 <= float(night.min()) <= float(night.max()) <= 1
    assert torch.equal(photo, _photo())  # the photo itself is left alone


def test_a_night_is_darker_and_noisier_before_the_stretch() -> None:
    photo = _photo()
    cfg = AugmentConfig(variants=1, stretch=False, blur=0.0, grey=0.0)
    night = augmenter(cfg, 0)(photo, "x.jpg", 1)
    assert float(night.mean()) < 0.5 * float(photo.mean())


def test_variants_join_the_queries_at_their_photos_place() -> None:
    paths = [Path(f"/d/{i}.jpg") for i in range(4)]
    pos = np.array([[0.0], [4.0], [100.0], [104.0]])
    ps = PlaceSet("walk", paths, paths, pos, pos.copy(), q_same=np.arange(4))
    more = ps.with_variants(2)
    assert more.num_queries == 4 + 8 and more.q_variant.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert more.q_same[4:].tolist() == [-1] * 8  # a variant is not its photo's own file
    gt = GroundTruth(more)
    # The variant of photo 0 has photo 0 itself and its neighbour 1 as positives.
    assert gt.positives[4].tolist() == [0, 1] and gt.positives[0].tolist() == [1]
    assert ps.with_variants(0) is ps
