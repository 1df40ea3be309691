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

Two more tools build on these:

* :func:`dcp_dehaze`: the classic dark-channel-prior dehazer (He et al., CVPR 2009 / TPAMI 2011)
  as a baseline for every dehazing table: A and t as above, t refined with a guided filter
  (He et al., ECCV 2010; guide = the grey hazy image, ``radius`` 30 px at full resolution,
  ``eps`` 1e-3, which stands in for the paper's soft matting), then ``J = (I - A) / max(t, 0.1) + A``
  clamped to [0, 1]. No parameters, no training.
* :func:`fit_airlight_transmission`: the (global grey A, per-pixel t) that best explain a hazy
  image from its clean one, ``I ~ J t + A (1 - t)`` (least squares; A on a grid). It gives the
  ground truth of a synthetic pair a physical t and A, so that an objective over (J, t, A) can be
  scored on it (``scripts/iceml_objective.py``).
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
    "box_filter",
    "guided_filter",
    "dcp_dehaze",
    "fit_airlight_transmission",
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


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2 radius + 1)^2 window around each pixel; windows are cut at the border."""
    if radius < 1:
        return x
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter (grey guide (B, 1, H, W), source (B, C, H, W)): edge-aware smoothing."""
    mean_g, mean_s = box_filter(guide, radius), box_filter(src, radius)
    cov = box_filter(guide * src, radius) - mean_g * mean_s
    var = box_filter(guide * guide, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return box_filter(a, radius) * guide + box_filter(b, radius)


def dcp_dehaze(
    I: torch.Tensor,
    patch: int = 15,
    omega: float = 0.95,
    t_min: float = 0.1,
    radius: int | None = 30,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Dark-channel-prior dehazing of a batch (B, 3, H, W) in [0, 1] -> clean estimate in [0, 1].

    Args:
        I: hazy images.
        patch: dark-channel window (15 px as in He et al., for images of about 600 px).
        omega: fraction of haze removed.
        t_min: lower clamp of t in the inversion.
        radius: guided-filter radius refining t (None: the raw patch-wise t, with its halos).
        eps: guided-filter regularisation.
    """
    A, t = dcp_estimate(I, patch=patch, omega=omega)
    if radius:
        grey = I.mean(dim=1, keepdim=True)
        t = guided_filter(grey, t, radius, eps)
    return dehaze_image(I, t.clamp(0, 1), A, t_min=t_min).clamp(0, 1)


def fit_airlight_transmission(
    I: torch.Tensor, J: torch.Tensor, grid: int = 61, a_range: tuple[float, float] = (0.4, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The grey airlight and transmission that best explain hazy ``I`` from clean ``J``.

    For each candidate A on ``grid`` values in ``a_range`` the per-pixel least-squares
    t = sum_c (I_c - A)(J_c - A) / sum_c (J_c - A)^2 (clamped to [0, 1]) is computed; the A with
    the smallest mean squared residual of ``I - (J t + A (1 - t))`` wins, per image.

    Returns:
        ``(A (B, 3, 1, 1), t (B, 1, H, W))``.
    """
    best_err = best_a = best_t = None
    for a in torch.linspace(a_range[0], a_range[1], grid, dtype=I.dtype, device=I.device):
        di, dj = I - a, J - a
        t = ((di * dj).sum(1, keepdim=True) / (dj.pow(2).sum(1, keepdim=True) + 1e-6)).clamp(0, 1)
        err = (di - t * dj).pow(2).mean(dim=(1, 2, 3))
        if best_err is None:
            best_err, best_a, best_t = err, torch.full_like(err, float(a)), t
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_a = torch.where(better, torch.full_like(err, float(a)), best_a)
            best_t = torch.where(better[:, None, None, None], t, best_t)
    return best_a.view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous(), best_t
