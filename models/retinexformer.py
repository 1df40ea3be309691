"""Retinexformer (Cai et al., ICCV 2023) as used by SSLL / CMT for low-light enhancement.

One-stage Retinex-based transformer (caiyuanhao1998/Retinexformer). Each stage has two parts:

* an *illumination estimator* that looks at the image and its per-pixel channel mean and
  predicts a light-up map ``L`` (3 channels, unconstrained) together with an illumination
  feature map ``F_lu`` (``n_feat`` channels); the lit-up image is ``I_lu = I * L + I``;
* a *denoiser*: a two-level U-Net of illumination-guided attention blocks (IGAB) that restores
  ``I_lu``. Its self-attention (IG-MSA) works across channels (a d x d attention matrix per
  head, built as ``k . q^T`` from L2-normalised tokens) and multiplies the values by ``F_lu``
  (downsampled to each level by its own strided convolutions), so that well- and badly-lit
  regions interact differently. The output adds ``I_lu`` back (not the raw input).

``stage > 1`` chains the whole stage ``stage`` times. The defaults are the configuration of
the three official LOL configs and of SSLL/CMT: n_feat 40, stage 1, num_blocks [1, 2, 2]
(1,605,701 parameters). The official class default ``n_feat=31`` cannot be built (the
estimator's 5x5 convolution is grouped by 4), so ``n_feat`` must be a multiple of 4.

Two stride-2 downsamplings need H and W divisible by 4 (``size_multiple = 4``); the framework
pads and crops. Module attribute names follow the official code so its checkpoints load with
``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models import NETWORKS

__all__ = ["RetinexFormer"]


class IlluminationEstimator(nn.Module):
    """Predict the illumination feature ``F_lu`` and the light-up map ``L`` from an image.

    Args:
        n_fea_middle: channels of the illumination feature (the network's ``n_feat``).
        n_fea_in: input channels (the image plus its channel mean); also the group count of
            the 5x5 convolution, as in the official code.
        n_fea_out: channels of the light-up map.
    """

    def __init__(self, n_fea_middle: int, n_fea_in: int = 4, n_fea_out: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_fea_in, n_fea_middle, kernel_size=1, bias=True)
        self.depth_conv = nn.Conv2d(n_fea_middle, n_fea_middle, kernel_size=5, padding=2,
                                    bias=True, groups=n_fea_in)
        self.conv2 = nn.Conv2d(n_fea_middle, n_fea_out, kernel_size=1, bias=True)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(F_lu, L)`` for ``img`` of shape (B, 3, H, W)."""
        prior = torch.cat([img, img.mean(dim=1, keepdim=True)], dim=1)
        illu_fea = self.depth_conv(self.conv1(prior))
        return illu_fea, self.conv2(illu_fea)


class IGMSA(nn.Module):
    """Illumination-guided multi-head self-attention over channels (channels-last tokens).

    Args:
        dim: token channels C; must equal ``heads * dim_head``.
        dim_head: channels per head (the network's ``n_feat``).
        heads: number of heads (C / n_feat at each level).
    """

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        if heads * dim_head != dim:
            raise ValueError(f"IG-MSA needs heads * dim_head == dim, got {heads} * {dim_head} != {dim}")
        self.num_heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        # learnable temperature of each head's attention logits
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim, dim, bias=True)
        # positional branch: two depthwise 3x3 convolutions on the (unmodulated) values
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
        )

    def forward(self, x: torch.Tensor, illu_fea: torch.Tensor) -> torch.Tensor:
        """Attend over ``x`` (B, H, W, C) guided by ``illu_fea`` (B, H, W, C); same shape out."""
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        q = self.to_q(tokens)
        k = self.to_k(tokens)
        v_plain = self.to_v(tokens)
        v = v_plain * illu_fea.reshape(b, h * w, c)

        # per head: (d, HW) matrices; L2-normalise queries and keys along the spatial axis
        q, k, v = (rearrange(t, "b n (g d) -> b g d n", g=self.num_heads) for t in (q, k, v))
        q = F.normalize(q, dim=-1, p=2)
        k = F.normalize(k, dim=-1, p=2)
        attn = (k @ q.transpose(-2, -1)) * self.rescale  # (B, heads, d, d), rows indexed by keys
        attn = attn.softmax(dim=-1)
        out = rearrange(attn @ v, "b g d n -> b n (g d)")
        out = self.proj(out).reshape(b, h, w, c)

        pos = self.pos_emb(rearrange(v_plain, "b (h w) c -> b c h w", h=h, w=w))
        return out + pos.permute(0, 2, 3, 1)


