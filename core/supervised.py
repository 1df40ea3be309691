"""Supervised training on paired images: the paper's baselines and the first ICEML-free demo."""
from __future__ import annotations

from typing import Any

import torch

from core import TRAINERS
from core.trainer import BaseTrainer
from foundation.errors import UserError


def weighted_image_losses(losses: dict[str, torch.nn.Module], weights: dict[str, float], output: torch.Tensor,
                          target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each configured image loss times its weight, keyed by name."""
    return {name: weights[name] * fn(output, target) for name, fn in losses.items()}


@TRAINERS.register("supervised")
class SupervisedTrainer(BaseTrainer):
    """Minimise the configured losses (e.g. (1 - SSIM) + LPIPS) between clamp(student(lq)) and gt."""

    def build_losses(self) -> dict[str, torch.nn.Module]:
        losses = super().build_losses()
        if not losses:
            raise UserError("config key 'losses' is empty: name at least one loss (e.g. l1, ssim, lpips)")
        return losses

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        lq, gt = self.to_input(batch["lq"]), batch["gt"]
        out = self.clamp_output(self.wrapped["student"](lq))
        terms = weighted_image_losses(self.losses, self.loss_weights, out.float(), gt)
        self.backward(sum(terms.values()))
        return terms
