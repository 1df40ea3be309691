"""Gradient checkpointing for the heavy backbones: keep a block's input, recompute its activations in backward.

A network that supports it builds its repeated blocks as :class:`CheckpointedSequential` (an
``nn.Sequential``: its state-dict keys, and so the official checkpoints, are unchanged) and sets
the class attribute ``supports_grad_checkpoint = True``. :func:`set_grad_checkpoint` switches it
on (``train.grad_checkpoint`` in a config). The gradients are the same as without it; the
memory of the activations inside each block is traded for a second forward of that block
(BENCHMARKS.md, "Gradient checkpointing"). Without gradients (validation, EMA teachers,
inference) the blocks run as usual.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from foundation.errors import UserError


class CheckpointedSequential(nn.Sequential):
    """``nn.Sequential`` whose blocks, when :attr:`grad_checkpoint` is set and gradients are being
    recorded, are each run under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant)."""

    grad_checkpoint: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpoint and torch.is_grad_enabled()):
            return super().forward(x)
        for block in self:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def supports_grad_checkpoint(network: type | nn.Module) -> bool:
    """Whether a network class (or instance) declares gradient checkpointing."""
    return bool(getattr(network, "supports_grad_checkpoint", False))


def grad_checkpoint_problem(network: type | nn.Module) -> str | None:
    """Why ``train.grad_checkpoint`` cannot apply to a network class (or instance), or None.

    Such a network would use as much memory as before while the user counts on less."""
    if supports_grad_checkpoint(network):
        return None
    from models import NETWORKS

    able = [n for n in NETWORKS.names() if supports_grad_checkpoint(NETWORKS.get(n))]
    name = network.__name__ if isinstance(network, type) else type(network).__name__
    return (f"config key 'train.grad_checkpoint' is true but {name} does not support gradient checkpointing "
            f"(networks that do: {', '.join(able)}); set train.grad_checkpoint=false")


def set_grad_checkpoint(net: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch gradient checkpointing of ``net``'s blocks on or off; return ``net`` (an error for a
    network without support, see :func:`grad_checkpoint_problem`)."""
    problem = grad_checkpoint_problem(net) if enabled else None
    if problem:
        raise UserError(problem)
    for module in net.modules():
        if isinstance(module, CheckpointedSequential):
            module.grad_checkpoint = enabled
    return net
