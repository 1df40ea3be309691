"""Restormer (Zamir et al., CVPR 2022) as used by SSLL / CMT for low-light enhancement.

A four-level U-shaped transformer (swz30/Restormer). Every block is
``x + MDTA(LN(x))`` followed by ``x + GDFN(LN(x))``:

* MDTA (multi-Dconv-head transposed attention) attends across *channels*: per head, the
  L2-normalised query and key maps (``C/heads`` rows of ``H*W`` pixels) give a
  ``(C/heads) x (C/heads)`` attention matrix, scaled by a learnable per-head temperature.
  Its cost and memory grow linearly with the number of pixels, so full images fit.
* GDFN (gated-Dconv feed-forward network) expands to ``int(C * ffn_expansion_factor)`` hidden
  channels twice over, mixes locally with a depthwise 3x3 convolution and gates one half with
  the GELU of the other.

Resolution changes use a 3x3 convolution followed by pixel-(un)shuffle. The decoder's first
level keeps the concatenated ``2 * dim`` channels (no 1x1 reduction) and uses ``heads[0]``, as
do the refinement blocks; the output convolution adds the input image back.

The defaults are the configuration SSLL / CMT build with plain ``Restormer()`` (26,126,644
parameters). Three 2x downsamplings need H and W divisible by 8 (``size_multiple = 8``); the
framework pads and crops. Module attribute names follow the official code so its checkpoints
load with ``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models import NETWORKS
from models.grad_checkpoint import CheckpointedSequential

__all__ = ["Restormer"]

_LAYERNORM_TYPES = ("WithBias", "BiasFree")


class WithBiasLayerNorm(nn.Module):
    """Normalise each pixel's channel vector (mean and biased variance, eps 1e-5), then scale and shift.

    Works directly on (B, C, H, W) by reducing over dim 1, which avoids the channels-last copies
    a token-layout LayerNorm would need.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[:, None, None]


class BiasFreeLayerNorm(nn.Module):
    """Divide each pixel's channel vector by its standard deviation (not centred) and scale; no shift."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + 1e-5) * self.weight[:, None, None]


class LayerNorm(nn.Module):
    """Channel LayerNorm of type ``'WithBias'`` or ``'BiasFree'``, held as ``body`` (official key layout)."""

    def __init__(self, dim: int, LayerNorm_type: str) -> None:
        super().__init__()
        self.body = BiasFreeLayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBiasLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """GDFN: 1x1 to 2*hidden, depthwise 3x3, ``GELU(first half) * second half``, 1x1 back to ``dim``.

    ``hidden = int(dim * ffn_expansion_factor)`` is truncated, not rounded (127 for dim 48 at 2.66).
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class Attention(nn.Module):
    """MDTA: transposed (channel-by-channel) multi-head self-attention.

    q, k, v come from a 1x1 convolution to 3C followed by a depthwise 3x3. Per head, q and k
    (``C/heads`` x ``H*W``) are L2-normalised along the pixels, ``softmax(q k^T * temperature)``
    over the last axis weighs the rows of v, and a 1x1 convolution projects the result.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        # learnable scale of each head's attention logits (initialised to 1)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = (rearrange(t, "b (g c) h w -> b g c (h w)", g=self.num_heads)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, heads, C/heads, C/heads)
        out = attn.softmax(dim=-1) @ v
        return self.project_out(rearrange(out, "b g c (h w) -> b (g c) h w", h=h, w=w))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image channels to ``embed_dim`` features (always without bias)."""

    def __init__(self, in_c: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv C -> C/2, then PixelUnshuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv C -> 2C, then PixelShuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _blocks(n: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool,
            LayerNorm_type: str) -> CheckpointedSequential:
    return CheckpointedSequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, LayerNorm_type)
                           for _ in range(n)])


