"""MIRNet-v2 (Zamir et al., "Learning Enriched Features for Fast Image Restoration and
Enhancement", TPAMI 2022), the MIRNet variant SSLL / CMT train as an LLIE backbone.

Structure: 3x3 conv in -> four recursive residual groups (RRGs) -> 3x3 conv out + input image.
Each RRG holds ``n_MRB`` multi-scale residual blocks (MRBs) and a 3x3 conv, with a residual.
An MRB works on three scales (``n_feat``, ``n_feat*chan_factor`` at 1/2, ``n_feat*chan_factor**2``
at 1/4) and runs two rounds of "residual context block per scale, then fuse coarse into fine
with selective kernel feature fusion (SKFF)". Both rounds reuse the *same* RCB and SKFF modules
(weight sharing, as in the official code); only the upsampling layers are separate per round.

Quirks kept from the official implementation (swz30/MIRNetv2, ``mirnet_v2_arch.py``):
* the four RRGs are hard-wired with conv groups 1, 2, 4, 4; ``n_RRG``, ``height``, ``width`` and
  ``scale`` are accepted but have no effect;
* ``bias`` only reaches the RCB / context-block convs, the MRB and RRG output convs and the
  network's in/out convs; the resampling and SKFF convs never have a bias, and bilinear
  upsampling always uses ``align_corners=False``;
* channel counts are truncated with ``int()`` exactly as upstream, so only some
  (``n_feat``, ``chan_factor``) pairs are valid (checked in the constructor);
* downsampling is 2x2 average pooling with ``ceil_mode=True`` and ``count_include_pad=False``
  followed by a 1x1 conv; upsampling is a 1x1 conv followed by bilinear x2. H and W therefore
  have to be multiples of 4 (``size_multiple = 4``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models import NETWORKS
from models.grad_checkpoint import CheckpointedSequential

__all__ = ["MIRNetV2"]

_SLOPE = 0.2  # LeakyReLU negative slope used throughout


class SKFF(nn.Module):
    """Selective kernel feature fusion of ``height`` same-shaped inputs.

    The inputs are summed, globally average-pooled and squeezed to ``d = max(C // reduction, 4)``
    channels; one 1x1 conv per input expands back to C and a softmax across the inputs gives
    per-channel weights for a weighted sum.
    """

    def __init__(self, in_channels: int, height: int = 3, reduction: int = 8, bias: bool = False) -> None:
        super().__init__()
        self.height = height
        d = max(int(in_channels / reduction), 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(in_channels, d, 1, bias=bias), nn.LeakyReLU(_SLOPE))
        self.fcs = nn.ModuleList(nn.Conv2d(d, in_channels, 1, bias=bias) for _ in range(height))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(feats, dim=1)                    # (B, height, C, H, W)
        squeezed = self.conv_du(self.avg_pool(stacked.sum(dim=1)))
        logits = torch.stack([fc(squeezed) for fc in self.fcs], dim=1)  # (B, height, C, 1, 1)
        return (stacked * logits.softmax(dim=1)).sum(dim=1)


class ContextBlock(nn.Module):
    """GCNet-style global context: attention-pooled feature vector, transformed, added back."""

    def __init__(self, n_feat: int, bias: bool = False) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(n_feat, 1, kernel_size=1, bias=bias)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # one attention weight per position, normalised over all H*W positions
        weights = self.conv_mask(x).view(b, 1, h * w).softmax(dim=-1)
        # (B, 1, C, HW) @ (B, 1, HW, 1): the same batched product the official code uses
        context = torch.matmul(x.view(b, 1, c, h * w), weights.unsqueeze(-1)).view(b, c, 1, 1)
        return x + self.channel_add_conv(context)


class RCB(nn.Module):
    """Residual context block: conv -> LeakyReLU -> conv -> context block -> LeakyReLU, + input."""

    def __init__(self, n_feat: int, bias: bool = False, groups: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat, 3, padding=1, bias=bias, groups=groups),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(n_feat, n_feat, 3, padding=1, bias=bias, groups=groups),
        )
        self.act = nn.LeakyReLU(_SLOPE)
        self.gcnet = ContextBlock(n_feat, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gcnet(self.body(x))) + x


class Down(nn.Module):
    """Halve the resolution (2x2 average pool, ceil mode, padding excluded), then a 1x1 conv
    from ``in_channels`` to ``int(in_channels * chan_factor)``."""

    def __init__(self, in_channels: int, chan_factor: float) -> None:
        super().__init__()
        self.bot = nn.Sequential(
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(in_channels, int(in_channels * chan_factor), 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bot(x)


class Up(nn.Module):
    """1x1 conv from ``in_channels`` to ``int(in_channels // chan_factor)``, then bilinear x2."""

    def __init__(self, in_channels: int, chan_factor: float) -> None:
        super().__init__()
        self.bot = nn.Sequential(
            nn.Conv2d(in_channels, int(in_channels // chan_factor), 1, bias=False),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bot(x)


class DownSample(nn.Module):
    """One 2x :class:`Down` step (kept as a wrapper for the official state-dict layout)."""

    def __init__(self, in_channels: int, chan_factor: float) -> None:
        super().__init__()
        self.body = nn.Sequential(Down(in_channels, chan_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpSample(nn.Module):
    """One 2x :class:`Up` step (kept as a wrapper for the official state-dict layout)."""

    def __init__(self, in_channels: int, chan_factor: float) -> None:
        super().__init__()
        self.body = nn.Sequential(Up(in_channels, chan_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _scale_channels(n_feat: int, chan_factor: float) -> tuple[int, int, int]:
    """Channels of the full, 1/2 and 1/4 scale streams, truncated as upstream does."""
    return n_feat, int(n_feat * chan_factor), int(n_feat * chan_factor ** 2)


class MRB(nn.Module):
    """Multi-scale residual block: three scales, two rounds of RCB + SKFF with shared weights."""

    def __init__(self, n_feat: int, chan_factor: float, bias: bool, groups: int) -> None:
        super().__init__()
        top, mid, bot = _scale_channels(n_feat, chan_factor)

        self.dau_top = RCB(top, bias=bias, groups=groups)
        self.dau_mid = RCB(mid, bias=bias, groups=groups)
        self.dau_bot = RCB(bot, bias=bias, groups=groups)

        self.down2 = DownSample(top, chan_factor)
        self.down4 = nn.Sequential(DownSample(top, chan_factor), DownSample(mid, chan_factor))

        self.up21_1 = UpSample(mid, chan_factor)
        self.up21_2 = UpSample(mid, chan_factor)
        self.up32_1 = UpSample(bot, chan_factor)
        self.up32_2 = UpSample(bot, chan_factor)

        self.conv_out = nn.Conv2d(top, top, kernel_size=1, bias=bias)

        self.skff_top = SKFF(top, height=2)
        self.skff_mid = SKFF(mid, height=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_top = x
        x_mid = self.down2(x)
        x_bot = self.down4(x)
        # two rounds through the same RCBs and SKFFs; each round has its own upsamplers
        for up32, up21 in ((self.up32_1, self.up21_1), (self.up32_2, self.up21_2)):
            x_top = self.dau_top(x_top)
            x_mid = self.dau_mid(x_mid)
            x_bot = self.dau_bot(x_bot)
            x_mid = self.skff_mid([x_mid, up32(x_bot)])
            x_top = self.skff_top([x_top, up21(x_mid)])
        return self.conv_out(x_top) + x


class RRG(nn.Module):
    """Recursive residual group: ``n_MRB`` MRBs and a 3x3 conv, plus the group's input."""

    def __init__(self, n_feat: int, n_MRB: int, chan_factor: float, bias: bool = False, groups: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = [MRB(n_feat, chan_factor, bias, groups) for _ in range(n_MRB)]
        blocks.append(nn.Conv2d(n_feat, n_feat, 3, padding=1, bias=bias))
        self.body = CheckpointedSequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


# conv groups of the four RRGs, fixed in the official network regardless of n_RRG
_RRG_GROUPS = (1, 2, 4, 4)


@NETWORKS.register("MIRNet", aliases=("MIRNetv2", "MIRNet_v2"))
class MIRNetV2(nn.Module):
    """MIRNet-v2; defaults are the official LOL configuration (5,858,560 parameters).

    Args:
        inp_channels: input image channels.
        out_channels: output image channels (must equal ``inp_channels`` unless
            ``task='defocus_deblurring'``, because the input is added to the output).
        n_feat: channels of the full-resolution stream.
        chan_factor: channel growth per 2x downsampling (1.5 -> 80 / 120 / 180).
        n_RRG: accepted for config compatibility; the official net always builds 4 RRGs.
        n_MRB: MRBs per RRG.
        height: accepted, unused (the MRB fuses 2 inputs per SKFF).
        width: accepted, unused.
        scale: accepted, unused.
        bias: bias in the RCB, context-block and output convs (not in resampling/SKFF convs).
        task: ``'defocus_deblurring'`` adds the shallow features before the output conv
            instead of adding the input image after it; anything else uses the image residual.
    """

    size_multiple: int = 4
    supports_grad_checkpoint: bool = True  # its blocks are CheckpointedSequential
    unused_parameters: tuple[str, ...] = ()

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, n_feat: int = 80,
                 chan_factor: float = 1.5, n_RRG: int = 4, n_MRB: int = 2, height: int = 3,
                 width: int = 2, scale: int = 1, bias: bool = False, task: str | None = None) -> None:
        super().__init__()
        _check_channels(n_feat, chan_factor)
        if task != "defocus_deblurring" and inp_channels != out_channels:
            raise ValueError(f"MIRNet adds its input to the output, so out_channels ({out_channels}) "
                             f"must equal inp_channels ({inp_channels})")
        self.task = task
        self.conv_in = nn.Conv2d(inp_channels, n_feat, 3, padding=1, bias=bias)
        self.body = nn.Sequential(*(RRG(n_feat, n_MRB, chan_factor, bias, groups=g) for g in _RRG_GROUPS))
        self.conv_out = nn.Conv2d(n_feat, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_in(x)
        deep = self.body(shallow)
        if self.task == "defocus_deblurring":
            return self.conv_out(deep + shallow)
        return self.conv_out(deep) + x


def _check_channels(n_feat: int, chan_factor: float) -> None:
    """Reject (n_feat, chan_factor) pairs the official network cannot build or run.

    The resampling convs must map each scale's channels onto the neighbouring scale's, and
    every scale's channels must be divisible by the largest conv group (4).
    """
    top, mid, bot = _scale_channels(n_feat, chan_factor)
    problems = []
    if int(top * chan_factor) != mid or int(mid * chan_factor) != bot:
        problems.append(f"downsampling gives {int(top * chan_factor)}/{int(mid * chan_factor)} channels")
    if int(mid // chan_factor) != top or int(bot // chan_factor) != mid:
        problems.append(f"upsampling gives {int(bot // chan_factor)}/{int(mid // chan_factor)} channels")
    bad = [c for c in (top, mid, bot) if c % max(_RRG_GROUPS)]
    if bad:
        problems.append(f"{bad} not divisible by the conv groups {_RRG_GROUPS}")
    if problems:
        raise ValueError(f"MIRNet n_feat={n_feat}, chan_factor={chan_factor}: scale channels "
                         f"{top}/{mid}/{bot} are inconsistent ({'; '.join(problems)})")
