"""HVI-CIDNet (Yan et al., CVPR 2025) as used by SSLL / CMT for low-light enhancement.

The network works in the *HVI* colour space (Fediory/HVI-CIDNet) instead of RGB:

* **RGB -> HVI** (:meth:`RGB_HVI.HVIT`): with I = max(R, G, B), the HSV hue ``h`` and
  saturation ``s`` become a point in the plane, ``H = C_k s cos(2 pi h)`` and
  ``V = C_k s sin(2 pi h)``, scaled by the intensity-collapse factor
  ``C_k = (sin(pi I / 2) + eps) ** k``. This collapses the colour plane towards the origin in
  dark regions, where hue is mostly noise. ``k`` (``trans.density_k``, initialised to 0.2) is
  learned and receives its gradient through this forward transform only.
* **HVI -> RGB** (:meth:`RGB_HVI.PHVIT`): clamps, divides ``C_k`` back out (with ``k`` frozen
  at the value of the last forward transform, so no gradient reaches ``k`` here) and applies
  the textbook HSV -> RGB formula. The output is bounded to [0, 1] unless ``gated2`` is set.

Between the two transforms, two four-level U-Nets run side by side: one on the full HVI map
(predicting the H, V residual) and one on the intensity I alone (predicting the I residual).
At every level except the outermost, the branches exchange information through *lightweight
cross attention* blocks (LCA): transposed (channel) attention whose query comes from the
branch itself and whose keys/values come from the other branch, followed by an intensity
enhancement layer (IEL, a tanh-gated depthwise feed-forward).

The official forward has a few irregularities, reproduced here because checkpoints and results
depend on them:

* the level-2 LCA outputs are used only as skip connections; the next downsampling takes the
  tensors from *before* those LCAs;
* in the decoder, the official code computes ``I_LCA5`` and throws the result away; the I
  branch's level-2 upsampling starts from the pre-LCA tensor. ``I_LCA5`` is kept (its
  parameters are in the state dict and the parameter count) but not run here, which changes
  no output or gradient; its parameters never receive a gradient and are listed in
  ``unused_parameters``;
* ``HV_LCA`` has no residual connection around its IEL step (``I_LCA`` has one);
* each LCA has one LayerNorm, applied to x, to y and again before the IEL.

The defaults are the configuration SSLL / CMT build with plain ``CIDNet()`` (1,975,569
parameters). Three bilinear x0.5 resamplings need H and W divisible by 8
(``size_multiple = 8``); the framework pads and crops. Module attribute names follow the
official code so its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models import NETWORKS

__all__ = ["CIDNet", "RGB_HVI"]

_EPS = 1e-8  # the colour transforms' guard against 0/0 and 0**k
_PI = math.pi


class RGB_HVI(nn.Module):
    """The learnable RGB <-> HVI colour transform.

    Attributes (plain attributes, as in the official code, so evaluation scripts can flip them):
        gated: multiply the recovered saturation by ``alpha_s`` before clamping (the official
            LOLv1 evaluation setting).
        gated2: multiply the recovered RGB image by ``alpha`` (official LOLv2-real evaluation).
        alpha: output scale used when ``gated2`` is set.
        alpha_s: saturation scale used when ``gated`` is set.
        this_k: ``density_k`` as it was at the last forward transform, detached; the inverse
            transform uses it (``None`` until the first forward transform).
    """

    def __init__(self, gated: bool = False, gated2: bool = False, alpha: float = 1.0,
                 alpha_s: float = 1.3) -> None:
        super().__init__()
        # exponent of the intensity-collapse factor (the reciprocal of the paper's k)
        self.density_k = nn.Parameter(torch.full([1], 0.2))
        self.gated = gated
        self.gated2 = gated2
        self.alpha = alpha
        self.alpha_s = alpha_s
        self.this_k: torch.Tensor | None = None

    @staticmethod
    def _collapse(intensity: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Intensity-collapse factor ``(sin(pi I / 2) + eps) ** k``."""
        return ((intensity * 0.5 * _PI).sin() + _EPS).pow(k)

    def HVIT(self, img: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> HVI (B, 3, H, W); differentiable in ``density_k``.

        Hue ties are resolved red > green > blue (the official assignment order B, G, R);
        hue is 0 for grey pixels and saturation is 0 for black ones.
        """
        red, green, blue = img[:, 0], img[:, 1], img[:, 2]
        value = img.max(dim=1).values
        img_min = img.min(dim=1).values
        spread = value - img_min + _EPS

        # hue in sextants [0, 6): start from "blue is the maximum", later channels override
        hue = 4.0 + (red - green) / spread
        hue = torch.where(green == value, 2.0 + (blue - red) / spread, hue)
        hue = torch.where(red == value, ((green - blue) / spread) % 6, hue)
        hue = torch.where(img_min == value, torch.zeros_like(hue), hue)
        hue = (hue / 6.0).unsqueeze(1)

        saturation = (value - img_min) / (value + _EPS)
        saturation = torch.where(value == 0, torch.zeros_like(saturation), saturation).unsqueeze(1)
        value = value.unsqueeze(1)

        k = self.density_k
        # kept as a tensor (no .item()): avoids a host-device sync, same numbers
        self.this_k = k.detach().clone()
        radius = self._collapse(value, k) * saturation
        angle = 2.0 * _PI * hue
        return torch.cat([radius * angle.cos(), radius * angle.sin(), value], dim=1)

    def PHVIT(self, img: torch.Tensor) -> torch.Tensor:
        """HVI (B, 3, H, W) -> RGB (B, 3, H, W) in [0, 1] (scaled by ``alpha`` if ``gated2``).

        ``k`` is the detached value of the last :meth:`HVIT` call (the current ``density_k``
        if there was none), so no gradient reaches ``density_k`` through the inverse.
        """
        k = self.this_k if self.this_k is not None else self.density_k.detach()
        H = img[:, 0].clamp(-1, 1)
        V = img[:, 1].clamp(-1, 1)
        v = img[:, 2].clamp(0, 1)

        collapse = self._collapse(v, k)
        H = (H / (collapse + _EPS)).clamp(-1, 1)
        V = (V / (collapse + _EPS)).clamp(-1, 1)
        h = torch.atan2(V + _EPS, H + _EPS) / (2 * _PI)
        h = h % 1
        s = torch.sqrt(H ** 2 + V ** 2 + _EPS)
        if self.gated:
            s = s * self.alpha_s
        s = s.clamp(0, 1)
        v = v.clamp(0, 1)

        sextant = torch.floor(h * 6.0)
        f = h * 6.0 - sextant
        p = v * (1. - s)
        q = v * (1. - (f * s))
        t = v * (1. - ((1. - f) * s))
        # (r, g, b) in each sextant of the hue circle. A pixel whose hue rounds to exactly 1.0
        # (sextant 6) matches none of them and stays black, as in the official code.
        choices = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        rgb = torch.zeros_like(img)
        sextant = sextant.unsqueeze(1)
        for index, channels in enumerate(choices):
            rgb = torch.where(sextant == index, torch.stack(channels, dim=1), rgb)
        if self.gated2:
            rgb = rgb * self.alpha
        return rgb


class LayerNorm(nn.Module):
    """Per-pixel LayerNorm over the channels of a (B, C, H, W) map (biased variance, eps 1e-6)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class NormDownsample(nn.Module):
    """3x3 conv ``in_ch -> out_ch``, bilinear x``scale`` (align_corners=True), PReLU, optional LayerNorm."""

    def __init__(self, in_ch: int, out_ch: int, scale: float = 0.5, use_norm: bool = False) -> None:
        super().__init__()
        self.use_norm = use_norm
        if use_norm:
            self.norm = LayerNorm(out_ch)
        self.prelu = nn.PReLU()
        self.down = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False),
            nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.down(x))
        return self.norm(x) if self.use_norm else x


