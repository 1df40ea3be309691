"""Augmentations applied identically to every image of a sample (low/GT pairs, mixed views).

Randomness comes from a ``numpy.random.Generator`` that the caller seeds per sample, so the
same sample index in the same epoch gets the same crop and flips whatever the worker, the
number of workers or a resume in the middle of an epoch.
"""
from __future__ import annotations

import numpy as np


def paired_random_crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crop the same ``size`` x ``size`` window from every (H, W, C) image.

    Images smaller than ``size`` are reflect-padded first. All images must share H and W.
    """
    h, w = images[0].shape[:2]
    for im in images[1:]:
        if im.shape[:2] != (h, w):
            raise ValueError(f"images of one sample differ in size: {(h, w)} vs {im.shape[:2]}")
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        mode = "reflect" if ph < h and pw < w else "edge"
        images = [np.pad(im, ((0, ph), (0, pw), (0, 0)), mode=mode) for im in images]
        h, w = images[0].shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return [im[top:top + size, left:left + size] for im in images]


def paired_random_flip(images: list[np.ndarray], rng: np.random.Generator,
                       hflip: bool = True, vflip: bool = True) -> list[np.ndarray]:
    """Flip all images horizontally and/or vertically, each with probability 0.5."""
    do_h = hflip and rng.random() < 0.5
    do_v = vflip and rng.random() < 0.5
    out = []
    for im in images:
        if do_h:
            im = im[:, ::-1]
        if do_v:
            im = im[::-1]
        out.append(im)
    return out


def to_tensor_chw(img: np.ndarray):
    """(H, W, C) float array -> contiguous (C, H, W) float32 tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
