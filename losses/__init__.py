"""Loss functions and their registry.

``build_loss(name, **kwargs)`` returns an ``nn.Module``. Image losses are called as
``loss(output, target)``; ``pico`` as ``loss(anchor, positive, negative, mask=None)``; masked
losses take ``mask=`` too; the unpaired (semi-supervised) terms of ``losses/semi.py`` as
``loss(student_out, teacher_out, input, mask)``. Every loss returns a scalar.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from foundation.registry import Registry

_LOSS_MODULES = {
    "l1": "losses.pixel",
    "mse": "losses.pixel",
    "ssim": "losses.pixel",
    "lpips": "losses.pixel",
    "masked_l1": "losses.pixel",
    "pico": "losses.pico",
    "consistency": "losses.semi",
    "pico_unpaired": "losses.semi",
    "chromaticity": "losses.dehaze",
    "saturation": "losses.dehaze",
    "inverse_consistency": "losses.dehaze",
}

LOSSES = Registry("loss", lazy=_LOSS_MODULES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name``."""
    return LOSSES.build(name, **kwargs)


def list_losses() -> list[str]:
    """Names of every registered loss."""
    return LOSSES.names()
