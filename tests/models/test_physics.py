"""Atmospheric scattering model and dark channel prior (models/physics.py).

The DCP is a biased estimator by design, so its accuracy is checked on a synthetic scene with a
known answer and explicit tolerances. The scene: a 128x128 blocky texture (4x4 blocks) whose
colours lie in [0.25, 1] except one randomly chosen channel per block in [0, 0.03] (the dark
channel prior holds, as in real outdoor scenes), hazed with A = (0.8, 0.85, 0.9) and a smooth
transmission ramp from 0.05 (top-left) to 0.9 (bottom-right). Tolerances (measured worst case
over 8 seeds in brackets):

* atmospheric light: every channel within 0.10 of the true A [0.078]; the estimate is biased
  because the most hazy pixels that pass the sky threshold still carry ~5-10 % scene light;
* transmission from the estimated A: mean |error| <= 0.06 [0.054], max |error| <= 0.10 [0.083],
  correlation with the true t >= 0.99 [0.998]; from the true A: max |error| <= 0.10 [0.095]
  (omega = 0.95 leaves 5 % haze, and the 15x15 minimum filter sees the largest t in the patch).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common_utils.metrics import psnr
from models.physics import (
    box_filter,
    dark_channel,
    dcp_dehaze,
    dcp_estimate,
    dehaze_image,
    estimate_atmospheric_light,
    estimate_transmission,
    fit_airlight_transmission,
    guided_filter,
    haze_image,
)

A_TRUE = torch.tensor([0.8, 0.85, 0.9]).view(1, 3, 1, 1)


def _scene(seed: int, h: int = 128, w: int = 128, t_lo: float = 0.05, t_hi: float = 0.9):
    g = torch.Generator().manual_seed(seed)
    bh, bw = h // 4, w // 4
    col = 0.25 + 0.75 * torch.rand(1, 3, bh, bw, generator=g)
    dark_idx = torch.randint(0, 3, (1, 1, bh, bw), generator=g)
    near_zero = 0.03 * torch.rand(1, 1, bh, bw, generator=g)
    col = torch.where(torch.arange(3).view(1, 3, 1, 1) == dark_idx, near_zero, col)
    J = F.interpolate(col, size=(h, w), mode="nearest")
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    t = (t_lo + (t_hi - t_lo) * (0.85 * yy + 0.15 * xx)).expand(1, 1, h, w).contiguous()
    return J, t, haze_image(J, t, A_TRUE)


# ----------------------------------------------------------------------------- scattering model

@pytest.mark.parametrize("per_pixel_A", [False, True])
def test_rehazing_a_dehazed_image_returns_the_input(per_pixel_A):
    g = torch.Generator().manual_seed(0)
    I = torch.rand(2, 3, 24, 32, generator=g)
    t = 0.1 + 0.9 * torch.rand(2, 1, 24, 32, generator=g)
    A = torch.rand(2, 3, 24, 32, generator=g) if per_pixel_A else torch.rand(2, 3, 1, 1, generator=g)
    J = dehaze_image(I, t, A)
    assert torch.allclose(haze_image(J, t, A), I, atol=1e-5)
    clean = torch.rand(2, 3, 24, 32, generator=g)
    assert torch.allclose(dehaze_image(haze_image(clean, t, A), t, A), clean, atol=1e-4)


def test_transmission_is_clamped_at_t_min_in_both_directions():
    J = torch.full((1, 3, 2, 2), 0.2)
    A = torch.tensor([0.8, 0.85, 0.9]).view(1, 3, 1, 1)
    t = torch.full((1, 1, 2, 2), 0.01)
    I = haze_image(J, t, A)  # uses t' = 0.1
    assert torch.allclose(I, 0.1 * J + 0.9 * A)
    assert torch.allclose(dehaze_image(I, t, A), J, atol=1e-6)
    assert torch.allclose(haze_image(J, t, A, t_min=0.5), 0.5 * J + 0.5 * A)
    assert torch.allclose(dehaze_image(I, t, A), (I - A) / 0.1 + A)


def test_scattering_model_is_differentiable():
    g = torch.Generator().manual_seed(1)
    J = torch.rand(1, 3, 8, 8, generator=g, requires_grad=True)
    t = (0.2 + 0.8 * torch.rand(1, 1, 8, 8, generator=g)).requires_grad_()
    A = torch.rand(1, 3, 1, 1, generator=g, requires_grad=True)
    dehaze_image(haze_image(J, t, A), t, A).sum().backward()
    for p in (J, t, A):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.allclose(J.grad, torch.ones_like(J), atol=1e-5)  # the round trip is the identity in J


# ----------------------------------------------------------------------------- dark channel

@pytest.mark.parametrize("patch", [1, 3, 5])
def test_dark_channel_is_a_border_cut_window_minimum(patch):
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(2))
    d = dark_channel(x, patch)
    assert d.shape == (2, 1, 7, 9)
    r = patch // 2
    per_pixel = x.amin(dim=1)
    for b in range(2):
        for i in range(7):
            for j in range(9):
                window = per_pixel[b, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
                assert d[b, 0, i, j] == window.min()


def test_dark_channel_rejects_even_patch_and_is_differentiable():
    with pytest.raises(ValueError):
        dark_channel(torch.rand(1, 3, 8, 8), 4)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    dark_channel(x, 3).sum().backward()
    assert x.grad.sum() == 64  # each output pixel sends gradient 1 to its arg-min


# ----------------------------------------------------------------------------- DCP estimates

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dcp_recovers_known_airlight_and_transmission(seed):
    J, t, I = _scene(seed)
    A_est, t_est = dcp_estimate(I)
    assert A_est.shape == (1, 3, 1, 1) and t_est.shape == (1, 1, 128, 128)
    assert (A_est - A_TRUE).abs().max() <= 0.10
    err = (t_est - t).abs()
    assert err.mean() <= 0.06
    assert err.max() <= 0.10
    assert torch.corrcoef(torch.stack([t_est.flatten(), t.flatten()]))[0, 1] >= 0.99
    assert (estimate_transmission(I, A_TRUE) - t).abs().max() <= 0.10


def test_sky_pixels_are_excluded_from_the_airlight():
    J, t, _ = _scene(0)
    # a white, lightly hazed band (dark channel ~0.92 >= 0.75) away from the densest haze; near
    # the densest haze, band pixels would pass through the min filter (their window reaches
    # non-sky pixels), which is how the rule behaves in the official code too
    J[..., -16:, :] = 1.0
    t[..., -16:, :] = 0.6
    I = haze_image(J, t, A_TRUE)
    sky = I[..., -16:, :].mean(dim=(2, 3), keepdim=True)
    A_plain = estimate_atmospheric_light(I, sky_threshold=float("inf"))
    assert torch.allclose(A_plain, sky, atol=1e-3)  # plain He et al. picks the sky
    A_est = estimate_atmospheric_light(I)
    assert (A_est - A_TRUE).abs().max() <= 0.10
    assert (A_est - sky).abs().max() >= 0.05


def test_fewer_valid_pixels_than_requested_and_none_valid():
    I = torch.full((1, 3, 40, 50), 0.9)  # dark channel 0.9: all sky
    # k = int(2000 * 0.005) = 10 requested, but only three pixels are below the threshold
    colours = torch.tensor([[0.5, 0.6, 0.7], [0.4, 0.7, 0.6], [0.3, 0.5, 0.8]])
    for (i, j), c in zip([(3, 4), (20, 30), (39, 0)], colours):
        I[0, :, i, j] = c
    A = estimate_atmospheric_light(I, patch=1, top=0.005)
    assert torch.allclose(A.flatten(), colours.mean(dim=0))
    # no pixel below the threshold: fall back to the plain rule (threshold ignored)
    I_sky = 0.8 + 0.2 * torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(estimate_atmospheric_light(I_sky),
                       estimate_atmospheric_light(I_sky, sky_threshold=float("inf")))


def test_airlight_ties_go_to_the_first_pixel_and_batches_are_independent():
    I = torch.full((1, 3, 10, 10), 0.2)
    I[0, :, 2, 7] = torch.tensor([0.6, 0.5, 0.7])  # dark 0.5, first in raster order
    I[0, :, 8, 1] = torch.tensor([0.5, 0.9, 0.5])  # dark 0.5 as well
    A = estimate_atmospheric_light(I, patch=1, top=0.01)
    assert torch.allclose(A.flatten(), torch.tensor([0.6, 0.5, 0.7]))
    batch = torch.cat([_scene(s)[2] for s in (0, 1)])
    A_batch = estimate_atmospheric_light(batch)
    A_single = torch.cat([estimate_atmospheric_light(batch[i:i + 1]) for i in range(2)])
    assert torch.equal(A_batch, A_single)


def test_transmission_accepts_a_per_pixel_airlight_map():
    _, _, I = _scene(1)
    A = torch.tensor([0.7, 0.8, 0.9]).view(1, 3, 1, 1)
    assert torch.allclose(estimate_transmission(I, A), estimate_transmission(I, A.expand(1, 3, 128, 128)))
    assert torch.allclose(estimate_transmission(I, A, omega=1.0, patch=1), 1 - (I / A).amin(dim=1, keepdim=True))


# ----------------------------------------------------------------------------- DCP dehazer, fits

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dcp_dehaze_removes_haze_from_a_hand_made_scene(seed):
    # the blocky scene obeys the dark channel prior; t from 0.3 to 0.9. Measured over 4 seeds:
    # hazy 12.6 dB -> DCP 16.7-18.2 dB, mean |error| 0.18 -> 0.10-0.11
    J, t, I = _scene(seed, t_lo=0.3)
    out = dcp_dehaze(I)
    assert out.shape == I.shape and out.min() >= 0 and out.max() <= 1
    assert psnr(out, J) >= psnr(I, J) + 3.5
    assert (out - J).abs().mean() <= 0.7 * (I - J).abs().mean()


def test_guided_filter_keeps_constants_and_smooths_like_a_box_when_eps_is_large():
    g = torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    const = torch.full((1, 1, 20, 24), 0.4)
    assert torch.allclose(guided_filter(g, const, 3, 1e-3), const, atol=1e-6)
    src = torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(guided_filter(g, src, 3, 1e6), box_filter(box_filter(src, 3), 3), atol=1e-4)
    # with a tiny eps the guide's own edges pass through (the filter is edge-aware)
    assert torch.allclose(guided_filter(g, g, 3, 1e-8), g, atol=1e-3)


def test_fit_recovers_grey_airlight_and_transmission_of_a_synthetic_pair():
    J, t, _ = _scene(1)
    A = torch.full((1, 3, 1, 1), 0.83)
    I = haze_image(J, t, A)
    A_fit, t_fit = fit_airlight_transmission(I, J)
    assert A_fit.shape == (1, 3, 1, 1) and t_fit.shape == t.shape
    assert (A_fit - 0.83).abs().max() <= 0.006  # the grid step is 0.01
    assert (t_fit - t.clamp(min=0.1)).abs().max() <= 0.02
