"""The two ICEML dehazing networks, RtxICE-Net and ASMICE-Net (Altaza29/ICEML).

ICEML ("Inverse Consistency Entangled Mutual Learning") trains two small dehazing networks that
share one backbone design and differ only in what they predict:

* **RtxICE-Net** (Retinex view, hazy = clean * L): predicts the inverse "haze illumination"
  ``lr_inv = L^-1 >= 0`` per pixel and channel (ReLU head) and dehazes by ``J = I * lr_inv``.
* **ASMICE-Net** (atmospheric scattering view): two copies of the backbone predict the
  transmission ``t`` (1 channel, sigmoid) and a per-pixel RGB airlight map ``a`` (3 channels,
  sigmoid, *not* a global scalar); ``J = (I - a) / max(t, 0.1) + a`` (see ``models.physics``).

The shared backbone works at 1/4 resolution with ``dim`` (64) channels:
PixelUnshuffle(2) -> conv3x3 12->12 -> PixelUnshuffle(2) -> conv3x3 48->dim -> 3 ConvNeXt-style
blocks with SimAM -> 3 FA blocks (FFA-Net style, channel + "pixel" attention) -> conv3x3 dim->48
-> PixelShuffle(2) -> conv3x3 12->12 -> PixelShuffle(2) -> conv3x3 3->C_out -> head activation.
There is no global skip from the input. H and W must be multiples of 4 (``size_multiple = 4``;
the framework pads and crops).

Quirks of the official code that are reproduced:

* Each backbone also declares a 4th ConvNeXt block (``acm4``) and a 4th FA block (``fa4``) that
  its forward never calls. They are kept so that the official checkpoint
  (``final_dehazing_model.pth``) loads with ``strict=True`` and the published parameter counts
  hold: RtxICE-Net 534,012 ("0.534M"; 415,036 executed) and ASMICE-Net 1,067,968 ("1.068M";
  830,016 executed). They are listed in ``unused_parameters`` and receive no gradient.
* In the ConvNeXt block the shortcut itself goes through SimAM, SimAM follows the depthwise
  conv and both pointwise convs, there is no layer scale / drop path, and GELU is exact.
* The FA block's "pixel attention" is a full per-channel gate (1x1 dim->dim twice), not
  FFA-Net's single-channel map; its channel attention reduces by 16 with bias-free 1x1 convs.
* RtxICE-Net's ``J`` and ASMICE-Net's ``J`` are not clamped (the official code clamps only
  when saving images); ASMICE-Net's returned ``t`` is the unclamped sigmoid.

Interfaces: ``forward(x)`` returns the dehazed image for both nets (the framework contract);
``RtxICENet.inverse_illumination(x)`` gives ``lr_inv`` and ``RtxICENet.forward_maps(x)`` gives
``(J, lr_inv)``; ``ASMICENet.forward_maps(x)`` gives ``(J, t, a)`` as the official ``ASM_Module``.

``dim`` is not an official argument (the official code hard-codes 64); it exists so that
small test configurations can be built. The released checkpoint is one state dict of the
official ``CombinedModel`` wrapper (keys ``asm_model.*`` and ``retinex_model.*``), which
:class:`ICEMLCombinedModel` reproduces.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import NETWORKS
from models.physics import dehaze_image

__all__ = [
    "SimAM",
    "ConvNeXtBlock",
    "ChannelAttention",
    "PixelAttention",
    "FABlock",
    "ICEMLBody",
    "RtxICENet",
    "ASMICENet",
    "ICEMLCombinedModel",
]

# blocks each backbone declares but never runs (kept for checkpoint compatibility)
_UNUSED_BODY_BLOCKS = ("acm4.", "fa4.")


class SimAM(nn.Module):
    """Parameter-free attention (SimAM, Yang et al. 2021): ``x * sigmoid(energy(x))``.

    Per channel, with ``d = (x - mean_HW x)^2`` and ``n = H*W - 1``, the inverse energy is
    ``d / (4 * (sum_HW d / n + e_lambda)) + 0.5``; distinctive pixels get larger weights.
    """

    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-2] * x.shape[-1] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        energy_inv = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(energy_inv)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-style block with SimAM: ``SimAM(x) + SimAM(pw2(GELU(SimAM(pw1(LN(SimAM(dw7(x))))))))``.

    Args:
        dim: channels (64 in ICEML); the inverted bottleneck uses ``4 * dim``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw_conv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw_conv1 = nn.Conv2d(dim, 4 * dim, kernel_size=1)
        self.pw_conv2 = nn.Conv2d(4 * dim, dim, kernel_size=1)
        self.simam = SimAM()  # parameter-free, so one instance serves every position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.simam(x)
        y = self.simam(self.dw_conv(x))
        y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over channels
        y = F.gelu(self.simam(self.pw_conv1(y)))
        y = self.simam(self.pw_conv2(y))
        return y + shortcut


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(fc2(ReLU(fc1(GAP(x)))))``, bias-free 1x1 convs.

    Args:
        in_channels: channels of ``x``.
        reduction_ratio: hidden width is ``in_channels // reduction_ratio`` (16 in ICEML).
    """

    def __init__(self, in_channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        hidden = in_channels // reduction_ratio
        if hidden < 1:
            raise ValueError(f"in_channels ({in_channels}) must be at least reduction_ratio ({reduction_ratio})")
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, in_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(w)


class PixelAttention(nn.Module):
    """Per-pixel, per-channel gate: ``x * sigmoid(conv2(ReLU(conv1(x))))``, bias-free 1x1 convs.

    Args:
        in_channels: channels of ``x`` (the gate has the same number of channels).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(x))))


class FABlock(nn.Module):
    """Feature-attention block (FFA-Net style) with an inner and an outer residual.

    ``u = conv2(ReLU(conv1(x)) + x)``, then channel attention, then pixel attention, ``+ x``.

    Args:
        channels: feature channels (64 in ICEML).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.channel_attention = ChannelAttention(channels)
        self.pixel_attention = PixelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.conv2(F.relu(self.conv1(x)) + x)
        return self.pixel_attention(self.channel_attention(u)) + x


class ICEMLBody(nn.Module):
    """The backbone shared by all ICEML sub-networks (official ``dehazing_module`` /
    ``autonext_module_sigmoid``); see the module docstring for the layer sequence.

    Args:
        in_channels: image channels; must be 3 (the 48 = 3 * 4 * 4 channels after the two
            pixel-unshuffles are fixed in the official design).
        out_channels: channels of the prediction (3 for lr_inv and airlight, 1 for t).
        dim: feature channels at 1/4 resolution (64 in ICEML; at least 16 because the channel
            attention reduces by 16). Not an official argument; for small test builds.
        head: output activation, ``"relu"`` (RtxICE-Net) or ``"sigmoid"`` (ASM branches).
    """

    size_multiple: int = 4
    unused_parameters: tuple[str, ...] = _UNUSED_BODY_BLOCKS

    def __init__(self, in_channels: int = 3, out_channels: int = 3, dim: int = 64, head: str = "relu") -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError(f"the ICEML backbone is built for RGB input (in_channels=3), got {in_channels}")
        if dim < 16:
            raise ValueError(f"dim must be at least 16 (channel attention reduces by 16), got {dim}")
        if head not in ("relu", "sigmoid"):
            raise ValueError(f"head must be 'relu' or 'sigmoid', got {head!r}")
        self.head = head
        c2, c4 = in_channels * 4, in_channels * 16
        self.mid_conv1 = nn.Conv2d(c2, c2, kernel_size=3, padding=1)
        self.convv = nn.Conv2d(c4, dim, kernel_size=3, padding=1)
        self.acm1 = ConvNeXtBlock(dim)
        self.acm2 = ConvNeXtBlock(dim)
        self.acm3 = ConvNeXtBlock(dim)
        self.acm4 = ConvNeXtBlock(dim)  # declared, never called (official quirk)
        self.fa1 = FABlock(dim)
        self.fa2 = FABlock(dim)
        self.fa3 = FABlock(dim)
        self.fa4 = FABlock(dim)  # declared, never called (official quirk)
        self.con = nn.Conv2d(dim, c4, kernel_size=3, padding=1)
        self.mid_conv2 = nn.Conv2d(c2, c2, kernel_size=3, padding=1)
        self.final_conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) with H, W multiples of 4 -> (B, out_channels, H, W)."""
        y = F.pixel_unshuffle(self.mid_conv1(F.pixel_unshuffle(x, 2)), 2)
        y = self.convv(y)
        y = self.acm3(self.acm2(self.acm1(y)))
        y = self.fa3(self.fa2(self.fa1(y)))
        y = F.pixel_shuffle(self.mid_conv2(F.pixel_shuffle(self.con(y), 2)), 2)
        y = self.final_conv(y)
        return torch.relu(y) if self.head == "relu" else torch.sigmoid(y)


@NETWORKS.register("RtxICE-Net")
class RtxICENet(ICEMLBody):
    """RtxICE-Net: Retinex-embedded dehazing, ``J = I * lr_inv`` with ``lr_inv = body(I) >= 0``.

    The state dict is the official ``retinexmodule.dehazing_module(in_channels=3)``'s
    (= the ``retinex_model.*`` part of the released checkpoint). 534,012 parameters, of which
    ``acm4``/``fa4`` (118,976) are never used.

    Args:
        in_channels: must be 3 (official argument name).
        dim: backbone width (64 = paper; smaller only for tests).
    """

    size_multiple: int = 4
    unused_parameters: tuple[str, ...] = _UNUSED_BODY_BLOCKS

    def __init__(self, in_channels: int = 3, dim: int = 64) -> None:
        super().__init__(in_channels=in_channels, out_channels=3, dim=dim, head="relu")

    def inverse_illumination(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted inverse haze illumination ``lr_inv`` (B, 3, H, W), in [0, inf)."""
        return super().forward(x)

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(J, lr_inv)``: the dehazed image and the map that produced it."""
        lr_inv = self.inverse_illumination(x)
        return x * lr_inv, lr_inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dehazed image ``x * lr_inv`` (B, 3, H, W), not clamped."""
        return x * self.inverse_illumination(x)


