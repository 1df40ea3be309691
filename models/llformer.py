"""LLFormer (Wang et al., AAAI 2023) as used by SSLL / CMT for low-light enhancement.

An axis-based transformer (TaoWangzj/LLFormer). Every block is ``x + A-MSA(LN(x))`` followed
by ``x + DGFN(LN(x))``:

* A-MSA (axis-based multi-head self-attention) is a row attention followed by a column
  attention with separate weights. Each makes q, k, v with a 1x1 convolution to 3C and two
  stacked depthwise 3x3 convolutions, then, per head, lets every pixel attend to the pixels of
  its own row (resp. column) with L2-normalised q and k scaled by one learnable factor. The cost
  grows with ``H * W * (H + W)``, so full images fit. The column attention runs on the H/W
  transposed map, so its depthwise kernels act transposed, exactly as in the official code.
  These convolutions always have biases, whatever ``bias`` says (the official block builds the
  attention with its own default).
* DGFN (dual gated feed-forward network): 1x1 to ``2 * int(C * ffn_expansion_factor)``,
  depthwise 3x3, halves ``x1, x2`` -> ``GELU(x2) * x1 + GELU(x1) * x2``, 1x1 back to C.

Layout: a 3x3 patch embedding, three sequential full-resolution block groups whose outputs are
fused by layer attention (LAM: a 3x3 attention between the three feature maps), then a
four-level U-Net of blocks whose skips are per-channel weighted sums (learnable coefficients,
initialised to 1) followed by a 1x1 convolution. The full-resolution output is blended the same
way with a ``latent`` block group applied to the fused features, refined by three more block
groups fused by a second LAM, and mapped to the image by a 3x3 convolution. With the default
``skip=False`` there is no global residual.

Faithful quirks: the decoder's level-1 skip uses the 1x1 convolution named ``skip_1_0`` (as
the official forward does), so ``skip_2_1`` and the (4, 2, 8*dim) tensor ``coefficient`` are
registered but never used (listed in ``unused_parameters``; DDP needs
``find_unused_parameters``). The defaults are the configuration SSLL / CMT build with plain
``LLFormer()`` (13,151,694 parameters; the official LOL model uses ``num_blocks=[2, 4, 8, 16]``).

Four 2x downsamplings need H and W divisible by 16. As in the SSLL copy, forward reflect-pads
the input at the bottom/right to the next multiple of 16 and crops the output back, so any size
works (``size_multiple = 1``). Module attribute names follow the official code so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from foundation.errors import UserError
from models import NETWORKS
from models.grad_checkpoint import CheckpointedSequential
from models.restormer import Downsample, LayerNorm, OverlapPatchEmbed, Upsample  # shared building blocks

__all__ = ["LLFormer"]

_LAYERNORM_TYPES = ("WithBias", "BiasFree")
_PAD_MULTIPLE = 16  # four PixelUnshuffle(2) steps


class RowAttention(nn.Module):
    """Multi-head self-attention among the pixels of each row (along W).

    ``q1`` (1x1, C -> 3C), ``q2`` and ``q3`` (depthwise 3x3) make q, k, v; per head (``C/heads``
    features) q and k are L2-normalised, the logits ``q k^T`` are multiplied by the learnable
    scalar ``fac`` (shared by the heads), softmax weighs v, and ``fin`` (1x1) projects back.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q1 = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.q2 = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.q3 = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.fac = nn.Parameter(torch.ones(1))
        self.fin = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        # (B, heads*H, W, C/heads): every (head, row) pair is one attention problem over W pixels
        q, k, v = (rearrange(t, "b (g d) h w -> b (g h) w d", g=self.num_heads)
                   for t in self.q3(self.q2(self.q1(x))).chunk(3, dim=1))
        q = F.normalize(q, dim=-1) * self.fac  # scaling q scales the logits q k^T by fac
        k = F.normalize(k, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return self.fin(rearrange(out, "b (g h) w d -> b (g d) h w", g=self.num_heads, h=h))


class AxisAttention(nn.Module):
    """A-MSA: row attention, then column attention (a second row attention on the transposed map)."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        self.row_att = RowAttention(dim, num_heads, bias)
        self.col_att = RowAttention(dim, num_heads, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.row_att(x)
        return self.col_att(x.transpose(-2, -1)).transpose(-2, -1)


class FeedForward(nn.Module):
    """DGFN: 1x1 to 2*hidden, depthwise 3x3, ``GELU(x2) * x1 + GELU(x1) * x2``, 1x1 back to ``dim``.

    ``hidden = int(dim * ffn_expansion_factor)`` is truncated, not rounded (42 for dim 16 at 2.66).
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x2) * x1 + F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + A-MSA(LN(x))`` then ``x + DGFN(LN(x))``; the A-MSA convolutions have biases."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = AxisAttention(dim, num_heads, bias=True)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class LayerAttention(nn.Module):
    """LAM: attention between N feature maps of C channels, each map one token of C*H*W values.

    The stack (B, N, C, H, W) is read as N*C channels; a 1x1 convolution to 3*N*C and a depthwise
    3x3 make q, k, v, each reshaped to (B, N, C*H*W). q and k are L2-normalised, the (N x N)
    logits are scaled by the learnable ``temperature``, softmax weighs v, a 1x1 convolution
    projects, and the input is added back. Returns (B, N*C, H, W). Convolutions have biases.
    """

    def __init__(self, in_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))
        self.qkv = nn.Conv2d(in_dim, in_dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(in_dim * 3, in_dim * 3, kernel_size=3, padding=1, groups=in_dim * 3, bias=bias)
        self.project_out = nn.Conv2d(in_dim, in_dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        flat = x.reshape(b, n * c, h, w)
        q, k, v = (t.reshape(b, n, -1) for t in self.qkv_dwconv(self.qkv(flat)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, N, N)
        return self.project_out((attn @ v).reshape(b, n * c, h, w)) + flat


def _blocks(n: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool,
            LayerNorm_type: str) -> CheckpointedSequential:
    return CheckpointedSequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, LayerNorm_type)
                           for _ in range(n)])


