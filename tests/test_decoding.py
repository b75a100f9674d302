"""Decoding photos in threads, ahead of use, without torch (issue 14: the whole job's speed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from _library import make_library
from PIL import Image

from netvlad_gui.core.config import ExtractConfig, InitConfig
from netvlad_gui.core.library import builder
from netvlad_gui.core.model.sample import sample_positions
from netvlad_gui.core.photos import decoding
from netvlad_gui.core.photos.decoding import Decoder
from netvlad_gui.core.photos.images import to_tensor


def _photos(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        size = (160, 120) if i % 2 else (90, 150)  # landscape and portrait
        p = folder / f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_the_network_input_is_torchvisions_pil_to_tensor(tmp_path):
    from torchvision.transforms.functional import pil_to_tensor

    img = Image.open(_photos(tmp_path, 1)[0]).convert("RGB")
    ours, ref = to_tensor(img), pil_to_tensor(img).float().div_(255.0)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape == (3, 150, 90)
    assert ours.stride() == ref.stride()  # (H, W, 3) memory: what channels-last convs take
    assert bool((ours == ref).all())


@pytest.mark.parametrize("workers,batch", [(1, 8), (1, 1), (2, 1)])  # window: 2 batches
def test_decoded_in_threads_equals_decoded_in_the_calling_thread(tmp_path, workers, batch):
    paths = _photos(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    strip = tmp_path / "strip.png"
    Image.new("RGB", (2000, 40)).save(strip)  # 640 x 13 at the input size: too thin
    paths = [paths[0], broken, paths[1], strip, paths[0], paths[2], paths[3]]  # one photo twice
    cfg = ExtractConfig(image_size=64, num_workers=0)
    serial = Decoder(cfg)
    threaded = Decoder(ExtractConfig(image_size=64, num_workers=workers, batch_size=batch))
    try:
        a, b = list(serial.decoded(paths)), list(threaded.decoded(paths))
    finally:
        threaded.close()
    assert [i for i, _, _ in b] == list(range(len(paths)))
    for (_, pa, ea), (_, pb, eb) in zip(a, b, strict=True):
        assert ea == eb
        assert (pa is None and pb is None) or np.array_equal(pa, pb)
    assert "image" in b[1][2] and "too narrow" in b[3][2]
    assert b[0][1].shape == (64, 38, 3) and b[0][1].dtype == np.uint8  # portrait 90 x 150


def test_prefetched_photos_are_not_decoded_again(tmp_path, monkeypatch):
    paths = _photos(tmp_path)
    seen = Counter()
    real = decoding.decode
    monkeypatch.setattr(decoding, "decode", lambda p, cfg: seen.update([p]) or real(p, cfg))
    dec = Decoder(ExtractConfig(image_size=64))
    try:
        dec.prefetch(paths[:3] + [tmp_path / "never-asked.jpg"])
        out = list(dec.decoded(paths))
    finally:
        dec.close()
    assert all(err == "" for _, _, err in out)
    assert seen == Counter(paths) + Counter([tmp_path / "never-asked.jpg"])
    assert not any(t.is_alive() for t in dec._pool._threads)  # closed: its threads are gone


def test_prefetch_is_bounded_by_decode_ahead(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 6)
    asked = []
    monkeypatch.setattr(decoding, "decode", lambda p, cfg: asked.append(p) or (None, "x"))
    dec = Decoder(ExtractConfig(image_size=64, decode_ahead=2))
    dec.prefetch(paths)
    dec.close()
    assert len(asked) <= 2


def test_a_new_library_decodes_its_sample_while_torch_loads(tmp_path, monkeypatch):
    """The build asks for the initialisation sample before importing torch, and every photo
    is decoded once in the whole build (the sample's from that prefetch)."""
    lib = tmp_path / "lib"
    paths = make_library(lib, 12)
    order: list = []
    decoded = Counter()
    real_decode, real_prefetch = decoding.decode, Decoder.prefetch
    monkeypatch.setattr(
        decoding, "decode", lambda p, cfg: decoded.update([str(p)]) or real_decode(p, cfg)
    )

    def prefetch(self, wanted):
        wanted = list(wanted)
        order.append(("prefetch", [str(p) for p in wanted]))
        real_prefetch(self, wanted)

    monkeypatch.setattr(Decoder, "prefetch", prefetch)
    from netvlad_gui.core.model import engine

    real_engine = engine.load_engine
    monkeypatch.setattr(engine, "load_engine", lambda: order.append("engine") or real_engine())
    init = InitConfig(num_images=8, descriptors_per_image=20)
    s = builder.build_index(
        lib,
        tmp_path / "idx",
        backbone_weights="none",
        extract_cfg=ExtractConfig(image_size=96, batch_size=4, num_workers=1, device="cpu"),
        init_cfg=init,
    )
    assert s.indexed == 12
    assert order[1] == "engine" and order[0][0] == "prefetch"
    rels = sorted(str(p.relative_to(lib)) for p in paths)  # the catalogue's order
    sample = [str(lib / rels[i]) for i in sample_positions(len(rels), init)]
    assert order[0][1] == sample
    assert sorted(decoded) == sorted(str(p) for p in paths)
    assert set(decoded.values()) == {1}
