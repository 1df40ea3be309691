"""The PICo (Pixel Intermediate Contrastive) loss of the SSLL paper (spec ssll.md §4).

For each sample, with anchor ``a``, positive ``p``, negative ``n`` and an optional mask M:

    d_p = sum(M |a - p|) / N_M,   d_n = sum(M |a - n|) / N_M     (N_M counts channels)
    phi(d) = 1 / (d + 0.5) - 1                                   (distance -> similarity)
    PICo = mean_b softplus(gamma * (phi(d_n) + margin - phi(d_p)))

It is low when the anchor is closer to the positive than to the negative by the margin.
Only the anchor receives gradients: positive and negative are detached.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from losses import LOSSES
from losses.pixel import masked_mean_abs


def similarity(d: torch.Tensor) -> torch.Tensor:
    """The reciprocal range mapping phi(d) = 1/(d + 0.5) - 1 (phi(0)=1, phi(0.5)=0)."""
    return 1.0 / (d + 0.5) - 1.0


def pico_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
              mask: torch.Tensor | None = None, gamma: float = 10.0, margin: float = 0.0) -> torch.Tensor:
    """PICo loss as a scalar (see module docstring)."""
    d_pos = masked_mean_abs(anchor, positive.detach(), mask)
    d_neg = masked_mean_abs(anchor, negative.detach(), mask)
    return F.softplus(gamma * (similarity(d_neg) + margin - similarity(d_pos))).mean()


@LOSSES.register("pico")
class PICoLoss(nn.Module):
    """Module form of :func:`pico_loss`; call as ``loss(anchor, positive, negative, mask=None)``.

    Args:
        gamma: scale (inverse temperature) of the logistic loss.
        margin: margin m added to the negative's similarity.
    """

    def __init__(self, gamma: float = 10.0, margin: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.margin = float(gamma), float(margin)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return pico_loss(anchor, positive, negative, mask, self.gamma, self.margin)
