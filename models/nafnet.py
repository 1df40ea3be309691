"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) in its TLSC form.

SSLL/CMT use the GoPro-width-64 NAFNet shape wrapped as ``NAFNetLocal``: every Simplified Channel
Attention (SCA) pools over a *local* window instead of the whole image ("Test-time Local
Statistics Converter", Chu et al. 2021). The window is fixed from the training crop size, so on
images no larger than 1.5x the training crop the network is exactly plain NAFNet, while on larger
images (e.g. 600x400 LOL frames) each SCA sees a box-filtered mean around every pixel.

Module attribute names follow the official implementation (megvii-research/NAFNet,
``basicsr/models/archs/NAFNet_arch.py``, ``arch_util.py``, ``local_arch.py``), so official and
SSLL/CMT checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from foundation.errors import UserError
from models import NETWORKS

# Sub-sampling factors the official "fast" TLSC approximation tries, largest first.
_FAST_REDUCTIONS = (5, 4, 3, 2, 1)


def normalize_train_size(train_size: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Return ``train_size`` as an (N, C, H, W) tuple; an int means a square (1, 3, s, s) crop."""
    if isinstance(train_size, int) and not isinstance(train_size, bool):
        sizes: tuple[int, ...] = (1, 3, train_size, train_size)
    else:
        try:
            sizes = tuple(int(s) for s in train_size)
        except (TypeError, ValueError) as exc:
            raise UserError(f"NAFNet train_size must be an int or a list of 4 ints, got {train_size!r}") from exc
    if len(sizes) != 4 or sizes[2] <= 0 or sizes[3] <= 0:
        raise UserError(f"NAFNet train_size must be an int or a list of 4 ints (N, C, H, W), got {train_size!r}")
    return sizes  # type: ignore[return-value]


def _level_feature_sizes(train_size: int | Sequence[int], num_levels: int) -> list[tuple[int, int]]:
    """(H, W) of the features at each U-Net level (0 .. num_levels) for a ``train_size`` input.

    The input is first zero-padded to a multiple of ``2**num_levels``, then halved per level.
    """
    _, _, h, w = normalize_train_size(train_size)
    multiple = 2 ** num_levels
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    return [(ph >> level, pw >> level) for level in range(num_levels + 1)]


def local_pool_kernel_sizes(train_size: int | Sequence[int], num_levels: int) -> list[tuple[int, int]]:
    """TLSC pooling window (kh, kw) of the SCA at each level 0 .. num_levels (last = middle blocks).

    Official rule: kernel = feature size seen at ``train_size`` x base_size // train side, with
    base_size = int(1.5 x train side). For train side 192 and four levels: 288, 144, 72, 36, 18.
    """
    _, _, h, w = normalize_train_size(train_size)
    base_h, base_w = int(h * 1.5), int(w * 1.5)
    return [(fh * base_h // h, fw * base_w // w) for fh, fw in _level_feature_sizes(train_size, num_levels)]


def _fast_max_reductions(train_size: int | Sequence[int], num_levels: int) -> list[tuple[int, int]]:
    """Upper bound of the sub-sampling factor of the ``fast_imp`` approximation at each level."""
    _, _, h, w = normalize_train_size(train_size)
    top = _FAST_REDUCTIONS[0]
    return [(max(1, top * fh // h), max(1, top * fw // w)) for fh, fw in _level_feature_sizes(train_size, num_levels)]


class LayerNorm2d(nn.Module):
    """Channel LayerNorm of a (B, C, H, W) map: each pixel's C-vector normalised (eps 1e-6), then affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as the official custom autograd Function (biased variance, sqrt then divide).
        centered = x - x.mean(dim=1, keepdim=True)
        var = centered.pow(2).mean(dim=1, keepdim=True)
        normed = centered / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * normed + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (NAFNet's activation-free nonlinearity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        return first * second


class LocalAvgPool2d(nn.Module):
    """TLSC average pooling: a size-preserving box filter of a fixed window, global when it covers the map.

    Args:
        kernel_size: (kh, kw) window, fixed at construction from the training crop size.
        fast_imp: use the official sub-sampled approximation (faster, not equivalent).
        max_reduction: largest sub-sampling factor (rh, rw) the fast approximation may use.

    The exact path is an integral-image box filter over "valid" positions only; the smaller result
    is replicate-padded (centred) back to the input size, as in the official ``AvgPool2d``.
    """

    def __init__(self, kernel_size: tuple[int, int], fast_imp: bool = False,
                 max_reduction: tuple[int, int] = (5, 5)) -> None:
        super().__init__()
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.fast_imp = fast_imp
        self.max_reduction = (int(max_reduction[0]), int(max_reduction[1]))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, fast_imp={self.fast_imp}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() and not self.fast_imp:
            return self._box_mean_any_size(x)
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        out = self._fast_box_mean(x) if self.fast_imp else self._box_mean(x)
        oh, ow = out.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(out, pad, mode="replicate")

    def _box_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Exact mean over every full window inside the map, via a zero-bordered integral image."""
        h, w = x.shape[-2:]
        kh, kw = min(h, self.kernel_size[0]), min(w, self.kernel_size[1])
        integral = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
        top_left = integral[..., :-kh, :-kw]
        top_right = integral[..., :-kh, kw:]
        bottom_left = integral[..., kh:, :-kw]
        bottom_right = integral[..., kh:, kw:]
        return (bottom_right + top_left - top_right - bottom_left) / (kh * kw)

    def _box_mean_any_size(self, x: torch.Tensor) -> torch.Tensor:
        """The exact path without Python branches on the map's size, for the tracing exporters.

        Tracing (ONNX legacy export, ``torch.jit.trace``) records tensor arithmetic on the input's
        shape but freezes Python decisions (``if kh >= h``, ``min(h, kh)``) as the tracing size took
        them, so a traced NAFNet ran only at sizes on its tracing size's side of the global/local
        switch. Here the window is clamped with tensor arithmetic (``min(h, kh)`` as a clamp) and the
        valid box means are replicate-padded back by (k - 1) // 2 before and k // 2 after, which is
        the eager path's arithmetic for every size: where the window covers the whole map, the one
        valid mean (the global mean) is repeated over the map instead of broadcast from 1x1, equal to
        ``adaptive_avg_pool2d`` up to float rounding (the integral image sums in another order).
        """
        h, w = x.shape[-2:]
        kh = torch.clamp(torch.as_tensor(h), max=self.kernel_size[0])
        kw = torch.clamp(torch.as_tensor(w), max=self.kernel_size[1])
        integral = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
        rows, cols = h + 1 - kh, w + 1 - kw  # valid window positions
        box = (integral[..., kh:, kw:] + integral[..., :rows, :cols]
               - integral[..., :rows, kw:] - integral[..., kh:, :cols]) / (kh * kw)
        return F.pad(box, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")

    def _fast_box_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Official approximation: box filter on a strided sub-sample, then nearest up-sampling."""
        h, w = x.shape[-2:]
        rh = min(self.max_reduction[0], next(r for r in _FAST_REDUCTIONS if h % r == 0))
        rw = min(self.max_reduction[1], next(r for r in _FAST_REDUCTIONS if w % r == 0))
        integral = x[..., ::rh, ::rw].cumsum(dim=-1).cumsum(dim=-2)
        sh, sw = integral.shape[-2:]
        kh, kw = min(sh - 1, self.kernel_size[0] // rh), min(sw - 1, self.kernel_size[1] // rw)
        if kh < 1 or kw < 1:
            raise ValueError(f"fast TLSC pooling cannot handle a {h}x{w} map with kernel {self.kernel_size}")
        box = (integral[..., :-kh, :-kw] - integral[..., :-kh, kw:]
               - integral[..., kh:, :-kw] + integral[..., kh:, kw:]) / (kh * kw)
        return F.interpolate(box, scale_factor=(rh, rw))


class NAFBlock(nn.Module):
    """NAFNet block: LN -> 1x1 expand -> depthwise 3x3 -> SimpleGate -> SCA -> 1x1, then an LN/gated FFN.

    Both branches are residual with learnable per-channel scales ``beta``/``gamma`` that start at
    zero, so a freshly built block is the identity.

    Args:
        c: channels.
        pool: the SCA's pooling module (global ``AdaptiveAvgPool2d(1)`` or a ``LocalAvgPool2d``).
        dw_expand: expansion of the depthwise branch.
        ffn_expand: expansion of the feed-forward branch.
    """

    def __init__(self, c: int, pool: nn.Module | None = None, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw_channel = c * dw_expand
        ffn_channel = c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw_channel, kernel_size=1)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, groups=dw_channel)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, kernel_size=1)
        # Simplified Channel Attention: pooled statistics -> 1x1 conv -> channel-wise multiply.
        self.sca = nn.Sequential(
            pool if pool is not None else nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1),
        )
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn_channel, kernel_size=1)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, kernel_size=1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        z = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + z * self.gamma


