"""How a photo was lit, measured on its pixels: the verdict's check of "can the evidence tell?".

A photo taken at night (dark, or brightness-normalised grey like a night camera's output) shares
little with day photos of the same place, for the global descriptor and for local features
alike: the night photos of gardens_point whose day place is in the library score as low, and
find as few matching points, as photos of another city (benchmarks/README.md, "Night and
day"). Their lack of evidence is then no evidence against the place. The verdict reads these
figures (``verdict.light_change``): with ``VerifyConfig.night_inliers`` set it says "uncertain:
it may be night" instead of "not in this library". Cheap: a 64 px thumbnail of the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

_THUMB = 64  # pixels, longer side: averages need no more
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


@dataclass(frozen=True)
class Light:
    """Grey levels of a photo, each on 0..255."""

    brightness: float  # mean luma
    colour: float  # mean of (max - min) over R, G, B per pixel: 0 for a grey photo
    detail: float  # standard deviation of luma: ~0 for a blank or flat image


def measure_light(img: Image.Image) -> Light:
    """The :class:`Light` of a decoded photo (any mode; greyscale counts as colourless)."""
    thumb = img.convert("RGB")
    thumb.thumbnail((_THUMB, _THUMB), Image.Resampling.BILINEAR)
    rgb = np.asarray(thumb, np.float32).reshape(-1, 3)
    if rgb.size == 0:
        return Light(0.0, 0.0, 0.0)
    luma = rgb @ _LUMA
    colour = rgb.max(1) - rgb.min(1)
    return Light(float(luma.mean()), float(colour.mean()), float(luma.std()))