class _TransmissionBranch(nn.Module):
    """Official ``transmission_module``: holds the t backbone under the name ``transmission``."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.transmission = ICEMLBody(in_channels=in_ch, out_channels=1, dim=dim, head="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transmission(x)


class _AirlightBranch(nn.Module):
    """Official ``airlight_module``: holds the airlight backbone under the name ``airlight``."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.airlight = ICEMLBody(in_channels=in_ch, out_channels=3, dim=dim, head="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.airlight(x)


@NETWORKS.register("ASMICE-Net")
class ASMICENet(nn.Module):
    """ASMICE-Net: ASM-embedded dehazing from a predicted transmission and airlight map.

    ``t = transmission(I)`` (B, 1, H, W) and ``a = airlight(I)`` (B, 3, H, W), both sigmoid
    outputs of their own backbone; ``J = (I - a) / max(t, t_min) + a``. The state dict is the
    official ``unsupervised_modules.ASM_Module(in_ch=3)``'s (keys ``transmission.transmission.*``
    and ``airlight.airlight.*``). 1,067,968 parameters, of which the four unused blocks
    (237,952) never run.

    Args:
        in_ch: must be 3 (official argument name).
        dim: backbone width of both branches (64 = paper; smaller only for tests).
        t_min: lower clamp of ``t`` in the inversion (0.1 in the official code; a plain
            attribute, not part of the state dict).
    """

    size_multiple: int = 4
    unused_parameters: tuple[str, ...] = tuple(
        f"{branch}.{block}" for branch in ("transmission.transmission", "airlight.airlight")
        for block in _UNUSED_BODY_BLOCKS
    )

    def __init__(self, in_ch: int = 3, dim: int = 64, t_min: float = 0.1) -> None:
        super().__init__()
        self.transmission = _TransmissionBranch(in_ch, dim)
        self.airlight = _AirlightBranch(in_ch, dim)
        self.t_min = float(t_min)

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(J, t, a)``: dehazed image (unclamped), transmission (unclamped sigmoid, B×1×H×W)
        and airlight map (B×3×H×W) — the official ``ASM_Module`` outputs."""
        t = self.transmission(x)
        a = self.airlight(x)
        return dehaze_image(x, t, a, t_min=self.t_min), t, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dehazed image ``(x - a) / max(t, t_min) + a`` (B, 3, H, W), not clamped."""
        return self.forward_maps(x)[0]


