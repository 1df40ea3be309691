"""Pixel, structural and perceptual losses on (B, 3, H, W) images in [0, 1]."""
from __future__ import annotations

import torch
import torch.nn as nn

from losses import LOSSES


@LOSSES.register("l1")
class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).abs().mean()


@LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).pow(2).mean()


@LOSSES.register("ssim")
class SSIMLoss(nn.Module):
    """1 - SSIM on RGB (11x11 Gaussian, sigma 1.5, data range 1), averaged over the batch.

    At the 192-px training crops this equals piq's ``SSIMLoss`` that the SSLL code trains with.
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from pytorch_msssim import ssim

        # SSIM's variance terms cancel catastrophically in 16-bit: always compute it in fp32
        with torch.autocast(device_type=output.device.type, enabled=False):
            return 1.0 - ssim(output.float(), target.float(), data_range=1.0, size_average=True)


@LOSSES.register("lpips")
class LPIPSLoss(nn.Module):
    """LPIPS (AlexNet v0.1) as a training loss; needs the AlexNet ImageNet weights on disk.

    Args:
        weights: explicit path to ``alexnet-owt-7be5be79.pth`` (else TORCH_HOME / env lookup).
        official_range_bug: feed [0, 1] images unchanged as the official SSLL code does.
    """

    def __init__(self, weights: str | None = None, official_range_bug: bool = False) -> None:
        super().__init__()
        from models.lpips import LPIPSMetric

        self.metric = LPIPSMetric(weights=weights, official_range_bug=official_range_bug)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=output.device.type, enabled=False):
            return self.metric(output.float(), target.float()).mean()


def masked_mean_abs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean |a - b| over the masked entries (channels counted), shape (B,)."""
    diff = (a - b).abs()
    if mask is None:
        return diff.flatten(1).mean(1)
    mask = mask.to(diff.dtype).expand_as(diff)
    return (diff * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


@LOSSES.register("masked_l1")
class MaskedL1Loss(nn.Module):
    """Per-sample masked mean L1 (channels counted in the normaliser), then the batch mean.

    The SSLL consistency loss between student and teacher on the unpaired region.
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean_abs(output, target, mask).mean()
