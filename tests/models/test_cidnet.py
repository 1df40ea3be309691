"""HVI-CIDNet quirks: the HVI colour transform and its inverse, the learnable density k,
the dead I_LCA5, HV_LCA's missing IEL residual, the inverse-transform options, size rules."""
from __future__ import annotations

import math

import pytest
import torch

from models import build_network
from models.cidnet import HV_LCA, I_LCA, RGB_HVI, CIDNet

SMALL = dict(channels=[8, 8, 16, 16], heads=[1, 2, 2, 2])


def _small(**overrides) -> CIDNet:
    torch.manual_seed(0)
    return build_network("CIDNet", **{**SMALL, **overrides}).eval()


def _image(shape=(2, 3, 24, 32), seed=0) -> torch.Tensor:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return torch.round(x * 255) / 255


def test_paper_defaults_and_class_attributes():
    net = build_network("CIDNet")
    assert CIDNet.size_multiple == 8
    assert CIDNet.unused_parameters == ("I_LCA5.",)
    assert net.HV_LCA1.ffn.num_heads == 2 and net.HV_LCA3.ffn.num_heads == 8
    assert net.trans.density_k.item() == pytest.approx(0.2)
    assert not net.trans.gated and not net.trans.gated2
    assert net.trans.alpha == 1.0 and net.trans.alpha_s == 1.3
    assert "trans.this_k" not in net.state_dict()


@pytest.mark.parametrize("k", [0.2, 0.05, 1.0])
def test_hvi_round_trip_returns_the_rgb_input(k):
    trans = RGB_HVI()
    with torch.no_grad():
        trans.density_k.fill_(k)
    x = _image()
    x[:, :, :4, :4] = x[:, :1, :4, :4]  # grey pixels
    x[:, :, -2:, -2:] = 0  # black pixels
    with torch.no_grad():
        back = trans.PHVIT(trans.HVIT(x))
    assert torch.allclose(back, x, atol=1e-3)


def test_hvi_of_known_colours():
    trans = RGB_HVI()
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5], [0.3, 0.3, 0.3], [0, 0, 0]])
    x = colours.T.reshape(1, 3, 1, 5)
    with torch.no_grad():
        hvi = trans.HVIT(x)[0, :, 0].T  # (5, 3)
    collapse = lambda i: (math.sin(math.pi * i / 2) + 1e-8) ** 0.2
    expected = torch.tensor([
        [collapse(1.0), 0.0, 1.0],  # red: hue 0
        [collapse(1.0) * math.cos(2 * math.pi / 3), collapse(1.0) * math.sin(2 * math.pi / 3), 1.0],
        [collapse(0.5) * math.cos(4 * math.pi / 3), collapse(0.5) * math.sin(4 * math.pi / 3), 0.5],
        [0.0, 0.0, 0.3],  # grey: no saturation
        [0.0, 0.0, 0.0],  # black
    ])
    assert torch.allclose(hvi, expected, atol=1e-6)


def test_density_k_gets_gradient_through_the_forward_transform_only():
    net = _small().train()
    x = _image()
    net(x).square().mean().backward()
    grad = net.trans.density_k.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().item() > 0

    trans = RGB_HVI()
    trans.HVIT(x)
    hvi = torch.rand(1, 3, 8, 8, requires_grad=True)
    trans.PHVIT(hvi).sum().backward()
    assert trans.density_k.grad is None and hvi.grad is not None


def test_inverse_uses_k_of_the_last_forward_transform():
    trans = RGB_HVI()
    x = _image((1, 3, 8, 8))
    with torch.no_grad():
        hvi = trans.HVIT(x)
        trans.density_k.fill_(0.7)  # e.g. an optimiser step between the two transforms
        assert torch.allclose(trans.PHVIT(hvi), x, atol=1e-3)
        trans.HVIT(x)
        assert trans.this_k.item() == pytest.approx(0.7)


def test_i_lca5_is_dead_and_everything_else_gets_gradient():
    net = _small().train()
    net(_image()).mean().backward()
    no_grad = {n.split(".")[0] for n, p in net.named_parameters() if p.grad is None}
    assert no_grad == {"I_LCA5"}


def test_hv_lca_has_no_residual_on_the_iel_step():
    torch.manual_seed(0)
    x, y = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    hv, i = HV_LCA(8, 2), I_LCA(8, 2)
    with torch.no_grad():
        hv.gdfn.project_out.weight.zero_()
        i.gdfn.project_out.weight.zero_()
        assert torch.count_nonzero(hv(x, y)) == 0
        assert torch.allclose(i(x, y), x + i.ffn(i.norm(x), i.norm(y)))


def test_inverse_transform_options():
    x = _image((1, 3, 32, 48))
    with torch.no_grad():
        base = _small()(x)
        scaled = _small(gated2=True, alpha=0.8)(x)
        assert torch.allclose(scaled, 0.8 * base)
        more_saturated = _small(gated=True)(x)
        assert not torch.allclose(more_saturated, base)
        net = _small()
        net.trans.gated = True  # as the official evaluation scripts do
        assert torch.equal(net(x), more_saturated)
    assert base.min() >= 0 and base.max() <= 1


def test_needs_multiple_of_eight_without_padding():
    net = _small()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 48)).shape == (1, 3, 32, 48)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, 36, 48))


def test_norm_option_adds_layernorms_to_resampling_blocks():
    keys = _small(norm=True).state_dict()
    assert "HVE_block1.norm.weight" in keys and "ID_block1.norm.bias" in keys
    with pytest.raises(ValueError):
        CIDNet(channels=[8, 8, 16])


def test_edge_padding_equals_replication_padding_forward_and_backward():
    import torch.nn as nn

    from models.cidnet import EdgePad1

    x = torch.rand(2, 3, 5, 7, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    a, b = EdgePad1()(x), nn.ReplicationPad2d(1)(y)
    assert torch.equal(a, b)
    g = torch.rand_like(a)
    a.backward(g)
    b.backward(g)
    assert torch.allclose(x.grad, y.grad, rtol=1e-6, atol=1e-6)  # corner sums in another order