class ICEMLCombinedModel(nn.Module):
    """The official ``CombinedModel`` wrapper whose state dict is the released checkpoint.

    Keys are ``asm_model.*`` (ASMICE-Net) and ``retinex_model.*`` (RtxICE-Net), so
    ``final_dehazing_model.pth`` loads with ``strict=True``; the two networks are then used
    on their own as ``.asm_model`` and ``.retinex_model``.

    Args:
        asm_model: the ASMICE-Net (built at the paper configuration when omitted).
        retinex_model: the RtxICE-Net (built at the paper configuration when omitted).
    """

    size_multiple: int = 4
    unused_parameters: tuple[str, ...] = tuple(
        [f"asm_model.{p}" for p in ASMICENet.unused_parameters]
        + [f"retinex_model.{p}" for p in RtxICENet.unused_parameters]
    )

    def __init__(self, asm_model: ASMICENet | None = None, retinex_model: RtxICENet | None = None) -> None:
        super().__init__()
        self.asm_model = asm_model if asm_model is not None else ASMICENet()
        self.retinex_model = retinex_model if retinex_model is not None else RtxICENet()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(J_asm, t, a, lr_inv)`` as in the official wrapper (``J_ret = x * lr_inv``)."""
        j_asm, t, a = self.asm_model.forward_maps(x)
        lr_inv = self.retinex_model.inverse_illumination(x)
        return j_asm, t, a, lr_inv
