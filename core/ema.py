"""Exponential moving average of a network's parameters (the Mean-Teacher teacher)."""
from __future__ import annotations

import torch
import torch.nn as nn


def ema_decay_at(step: int, decay: float) -> float:
    """Bias-corrected decay min(1 - 1/(step + 1), decay), as in Mean Teacher: the teacher follows
    the student closely in the first steps, then settles at ``decay``."""
    return min(1.0 - 1.0 / (step + 1), decay)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, decay: float) -> float:
    """theta_t <- a * theta_t + (1 - a) * theta_s over parameters (buffers are copied); returns a."""
    alpha = ema_decay_at(step, decay)
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, alpha)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - alpha)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        tb.copy_(sb)
    return alpha
