"""Networks and their registry.

Every network maps a ``(B, 3, H, W)`` tensor in [0, 1] to the same shape. A network that needs
H and W divisible by ``k`` sets the class attribute ``size_multiple = k`` and the framework pads
(reflect) and crops around it; networks that pad internally keep ``size_multiple = 1``.

Adding a network: one file in ``models/`` decorated with ``@NETWORKS.register("Name")``, plus
one line in ``_NETWORK_MODULES`` below.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from foundation.errors import UserError
from foundation.registry import Registry, UnknownNameError

# display name -> module defining it (imported on first use)
_NETWORK_MODULES = {
    "UNet": "models.unet",
    "Restormer": "models.restormer",
    "NAFNet": "models.nafnet",
    "LLFormer": "models.llformer",
    "RetinexFormer": "models.retinexformer",
    "MIRNet": "models.mirnet_v2",
    "CIDNet": "models.cidnet",
    "RtxICE-Net": "models.iceml_nets",
    "ASMICE-Net": "models.iceml_nets",
}

NETWORKS = Registry("network", lazy=_NETWORK_MODULES, aliases={"MIRNetv2": "MIRNet", "MIRNet_v2": "MIRNet"})


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
