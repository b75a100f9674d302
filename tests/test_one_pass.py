"""Issue 14: a new library goes through the backbone once, and a no-op run never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _library import make_library

from netvlad_gui.core.config import ExtractConfig, InitConfig, ModelConfig
from netvlad_gui.core.library import builder
from netvlad_gui.core.model.initialise import (
    initialise_from_images,
    initialise_one_pass,
    pool_feature_map,
)
from netvlad_gui.core.model.network import build_model

INIT = InitConfig(num_images=10, descriptors_per_image=20, kmeans_iters=10, seed=3)


def _model():
    import torch

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="mobilenet_v2", num_clusters=8)
    return build_model(cfg, "none")


@pytest.mark.parametrize(
    "cfg",
    [
        # the old path's arithmetic exactly: one image at a time, no folding, no layout change
        ExtractConfig(
            image_size=96,
            batch_size=1,
            num_workers=0,
            device="cpu",
            fold_batchnorm=False,
            channels_last=False,
            precision="fp32",  # compares arithmetic: bf16 (auto on AMX CPUs) rounds otherwise
        ),
        # as a build runs it: batched, folded BatchNorm, channels-last (float noise only)
        ExtractConfig(image_size=96, batch_size=4, num_workers=0, device="cpu", precision="fp32"),
    ],
    ids=["exact", "batched"],
)
def test_one_pass_initialisation_equals_the_separate_pass(tmp_path, cfg):
    paths = make_library(tmp_path / "lib", 14)
    (tmp_path / "lib/broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    paths.insert(5, tmp_path / "lib/broken.jpg")
    old, new = _model(), _model()
    alpha_old = initialise_from_images(old, paths, INIT, cfg)
    maps = initialise_one_pass(new, paths, INIT, cfg, tmp_path / "maps")
    try:
        assert new.meta["init"]["descriptors"] == old.meta["init"]["descriptors"]
        assert new.meta["netvlad_alpha"] == pytest.approx(alpha_old, rel=1e-4)
        c_old = old.pool.centroids.detach().numpy()
        c_new = new.pool.centroids.detach().numpy()
        np.testing.assert_allclose(c_new, c_old, atol=1e-4)
        # the sample is the seeded one: 10 of 15, the broken photo's reason kept if drawn
        assert len(maps.keys()) == 10
        assert all("image" in why or "read" in why for why in maps.errors.values())
        # a kept map pools to the descriptor the whole network gives for that photo
        from netvlad_gui.core.model.features import extract

        key = next(k for k in maps if k not in maps.errors)
        full = next(iter(extract(new, [paths[key]], cfg))).descriptor
        np.testing.assert_allclose(pool_feature_map(new, maps.get(key)), full, atol=1e-4)
    finally:
        maps.close()
    assert not (tmp_path / "maps").exists()


FAST = ExtractConfig(image_size=96, batch_size=4, num_workers=0, device="cpu")


def test_a_new_library_goes_through_the_backbone_once(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    make_library(lib, 12)
    calls = []
    from netvlad_gui.core.model import features

    real = features.extract

    def counting(model, paths, *a, **k):
        calls.append(len(paths))
        yield from real(model, paths, *a, **k)

    monkeypatch.setattr(features, "extract", counting)
    s = builder.build_index(
        lib,
        tmp_path / "idx",
        backbone_weights="none",
        extract_cfg=FAST,
        init_cfg=InitConfig(num_images=8, descriptors_per_image=20),
    )
    assert s.indexed == 12 and s.extracted == 12
    assert calls == [4]  # the 8 sampled photos were pooled from their kept maps
    assert not (tmp_path / "idx" / builder.KEPT_MAPS_DIR).exists()


def test_a_build_killed_after_the_initialisation_keeps_it(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    make_library(lib, 8)
    kw = {
        "backbone_weights": "none",
        "extract_cfg": FAST,
        "init_cfg": InitConfig(num_images=8, descriptors_per_image=20),
    }

    def killed(*a, **k):
        raise KeyboardInterrupt  # after model.pt was saved, before any descriptor

    monkeypatch.setattr(builder, "_descriptors", killed)
    with pytest.raises(KeyboardInterrupt):
        builder.build_index(lib, tmp_path / "idx", **kw)
    model_pt = tmp_path / "idx" / "model.pt"
    assert model_pt.exists()
    before = model_pt.read_bytes()
    monkeypatch.undo()
    s = builder.build_index(lib, tmp_path / "idx", **kw)
    assert s.indexed == 8 and s.warnings == []
    assert model_pt.read_bytes() == before  # the initialisation was kept, not redone


def test_a_no_op_run_does_not_import_torch(tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 6)
    builder.build_index(
        lib,
        tmp_path / "idx",
        backbone_weights="none",
        extract_cfg=FAST,
        init_cfg=InitConfig(num_images=6, descriptors_per_image=20),
    )
    code = (
        "import sys, json\n"
        "from netvlad_gui.cli import main\n"
        f"rc = main(['index', {str(lib)!r}, '--index', {str(tmp_path / 'idx')!r}, '--json', '-q'])\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules,"
        " 'torchvision': 'torchvision' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    summary, seen = json.loads(lines[-2]), json.loads(lines[-1])
    assert seen == {"rc": 0, "torch": False, "torchvision": False}
    assert summary["extracted"] == 0 and summary["indexed"] == 6
    assert summary["model"] == "mobilenet_v2-netvlad"


def test_a_no_op_run_skips_finalising_but_a_gps_csv_edit_does_not(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    make_library(lib, 6)
    kw = {
        "backbone_weights": "none",
        "extract_cfg": FAST,
        "init_cfg": InitConfig(num_images=6, descriptors_per_image=20),
    }
    calls = []
    real = builder.calibrate
    monkeypatch.setattr(builder, "calibrate", lambda index: calls.append(1) or real(index))
    builder.build_index(lib, tmp_path / "idx", **kw)
    assert len(calls) == 1
    builder.build_index(lib, tmp_path / "idx", **kw)
    assert len(calls) == 1  # nothing new: the same calibration and search index are kept
    rows = (lib / "gps.csv").read_text().splitlines()
    (lib / "gps.csv").write_text("\n".join(rows[:-1]) + "\n")  # one photo loses its GPS
    s = builder.build_index(lib, tmp_path / "idx", **kw)
    assert len(calls) == 2 and s.with_gps == 5


def test_disk_full_while_keeping_the_maps_says_where_and_how_much(tmp_path, monkeypatch):
    # numpy's own words were "115200 requested and 59360 written" (issue 23).
    from netvlad_gui.core.errors import NetvladError

    paths = make_library(tmp_path / "lib", 6)
    cfg = ExtractConfig(image_size=96, batch_size=2, num_workers=0, device="cpu")
    real_save, saved = np.save, []

    def fills_up(file, arr, *args, **kwargs):
        if saved:  # the second map meets a full disk, half written, as ndarray.tofile says it
            with open(file, "wb") as f:
                f.write(b"\0" * (arr.nbytes // 2))
            raise OSError(f"{arr.nbytes} requested and {arr.nbytes // 2} written")
        saved.append(arr.nbytes)
        real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", fills_up)
    folder = tmp_path / "idx" / "maps"
    with pytest.raises(NetvladError) as err:
        initialise_one_pass(_model(), paths, INIT, cfg, folder)
    text = str(err.value)
    assert text.startswith(f"disk full in {folder}: ") and "\n" not in text
    each = saved[0]  # one photo's backbone map, float32
    assert (
        f"6 photos it samples there, {each / 1e3:.0f} KB each (about {6 * each / 1e3:.0f} KB"
        in text
    )
    assert "free that much space" in text and "requested and" not in text
    assert isinstance(err.value, OSError) and not folder.exists()  # nothing left behind
