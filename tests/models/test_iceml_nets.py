"""ICEML nets: the CombinedModel checkpoint layout, the map outputs and the official quirks."""
from __future__ import annotations

import pytest
import torch

from models import build_network
from models.iceml_nets import ASMICENet, ICEMLBody, ICEMLCombinedModel, RtxICENet, SimAM
from models.manifest import load_manifest
from models.physics import dehaze_image, haze_image

SMALL = {"dim": 16}


def _x(b: int = 2, h: int = 16, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_combined_model_matches_official_checkpoint_layout():
    torch.manual_seed(0)
    model = ICEMLCombinedModel(ASMICENet(), RtxICENet())
    manifest = load_manifest("ICEML-CombinedModel")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == manifest.shapes
    assert sum(p.numel() for p in model.parameters()) == manifest.num_parameters == 1_601_980
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=gen) for k, s in manifest.shapes.items()}
    model.load_state_dict(sd, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the two halves load on their own, as the official test scripts use them
    rtx = RtxICENet()
    rtx.load_state_dict({k[len("retinex_model."):]: v for k, v in sd.items() if k.startswith("retinex_model.")})
    asm = ASMICENet()
    asm.load_state_dict({k[len("asm_model."):]: v for k, v in sd.items() if k.startswith("asm_model.")})


def test_combined_model_outputs_are_the_two_networks_maps():
    torch.manual_seed(0)
    model = ICEMLCombinedModel(ASMICENet(**SMALL), RtxICENet(**SMALL)).eval()
    x = _x()
    with torch.no_grad():
        j_asm, t, a, lr_inv = model(x)
        ref = model.asm_model.forward_maps(x)
    assert j_asm.shape == (2, 3, 16, 24) and t.shape == (2, 1, 16, 24)
    assert a.shape == (2, 3, 16, 24) and lr_inv.shape == (2, 3, 16, 24)
    for got, want in zip((j_asm, t, a), ref):
        assert torch.equal(got, want)
    assert torch.equal(x * lr_inv, model.retinex_model(x))


def test_asmice_forward_maps_and_t_min():
    torch.manual_seed(0)
    net = ASMICENet(**SMALL).eval()
    with torch.no_grad():
        net.transmission.transmission.final_conv.bias.fill_(-4.0)  # sigmoid ~0.02: below t_min
        x = _x()
        J, t, a = net.forward_maps(x)
        assert t.shape == (2, 1, 16, 24) and a.shape == (2, 3, 16, 24) and J.shape == x.shape
        assert (t < 0.1).any() and (t > 0).all() and (a > 0).all() and (a < 1).all()  # t unclamped
        assert torch.equal(J, (x - a) / t.clamp(min=0.1) + a)
        assert torch.equal(net(x), J)
        assert torch.allclose(haze_image(J, t, a), x, atol=1e-5)  # inverse consistency of Eq. 2 / 6
        other = ASMICENet(**SMALL, t_min=0.3)
        other.load_state_dict(net.state_dict())
        assert torch.equal(other(x), dehaze_image(x, t, a, t_min=0.3))
    assert not any("t_min" in k for k in net.state_dict())


def test_rtxice_output_is_input_times_nonnegative_inverse_illumination_unclamped():
    torch.manual_seed(0)
    net = RtxICENet(**SMALL).eval()
    with torch.no_grad():
        net.final_conv.bias.fill_(2.0)
        x = _x()
        lr_inv = net.inverse_illumination(x)
        assert (lr_inv >= 0).all() and lr_inv.shape == x.shape
        J = net(x)
        assert torch.equal(J, x * lr_inv)
        assert J.max() > 1  # no clamp in forward
        J2, lr2 = net.forward_maps(x)
        assert torch.equal(J2, J) and torch.equal(lr2, lr_inv)


@pytest.mark.parametrize("name, executed", [("RtxICE-Net", 415_036), ("ASMICE-Net", 830_016)])
def test_declared_but_unused_blocks(name, executed):
    torch.manual_seed(0)
    net = build_network(name)
    assert net.size_multiple == 4
    net(_x(1, 16, 16)).mean().backward()
    used = sum(p.numel() for p in net.parameters() if p.grad is not None)
    assert used == executed  # the figure of the third-party deployment (RtxICE) / 2x for ASMICE
    for n, p in net.named_parameters():
        assert (p.grad is None) == n.startswith(net.unused_parameters), n
    assert all(n.rsplit(".", 2)[-2] in ("acm4", "fa4") for n in net.unused_parameters)


def test_simam_formula_and_no_parameters():
    x = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(4))
    n = 5 * 6 - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    expected = x * torch.sigmoid(d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + 1e-4)) + 0.5)
    assert torch.allclose(SimAM()(x), expected, atol=1e-6)
    assert list(SimAM().parameters()) == []


def test_constructor_checks_and_sizes():
    with pytest.raises(ValueError):
        RtxICENet(in_channels=4)
    with pytest.raises(ValueError):
        RtxICENet(dim=8)  # channel attention reduces by 16
    with pytest.raises(ValueError):
        ICEMLBody(head="tanh")
    net = RtxICENet(**SMALL)
    with pytest.raises(RuntimeError):
        net(torch.rand(1, 3, 18, 24))  # H and W must be multiples of 4 (the framework pads)