class NormUpsample(nn.Module):
    """3x3 conv ``in_ch -> out_ch`` and bilinear x``scale``, concat with the skip, 1x1 conv
    ``2 out_ch -> out_ch``, PReLU, optional LayerNorm."""

    def __init__(self, in_ch: int, out_ch: int, scale: float = 2, use_norm: bool = False) -> None:
        super().__init__()
        self.use_norm = use_norm
        if use_norm:
            self.norm = LayerNorm(out_ch)
        self.prelu = nn.PReLU()
        self.up_scale = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False),
            nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=True),
        )
        self.up = nn.Conv2d(out_ch * 2, out_ch, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(torch.cat([self.up_scale(x), skip], dim=1))
        x = self.prelu(x)
        return self.norm(x) if self.use_norm else x


class CAB(nn.Module):
    """Cross attention block: transposed (channel x channel) attention, query from ``x``,
    keys and values from ``y``.

    Per head, the L2-normalised query and key maps (``dim/num_heads`` rows of ``H*W`` pixels)
    give the attention matrix, scaled by a learnable per-head temperature.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CIDNet attention: {dim} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        q, k, v = (rearrange(t, "b (head c) h w -> b head c (h w)", head=self.num_heads) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        out = rearrange(out, "b head c (h w) -> b (head c) h w", head=self.num_heads, h=height, w=width)
        return self.project_out(out)


class IEL(nn.Module):
    """Intensity enhancement layer: 1x1 expansion to two halves of ``int(dim * 2.66)`` channels,
    depthwise 3x3, each half refined by ``x + tanh(dwconv(x))``, product of the halves, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.dwconv1 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=bias)
        self.dwconv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        x1 = torch.tanh(self.dwconv1(x1)) + x1
        x2 = torch.tanh(self.dwconv2(x2)) + x2
        return self.project_out(x1 * x2)