@NETWORKS.register("Restormer")
class Restormer(nn.Module):
    """Restormer: (B, inp_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8.

    Args:
        inp_channels: input image channels (3; 6 for the dual-pixel task).
        out_channels: output image channels (3).
        dim: channels at full resolution; levels 2-4 use 2, 4 and 8 times as many. Must be even.
        num_blocks: transformer blocks at encoder levels 1-3 and the latent level; the decoder
            reuses the counts of levels 1-3.
        num_refinement_blocks: blocks after decoder level 1, at full resolution.
        heads: attention heads at levels 1-4 (each level's channels must divide by its heads);
            decoder level 1 and refinement (2*dim channels) use ``heads[0]``.
        ffn_expansion_factor: GDFN hidden width as a multiple of the block's channels.
        bias: biases in the blocks' convolutions and the level-reducing 1x1 convolutions
            (the patch embedding and the resampling convolutions never have one).
        LayerNorm_type: ``'WithBias'`` (mean-centred, shifted) or ``'BiasFree'``.
        dual_pixel_task: dual-pixel defocus deblurring head: instead of adding the input image
            to the output, a 1x1 ``skip_conv`` of the embedded input is added before the output
            convolution (use with ``inp_channels=6``).
    """

    size_multiple: int = 8
    supports_grad_checkpoint: bool = True  # its blocks are CheckpointedSequential
    unused_parameters: tuple[str, ...] = ()

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = "WithBias", dual_pixel_task: bool = False) -> None:
        super().__init__()
        num_blocks = [int(n) for n in num_blocks]
        heads = [int(h) for h in heads]
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"Restormer num_blocks and heads need 4 entries (levels 1-3 and latent), "
                             f"got {num_blocks} and {heads}")
        if dim <= 0 or dim % 2:
            raise ValueError(f"Restormer dim must be a positive even number (pixel-(un)shuffle halves "
                             f"and doubles channels), got {dim}")
        widths = [dim, dim * 2, dim * 4, dim * 8]
        for c, h in [*zip(widths, heads), (dim * 2, heads[0])]:
            if h <= 0 or c % h:
                raise ValueError(f"Restormer: {c} channels cannot be split into {h} heads "
                                 f"(dim={dim}, heads={heads})")
        if LayerNorm_type not in _LAYERNORM_TYPES:
            raise ValueError(f"Restormer LayerNorm_type must be one of {_LAYERNORM_TYPES}, got {LayerNorm_type!r}")
        if not dual_pixel_task and inp_channels != out_channels:
            raise ValueError("Restormer adds the input image to the output, so inp_channels must equal "
                             f"out_channels unless dual_pixel_task=True (got {inp_channels} and {out_channels})")
        if int(dim * ffn_expansion_factor) <= 0:
            raise ValueError(f"Restormer ffn_expansion_factor {ffn_expansion_factor} gives no hidden channels")

        blk = dict(ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type)
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)

        self.encoder_level1 = _blocks(num_blocks[0], widths[0], heads[0], **blk)
        self.down1_2 = Downsample(widths[0])
        self.encoder_level2 = _blocks(num_blocks[1], widths[1], heads[1], **blk)
        self.down2_3 = Downsample(widths[1])
        self.encoder_level3 = _blocks(num_blocks[2], widths[2], heads[2], **blk)
        self.down3_4 = Downsample(widths[2])
        self.latent = _blocks(num_blocks[3], widths[3], heads[3], **blk)

        self.up4_3 = Upsample(widths[3])
        self.reduce_chan_level3 = nn.Conv2d(widths[3], widths[2], kernel_size=1, bias=bias)
        self.decoder_level3 = _blocks(num_blocks[2], widths[2], heads[2], **blk)
        self.up3_2 = Upsample(widths[2])
        self.reduce_chan_level2 = nn.Conv2d(widths[2], widths[1], kernel_size=1, bias=bias)
        self.decoder_level2 = _blocks(num_blocks[1], widths[1], heads[1], **blk)
        self.up2_1 = Upsample(widths[1])
        # level 1 keeps the 2*dim concatenation (no reduction) and uses the level-1 head count
        self.decoder_level1 = _blocks(num_blocks[0], widths[1], heads[0], **blk)
        self.refinement = _blocks(num_refinement_blocks, widths[1], heads[0], **blk)

        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, widths[1], kernel_size=1, bias=bias)
        self.output = nn.Conv2d(widths[1], out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (B, inp_channels, H, W), H and W multiples of 8."""
        emb = self.patch_embed(x)
        enc1 = self.encoder_level1(emb)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        lat = self.latent(self.down3_4(enc3))

        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3], dim=1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1)))

        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(emb))
        return self.output(dec1) + x
