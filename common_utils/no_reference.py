"""No-reference image quality: NIQE, for test sets without ground truth (DICM, LIME, NPE, real haze).

:func:`niqe` follows the NIQE authors' MATLAB release (Mittal, Soundararajan and Bovik, "Making a
completely blind image quality analyzer", IEEE SPL 2013; ``computequality.m``), the version the
low-light and dehazing papers print:

- the image as MATLAB's ``rgb2gray`` gives it (0.2989 R + 0.5870 G + 0.1140 B on 0-255, rounded to
  8 bits), cropped to whole 96x96 blocks;
- at two scales (the second from MATLAB's ``imresize(im, 0.5)``: bicubic with anti-aliasing,
  symmetric borders), mean-subtracted contrast-normalised coefficients with a 7x7 Gaussian
  (sigma 7/6, replicate borders), and per block 18 features: an asymmetric generalised Gaussian
  fit of the coefficients and of their products with 4 neighbours (moment matching on the grid
  0.2:0.001:10);
- the distance between the multivariate Gaussian of the blocks' features and the pristine
  model: ``sqrt((mu_p - mu)' pinv((C_p + C) / 2) (mu_p - mu))``. Lower is better.

The pristine model (``pop_mu``, ``pop_cov``, 96-px blocks) is not computed here: it is the authors'
file, written once by ``python scripts/setup_metric_weights.py`` (from the basicsr sdist) to
the torch hub checkpoint folder, or pointed at by ``NIQE_PARAMS``. When it is absent, NIQE is
reported as unavailable with that instruction, never computed from another model.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from foundation.errors import UserError
from models.lpips import NIQE_FILE, SETUP_STEP, hub_checkpoint_dir

ENV_VAR = "NIQE_PARAMS"
BLOCK = 96


class NIQEUnavailable(UserError):
    """NIQE's pristine model file is unreadable, or (:class:`NIQEMissing`) absent."""


class NIQEMissing(NIQEUnavailable):
    """No NIQE model file was found: NIQE is reported as unavailable."""


def find_niqe_params(path: str | os.PathLike | None = None) -> Path:
    candidates = [Path(p) for p in (path, os.environ.get(ENV_VAR)) if p] + [hub_checkpoint_dir() / NIQE_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise NIQEMissing(f"NIQE unavailable: its pristine model '{NIQE_FILE}' was not found (looked in: "
                          f"{', '.join(map(str, candidates))}); run '{SETUP_STEP}' once, or point {ENV_VAR} at it")


@lru_cache(maxsize=4)
def load_niqe_params(path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (36,), cov (36, 36)) in float64 from the set-up file."""
    found = find_niqe_params(path)
    try:
        state = torch.load(found, map_location="cpu", weights_only=True)
        mu, cov = state["mu"].double(), state["cov"].double()
    except Exception as exc:
        raise NIQEUnavailable(f"{found}: not a NIQE model file ({exc.__class__.__name__}); re-run '{SETUP_STEP}'") \
            from None
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise NIQEUnavailable(f"{found}: NIQE model of shapes {tuple(mu.shape)}/{tuple(cov.shape)}, expected "
                              f"(36,)/(36, 36); re-run '{SETUP_STEP}'")
    return mu, cov


# ---------------------------------------------------------------------------------------------
# MATLAB building blocks


def matlab_rgb2gray_uint8(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (H, W) float64 grey levels 0-255 as MATLAB's rgb2gray on uint8 gives them."""
    rgb = (img.double().clamp(0, 1) * 255.0).round()
    grey = 0.298936021293775 * rgb[0] + 0.587043074451121 * rgb[1] + 0.114020904255103 * rgb[2]
    return grey.round().clamp(0, 255)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) +
            (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))).to(x.dtype)


def _resize_weights(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB imresize's bicubic contributions (anti-aliased when shrinking), symmetric borders."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    idx = mirror[((idx - 1).long()) % (2 * in_len)]
    keep = w.abs().sum(0) > 0
    return w[:, keep], idx[:, keep]


def matlab_imresize(img: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB's ``imresize(img, scale)`` (bicubic, anti-aliasing) of a 2-D float64 image, no rounding."""
    out = img
    for dim in (0, 1):
        n = out.shape[dim]
        w, idx = _resize_weights(n, int(math.ceil(n * scale)), scale)
        moved = out.movedim(dim, 0)
        out = (moved[idx] * w[..., None]).sum(1).movedim(0, dim)
    return out


def _gaussian_7x7() -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=torch.float64)
    g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * (7 / 6) ** 2))
    g[g < torch.finfo(torch.float64).eps * g.max()] = 0
    return (g / g.sum())[None, None]


