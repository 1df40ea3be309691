"""CutMix from paired into unpaired low-light patches (SSLL, spec ssll.md §3).

For each sample a box covering a fraction r of the patch is taken from the *paired* low-light
image and pasted at the same place into the *unpaired* image:

    r ~ clip(N(mu_e, sigma), r_min, r_max),   mu_e = 1 - (e - S) / (N - S)

with S the first semi-supervised epoch and N the curriculum length. The box sides are
floor(H sqrt(r)) x floor(W sqrt(r)); its centre is uniform over the patch; corners are clipped
to the patch, so the real area can be smaller than r (a box of area 0 is drawn again).

Unlike the official code, the draws come from a generator seeded by (seed, iteration, rank), so
runs are reproducible and resumable; ``unseeded=True`` restores the official behaviour.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def curriculum_mean(epoch: int, semi_start_epoch: int, total_epochs: int) -> float:
    """mu_e = 1 - (e - S) / (N - S): the mean paired share shrinks over the semi-supervised epochs."""
    span = max(total_epochs - semi_start_epoch, 1)
    return 1.0 - (epoch - semi_start_epoch) / span


def cutmix_rng(seed: int, iteration: int, rank: int = 0, unseeded: bool = False) -> random.Random:
    """The generator for one iteration's draws (system entropy when ``unseeded``)."""
    if unseeded:
        return random.Random()
    state = np.random.SeedSequence([seed, iteration, rank, 0x5EED]).generate_state(1)[0]
    return random.Random(int(state))


def sample_boxes(batch: int, height: int, width: int, mean: float, rng: random.Random, sigma: float = 1.0,
                 r_min: float = 0.1, r_max: float = 0.9) -> list[tuple[int, int, int, int, float]]:
    """Draw one box per sample: (top, bottom, left, right, r) in pixel coordinates (end exclusive)."""
    boxes = []
    for _ in range(batch):
        r = min(max(rng.gauss(mean, sigma), r_min), r_max)
        bh, bw = int(height * np.sqrt(r)), int(width * np.sqrt(r))
        while True:
            cy, cx = rng.randrange(height), rng.randrange(width)
            top, bottom = max(cy - bh // 2, 0), min(cy + bh // 2, height)
            left, right = max(cx - bw // 2, 0), min(cx + bw // 2, width)
            if bottom > top and right > left:
                break
        boxes.append((top, bottom, left, right, r))
    return boxes


def boxes_to_mask(boxes: list[tuple[int, int, int, int, float]], shape: tuple[int, int, int, int],
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Paired-region mask M_p of ``shape`` (B, C, H, W): 1 inside each sample's box, 0 elsewhere."""
    mask = torch.zeros(shape, device=device, dtype=dtype)
    for i, (t, b, l, r, _) in enumerate(boxes):
        mask[i, :, t:b, l:r] = 1
    return mask


def cutmix(paired_lq: torch.Tensor, unpaired_lq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x_c = M_p * x_p + (1 - M_p) * x_u."""
    return mask * paired_lq + (1 - mask) * unpaired_lq
