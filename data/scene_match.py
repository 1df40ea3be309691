"""Whether two photographs show the same scene: the rule that links LOL-v1 shots into scenes.

Each image becomes a 150x100 grey thumbnail (area interpolation, whatever its size or aspect) and
the Sobel gradient magnitude of that thumbnail. Two images show the same scene when the gradients
correlate at least :data:`GRADIENT_LINK` or the grey levels at least :data:`GREY_LINK` (Pearson
correlation). ``../shared/data/README.md`` states the rule; it gives 61 scenes for the 120
LOL-v1 training pairs. The scene splits (``scripts/make_lol_scene_split.py``, and
``scripts/make_sice_scene_split.py`` for the SICE exposure sequences) and the overlap check of new test
sets against LOL-v1 (``scripts/prepare_cross_domain.py``) all use it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
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


def scene_rule() -> str:
    """The rule in words (written into every split file made with it)."""
    return (f"images as {THUMB_SIZE[0]}x{THUMB_SIZE[1]} grey thumbnails; linked when Sobel-gradient-magnitude "
            f"correlation >= {GRADIENT_LINK:.2f} or grey correlation >= {GREY_LINK:.2f}; scenes = connected components")


def same_scene(a: Thumbnail, b: Thumbnail) -> bool:
    """True when the two images are linked by the scene rule (see the module docstring)."""
    return linked(*similarity(a, b))


def _unit_rows(stack: np.ndarray) -> np.ndarray:
    rows = stack.reshape(len(stack), -1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.sqrt((rows * rows).sum(axis=1, keepdims=True) + 1e-12)


def group_scenes(paths: Sequence[str | os.PathLike]) -> list[list[int]]:
    """Scenes of ``paths`` as lists of indices: the connected components of the scene rule.

    All pairs are compared at once (one matrix product per correlation), so the 687 SICE frames
    take seconds; the result equals linking every pair with :func:`same_scene`. Scenes are ordered
    by their first index, and each lists its indices in increasing order.
    """
    if not paths:
        return []
    thumbs = [thumbnail(p) for p in paths]
    grey = _unit_rows(np.stack([t.grey for t in thumbs]))
    grad = _unit_rows(np.stack([t.grad for t in thumbs]))
    links = ((grad @ grad.T) >= GRADIENT_LINK) | ((grey @ grey.T) >= GREY_LINK)
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(links, 1))):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(paths)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])