def _weighted_sum(coefficients: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``coefficients[0] * a + coefficients[1] * b`` with per-channel (2, C) weights."""
    return coefficients[0, :, None, None] * a + coefficients[1, :, None, None] * b


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of ``x`` so H and W are multiples of ``multiple`` (reflect, as in SSLL).

    Reflection needs the pad to be smaller than the side; for sides that short (where the SSLL
    code would raise) edge replication is used instead.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


@NETWORKS.register("LLFormer")
class LLFormer(nn.Module):
    """LLFormer: (B, inp_channels, H, W) -> (B, out_channels, H, W) for any H and W.

    Args:
        inp_channels: input image channels (3).
        out_channels: output image channels (3).
        dim: channels at full resolution; U-Net levels 1-4 use 2, 4, 8 and 16 times as many.
            Must be even.
        num_blocks: transformer blocks per group. ``num_blocks[0]``: each of the three input
            groups, ``latent``, and U-Net level 1 (both sides); ``[1]``: level 2; ``[2]``: level 3;
            ``[3]``: level 4 (the bottom).
        num_refinement_blocks: blocks in each of the three refinement groups.
        heads: attention heads. ``heads[0]``: full-resolution groups; ``[1]``, ``[2]``: levels 1
            and 2; ``[3]``: levels 3 and 4. Each level's channels must divide by its heads.
        ffn_expansion_factor: DGFN hidden width as a multiple of the block's channels.
        bias: biases in the DGFNs, the skip/fusion 1x1 convolutions and the output convolution
            (attention and LAM convolutions always have them; the patch embedding and the
            resampling convolutions never do).
        LayerNorm_type: ``'WithBias'`` (mean-centred, shifted) or ``'BiasFree'``.
        attention: whether the skip-weighting coefficients are trained (False freezes them at 1).
        skip: add the input image to the output (global residual; needs inp_channels == out_channels).
    """

    size_multiple: int = 1  # pads to 16 internally, as the SSLL copy does
    supports_grad_checkpoint: bool = True  # its blocks are CheckpointedSequential
    # registered by the official code but never used in its forward
    unused_parameters: tuple[str, ...] = ("coefficient", "skip_2_1.")

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 16,
                 num_blocks: Sequence[int] = (1, 2, 4, 8), num_refinement_blocks: int = 2,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = "WithBias", attention: bool = True, skip: bool = False) -> None:
        super().__init__()
        num_blocks = [int(n) for n in num_blocks]
        heads = [int(h) for h in heads]
        if len(num_blocks) != 4 or len(heads) != 4:
            raise UserError(f"LLFormer num_blocks and heads need 4 entries, got {num_blocks} and {heads}")
        if dim <= 0 or dim % 2:
            raise UserError(f"LLFormer dim must be a positive even number (pixel-(un)shuffle halves and "
                            f"doubles channels), got {dim}")
        widths = [dim, dim * 2, dim * 4, dim * 8, dim * 16]
        level_heads = [heads[0], heads[1], heads[2], heads[3], heads[3]]
        for c, h in zip(widths, level_heads):
            if h <= 0 or c % h:
                raise UserError(f"LLFormer: {c} channels cannot be split into {h} heads (dim={dim}, heads={heads})")
        if LayerNorm_type not in _LAYERNORM_TYPES:
            raise UserError(f"LLFormer LayerNorm_type must be one of {_LAYERNORM_TYPES}, got {LayerNorm_type!r}")
        if int(dim * ffn_expansion_factor) <= 0:
            raise UserError(f"LLFormer ffn_expansion_factor {ffn_expansion_factor} gives no hidden channels")
        if skip and inp_channels != out_channels:
            raise UserError("LLFormer skip=True adds the input image to the output, so inp_channels must equal "
                            f"out_channels (got {inp_channels} and {out_channels})")

        def blocks(n: int, level: int) -> nn.Sequential:
            return _blocks(n, widths[level], level_heads[level], ffn_expansion_factor, bias, LayerNorm_type)

        def coefficients(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.ones(*shape), requires_grad=attention)

        # never used (official quirk), kept so that official checkpoints load strictly
        self.coefficient = coefficients(4, 2, widths[3])

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_1 = blocks(num_blocks[0], 0)
        self.encoder_2 = blocks(num_blocks[0], 0)
        self.encoder_3 = blocks(num_blocks[0], 0)
        self.layer_fussion = LayerAttention(dim * 3)
        self.conv_fuss = nn.Conv2d(dim * 3, dim, kernel_size=1, bias=bias)
        self.latent = blocks(num_blocks[0], 0)

        # contracting path (named "decoder_level*_0" in the official code)
        self.down_1 = Downsample(widths[0])
        self.decoder_level1_0 = blocks(num_blocks[0], 1)
        self.down_2 = Downsample(widths[1])
        self.decoder_level2_0 = blocks(num_blocks[1], 2)
        self.down_3 = Downsample(widths[2])
        self.decoder_level3_0 = blocks(num_blocks[2], 3)
        self.down_4 = Downsample(widths[3])
        self.decoder_level4 = blocks(num_blocks[3], 4)

        # expanding path
        self.up4_3 = Upsample(widths[4])
        self.decoder_level3_1 = blocks(num_blocks[2], 3)
        self.up3_2 = Upsample(widths[3])
        self.decoder_level2_1 = blocks(num_blocks[1], 2)
        self.up2_1 = Upsample(widths[2])
        self.decoder_level1_1 = blocks(num_blocks[0], 1)
        self.up2_0 = Upsample(widths[1])

        # per-channel weights of the two inputs of each skip sum
        self.coefficient_4_3 = coefficients(2, widths[3])
        self.coefficient_3_2 = coefficients(2, widths[2])
        self.coefficient_2_1 = coefficients(2, widths[1])
        self.coefficient_1_0 = coefficients(2, widths[0])
        # 1x1 convolutions after the skip sums; skip_2_1 is never used (level 1 uses skip_1_0)
        self.skip_4_3 = nn.Conv2d(widths[3], widths[3], kernel_size=1, bias=bias)
        self.skip_3_2 = nn.Conv2d(widths[2], widths[2], kernel_size=1, bias=bias)
        self.skip_2_1 = nn.Conv2d(widths[1], widths[1], kernel_size=1, bias=bias)
        self.skip_1_0 = nn.Conv2d(widths[1], widths[1], kernel_size=1, bias=bias)

        self.refinement_1 = blocks(num_refinement_blocks, 0)
        self.refinement_2 = blocks(num_refinement_blocks, 0)
        self.refinement_3 = blocks(num_refinement_blocks, 0)
        self.layer_fussion_2 = LayerAttention(dim * 3)
        self.conv_fuss_2 = nn.Conv2d(dim * 3, dim, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim, out_channels, kernel_size=3, padding=1, bias=bias)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance ``x`` (B, inp_channels, H, W); padded to multiples of 16 inside and cropped back."""
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, _PAD_MULTIPLE)

        e1 = self.encoder_1(self.patch_embed(x))
        e2 = self.encoder_2(e1)
        e3 = self.encoder_3(e2)
        fused = self.conv_fuss(self.layer_fussion(torch.stack([e1, e2, e3], dim=1)))

        d1 = self.decoder_level1_0(self.down_1(fused))
        d2 = self.decoder_level2_0(self.down_2(d1))
        d3 = self.decoder_level3_0(self.down_3(d2))
        bottom = self.decoder_level4(self.down_4(d3))

        u3 = self.decoder_level3_1(self.skip_4_3(_weighted_sum(self.coefficient_4_3, d3, self.up4_3(bottom))))
        u2 = self.decoder_level2_1(self.skip_3_2(_weighted_sum(self.coefficient_3_2, d2, self.up3_2(u3))))
        u1 = self.decoder_level1_1(self.skip_1_0(_weighted_sum(self.coefficient_2_1, d1, self.up2_1(u2))))
        out = _weighted_sum(self.coefficient_1_0, self.latent(fused), self.up2_0(u1))

        r1 = self.refinement_1(out)
        r2 = self.refinement_2(r1)
        r3 = self.refinement_3(r2)
        out = self.output(self.conv_fuss_2(self.layer_fussion_2(torch.stack([r1, r2, r3], dim=1))))
        if self.skip:
            out = out + x
        return out[..., :h, :w]