class FeedForward(nn.Module):
    """1x1 expand (x mult) -> GELU -> depthwise 3x3 -> GELU -> 1x1 project, no biases."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        hidden = dim * mult
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, bias=False, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map channels-last ``x`` (B, H, W, C) to the same shape."""
        return self.net(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PreNorm(nn.Module):
    """Apply ``fn`` to the LayerNorm (over channels, eps 1e-5) of channels-last input."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class IGAB(nn.Module):
    """A stack of illumination-guided attention blocks.

    Each block: ``x = IG-MSA(x, F_lu) + x`` (no normalisation before the attention), then
    ``x = FFN(LayerNorm(x)) + x``.
    """

    def __init__(self, dim: int, dim_head: int, heads: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([IGMSA(dim, dim_head, heads), PreNorm(dim, FeedForward(dim))])
            for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor, illu_fea: torch.Tensor) -> torch.Tensor:
        """``x`` and ``illu_fea``: (B, C, H, W); returns (B, C, H, W)."""
        x = x.permute(0, 2, 3, 1)
        illu = illu_fea.permute(0, 2, 3, 1)
        for attn, ffn in self.blocks:
            x = attn(x, illu) + x
            x = ffn(x) + x
        return x.permute(0, 3, 1, 2)


class Denoiser(nn.Module):
    """U-Net of IGABs restoring the lit-up image, guided by the illumination features.

    Args:
        in_dim / out_dim: image channels.
        dim: channels at full resolution; also the head dimension at every level.
        level: number of downsamplings (2 in every official configuration).
        num_blocks: IGAB blocks per level, the last entry for the bottleneck; decoder level i
            reuses the encoder's count.
    """

    def __init__(self, in_dim: int, out_dim: int, dim: int, level: int, num_blocks: Sequence[int]) -> None:
        super().__init__()
        self.level = level
        self.embedding = nn.Conv2d(in_dim, dim, 3, 1, 1, bias=False)

        self.encoder_layers = nn.ModuleList()
        ch = dim
        for i in range(level):
            self.encoder_layers.append(nn.ModuleList([
                IGAB(ch, dim_head=dim, heads=ch // dim, num_blocks=num_blocks[i]),
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),  # features down
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),  # illumination features down
            ]))
            ch *= 2

        self.bottleneck = IGAB(ch, dim_head=dim, heads=ch // dim, num_blocks=num_blocks[-1])

        self.decoder_layers = nn.ModuleList()
        for i in range(level):
            half = ch // 2
            self.decoder_layers.append(nn.ModuleList([
                nn.ConvTranspose2d(ch, half, kernel_size=2, stride=2),
                nn.Conv2d(ch, half, 1, 1, bias=False),  # fuse upsampled features with the skip
                IGAB(half, dim_head=dim, heads=half // dim, num_blocks=num_blocks[level - 1 - i]),
            ]))
            ch = half

        self.mapping = nn.Conv2d(dim, out_dim, 3, 1, 1, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official init inside the denoiser: Linear ~ trunc-normal(0.02), zero bias; LayerNorm 1/0."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, illu_fea: torch.Tensor) -> torch.Tensor:
        """Restore the lit-up image ``x`` (B, 3, H, W) with ``illu_fea`` (B, dim, H, W)."""
        fea = self.embedding(x)
        skips: list[torch.Tensor] = []
        illu_skips: list[torch.Tensor] = []
        for igab, fea_down, illu_down in self.encoder_layers:
            fea = igab(fea, illu_fea)
            skips.append(fea)
            illu_skips.append(illu_fea)
            fea = fea_down(fea)
            illu_fea = illu_down(illu_fea)

        fea = self.bottleneck(fea, illu_fea)

        for up, fuse, igab in self.decoder_layers:
            fea = fuse(torch.cat([up(fea), skips.pop()], dim=1))
            fea = igab(fea, illu_skips.pop())

        return self.mapping(fea) + x


class RetinexFormerSingleStage(nn.Module):
    """One estimate-illumination-then-denoise stage (ORF + IGT in the paper's terms)."""

    def __init__(self, in_channels: int, out_channels: int, n_feat: int, level: int,
                 num_blocks: Sequence[int]) -> None:
        super().__init__()
        self.estimator = IlluminationEstimator(n_feat)
        self.denoiser = Denoiser(in_channels, out_channels, n_feat, level, num_blocks)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        illu_fea, illu_map = self.estimator(img)
        lit_up = img * illu_map + img
        return self.denoiser(lit_up, illu_fea)


@NETWORKS.register("RetinexFormer")
class RetinexFormer(nn.Module):
    """Retinexformer for low-light enhancement: (B, 3, H, W) in [0, 1] -> (B, 3, H, W).

    Args:
        in_channels: image channels; must be 3 (the estimator is built for RGB + mean).
        out_channels: output channels; must be 3 (the lit-up RGB image is added back).
        n_feat: base width and head dimension (multiple of 4; the paper uses 40).
        stage: how many single-stage Retinexformers are chained (paper: 1).
        num_blocks: IGAB blocks at level 0, level 1 and the bottleneck (paper: [1, 2, 2]).
    """

    size_multiple: int = 4
    unused_parameters: tuple[str, ...] = ()

    def __init__(self, in_channels: int = 3, out_channels: int = 3, n_feat: int = 40, stage: int = 1,
                 num_blocks: Sequence[int] = (1, 2, 2)) -> None:
        super().__init__()
        if in_channels != 3 or out_channels != 3:
            raise ValueError("RetinexFormer works on RGB images: in_channels and out_channels must be 3, "
                             f"got {in_channels} and {out_channels}")
        if n_feat <= 0 or n_feat % 4:
            raise ValueError(f"RetinexFormer n_feat must be a positive multiple of 4 "
                             f"(the illumination estimator's conv has 4 groups), got {n_feat}")
        if len(num_blocks) != 3:
            raise ValueError(f"RetinexFormer num_blocks needs 3 entries (level 0, level 1, bottleneck), "
                             f"got {list(num_blocks)}")
        if stage < 1:
            raise ValueError(f"RetinexFormer stage must be >= 1, got {stage}")
        self.stage = stage
        blocks = [int(n) for n in num_blocks]
        self.body = nn.Sequential(*[
            RetinexFormerSingleStage(in_channels, out_channels, n_feat, level=2, num_blocks=blocks)
            for _ in range(stage)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
