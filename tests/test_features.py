"""Batched extraction: every image accounted for, bad ones skipped with a reason, cancel honoured."""

from __future__ import annotations

import numpy as np
import pytest
from _library import make_library
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, ModelConfig
from netvlad_gui.core.features import Cancelled, extract, extract_one
from netvlad_gui.core.model import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig("alexnet", "fmax"), "none")


@pytest.mark.parametrize("workers", [0, 1])
def test_extract_mixed_good_bad_and_orientations(tmp_path, model, workers):
    paths = make_library(tmp_path, 5, size=64)
    Image.new("RGB", (48, 96)).save(tmp_path / "portrait.png")  # another shape, same run
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    paths += [tmp_path / "portrait.png", tmp_path / "bad.jpg", tmp_path / "missing.jpg"]
    cfg = ExtractConfig(image_size=96, batch_size=2, num_workers=workers, device="cpu")
    progress = []
    got = {
        r.index: r
        for r in extract(model, paths, cfg, progress=lambda d, t: progress.append((d, t)))
    }
    assert sorted(got) == list(range(len(paths)))
    assert got[6].descriptor is None and "image" in got[6].error
    assert got[7].descriptor is None and "not found" in got[7].error
    for i in range(6):
        assert got[i].descriptor.shape == (256,)
        assert np.linalg.norm(got[i].descriptor) == pytest.approx(1.0, abs=1e-5)
    assert progress[-1] == (len(paths), len(paths))
    # the same descriptor whether batched or alone
    assert np.allclose(extract_one(model, paths[2], cfg), got[2].descriptor, atol=1e-5)


def test_cancel_stops_between_batches(tmp_path, model):
    paths = make_library(tmp_path, 8, size=64)
    cfg = ExtractConfig(image_size=64, batch_size=2, num_workers=0, device="cpu")
    seen = []
    with pytest.raises(Cancelled):
        for r in extract(model, paths, cfg, cancel=lambda: len(seen) >= 2):
            seen.append(r)  # noqa: PERF402 - the generator raises mid-way
    assert 2 <= len(seen) < 8
