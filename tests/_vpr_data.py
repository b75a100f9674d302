"""Tiny synthetic place-recognition sets for the training and evaluation tests.

A photo taken x metres along a straight street is a window of one long random texture starting at
``x * px_per_m`` pixels, so photos a few metres apart overlap and look alike, and photos far apart
do not: enough structure for mining and recall, in a few KiB of JPEG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LAT0, LON0 = 55.7, 13.19
M_PER_DEG_LAT = 111_195.0  # metres per degree of latitude on the mean sphere


def texture(length_px: int, height: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = (rng.random((height // 8, length_px // 8 + 1, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((small.shape[1] * 8, height), Image.Resampling.BICUBIC)
    return np.asarray(big)


def write_street(
    folder: Path,
    positions_m,
    *,
    prefix: str = "img",
    width: int = 96,
    height: int = 64,
    px_per_m: float = 3.0,
    noise: float = 8.0,
    seed: int = 0,
    gps_csv: bool = True,
    period_m: float | None = None,
    unique: float = 0.3,
) -> list[Path]:
    """JPEGs of a street at ``positions_m`` metres north of (LAT0, LON0), with a gps.csv.

    With ``period_m`` the street repeats itself every period (perceptual aliasing: far places
    look alike) and only a faint non-repeating texture (weight ``unique``) tells them apart,
    which gives hard negatives.
    """
    folder.mkdir(parents=True, exist_ok=True)
    positions_m = np.asarray(positions_m, dtype=float)
    length = int(positions_m.max() * px_per_m) + width + 16
    strip = texture(length, height, seed=seed).astype(np.float32)[:, :length]
    if period_m is not None:
        period = max(int(period_m * px_per_m), 8)
        tile = strip[:, :period]
        repeated = np.concatenate([tile] * (length // period + 1), axis=1)[:, :length]
        other = texture(length, height, seed=seed + 7)[:, :length]
        strip = (1 - unique) * repeated + unique * other
    rng = np.random.default_rng(seed + 1)
    paths, rows = [], []
    for i, x in enumerate(positions_m):
        start = round(x * px_per_m)
        crop = strip[:, start : start + width].astype(np.float32)
        crop += rng.normal(0, noise, crop.shape)
        path = folder / f"{prefix}{i:03d}.jpg"
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
        rows.append(f"{path.name},{LAT0 + x / M_PER_DEG_LAT:.8f},{LON0:.8f},10")
    if gps_csv:
        (folder / "gps.csv").write_text("file,lat,lon,alt_m\n" + "\n".join(rows) + "\n")
    return paths
