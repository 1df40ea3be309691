"""Metrics against independent reference implementations written here with numpy/scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from common_utils.metrics import SSIM_PROTOCOLS, gt_mean_correct, psnr, rgb_to_y, ssim_piq, ssim_rgb, ssim_y


def _images(b: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-plus-noise reference and a distorted version (noise, brightness shift, blur)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + c) * torch.cos(4 * yy - c) for c in range(3)])
    gt = (base[None] + 0.1 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)
    out = torch.nn.functional.avg_pool2d(gt, 3, stride=1, padding=1, count_include_pad=False)
    out = (0.8 * out + 0.05 + 0.08 * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    return out, gt


# --------------------------------------------------------------------------- reference implementations
def ref_psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


def ref_gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ref_ssim_y(x: np.ndarray, y: np.ndarray, clip: bool = True) -> float:
    """x, y: (3, H, W) float in [0, 1]. Y = .299R + .587G + .114B, x255, rounded, valid 11x11 Gaussian."""
    def luma(im):
        return np.round((0.299 * im[0] + 0.587 * im[1] + 0.114 * im[2]) * 255.0)

    a, b = luma(x.astype(np.float64)), luma(y.astype(np.float64))
    win = ref_gaussian()
    filt = lambda t: correlate2d(t, win, mode="valid")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    if clip:
        cs = np.maximum(cs, 0.0)
    lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    return float(np.mean(lum * cs))


# --------------------------------------------------------------------------- PSNR
def test_psnr_matches_numpy():
    out, gt = _images(b=3)
    got = psnr(out, gt)
    assert got.shape == (3,)
    for i in range(3):
        assert got[i].item() == pytest.approx(ref_psnr(out[i].numpy(), gt[i].numpy()), abs=1e-4)


def test_psnr_known_value():
    gt = torch.full((1, 3, 8, 8), 0.5)
    out = gt + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(out, gt).item() == pytest.approx(20.0, abs=1e-4)


def test_identical_images_give_large_psnr_and_ssim_one():
    _, gt = _images(b=2)
    assert torch.all(psnr(gt, gt) >= 79.9)  # 10 log10(1 / eps) = 80 dB: finite, not inf
    assert torch.isfinite(psnr(gt, gt)).all()
    for fn in (ssim_y, ssim_rgb, ssim_piq):
        assert torch.allclose(fn(gt, gt).double(), torch.ones(2, dtype=torch.float64), atol=1e-6), fn.__name__


# --------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("shape", [(48, 64), (37, 29)])
def test_ssim_y_matches_reference(shape):
    out, gt = _images(b=2, h=shape[0], w=shape[1], seed=1)
    got = ssim_y(out, gt)
    assert got.shape == (2,)
    for i in range(2):
        ref = ref_ssim_y(out[i].numpy(), gt[i].numpy())
        assert 0.2 < ref < 0.95  # a meaningful, non-trivial value
        assert got[i].item() == pytest.approx(ref, abs=1e-4)


def test_ssim_y_clips_negative_contrast_structure():
    """An inverted image has negative correlation: the clipped protocol gives >= 0, unclipped would be < 0."""
    _, gt = _images(b=1, seed=2)
    inv = 1.0 - gt
    ref = ref_ssim_y(inv[0].numpy(), gt[0].numpy())
    unclipped = ref_ssim_y(inv[0].numpy(), gt[0].numpy(), clip=False)
    assert unclipped < 0 <= ref
    assert ssim_y(inv, gt).item() == pytest.approx(ref, abs=1e-4)


def test_ssim_y_rounds_luma():
    """Rounding Y to integer grey levels is part of the protocol: a sub-level change is invisible."""
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(20, 230, (1, 1, 40, 40), generator=g).double()
    gray = lambda lv: ((lv + 0.1) / 255).expand(1, 3, 40, 40)
    out, shifted = gray(levels), gray(levels + 0.2)  # Y*255 = k + 0.1 and k + 0.3: both round to k
    gt = gray(torch.randint(20, 230, (1, 1, 40, 40), generator=g).double())
    assert ssim_y(shifted, gt).item() == ssim_y(out, gt).item()
    assert ssim_y(shifted, gt, round_y=False).item() != ssim_y(out, gt, round_y=False).item()


def test_ssim_rgb_matches_pytorch_msssim():
    from pytorch_msssim import ssim

    out, gt = _images(b=3, seed=4)
    got = ssim_rgb(out, gt)
    assert got.shape == (3,)
    for i in range(3):
        ref = ssim(out[i:i + 1], gt[i:i + 1], data_range=1.0, size_average=True).item()
        assert got[i].item() == pytest.approx(ref, abs=1e-6)
    assert got.mean().item() == pytest.approx(ssim(out, gt, data_range=1.0).item(), abs=1e-6)


def test_ssim_protocols_relations():
    """Y-channel SSIM differs from RGB SSIM; piq's SSIM equals RGB SSIM below 384 px (no downsampling)
    and RGB SSIM of 2x2 average-pooled images at ~384-639 px."""
    out, gt = _images(b=1, seed=5)
    assert abs(ssim_y(out, gt).item() - ssim_rgb(out, gt).item()) > 0.01
    assert ssim_piq(out, gt).item() == pytest.approx(ssim_rgb(out, gt).item(), abs=1e-5)
    big_out, big_gt = _images(b=1, h=392, w=392, seed=5)  # round(392 / 256) = 2
    pooled = ssim_rgb(torch.nn.functional.avg_pool2d(big_out, 2), torch.nn.functional.avg_pool2d(big_gt, 2))
    assert ssim_piq(big_out, big_gt).item() == pytest.approx(pooled.item(), abs=1e-5)


def test_ssim_protocol_table_maps_each_name_to_its_variant():
    """Evaluation looks SSIM up by protocol name: 'y' must be the luma SSIM of the numpy reference,
    'rgb' pytorch-msssim's RGB SSIM (a swapped table passes every direct function test)."""
    from pytorch_msssim import ssim

    out, gt = _images(b=1, seed=5)
    want_y = ref_ssim_y(out[0].numpy(), gt[0].numpy())
    want_rgb = ssim(out, gt, data_range=1.0).item()
    assert abs(want_y - want_rgb) > 0.01  # the pair tells the two apart
    assert SSIM_PROTOCOLS["y"](out, gt).item() == pytest.approx(want_y, abs=1e-5)
    assert SSIM_PROTOCOLS["rgb"](out, gt).item() == pytest.approx(want_rgb, abs=1e-5)
    assert SSIM_PROTOCOLS["piq"](out, gt).item() == pytest.approx(ssim_piq(out, gt).item(), abs=1e-6)