def _mscn(im: torch.Tensor) -> torch.Tensor:
    window = _gaussian_7x7()
    x = F.pad(im[None, None], (3, 3, 3, 3), mode="replicate")
    x2 = F.pad((im * im)[None, None], (3, 3, 3, 3), mode="replicate")
    mu = F.conv2d(x, window)[0, 0]
    sigma = (F.conv2d(x2, window)[0, 0] - mu * mu).abs().sqrt()
    return (im - mu) / (sigma + 1)


_GAMMA_GRID = torch.arange(200, 10001, dtype=torch.float64) / 1000.0  # 0.2:0.001:10
_R_GAMMA = (torch.lgamma(2 / _GAMMA_GRID).exp() ** 2 /
            (torch.lgamma(1 / _GAMMA_GRID).exp() * torch.lgamma(3 / _GAMMA_GRID).exp()))


def _aggd(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment-matching AGGD fit of each row of ``vec`` (B, N): (alpha, beta_left, beta_right)."""
    neg, pos = vec < 0, vec > 0
    left = ((vec * vec * neg).sum(1) / neg.sum(1)).sqrt()
    right = ((vec * vec * pos).sum(1) / pos.sum(1)).sqrt()
    gammahat = left / right
    rhat = vec.abs().mean(1) ** 2 / (vec * vec).mean(1)
    rnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat ** 2 + 1) ** 2
    # MATLAB's min() over an all-NaN difference returns the first position: alpha = 0.2, not NaN
    pos_min = ((_R_GAMMA[None] - rnorm[:, None]) ** 2).nan_to_num(nan=float("inf")).argmin(1)
    alpha = _GAMMA_GRID[pos_min]
    ratio = (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)).exp().sqrt()
    return alpha, left * ratio, right * ratio


def _block_features(structdis: torch.Tensor, block: int) -> torch.Tensor:
    """(number of blocks, 18) features of 'computefeature.m' for each block of the MSCN map."""
    h, w = structdis.shape
    blocks = structdis.reshape(h // block, block, w // block, block).permute(0, 2, 1, 3).reshape(-1, block, block)
    n = blocks.shape[0]
    alpha, bl, br = _aggd(blocks.reshape(n, -1))
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = (blocks * torch.roll(blocks, shifts=shift, dims=(1, 2))).reshape(n, -1)
        alpha, bl, br = _aggd(pair)
        mean = (br - bl) * (torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha)).exp()
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, 1)


def _nancov(x: torch.Tensor) -> torch.Tensor:
    x = x[~torch.isnan(x).any(1)]
    d = x - x.mean(0, keepdim=True)
    return d.T @ d / (x.shape[0] - 1)


def niqe_grey(grey: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor, block: int = BLOCK) -> float:
    """NIQE of a (H, W) float64 grey image on 0-255 (see the module docstring)."""
    h, w = grey.shape
    if h < 2 * block or w < 2 * block:
        raise UserError(f"NIQE needs at least {2 * block}x{2 * block} pixels, got {w}x{h}")
    im = grey[: (h // block) * block, : (w // block) * block]
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(_mscn(im), block // scale))
        if scale == 1:
            im = matlab_imresize(im, 0.5)
    dist = torch.cat(feats, 1)
    mu = dist.nanmean(0)  # MATLAB nanmean: per feature, ignoring that feature's NaNs only
    cov = _nancov(dist)   # MATLAB nancov: drops the blocks with any NaN
    diff = (mu_p - mu)[None]
    return float((diff @ torch.linalg.pinv((cov_p + cov) / 2) @ diff.T).sqrt())


class NIQEMetric:
    """NIQE per image of a (B, 3, H, W) batch in [0, 1] (computed on the CPU in float64)."""

    description = "NIQE (authors' MATLAB release, 96-px pristine model; lower is better)"

    def __init__(self, params: str | None = None) -> None:
        self.mu, self.cov = load_niqe_params(params)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([niqe_grey(matlab_rgb2gray_uint8(im.detach().cpu()), self.mu, self.cov) for im in x],
                            dtype=torch.float64)


def try_build_niqe(params: str | None = None) -> tuple[NIQEMetric | None, str | None]:
    """NIQE if its model file exists; otherwise (None, reason). A corrupt file raises (exit 2)."""
    try:
        return NIQEMetric(params), None
    except NIQEMissing as exc:
        return None, str(exc)


def brightness_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image mean brightness (Y, 0-255) and RMS contrast: the plain statistics a no-GT table shows beside NIQE."""
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return {"mean_y": y.flatten(1).mean(1) * 255, "contrast": y.flatten(1).std(1) * 255}


__all__ = ["NIQEMetric", "NIQEUnavailable", "brightness_stats", "find_niqe_params", "matlab_imresize",
           "matlab_rgb2gray_uint8", "niqe_grey", "try_build_niqe"]
