"""Decoding photos: orientation, resizing, and a clear reason for every kind of bad file."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from netvlad_gui.core.photos.images import (
    ImageLoadError,
    batched_by_shape,
    expand_inputs,
    list_images,
    load_image,
    load_tensor,
)


def test_resize_longer_side_keeps_aspect(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (10, 20, 30)).save(p)
    img = load_image(p, image_size=200)
    assert img.size == (200, 50)
    t = load_tensor(p, 200)
    assert t.shape == (3, 50, 200) and t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0


def test_grayscale_and_rgba_become_rgb(tmp_path):
    for mode in ("L", "RGBA", "P", "I;16"):
        p = tmp_path / f"{mode.replace(';', '')}.png"
        Image.new(mode, (32, 16)).save(p)
        assert load_image(p, 32).mode == "RGB"


def test_exif_orientation_applied(shared_dir):
    # hopper_orientation_6 is stored landscape-rotated; EXIF says rotate 90 degrees.
    p = shared_dir / "data/exif/edge_cases/pillow/hopper_orientation_6.jpg"
    with Image.open(p) as raw:
        w, h = raw.size
    img = load_image(p, image_size=max(w, h))
    assert img.size == (h, w)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("pillow/truncated_jpeg.jpg", "truncated"),
        ("pillow/truncated_image.png", "truncated"),
        ("pillow/broken.png", "not an image"),
        ("piexif/notjpeg.jpg", "empty file"),
    ],
)
def test_bad_files_give_reasons(shared_dir, name, reason):
    with pytest.raises(ImageLoadError, match=reason):
        load_image(shared_dir / "data/exif/edge_cases" / name)


def test_missing_and_folder_and_bomb(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    p = tmp_path / "big.png"
    Image.new("1", (4000, 3000)).save(p)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(p, max_pixels=1_000_000)


def test_odd_file_names(tmp_path):
    p = tmp_path / "été <b>&'\" 写真.JPG"
    Image.new("RGB", (20, 10)).save(p, format="JPEG")
    assert list_images(tmp_path) == [p]
    assert load_image(p, 20).size == (20, 10)


def test_list_and_expand(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ("a/1.jpg", "b.PNG", ".hidden/2.jpg", "notes.txt", "a/.3.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a/1.jpg",
        "b.PNG",
    ]
    got = expand_inputs([tmp_path / "a", tmp_path / "notes.txt"])
    assert got.photos == [tmp_path / "a/1.jpg"]
    assert got.skipped == [(tmp_path / "notes.txt", "not a photo")]
    assert list_images(tmp_path, exclude=[tmp_path / "a"]) == [tmp_path / "b.PNG"]


def test_batched_by_shape_groups_and_keeps_every_item():
    items = [(i, torch.zeros(3, 4 if i % 2 else 5, 6)) for i in range(7)]
    batches = list(batched_by_shape(iter(items), batch_size=2))
    seen = sorted(i for idxs, _ in batches for i in idxs)
    assert seen == list(range(7))
    for idxs, batch in batches:
        assert batch.shape[0] == len(idxs) <= 2
        assert all(items[i][1].shape == batch.shape[1:] for i in idxs)


def test_heic_photos_open(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    p = tmp_path / "phone.HEIC"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(p)
    img = load_image(p, 32)
    assert img.size == (32, 24) and img.getpixel((16, 12))[0] > 150


def test_expand_inputs_gives_reasons_and_no_repeats(tmp_path):
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    for rel in ("lib/1.jpg", "lib/sub/2.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    got = expand_inputs(
        [
            tmp_path / "lib",
            tmp_path / "lib" / "sub",  # overlaps the folder above
            tmp_path / "lib" / "sub" / ".." / "1.jpg",  # the same photo by another path
            tmp_path / "missing.jpg",
            tmp_path / "empty",
        ]
    )
    assert got.photos == [tmp_path / "lib/1.jpg", tmp_path / "lib/sub/2.jpg"]
    assert got.skipped == [
        (tmp_path / "missing.jpg", "file not found"),
        (tmp_path / "empty", "a folder with no photos"),
    ]


@pytest.fixture(scope="module")
def phone_108mp(tmp_path_factory):
    """A 12000x9000 (108 MP) JPEG of flat colour: a few hundred KB on disk."""
    p = tmp_path_factory.mktemp("big") / "phone_108mp.jpg"
    Image.new("RGB", (12000, 9000), (90, 140, 200)).save(p, quality=50)
    return p


def test_108mp_phone_photo_loads_under_the_configured_limit(phone_108mp):
    # Pillow warns at 89.5 MP; the configured limit (180 MP) is what decides.
    img = load_image(phone_108mp, image_size=640)
    assert img.size == (640, 480)
    assert img.getpixel((320, 240)) == pytest.approx((90, 140, 200), abs=3)
    with pytest.raises(ImageLoadError, match=r"too large \(12000x9000 = 108 MP, limit 100 MP\)"):
        load_image(phone_108mp, max_pixels=100_000_000)


def test_configured_limit_above_pillows_own_is_respected(tmp_path, monkeypatch):
    # Pillow refuses in Image.open above twice its MAX_IMAGE_PIXELS; shrink that to test cheaply.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    p = tmp_path / "wide.png"
    Image.new("RGB", (100, 100), (1, 2, 3)).save(p)  # 10 000 px: 5x Pillow's error threshold
    assert load_image(p, 50, max_pixels=20_000).size == (50, 50)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p, 50, max_pixels=5_000)


def test_big_jpeg_decodes_at_reduced_size(phone_108mp):
    """Peak memory of loading the 108 MP photo stays far below a full decode (430 MB)."""
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "from netvlad_gui.core.photos.images import load_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "img = load_image(sys.argv[1], 640)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(img.size, (after - before) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(phone_108mp)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[:2] == ["(640,", "480)"]
    assert int(out[2]) < 100, f"loading grew peak memory by {out[2]} MB"


def _grey_gradient(h: int = 120, w: int = 160):
    import numpy as np

    return np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_greyscale_decodes_as_its_picture_not_flat_white(tmp_path, suffix):
    # Pillow's convert("RGB") clips 16-bit greyscale at 255: the photo came out flat white.
    import numpy as np

    from netvlad_gui.core.photos.decoding import Decoder

    grey = _grey_gradient()
    p16, p8 = tmp_path / f"g16{suffix}", tmp_path / f"g8{suffix}"
    Image.fromarray(grey).save(p16)
    Image.fromarray((grey // 257).astype(np.uint8)).save(p8)
    with Image.open(p16) as raw:
        assert raw.mode.startswith("I;16")
    got = np.asarray(load_image(p16, 160), np.int16)
    want = np.asarray(load_image(p8, 160), np.int16)
    assert got.std() > 60 and abs(got.mean() - 127.5) < 2
    assert np.abs(got - want).max() <= 1
    # … and so is a library photo (decoded by the build's threads) and a query
    from netvlad_gui.core.config import ExtractConfig

    decoder = Decoder(ExtractConfig(image_size=160, num_workers=1))
    try:
        [(_, pixels, err)] = list(decoder.decoded([p16]))
    finally:
        decoder.close()
    assert not err and pixels.std() > 60


def test_32_bit_and_float_greyscale_are_scaled_to_8_bits(tmp_path):
    import numpy as np

    grey = _grey_gradient()
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "i32.tif")
    Image.fromarray(grey.astype(np.float32) / 65535).save(tmp_path / "f32.tif")
    for name in ("i32.tif", "f32.tif"):
        a = np.asarray(load_image(tmp_path / name, 160), np.float32)
        assert a.std() > 60 and abs(a.mean() - 127.5) < 2, name


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
        (b"just some notes\nabout the trip\n", "a text file"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64), "an MP4 video"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + bytes(64), "a QuickTime video"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(64), "a ZIP archive"),
        (b"\xff\xd8\xff\xe0" + bytes(64), "a damaged JPEG"),
    ],
    ids=["pdf", "text", "mp4", "mov", "zip", "jpeg"],
)
def test_a_file_no_decoder_reads_is_named_for_what_it_is(tmp_path, head, words):
    p = tmp_path / "photo.jpg"
    p.write_bytes(head)
    with pytest.raises(ImageLoadError) as err:
        load_image(p)
    assert words in str(err.value) and "Pillow" not in str(err.value)


def test_a_file_of_unknown_bytes_says_so(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImageLoadError, match="not an image this app can read .an unknown format"):
        load_image(p)