class HV_LCA(nn.Module):
    """LCA of the HV branch: ``x + CAB(LN x, LN y)``, then ``IEL(LN x)`` with *no* residual."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.gdfn = IEL(dim)
        self.norm = LayerNorm(dim)  # one instance for x, y and the IEL input
        self.ffn = CAB(dim, num_heads, bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.ffn(self.norm(x), self.norm(y))
        return self.gdfn(self.norm(x))


class I_LCA(nn.Module):
    """LCA of the intensity branch: ``x + CAB(LN x, LN y)``, then ``x + IEL(LN x)``."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)  # one instance for x, y and the IEL input
        self.gdfn = IEL(dim)
        self.ffn = CAB(dim, num_heads, bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.ffn(self.norm(x), self.norm(y))
        return x + self.gdfn(self.norm(x))


class EdgePad1(nn.Module):
    """Replication padding by one pixel, written as concatenated edge slices.

    Same values (and no parameters) as the official ``nn.ReplicationPad2d(1)``; the slice form
    also compiles (``torch.compile`` fails on ``replication_pad2d_backward``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
        return torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)


def _stem(in_ch: int, out_ch: int) -> nn.Sequential:
    """Replication-pad by 1, then a bias-free 3x3 conv without padding."""
    return nn.Sequential(EdgePad1(), nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=0, bias=False))


@NETWORKS.register("CIDNet")
class CIDNet(nn.Module):
    """HVI-CIDNet; defaults are the official / SSLL configuration (1,975,569 parameters).

    Args:
        channels: feature channels at full resolution and at 1/2, 1/4, 1/8 (four values).
        heads: attention heads per level (four values; the first level has no attention, so
            ``heads[0]`` is unused, as in the official code).
        norm: add a LayerNorm after every down/upsampling block.
        gated: inverse transform scales the saturation by ``alpha_s`` (official LOLv1 eval).
        gated2: inverse transform scales the RGB output by ``alpha`` (official LOLv2-real eval).
        alpha: RGB scale for ``gated2``.
        alpha_s: saturation scale for ``gated``.

    The four inverse-transform options live on ``self.trans`` (``net.trans.gated = True`` works
    as in the official evaluation scripts); the constructor only sets their initial values.
    """

    size_multiple: int = 8
    unused_parameters: tuple[str, ...] = ("I_LCA5.",)

    def __init__(self, channels: Sequence[int] = (36, 36, 72, 144), heads: Sequence[int] = (1, 2, 4, 8),
                 norm: bool = False, gated: bool = False, gated2: bool = False, alpha: float = 1.0,
                 alpha_s: float = 1.3) -> None:
        super().__init__()
        if len(channels) != 4 or len(heads) != 4:
            raise ValueError(f"CIDNet needs four channels and four heads, got {list(channels)} and {list(heads)}")
        ch1, ch2, ch3, ch4 = (int(c) for c in channels)
        _, head2, head3, head4 = (int(h) for h in heads)

        # HV branch (input: the full HVI map; output: the H, V residual)
        self.HVE_block0 = _stem(3, ch1)
        self.HVE_block1 = NormDownsample(ch1, ch2, use_norm=norm)
        self.HVE_block2 = NormDownsample(ch2, ch3, use_norm=norm)
        self.HVE_block3 = NormDownsample(ch3, ch4, use_norm=norm)
        self.HVD_block3 = NormUpsample(ch4, ch3, use_norm=norm)
        self.HVD_block2 = NormUpsample(ch3, ch2, use_norm=norm)
        self.HVD_block1 = NormUpsample(ch2, ch1, use_norm=norm)
        self.HVD_block0 = _stem(ch1, 2)

        # I branch (input and output: the intensity channel)
        self.IE_block0 = _stem(1, ch1)
        self.IE_block1 = NormDownsample(ch1, ch2, use_norm=norm)
        self.IE_block2 = NormDownsample(ch2, ch3, use_norm=norm)
        self.IE_block3 = NormDownsample(ch3, ch4, use_norm=norm)
        self.ID_block3 = NormUpsample(ch4, ch3, use_norm=norm)
        self.ID_block2 = NormUpsample(ch3, ch2, use_norm=norm)
        self.ID_block1 = NormUpsample(ch2, ch1, use_norm=norm)
        self.ID_block0 = _stem(ch1, 1)

        self.HV_LCA1 = HV_LCA(ch2, head2)
        self.HV_LCA2 = HV_LCA(ch3, head3)
        self.HV_LCA3 = HV_LCA(ch4, head4)
        self.HV_LCA4 = HV_LCA(ch4, head4)
        self.HV_LCA5 = HV_LCA(ch3, head3)
        self.HV_LCA6 = HV_LCA(ch2, head2)

        self.I_LCA1 = I_LCA(ch2, head2)
        self.I_LCA2 = I_LCA(ch3, head3)
        self.I_LCA3 = I_LCA(ch4, head4)
        self.I_LCA4 = I_LCA(ch4, head4)
        self.I_LCA5 = I_LCA(ch3, head3)  # kept for checkpoint compatibility; its output is never used
        self.I_LCA6 = I_LCA(ch2, head2)

        self.trans = RGB_HVI(gated=gated, gated2=gated2, alpha=alpha, alpha_s=alpha_s)

    def HVIT(self, x: torch.Tensor) -> torch.Tensor:
        """The HVI map of an RGB image (e.g. for a loss in HVI space)."""
        return self.trans.HVIT(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hvi = self.trans.HVIT(x)
        intensity = hvi[:, 2:3]

        # encoder, level 0 -> 1
        i_skip0 = self.IE_block0(intensity)
        hv_skip0 = self.HVE_block0(hvi)
        i1 = self.IE_block1(i_skip0)
        hv1 = self.HVE_block1(hv_skip0)

        # level 1: cross attention, then down
        i_skip1 = self.I_LCA1(i1, hv1)
        hv_skip1 = self.HV_LCA1(hv1, i1)
        i2 = self.IE_block2(i_skip1)
        hv2 = self.HVE_block2(hv_skip1)

        # level 2: the LCA outputs are only skips; the downsampling takes the pre-LCA tensors
        i_skip2 = self.I_LCA2(i2, hv2)
        hv_skip2 = self.HV_LCA2(hv2, i2)
        i3 = self.IE_block3(i2)
        hv3 = self.HVE_block3(hv2)

        # bottleneck (level 3): two LCA pairs
        i4 = self.I_LCA3(i3, hv3)
        hv4 = self.HV_LCA3(hv3, i3)
        i_dec4 = self.I_LCA4(i4, hv4)
        hv_dec4 = self.HV_LCA4(hv4, i4)

        # decoder, level 3 -> 2. The official forward also runs I_LCA5(i_dec3, hv_dec3) here and
        # discards the result; skipping it changes neither the output nor any gradient.
        hv_dec3 = self.HVD_block3(hv_dec4, hv_skip2)
        i_dec3 = self.ID_block3(i_dec4, i_skip2)
        hv_dec3 = self.HV_LCA5(hv_dec3, i_dec3)

        # level 2 -> 1
        hv_dec2 = self.HVD_block2(hv_dec3, hv_skip1)
        i_dec2 = self.ID_block2(i_dec3, i_skip1)

        # level 1: cross attention, then up to full resolution and the output convs
        i_dec1 = self.I_LCA6(i_dec2, hv_dec2)
        hv_dec1 = self.HV_LCA6(hv_dec2, i_dec2)
        i_out = self.ID_block0(self.ID_block1(i_dec1, i_skip0))
        hv_out = self.HVD_block0(self.HVD_block1(hv_dec1, hv_skip0))

        return self.trans.PHVIT(torch.cat([hv_out, i_out], dim=1) + hvi)
