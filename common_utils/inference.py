"""Inference helpers: pad to a network's size multiple, crop back, and overlapping tiles.

Networks declare ``size_multiple`` (see ``models``); any input size then works through
:func:`forward_padded`. Large images can go through :func:`forward_tiled`, which blends
overlapping tiles with a smooth window so that memory stays bounded and seams do not show.
:func:`forward_self_ensemble` averages any of these over the eight flips and rotations of the
input (test-time self-ensemble, "x8" in BasicSR's tables).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def size_multiple_of(net: nn.Module) -> int:
    """The H/W multiple a network needs (1 when it takes any size)."""
    inner = getattr(net, "module", net)  # DDP / compile wrappers
    inner = getattr(inner, "_orig_mod", inner)
    return int(getattr(inner, "size_multiple", 1) or 1)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` right/bottom so H and W are multiples of ``multiple``; return it and (H, W)."""
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect needs the pad to be smaller than the side
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def forward_padded(net: nn.Module, x: torch.Tensor, multiple: int | None = None) -> torch.Tensor:
    """Run ``net`` on ``x`` of any size: reflect-pad to the multiple, run, crop back."""
    m = size_multiple_of(net) if multiple is None else multiple
    xp, (h, w) = pad_to_multiple(x, m)
    out = net(xp)
    return out[..., :h, :w]


def _window(size: int, overlap: int, device, dtype) -> torch.Tensor:
    """1-D blending weights for one tile side of ``size`` pixels.

    Within ``overlap`` pixels of each end the outer quarter gets weight 0 (those pixels saw the
    tile's artificial border) and the middle half a raised-cosine ramp, so neighbouring tiles
    blend without seams and a pixel never takes a value computed within ``overlap // 4`` of a
    tile edge.
    """
    w = torch.ones(size, device=device, dtype=dtype)
    if overlap > 0:
        margin = overlap // 4
        n = overlap - 2 * margin
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device, dtype=dtype) + 0.5) / n)
        edge = torch.cat([torch.zeros(margin, device=device, dtype=dtype), ramp])
        k = min(edge.numel(), size)
        w[:k] = edge[:k]
        w[size - k:] = torch.minimum(w[size - k:], edge[:k].flip(0))
    return w


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def forward_tiled(net: nn.Module, x: torch.Tensor, tile: int, overlap: int = 32) -> torch.Tensor:
    """Run ``net`` over overlapping ``tile``-sized windows and blend them.

    Every output pixel is a weighted mean of the tiles covering it, ignoring each tile's outer
    ``overlap // 4`` pixels at edges shared with another tile. When the network's receptive-field
    radius is at most ``overlap // 4`` the result equals untiled inference (up to float error).
    """
    b, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return forward_padded(net, x)
    if overlap * 2 >= tile:
        raise ValueError(f"tile overlap {overlap} must be less than half the tile size {tile}")
    stride = tile - overlap
    out = None
    weight = torch.zeros(1, 1, h, w, device=x.device, dtype=torch.float32)
    for top in _starts(h, tile, stride):
        for left in _starts(w, tile, stride):
            patch = x[..., top:top + tile, left:left + tile]
            y = forward_padded(net, patch).float()
            th, tw = patch.shape[-2:]
            # no fade at the image border: only fade edges that meet another tile
            wy = _window(th, overlap, x.device, torch.float32)
            wx = _window(tw, overlap, x.device, torch.float32)
            if top == 0:
                wy[:overlap] = 1
            if top + th >= h:
                wy[-overlap:] = 1 if overlap else wy[-1:]
            if left == 0:
                wx[:overlap] = 1
            if left + tw >= w:
                wx[-overlap:] = 1 if overlap else wx[-1:]
            wgt = wy[:, None] * wx[None, :]
            if out is None:
                out = torch.zeros(b, y.shape[1], h, w, device=x.device, dtype=torch.float32)
            out[..., top:top + th, left:left + tw] += y * wgt
            weight[..., top:top + th, left:left + tw] += wgt
    return (out / weight).to(x.dtype)


#: the eight symmetries of the square: (quarter turns, mirror left-right first)
DIHEDRAL_8: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def _transform(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def _untransform(y: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -turns, dims=(-2, -1)) if turns else y
    return y.flip(-1) if flip else y


def forward_self_ensemble(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over the 8 flips/rotations of ``x``, each output turned back (float32).

    ``run`` is the whole per-image forward (e.g. ``lambda t: forward_padded(net, t)`` or
    :func:`forward_tiled`), so padding to the size multiple and tiling are applied to every
    transformed input: a quarter turn swaps H and W of a non-square image, and the padding is
    computed for the turned shape. Costs 8 forwards; the memory of one plus the running sum.
    """
    total = None
    for turns, flip in DIHEDRAL_8:
        y = _untransform(run(_transform(x, turns, flip)), turns, flip).float()
        total = y.clone() if total is None else total.add_(y)  # y may alias x
    return total / len(DIHEDRAL_8)
