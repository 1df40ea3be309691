"""Unpaired (semi-supervised) terms: losses called as ``loss(student_out, teacher_out, input, mask)``.

They are listed in ``ssll.unpaired_losses`` and computed on the unpaired region ``mask`` of the
CutMix image; the Mean-Teacher trainer multiplies each by its weight and the ramp w(e). A new
unpaired term is one registered subclass of :class:`UnpairedLoss` (here or in its own module of
``losses/``) and one line of YAML; the contract tests enrol every such class.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from losses import LOSSES
from losses.pico import pico_loss
from losses.pixel import masked_mean_abs


def unpaired_loss_names() -> list[str]:
    """Registered losses that follow the unpaired contract (subclasses of :class:`UnpairedLoss`)."""
    return [n for n in LOSSES.names() if isinstance(LOSSES.get(n), type) and issubclass(LOSSES.get(n), UnpairedLoss)]


def brightness_adjust(x_c: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """BA(x_c) = x_c * mean(teacher output) / mean(x_c), means per image over C, H, W (no clamp)."""
    num = teacher_out.flatten(1).mean(1)
    den = x_c.flatten(1).mean(1).clamp_min(1e-8)
    return x_c * (num / den).view(-1, 1, 1, 1)


class UnpairedLoss(nn.Module):
    """Base of the unpaired terms; only these may be listed in ``ssll.unpaired_losses``.

    Contract: ``forward(student_out, teacher_out, inputs, mask)`` returns a scalar; the teacher's
    output receives no gradient, and the student's output outside ``mask`` (1 = unpaired pixel)
    changes neither the value nor the gradient (tests/losses/test_losses.py checks every subclass).
    """


@LOSSES.register("consistency")
class ConsistencyLoss(UnpairedLoss):
    """L_con: masked L1 between the student's and the (detached) teacher's outputs, mean over the batch."""

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, inputs: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean_abs(student_out, teacher_out.detach(), mask).mean()


@LOSSES.register("pico_unpaired")
class UnpairedPICoLoss(UnpairedLoss):
    """L^u_ctr: PICo with the teacher output as positive and BA(input) as negative (spec ssll.md §4).

    Args:
        gamma: scale of the logistic loss.
        margin: margin added to the negative's similarity.
    """

    def __init__(self, gamma: float = 10.0, margin: float = 0.25) -> None:
        super().__init__()
        self.gamma, self.margin = float(gamma), float(margin)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, inputs: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        negative = brightness_adjust(inputs, teacher_out)
        return pico_loss(student_out, teacher_out, negative, mask, self.gamma, self.margin)
