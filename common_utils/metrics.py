"""Full-reference image quality metrics with their protocol in their arguments.

All functions take batched ``(B, 3, H, W)`` tensors in [0, 1] on any device and return one value
per image (a ``(B,)`` tensor), so metrics run on the device, batched, without host round trips.

Protocols:
- :func:`psnr`: RGB, data range 1, MSE over C*H*W (the SSLL evaluation, pyiqa ``psnr``).
- :func:`ssim_y`: the SSLL evaluation's SSIM (pyiqa ``ssim`` defaults): Y of YIQ scaled to 255
  and rounded, 11x11 Gaussian with sigma 1.5, 'valid' filtering, contrast term clipped at 0.
- :func:`ssim_rgb`: pytorch-msssim's SSIM on RGB (11x11 Gaussian, sigma 1.5, data range 1).
- :func:`ssim_piq`: the ICEML evaluation's SSIM (piq defaults, with its 1/round(min(H,W)/256)
  average-pool downsampling).
- :func:`ms_ssim_y`: MS-SSIM on the same luma (pytorch-msssim, five scales).
- LPIPS: :class:`LPIPSMetric` (AlexNet, v0.1, inputs mapped to [-1, 1]).
- No-reference NIQE: :mod:`common_utils.no_reference`.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from models.lpips import LPIPSMetric, LPIPSUnavailable  # noqa: F401  (re-export)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """PSNR per image in dB: 10*log10(range^2 / (MSE + eps)), MSE over all channels and pixels."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range ** 2 / (mse + eps))


@lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 2-D Gaussian (MATLAB fspecial style), shape (1, 1, size, size)."""
    half = (size - 1) / 2.0
    coords = torch.arange(size, dtype=torch.float64) - half
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    g = torch.exp(-(xx ** 2 + yy ** 2) / (2.0 * sigma ** 2))
    g[g < torch.finfo(torch.float64).eps * g.max()] = 0
    g = g / g.sum()
    return g.to(device=device, dtype=dtype)[None, None]


@lru_cache(maxsize=8)
def _gaussian_factor(size: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor | None:
    """The 1-D factor g with window = g g^T, or None when fspecial's zeroing broke separability."""
    win = _gaussian_window(size, sigma, "cpu", torch.float64)[0, 0]
    g = win.sum(0)
    if not torch.allclose(win, g[:, None] * g[None, :], rtol=0, atol=1e-15):
        return None
    return g.to(device=device, dtype=dtype)


