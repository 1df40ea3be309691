"""Whether two photographs show the same scene: the rule that links LOL-v1 shots into scenes.

Each image becomes a 150x100 grey thumbnail (area interpolation, whatever its size or aspect) and
the Sobel gradient magnitude of that thumbnail. Two images show the same scene when the gradients
correlate at least :data:`GRADIENT_LINK` or the grey levels at least :data:`GREY_LINK` (Pearson
correlation). ``../shared/data/README.md`` states the rule; it gives 61 scenes for the 120
LOL-v1 training pairs. The scene split (``scripts/make_lol_scene_split.py``) and the overlap check
of new test sets against LOL-v1 (``scripts/prepare_cross_domain.py``) both use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from foundation.errors import UserError

THUMB_SIZE = (150, 100)  # (width, height)
GRADIENT_LINK = 0.30
GREY_LINK = 0.90


@dataclass(frozen=True)
class Thumbnail:
    """The grey thumbnail of an image and its gradient magnitude (float64, 100x150)."""

    grey: np.ndarray
    grad: np.ndarray


def thumbnail(path: str | os.PathLike) -> Thumbnail:
    """The :class:`Thumbnail` of the image file ``path``."""
    im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if im is None:
        raise UserError(f"cannot read image {path}")
    t = cv2.resize(im.astype(np.float64), THUMB_SIZE, interpolation=cv2.INTER_AREA)
    return Thumbnail(t, np.hypot(cv2.Sobel(t, cv2.CV_64F, 1, 0), cv2.Sobel(t, cv2.CV_64F, 0, 1)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays of one shape."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def similarity(a: Thumbnail, b: Thumbnail) -> tuple[float, float]:
    """(grey-level, gradient) correlation of two thumbnails."""
    return correlation(a.grey, b.grey), correlation(a.grad, b.grad)


def linked(grey: float, grad: float) -> bool:
    """True when a (grey-level, gradient) correlation pair links two images into one scene."""
    return grad >= GRADIENT_LINK or grey >= GREY_LINK


def same_scene(a: Thumbnail, b: Thumbnail) -> bool:
    """True when the two images are linked by the scene rule (see the module docstring)."""
    return linked(*similarity(a, b))
