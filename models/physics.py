"""Atmospheric scattering model (ASM) and the dark channel prior (DCP), in plain torch.

The one place in the project where the haze physics lives; the ICEML networks, losses and data
loaders all call these functions. Every function works on batches, keeps the device and dtype of
its inputs and is differentiable with respect to its tensor inputs (the DCP pixel *selection*
is not, but the values gathered at the selected pixels are).

Notation and shapes (all images RGB in [0, 1]):

* ``I`` hazy image, ``J`` clean image: (B, 3, H, W);
* ``t`` transmission: (B, 1, H, W) (anything broadcastable works);
* ``A`` atmospheric light / airlight: (B, 3, 1, 1) for a global colour, or a per-pixel map
  (B, 3, H, W) as predicted by ASMICE-Net.

The scattering model is ``I = J * t + A * (1 - t)``. Both directions clamp ``t`` from below at
``t_min`` (0.1 in ICEML) so that the inversion never divides by (almost) zero:

* :func:`haze_image`: ``I = J * t' + A * (1 - t')`` with ``t' = max(t, t_min)`` (ICEML Eq. 6,
  the re-hazing used for inverse consistency);
* :func:`dehaze_image`: ``J = (I - A) / t' + A`` (ICEML Eq. 2); the two are exact inverses of
  each other for the same ``t`` and ``A`` (up to float rounding).

The DCP estimates follow He et al. with the sky exclusion of the official ICEML
``dcp_improved.py``:

* :func:`dark_channel`: minimum over the colour channels, then a ``patch`` x ``patch`` minimum
  filter (windows are cut at the border, i.e. only pixels inside the image count);
* :func:`estimate_atmospheric_light`: mean colour of ``I`` over the ``max(int(H*W*top), 1)``
  pixels with the largest dark channel, ignoring "sky" pixels whose dark channel is
  ``>= sky_threshold``. Ties are broken by raster order (first pixel first). Two cases the
  official code leaves to chance are defined here: when fewer than that many pixels are below
  the threshold, only those below it are averaged (the official code pads the selection with
  arbitrary excluded pixels); when none is below it, the threshold is dropped and the plain He
  et al. rule is used (the official code would average arbitrary pixels);
* :func:`estimate_transmission`: ``t = 1 - omega * dark_channel(I / A)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "haze_image",
    "dehaze_image",
    "dark_channel",
    "estimate_atmospheric_light",
    "estimate_transmission",
    "dcp_estimate",
]

# A below this is treated as this value when dividing by it (only guards black images).
_A_EPS = 1e-6


def haze_image(J: torch.Tensor, t: torch.Tensor, A: torch.Tensor, t_min: float = 0.1) -> torch.Tensor:
    """Synthesise haze: ``I = J * t' + A * (1 - t')`` with ``t' = max(t, t_min)``.

    Args:
        J: clean image (B, 3, H, W).
        t: transmission (B, 1, H, W) or broadcastable.
        A: atmospheric light (B, 3, 1, 1) or a per-pixel map (B, 3, H, W).
        t_min: lower clamp of ``t`` (the gradient w.r.t. ``t`` is zero where it is clamped).
    """
    t_c = t.clamp(min=t_min)
    return J * t_c + A * (1 - t_c)


def dehaze_image(I: torch.Tensor, t: torch.Tensor, A: torch.Tensor, t_min: float = 0.1) -> torch.Tensor:
    """Invert the scattering model: ``J = (I - A) / max(t, t_min) + A`` (not clamped to [0, 1]).

    Args:
        I: hazy image (B, 3, H, W).
        t: transmission (B, 1, H, W) or broadcastable.
        A: atmospheric light (B, 3, 1, 1) or a per-pixel map (B, 3, H, W).
        t_min: lower clamp of ``t``.
    """
    return (I - A) / t.clamp(min=t_min) + A


def _check_patch(patch: int) -> None:
    if not isinstance(patch, int) or patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd integer, got {patch!r}")


def dark_channel(x: torch.Tensor, patch: int = 15) -> torch.Tensor:
    """Dark channel of ``x`` (B, C, H, W) -> (B, 1, H, W).

    The per-pixel minimum over channels followed by a ``patch`` x ``patch`` minimum filter
    (stride 1, same size). Near the border the window only covers pixels inside the image.
    Differentiable (the gradient flows to the pixel that attains each minimum).

    Args:
        x: image batch.
        patch: odd window side (15 in He et al. and ICEML).
    """
    _check_patch(patch)
    per_pixel = x.amin(dim=1, keepdim=True)
    if patch == 1:
        return per_pixel
    # max_pool2d pads with -inf, so border windows ignore the outside
    return -F.max_pool2d(-per_pixel, kernel_size=patch, stride=1, padding=patch // 2)


def estimate_atmospheric_light(
    I: torch.Tensor,
    patch: int = 15,
    top: float = 0.001,
    sky_threshold: float = 0.75,
    dark: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global atmospheric light of each image, (B, 3, H, W) -> (B, 3, 1, 1).

    The mean colour of ``I`` over the ``max(int(H*W*top), 1)`` pixels with the largest dark
    channel among those whose dark channel is below ``sky_threshold`` (bright sky and white
    objects would otherwise be mistaken for the airlight). Ties go to the earlier pixel in
    raster order. If fewer pixels than that are below the threshold, only those are averaged;
    if none is, the threshold is ignored for that image (plain He et al. rule).

    Args:
        I: hazy image batch in [0, 1].
        patch: window of the dark channel (ignored when ``dark`` is given).
        top: fraction of pixels averaged (0.1 % as in He et al. and ICEML).
        sky_threshold: dark-channel value from which a pixel counts as sky (0.75 in ICEML).
        dark: precomputed ``dark_channel(I, patch)`` (B, 1, H, W), to avoid recomputing it.
    """
    b, c, h, w = I.shape
    k = max(int(h * w * top), 1)
    d = (dark_channel(I, patch) if dark is None else dark).reshape(b, h * w)

    valid = d < sky_threshold
    score = torch.where(valid, d, torch.full_like(d, float("-inf")))
    idx = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]
    weight = valid.gather(1, idx).to(I.dtype)

    none_valid = weight.sum(dim=1) == 0
    if bool(none_valid.any()):
        idx_all = torch.sort(d, dim=1, descending=True, stable=True).indices[:, :k]
        idx = torch.where(none_valid[:, None], idx_all, idx)
        weight = torch.where(none_valid[:, None], torch.ones_like(weight), weight)

    pixels = I.reshape(b, c, h * w).gather(2, idx[:, None, :].expand(b, c, k))  # (B, 3, k)
    A = (pixels * weight[:, None, :]).sum(dim=2) / weight.sum(dim=1, keepdim=True)
    return A.reshape(b, c, 1, 1)


def estimate_transmission(I: torch.Tensor, A: torch.Tensor, omega: float = 0.95, patch: int = 15) -> torch.Tensor:
    """DCP transmission ``t = 1 - omega * dark_channel(I / A)``, (B, 3, H, W) -> (B, 1, H, W).

    Args:
        I: hazy image batch.
        A: atmospheric light (B, 3, 1, 1) or a per-pixel map (B, 3, H, W).
        omega: fraction of haze removed (0.95 keeps a little haze for depth perception).
        patch: odd window side of the dark channel.
    """
    return 1 - omega * dark_channel(I / A.clamp(min=_A_EPS), patch)


def dcp_estimate(
    I: torch.Tensor,
    patch: int = 15,
    top: float = 0.001,
    sky_threshold: float = 0.75,
    omega: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both DCP estimates of a hazy batch: ``(A (B, 3, 1, 1), t (B, 1, H, W))``."""
    A = estimate_atmospheric_light(I, patch=patch, top=top, sky_threshold=sky_threshold)
    return A, estimate_transmission(I, A, omega=omega, patch=patch)
