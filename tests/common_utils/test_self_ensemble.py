"""Test-time self-ensemble (x8 flips/rotations) through the evaluation protocol."""
from __future__ import annotations

import torch
import torch.nn as nn

from common_utils.evaluation.evaluator import EvalProtocol, enhance
from common_utils.inference import forward_self_ensemble


class _Pointwise(nn.Module):
    """A 1x1 conv: commutes with every flip and rotation, so x8 must change nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return torch.sigmoid(self.conv(x))


class _Directional(nn.Module):
    """Not equivariant: a 3x2 kernel, an output that depends on the row index, and H, W multiples of 8."""

    size_multiple = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 3, (3, 2), padding=(1, 0))
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        assert h % 8 == 0 and w % 8 == 0, f"not padded to the multiple: {h}x{w}"
        self.seen.append((h, w))
        y = self.conv(nn.functional.pad(x, (1, 0, 0, 0), mode="replicate"))
        rows = torch.linspace(0, 1, h).view(1, 1, h, 1)
        return y + rows * x[:, :1]


def _by_hand(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean of the 8 transformed outputs, written out one by one (crop back after padding)."""
    def padded(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        return net(nn.functional.pad(t, (0, pw, 0, ph), mode="reflect"))[..., :h, :w]

    r = lambda t, k: torch.rot90(t, k, dims=(-2, -1))
    outs = [padded(x),
            r(padded(r(x, 1)), -1),
            r(padded(r(x, 2)), -2),
            r(padded(r(x, 3)), -3),
            padded(x.flip(-1)).flip(-1),
            r(padded(r(x.flip(-1), 1)), -1).flip(-1),
            r(padded(r(x.flip(-1), 2)), -2).flip(-1),
            r(padded(r(x.flip(-1), 3)), -3).flip(-1)]
    return torch.stack(outs).mean(0)


def test_x8_of_an_equivariant_network_is_the_plain_output() -> None:
    x = torch.rand(1, 3, 20, 36, generator=torch.Generator().manual_seed(0))
    net = _Pointwise().eval()
    plain = enhance(net, x, EvalProtocol())
    x8 = enhance(net, x, EvalProtocol(self_ensemble=True))
    assert x8.shape == plain.shape
    torch.testing.assert_close(x8, plain, atol=1e-6, rtol=0)


def test_x8_is_the_mean_of_the_eight_transformed_outputs_on_a_non_square_image() -> None:
    x = torch.rand(1, 3, 21, 34, generator=torch.Generator().manual_seed(2))  # neither side a multiple of 8
    net = _Directional().eval()
    with torch.no_grad():
        want = _by_hand(net, x).clamp(0, 1)
        net.seen.clear()
        got = enhance(net, x, EvalProtocol(self_ensemble=True))
        plain = enhance(net, x, EvalProtocol())
    assert got.shape == x.shape
    # the quarter turns ran on the turned shape, padded for it (34 -> 40 rows, 21 -> 24 columns)
    assert set(net.seen[:8]) == {(24, 40), (40, 24)}
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (got - plain).abs().max() > 1e-3  # the toy network really is not equivariant


def test_x8_goes_through_tiling() -> None:
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    net = _Pointwise().eval()
    tiled = enhance(net, x, EvalProtocol(self_ensemble=True, tile=32, tile_overlap=8))
    assert len(net.seen) > 8 and max(max(s) for s in net.seen) <= 32  # every transformed input ran in tiles
    torch.testing.assert_close(tiled, enhance(net, x, EvalProtocol()), atol=1e-6, rtol=0)


def test_x8_leaves_the_input_alone() -> None:
    x = torch.rand(1, 3, 8, 12)
    keep = x.clone()
    out = forward_self_ensemble(lambda t: t, x)  # the identity hands back x itself for the first transform
    torch.testing.assert_close(out, keep, atol=1e-6, rtol=0)
    assert torch.equal(x, keep)
