"""What lets the official code run unmodified on the CPU, without downloads or TensorBoard files."""
from __future__ import annotations

from typing import Any


def install_cpu_shims() -> None:
    """Make the official code's CUDA placement calls no-ops on a CPU-only machine (no file edited)."""
    import torch
    import torch.nn as nn

    if torch.cuda.is_available():
        return
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    module_to = nn.Module.to

    def to(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return module_to(self, *args, **kwargs)

    nn.Module.to = to  # type: ignore[method-assign]


class ScalarRecorder:
    """Stands in for the official SummaryWriter: keeps the scalars, writes nothing."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.rows.append((tag, float(value), int(step)))

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def loader_without_workers(cls: Any, *args: Any, **kwargs: Any) -> Any:
    kwargs["num_workers"] = 0
    kwargs["pin_memory"] = False
    return cls(*args, **kwargs)
