"""UNet (SSLL variant): module sizes, any-size input, channel LayerNorm, bilinear variant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import build_network
from models.unet import ChannelLayerNorm


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_module_parameter_counts_match_fact_sheet():
    net = build_network("UNet")
    expected = {"inc": 38_976, "down1": 221_952, "down2": 886_272, "down3": 3_542_016, "down4": 14_161_920,
                "up1": 9_178_624, "up2": 2_295_552, "up3": 574_336, "up4": 143_808, "outc": 195}
    assert {name: _count(getattr(net, name)) for name in expected} == expected
    assert _count(net.up1.up) == 2_097_664
    assert net.size_multiple == 1


def test_bilinear_variant_matches_official_count():
    # official SSLL UNet(3, 3, bilinear=True), measured
    assert _count(build_network("UNet", bilinear=True)) == 17_267_523


@pytest.mark.parametrize("size", [(37, 53), (17, 30), (16, 16)])
@pytest.mark.parametrize("bilinear", [False, True])
def test_any_size_without_padding(size, bilinear):
    torch.manual_seed(0)
    net = build_network("UNet", width=4, bilinear=bilinear).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_zero_output_conv_gives_identity():
    net = build_network("UNet", width=4).eval()
    torch.nn.init.zeros_(net.outc.conv.weight)
    torch.nn.init.zeros_(net.outc.conv.bias)
    x = torch.rand(1, 3, 21, 22)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_channel_layernorm_normalises_each_pixel_over_channels():
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.body.weight.uniform_(0.5, 1.5)
        norm.body.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.body.weight, norm.body.bias, eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)


def test_mismatched_residual_channels_rejected():
    with pytest.raises(ValueError):
        build_network("UNet", n_channels=3, n_classes=1)