@NETWORKS.register("NAFNet")
class NAFNet(nn.Module):
    """NAFNet U-Net with TLSC local-statistics SCA (the official ``NAFNetLocal``), as SSLL/CMT build it.

    Defaults are the SSLL/CMT configuration: ``NAFNetLocal(width=64, enc_blk_nums=[1,1,1,28],
    middle_blk_num=1, dec_blk_nums=[1,1,1,1])`` with their ``train_size`` (1,3,192,192), i.e. base
    size 288 (67,888,835 parameters).

    Args:
        img_channel: input/output channels.
        width: channels at full resolution; doubled at every encoder level.
        middle_blk_num: NAFBlocks at the bottleneck.
        enc_blk_nums: NAFBlocks per encoder level (each level then halves the resolution).
        dec_blk_nums: NAFBlocks per decoder level; must have as many entries as ``enc_blk_nums``.
        train_size: training crop (N, C, H, W) or its side; fixes the local pooling windows.
        fast_imp: use the official faster, non-equivalent approximation of the local pooling.
        local_pooling: True builds ``NAFNetLocal`` (TLSC); False builds plain NAFNet whose SCA
            always pools globally (then ``train_size``/``fast_imp`` are ignored).

    Quirks reproduced from the official code:
      * Each SCA pooling window is 1.5x the feature size that level sees at ``train_size``
        (train side 192: 288, 144, 72, 36, 18 from level 0 to the middle blocks). When the window
        covers the whole feature map the SCA pools globally, so inputs up to 1.5x the training crop
        give exactly plain NAFNet; otherwise it is a box filter with replicate padding.
      * The input is zero-padded right/bottom to a multiple of ``2**len(enc_blk_nums)`` and the
        output cropped back, so any size works (``size_multiple = 1``).
      * ``beta``/``gamma`` start at zero: every block is the identity at initialisation.

    Differences from the official construction (no effect on outputs): the official
    ``NAFNetLocal`` learns its windows by running one forward pass on ``torch.rand(train_size)``
    at construction, which consumes the global RNG and leaves the module in eval mode. Here the
    windows are computed analytically, so building the network draws no random numbers beyond
    the parameter initialisation and the module stays in training mode.
    """

    size_multiple: int = 1
    unused_parameters: tuple[str, ...] = ()

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 64,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        train_size: int | Sequence[int] = (1, 3, 192, 192),
        fast_imp: bool = False,
        local_pooling: bool = True,
    ) -> None:
        super().__init__()
        enc_blk_nums, dec_blk_nums = [int(n) for n in enc_blk_nums], [int(n) for n in dec_blk_nums]
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise UserError(f"NAFNet needs as many decoder as encoder levels, got enc_blk_nums={enc_blk_nums} "
                            f"and dec_blk_nums={dec_blk_nums}")
        num_levels = len(enc_blk_nums)
        self.local_pooling = bool(local_pooling)
        self.train_size = normalize_train_size(train_size)
        self.base_size = (int(self.train_size[2] * 1.5), int(self.train_size[3] * 1.5))
        kernels = local_pool_kernel_sizes(self.train_size, num_levels)
        reductions = _fast_max_reductions(self.train_size, num_levels)

        def block(chan: int, level: int) -> NAFBlock:
            pool = (LocalAvgPool2d(kernels[level], fast_imp=fast_imp, max_reduction=reductions[level])
                    if self.local_pooling else None)
            return NAFBlock(chan, pool)

        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()

        chan = width
        for level, num in enumerate(enc_blk_nums):
            self.encoders.append(nn.Sequential(*[block(chan, level) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[block(chan, num_levels) for _ in range(middle_blk_num)])
        for level, num in zip(reversed(range(num_levels)), dec_blk_nums):
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, kernel_size=1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[block(chan, level) for _ in range(num)]))

        self.padder_size = 2 ** num_levels

    @property
    def pool_kernel_sizes(self) -> list[tuple[int, int]] | None:
        """Local pooling window per level (0 .. middle), or None for plain global pooling."""
        if not self.local_pooling:
            return None
        return local_pool_kernel_sizes(self.train_size, len(self.encoders))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad right/bottom to a multiple of ``padder_size``."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % self.padder_size, 0, (-h) % self.padder_size))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """Restore a (B, C, H, W) image; any H, W (padded internally, cropped back)."""
        h, w = inp.shape[-2:]
        inp = self._pad(inp)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x) + inp
        return x[:, :, :h, :w]
