"""UNet as used by SSLL / CMT for low-light enhancement.

A five-level U-Net after milesial/Pytorch-UNet, modified by SSLL (eezkni/SSLL
``models/unet``): every 3x3 convolution has a bias, BatchNorm is replaced by a per-pixel
channel LayerNorm (Restormer "WithBias" style, eps 1e-5), and the input image is added to the
1x1 output convolution (global residual).

Any input size works: max-pooling floors odd sizes and every decoder step zero-pads the
upsampled map (centred) to the size of its skip connection, so ``size_multiple`` is 1.
Module attribute names follow the official code so its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import NETWORKS

__all__ = ["UNet"]


class _LayerNormWithBias(nn.Module):
    """LayerNorm over the last dimension with a learnable scale and shift (biased variance)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class ChannelLayerNorm(nn.Module):
    """Normalise each pixel's channel vector of a (B, C, H, W) map.

    The parameters live in ``body`` to match the official state-dict keys (``...body.weight``).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = _LayerNormWithBias(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels last, normalise, channels first again
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DoubleConv(nn.Module):
    """Two (3x3 conv with bias -> channel LayerNorm -> ReLU) stages."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=True),
            ChannelLayerNorm(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=True),
            ChannelLayerNorm(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max-pool (floor) followed by a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upsample x2, pad to the skip's size, concatenate [skip, up] and apply a DoubleConv.

    ``bilinear=False``: a 2x2 stride-2 transposed conv halves the channels.
    ``bilinear=True``: align-corners bilinear upsampling keeps the channels, and the DoubleConv
    uses ``in_channels // 2`` middle channels (milesial's light variant).
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = False) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh = skip.shape[-2] - x.shape[-2]
        dw = skip.shape[-1] - x.shape[-1]
        # centred zero padding; the odd pixel goes to the bottom/right
        x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Module):
    """1x1 convolution to the output channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@NETWORKS.register("UNet")
class UNet(nn.Module):
    """SSLL's U-Net: channels ``width * (1, 2, 4, 8, 16)``, output = 1x1 conv + input.

    Args:
        n_channels: input channels (3 for RGB).
        n_classes: output channels; must equal ``n_channels`` for the input residual.
        bilinear: upsample with bilinear interpolation instead of transposed convs (the
            deepest level and the decoder then use half the channels, as in milesial's code).
        width: base channel count (64 in the paper); small values give tiny demo/test models.
    """

    size_multiple: int = 1
    unused_parameters: tuple[str, ...] = ()

    def __init__(self, n_channels: int = 3, n_classes: int = 3, bilinear: bool = False,
                 width: int = 64) -> None:
        super().__init__()
        if n_classes != n_channels:
            raise ValueError(f"UNet adds its input to the output, so n_classes ({n_classes}) "
                             f"must equal n_channels ({n_channels})")
        self.n_channels = n_channels
        self.n_classes = n_classes
        self.bilinear = bilinear
        c1, c2, c3, c4, c5 = (width * m for m in (1, 2, 4, 8, 16))
        factor = 2 if bilinear else 1

        self.inc = DoubleConv(n_channels, c1)
        self.down1 = Down(c1, c2)
        self.down2 = Down(c2, c3)
        self.down3 = Down(c3, c4)
        self.down4 = Down(c4, c5 // factor)
        self.up1 = Up(c5, c4 // factor, bilinear)
        self.up2 = Up(c4, c3 // factor, bilinear)
        self.up3 = Up(c3, c2 // factor, bilinear)
        self.up4 = Up(c2, c1, bilinear)
        self.outc = OutConv(c1, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return self.outc(y) + x
