"""LPIPS (AlexNet, v0.1) with offline weight lookup.

The ``lpips`` package ships its linear-layer weights but takes the AlexNet backbone from
torchvision's ImageNet checkpoint, which it would download. Nothing is downloaded here: the
backbone file ``alexnet-owt-7be5be79.pth`` is looked up, in order, at an explicit path, the
``LPIPS_ALEXNET_WEIGHTS`` environment variable, and ``$TORCH_HOME/hub/checkpoints/``. When it
is absent, :class:`LPIPSUnavailable` says which file to put where; LPIPS is then reported as
unavailable, never computed with random weights.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from foundation.errors import UserError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ENV_VAR = "LPIPS_ALEXNET_WEIGHTS"


class LPIPSUnavailable(UserError):
    """The AlexNet ImageNet weights LPIPS needs are not on this machine."""


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_alexnet_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the AlexNet ImageNet weights or raise LPIPSUnavailable with instructions."""
    candidates = []
    if path:
        candidates.append(Path(path))
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(hub_checkpoint_dir() / ALEXNET_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise LPIPSUnavailable(
        f"LPIPS unavailable: torchvision's AlexNet ImageNet weights '{ALEXNET_FILE}' were not found "
        f"(looked in: {', '.join(str(c) for c in candidates)}); copy that file to {hub_checkpoint_dir()} "
        f"or point {ENV_VAR} at it")


class LPIPSMetric(nn.Module):
    """LPIPS distance per image between (B, 3, H, W) tensors in [0, 1] (mapped to [-1, 1] inside).

    Args:
        net: backbone, only 'alex' (the papers' choice).
        weights: optional explicit path to the AlexNet file.
        official_range_bug: feed [0, 1] images unchanged, as the official SSLL training loss does
            (its LPIPS expects [-1, 1]); only for faithful reproduction of that training loss.
    """

    description = "LPIPS AlexNet v0.1 (lpips package), inputs mapped to [-1, 1]"

    def __init__(self, net: str = "alex", weights: str | None = None, official_range_bug: bool = False) -> None:
        super().__init__()
        if net != "alex":
            raise UserError(f"LPIPS backbone '{net}' is not supported; use 'alex'")
        path = find_alexnet_weights(weights)
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # pretrained=True loads only the linear heads shipped inside the lpips wheel;
            # pnet_rand=True keeps torchvision from downloading AlexNet (loaded from disk below)
            model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # e.g. an interrupted download: truncated or corrupt
            raise LPIPSUnavailable(f"{path}: cannot read the AlexNet weights (truncated or corrupt: "
                                   f"{exc.__class__.__name__}); replace the file") from None
        if not isinstance(state, dict):
            raise LPIPSUnavailable(f"{path}: not an AlexNet checkpoint (no state dict)")
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        loaded = 0
        for slice_ in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            for name, module in slice_.named_children():
                for pname, param in module.named_parameters(recurse=False):
                    key = f"{name}.{pname}"
                    if key not in features:
                        raise LPIPSUnavailable(f"{path}: not an AlexNet checkpoint (missing features.{key})")
                    param.data.copy_(features[key])
                    loaded += 1
        if loaded != 10:
            raise LPIPSUnavailable(f"{path}: expected 10 AlexNet feature tensors, loaded {loaded}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.official_range_bug = official_range_bug
        self.weights_path = str(path)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.official_range_bug:
            x, y = x * 2 - 1, y * 2 - 1
        return self.model(x.float(), y.float()).flatten()


def try_build_lpips(weights: str | None = None) -> tuple[LPIPSMetric | None, str | None]:
    """Build LPIPS if its weights exist; otherwise return (None, reason)."""
    try:
        return LPIPSMetric(weights=weights), None
    except LPIPSUnavailable as exc:
        return None, str(exc)
