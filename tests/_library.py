"""Small synthetic photo libraries for index tests: real JPEG files, GPS in a gps.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_library(
    root: Path, n: int, *, size: int = 96, seed: int = 0, gps: bool = True
) -> list[Path]:
    """``n`` JPEGs of smooth random colour fields along a line of points 12 m apart."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["file,lat,lon"]
    for i in range(n):
        base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size * 4 // 3, size), Image.Resampling.BICUBIC)
        p = root / f"img_{i:04d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
        rows.append(f"{p.name},{55.7 + i * 12 / 111_320:.7f},13.2")
    if gps:
        (root / "gps.csv").write_text("\n".join(rows) + "\n")
    return paths


def build_small(lib: Path, idx: Path, *, init_images: int = 20, **kw):
    """``build_index`` with test settings (random weights, 96 px, no worker processes)."""
    from netvlad_gui.core.config import ExtractConfig, InitConfig
    from netvlad_gui.core.library.builder import build_index

    kw.setdefault("backbone_weights", "none")
    kw.setdefault(
        "extract_cfg", ExtractConfig(image_size=96, batch_size=4, num_workers=0, device="cpu")
    )
    kw.setdefault("init_cfg", InitConfig(num_images=init_images, descriptors_per_image=20))
    return build_index(lib, idx, **kw)
