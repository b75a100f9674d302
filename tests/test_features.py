"""Batched extraction: every image accounted for, bad ones skipped with a reason, cancel honoured."""

from __future__ import annotations

import numpy as np
import pytest
from _library import make_library
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, ModelConfig
from netvlad_gui.core.model.features import Cancelled, extract, extract_one
from netvlad_gui.core.model.network import build_model


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


def test_a_strip_too_narrow_for_the_network_is_skipped_not_fatal(tmp_path, model):
    """A 21:1 panorama is 640x30 px at the input size: below AlexNet's 31 px minimum, it
    used to stop the whole batch (and the build) with a RuntimeError from max_pool2d."""
    Image.new("RGB", (64, 48), "red").save(tmp_path / "normal.png")
    Image.new("RGB", (2100, 100), "blue").save(tmp_path / "pano.png")
    Image.new("RGB", (640, 32), "green").save(tmp_path / "just_enough.png")
    paths = [tmp_path / "normal.png", tmp_path / "pano.png", tmp_path / "just_enough.png"]
    cfg = ExtractConfig(image_size=640, batch_size=3, num_workers=0, device="cpu")
    got = {r.index: r for r in extract(model, paths, cfg)}
    assert got[0].descriptor is not None and got[2].descriptor is not None
    assert got[1].descriptor is None
    assert got[1].error.startswith("too narrow to describe: 640x30 px")


def test_cancel_stops_between_batches(tmp_path, model):
    paths = make_library(tmp_path, 8, size=64)
    cfg = ExtractConfig(image_size=64, batch_size=2, num_workers=0, device="cpu")
    seen = []
    with pytest.raises(Cancelled):
        for r in extract(model, paths, cfg, cancel=lambda: len(seen) >= 2):
            seen.append(r)  # noqa: PERF402 - the generator raises mid-way
    assert 2 <= len(seen) < 8


def test_non_finite_descriptors_are_skipped_with_a_reason(tmp_path, model):
    """A model with a NaN weight (a diverged training) gives NaN descriptors: none is returned."""
    import copy

    import torch

    from netvlad_gui.core.model.features import NON_FINITE
    from netvlad_gui.core.photos.images import ImageLoadError

    paths = make_library(tmp_path, 3, size=64)
    cfg = ExtractConfig(image_size=64, batch_size=2, num_workers=0, device="cpu")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    got = {r.index: r for r in extract(broken, paths, cfg)}
    assert sorted(got) == [0, 1, 2]
    assert all(r.descriptor is None and r.error == NON_FINITE for r in got.values())
    assert "non-finite descriptor" in NON_FINITE
    with pytest.raises(ImageLoadError, match="non-finite descriptor"):
        extract_one(broken, paths[0], cfg)
    # only the photo whose descriptor is bad is skipped
    got = {r.index: r for r in extract(_NanForBright(), paths + [_white(tmp_path)], cfg)}
    assert [i for i, r in sorted(got.items()) if r.descriptor is None] == [3]
    assert got[3].error == NON_FINITE


def _white(root):
    Image.new("RGB", (64, 48), (255, 255, 255)).save(root / "white.png")
    return root / "white.png"


class _NanForBright:
    """Stands in for a model whose descriptor overflows on some photos only."""

    def __new__(cls):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1))

            def forward(self, x):
                d = x.mean(dim=(2, 3)) * self.w
                d[x.mean(dim=(1, 2, 3)) > 0.9] = float("nan")
                return d

        return Net()
