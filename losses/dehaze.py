"""Dehazing losses of ICEML (spec iceml.md §4.1): colour consistency, saturation, inverse consistency."""
from __future__ import annotations

import torch
import torch.nn as nn

from losses import LOSSES


def chromaticity(img: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel chromaticity c = img / (R + G + B + eps)."""
    return img / (img.sum(1, keepdim=True) + eps)


@LOSSES.register("chromaticity")
class ChromaticityLoss(nn.Module):
    """L1 between the chromaticities of two images: the mutual colour consistency of J_ret and J_asm."""

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        return (chromaticity(img1) - chromaticity(img2)).abs().mean()


def saturation_map(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """HSV saturation S = (max_c - min_c) / (max_c + eps), shape (B, 1, H, W)."""
    mx = img.amax(1, keepdim=True)
    mn = img.amin(1, keepdim=True)
    return (mx - mn) / (mx + eps)


@LOSSES.register("saturation")
class SaturationLoss(nn.Module):
    """mean |S - target| (or squared with ``kind='l2'``): keeps dehazed colours from washing out or oversaturating.

    Args:
        target: the saturation the outputs are pulled toward (0.5 in the official loss library).
        kind: 'l1' or 'l2'.
    """

    def __init__(self, target: float = 0.5, kind: str = "l1") -> None:
        super().__init__()
        self.target, self.kind = float(target), kind

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        d = saturation_map(img.clamp(0, 1)) - self.target
        return d.abs().mean() if self.kind == "l1" else d.pow(2).mean()


@LOSSES.register("inverse_consistency")
class InverseConsistencyLoss(nn.Module):
    """MSE between the re-hazed image I_rec = J_ret t + a (1 - t) and the hazy input I."""

    def forward(self, rehazed: torch.Tensor, hazy: torch.Tensor) -> torch.Tensor:
        return (rehazed - hazy).pow(2).mean()
