"""Networks and their registry.

Every network maps a ``(B, 3, H, W)`` tensor in [0, 1] to the same shape. A network that needs
H and W divisible by ``k`` sets the class attribute ``size_multiple = k`` and the framework pads
(reflect) and crops around it; networks that pad internally keep ``size_multiple = 1``.

Adding a network: one file in ``models/`` whose class is decorated with
``@NETWORKS.register("Name")``. The registry finds it by reading the modules of ``models/``
(nothing is imported until the name is asked for).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from foundation.errors import UserError
from foundation.registry import Registry, UnknownNameError

NETWORKS = Registry("network", package=__name__, variable="NETWORKS")


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` (case-insensitive) with the paper's defaults."""
    return NETWORKS.build(name, **kwargs)


def list_networks() -> list[str]:
    """Names of every registered network."""
    return NETWORKS.names()


def network_name(name: str) -> str:
    """Canonical display name for ``name`` (resolves case and aliases)."""
    return NETWORKS.canonical_name(name)


__all__ = ["NETWORKS", "build_network", "list_networks", "network_name", "UserError", "UnknownNameError"]