# --------------------------------------------------------------------------- batching
@pytest.mark.parametrize("fn", [psnr, ssim_y, ssim_rgb, ssim_piq], ids=lambda f: f.__name__)
def test_batched_equals_per_image(fn):
    out, gt = _images(b=4, seed=6)
    batched = fn(out, gt)
    assert batched.shape == (4,)
    single = torch.stack([fn(out[i:i + 1], gt[i:i + 1])[0] for i in range(4)])
    assert torch.allclose(batched.double(), single.double(), atol=1e-6)
    assert len(set(batched.tolist())) == 4  # really per image, not one broadcast value


# --------------------------------------------------------------------------- GT-mean correction
def test_gt_mean_correct_matches_mean_gray_level():
    _, gt = _images(b=3, seed=7)
    gt = gt * 0.6 + 0.1  # keep corrected outputs below 1 (no clipping)
    scales = torch.tensor([0.3, 0.5, 1.2]).view(3, 1, 1, 1)
    out = (gt * scales).clamp(0, 1)
    corr = gt_mean_correct(out, gt)
    mean_y = lambda t: rgb_to_y(t).flatten(1).mean(1)
    assert torch.allclose(mean_y(corr), mean_y(gt), atol=1e-5)
    # a globally scaled output is restored exactly (up to float error)
    assert torch.allclose(corr[:2], gt[:2], atol=1e-5)
    assert corr.min() >= 0 and corr.max() <= 1


def test_gt_mean_correct_clamps_and_survives_black_output():
    gt = torch.full((1, 3, 16, 16), 0.9)
    out = torch.zeros(1, 3, 16, 16)
    out[..., :8, :] = 0.5
    corr = gt_mean_correct(out, gt)
    assert corr.max() <= 1.0 and torch.isfinite(corr).all()
    black = gt_mean_correct(torch.zeros(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    assert torch.isfinite(black).all() and black.abs().max() == 0


# --------------------------------------------------------------------------- strip-wise PSNR / SSIM (large images)
@pytest.mark.parametrize("ssim, h, w", [("y", 130, 90), ("rgb", 130, 90), ("piq", 130, 90),  # piq: no pooling
                                        ("piq", 530, 400), ("y", 60, 300)])  # piq pools by 2; a wide image
def test_psnr_and_ssim_in_strips_equal_the_whole_image_values(ssim, h, w):
    """Every strip reads the window's halo and is weighted by its rows: the strips' result is the
    whole image's, for every SSIM protocol, with many strips (44-row strips here) and a remainder."""
    from common_utils.metrics import psnr_ssim_in_strips

    out, gt = _images(2, h, w, seed=3)
    p, s = psnr_ssim_in_strips(out, gt, ssim, strip_pixels=w * 10)  # 10 rows asked: at least 44 used
    assert torch.allclose(p, psnr(out, gt), atol=1e-4, rtol=0)
    assert torch.allclose(s, SSIM_PROTOCOLS[ssim](out, gt), atol=2e-6, rtol=0)


def test_psnr_and_ssim_in_strips_of_the_gt_mean_corrected_output():
    from common_utils.metrics import gt_mean_scale, psnr_ssim_in_strips

    out, gt = _images(1, 150, 70, seed=4)
    scale = gt_mean_scale(out, gt, strip_pixels=70 * 17)  # 17-row strips
    corr = gt_mean_correct(out, gt)
    p, s = psnr_ssim_in_strips(out, gt, "y", strip_pixels=70 * 50, scale=scale)
    assert torch.allclose(p, psnr(corr, gt), atol=1e-4, rtol=0)
    assert torch.allclose(s, ssim_y(corr, gt), atol=2e-6, rtol=0)
