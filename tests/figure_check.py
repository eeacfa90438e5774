"""Does a rendered explorer figure show data, or only an empty axis? A check on the PNG alone, so that it
applies to what a browser shows as well as to a panel built in the test.

Every explorer that plots (02's filter histograms, 04's accuracy bars, 06's analysis curves) draws its data
in matplotlib's colour cycle, while axes, labels, titles, the FP line and grayscale image grids are grey: an
empty axis has no chromatic pixel at all. 03's token panel shows generated images only (grayscale): there the
data is the image area, mid-grey pixels, which an empty axis has almost none of (its text: under 1%).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

KIND = {"filter": "plot", "ptq": "plot", "ablation": "plot", "token": "images"}  # panel name -> what it draws
MIN_COLOUR = 0.002  # chromatic share of a plot's pixels (06's lines and points: 1.7%; an empty axis: 0)
MIN_IMAGE = 0.05  # mid-grey share of an image panel's pixels (03's grid: 29%; an empty axis: 0.7%)


def pixel_shares(png: bytes) -> dict[str, float]:
    """``colour``: share of chromatic pixels (channel spread over 40 of 255); ``image``: share of mid-grey
    pixels (luminance 40..215: image content, not white paper or black text)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    luminance = rgb.mean(axis=2)
    return {
        "colour": float(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).mean()),
        "image": float(((luminance > 40) & (luminance < 215)).mean()),
    }


def shows_data(png: bytes, panel: str) -> bool:
    """Whether ``png``, the figure of panel ``panel`` (``KIND``), shows data rather than an empty axis."""
    shares = pixel_shares(png)
    return shares["colour"] > MIN_COLOUR if KIND[panel] == "plot" else shares["image"] > MIN_IMAGE
