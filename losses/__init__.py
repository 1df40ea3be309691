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

LOSSES = Registry("loss", package=__name__, variable="LOSSES")  # finds the @LOSSES.register decorators


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name``."""
    return LOSSES.build(name, **kwargs)


def list_losses() -> list[str]:
    """Names of every registered loss."""
    return LOSSES.names()