def _gaussian_filter_valid(t: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """'Valid' Gaussian filtering of every channel of ``t``.

    The window is separable at the sizes used here (nothing is zeroed), so two 1-D passes give the
    2-D result up to rounding (~1e-16 in float64) at 2k instead of k^2 multiply-adds per pixel:
    about 15x faster at 600x400 on the CPU, where metric time matters (BENCHMARKS.md section 3d).
    """
    c, key = t.shape[1], (size, sigma, str(t.device), t.dtype)
    g = _gaussian_factor(*key)
    if g is None:
        return F.conv2d(t, _gaussian_window(*key).expand(c, 1, -1, -1), groups=c)
    t = F.conv2d(t, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(t, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def _ssim_map_valid(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int = 11,
                    sigma: float = 1.5, clamp_cs: bool = True) -> torch.Tensor:
    """SSIM map with 'valid' filtering; the five local moments are filtered in one stacked call.

    ``clamp_cs`` clips the contrast-structure term at 0 (pyiqa / pytorch-msssim); piq does not.
    """
    c = x.shape[1]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    moments = _gaussian_filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), win_size, sigma)
    mu1, mu2, exx, eyy, exy = moments.split(c, dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs = (2 * (exy - mu12) + c2) / ((exx - mu1_sq) + (eyy - mu2_sq) + c2)
    if clamp_cs:
        cs = F.relu(cs)
    return ((2 * mu12 + c1) / (mu1_sq + mu2_sq + c1)) * cs


@lru_cache(maxsize=8)
def _luma_weights(device: str, dtype: torch.dtype) -> torch.Tensor:
    # cached: building it per call is a host-to-device copy (a synchronisation) on CUDA
    return torch.tensor([0.299, 0.587, 0.114], dtype=dtype).view(1, 3, 1, 1).to(device)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma of YIQ (0.299 R + 0.587 G + 0.114 B), shape (B, 1, H, W)."""
    return (x * _luma_weights(str(x.device), x.dtype)).sum(1, keepdim=True)


def ssim_y(x: torch.Tensor, y: torch.Tensor, win_size: int = 11, sigma: float = 1.5,
           round_y: bool = True) -> torch.Tensor:
    """SSIM on the Y channel scaled to [0, 255] and rounded (the SSLL paper's protocol), per image."""
    # both images go through the float64 luma conversion in one batch (fewer kernel launches)
    lum = rgb_to_y(torch.cat([x.double(), y.double()])) * 255.0
    if round_y:
        lum = lum.round()
    yx, yy = lum.split(x.shape[0])
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    return _ssim_map_valid(yx, yy, 255.0, win_size, sigma).flatten(1).mean(1).to(out_dtype)


def ssim_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM on RGB from pytorch-msssim (Gaussian 11, sigma 1.5, data range 1), per image."""
    from pytorch_msssim import ssim

    return ssim(x.float(), y.float(), data_range=1.0, size_average=False)


def ssim_piq(x: torch.Tensor, y: torch.Tensor, downsample: bool = True) -> torch.Tensor:
    """SSIM as piq computes it by default (ICEML protocol): RGB, 11/1.5 Gaussian, valid filtering,
    average-pool downsampling by ``max(1, round(min(H, W) / 256))`` first."""
    x, y = x.double(), y.double()
    if downsample:
        f = max(1, round(min(x.shape[-2:]) / 256))
        if f > 1:
            x = F.avg_pool2d(x, kernel_size=f)
            y = F.avg_pool2d(y, kernel_size=f)
    return _ssim_map_valid(x, y, 1.0, 11, 1.5, clamp_cs=False).mean(dim=(-1, -2)).mean(1).float()


SSIM_PROTOCOLS = {"y": ssim_y, "rgb": ssim_rgb, "piq": ssim_piq}

#: MS-SSIM's five scales with an 11-px window need this many pixels on the short side
MS_SSIM_MIN_SIDE = 161


def ms_ssim_y(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image on the luma (YIQ Y x255, rounded, as :func:`ssim_y`), pytorch-msssim's
    implementation (Wang et al. 2003 weights, Gaussian 11/1.5, data range 255). Images whose short
    side is below :data:`MS_SSIM_MIN_SIDE` give NaN: the coarsest scale would not fit the window."""
    from pytorch_msssim import ms_ssim

    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return torch.full((x.shape[0],), float("nan"), device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        lum = (rgb_to_y(torch.cat([x.double(), y.double()])) * 255.0).round().float()
        yx, yy = lum.split(x.shape[0])
        return ms_ssim(yx, yy, data_range=255.0, size_average=False)


def _strips(length: int, rows: int, halo: int) -> list[tuple[int, int, int]]:
    """``(start, stop, weight)`` of strips whose 'valid' maps tile rows ``[0, length - halo)``:
    each strip reads ``halo`` rows more than it scores, ``weight`` is its number of map rows."""
    valid = length - halo
    return [(a, min(a + rows, valid) + halo, min(a + rows, valid) - a) for a in range(0, valid, rows)]


def gt_mean_scale(out: torch.Tensor, gt: torch.Tensor, strip_pixels: int = 2048 * 2048) -> torch.Tensor:
    """The factor of :func:`gt_mean_correct` (GT luma mean over output luma mean), summed over strips
    of at most ``strip_pixels`` pixels: shape ``(B, 1, 1, 1)``."""
    rows = max(1, strip_pixels // max(out.shape[-1], 1))
    acc = torch.zeros(2, out.shape[0], dtype=torch.float64, device=out.device)
    for a in range(0, out.shape[-2], rows):
        acc[0] += rgb_to_y(gt[..., a:a + rows, :].double()).flatten(1).sum(1)
        acc[1] += rgb_to_y(out[..., a:a + rows, :].double()).flatten(1).sum(1)
    n = out.shape[-2] * out.shape[-1]
    return ((acc[0] / n) / (acc[1] / n).clamp_min(1e-8)).to(out.dtype).view(-1, 1, 1, 1)


def psnr_ssim_in_strips(x: torch.Tensor, y: torch.Tensor, ssim: str = "y", strip_pixels: int = 2048 * 2048,
                        scale: torch.Tensor | None = None, win_size: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR and SSIM (``ssim``: a key of :data:`SSIM_PROTOCOLS`) per image, computed over horizontal
    strips of at most ``strip_pixels`` pixels: for images too large for the whole-image metrics
    (:mod:`common_utils.memory_budget`). The values are those of :func:`psnr` and the SSIM protocol
    on the whole image, up to float rounding: PSNR sums squared errors strip by strip; every SSIM
    protocol is the mean of a 'valid' local map, so each strip reads ``win_size - 1`` rows more than
    it scores and the strips' means are weighted by their rows; piq's average-pool downsampling runs
    on strips aligned to its factor, then SSIM on the (small) downsampled image. ``scale`` multiplies
    ``x`` (clamped to [0, 1]) first: the GT-mean columns (:func:`gt_mean_scale`).
    """
    h, w = x.shape[-2:]
    rows = max(4 * win_size, strip_pixels // max(w, 1))

    def part(a: int, b: int) -> torch.Tensor:  # rows a:b of x, GT-mean corrected when asked
        t = x[..., a:b, :].float()
        return (t * scale).clamp(0, 1) if scale is not None else t

    sse = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for a in range(0, h, rows):
        xs, ys = part(a, a + rows), y[..., a:a + rows, :].float()
        sse += (xs - ys).double().pow(2).flatten(1).sum(1)
    mse = (sse / (x.shape[1] * h * w)).float()
    psnr_value = 10.0 * torch.log10(1.0 / (mse + 1e-8))
    if ssim == "piq" and max(1, round(min(h, w) / 256)) > 1:
        f = round(min(h, w) / 256)
        step = max(f, rows // f * f)
        pooled = [(F.avg_pool2d(part(a, min(a + step, h // f * f)).double(), f),
                   F.avg_pool2d(y[..., a:min(a + step, h // f * f), :].double(), f))
                  for a in range(0, h // f * f, step)]
        small_x, small_y = (torch.cat(p, dim=-2) for p in zip(*pooled))
        return psnr_value, ssim_piq(small_x, small_y, downsample=False)
    fn = {"y": ssim_y, "rgb": ssim_rgb, "piq": lambda a, b: ssim_piq(a, b, downsample=False)}[ssim]
    acc = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for a, b, weight in _strips(h, rows, win_size - 1):
        acc += fn(part(a, b), y[..., a:b, :].float()).double() * weight
    return psnr_value, (acc / (h - win_size + 1)).float()


def gt_mean_correct(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Scale ``out`` so its mean gray level equals the GT's (the KinD/LLFlow "GT-mean" protocol)."""
    scale = rgb_to_y(gt).flatten(1).mean(1) / rgb_to_y(out).flatten(1).mean(1).clamp_min(1e-8)
    return (out * scale.view(-1, 1, 1, 1)).clamp(0, 1)
