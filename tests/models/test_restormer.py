"""Restormer quirks: layout of the paper configuration, the size rule, residual paths, options."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import build_network
from models.restormer import Attention, Restormer

SMALL = dict(dim=6, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4])


def _small(**overrides) -> Restormer:
    torch.manual_seed(0)
    return build_network("Restormer", **{**SMALL, **overrides}).eval()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_net() -> Restormer:
    return build_network("Restormer")


def test_paper_module_sizes(paper_net):
    assert Restormer.size_multiple == 8
    assert Restormer.unused_parameters == ()
    expected = {
        "patch_embed": 1_296, "encoder_level1": 125_116, "down1_2": 10_368, "encoder_level2": 707_232,
        "down2_3": 41_472, "encoder_level3": 2_738_112, "down3_4": 165_888, "latent": 14_370_448,
        "up4_3": 2_654_208, "reduce_chan_level3": 73_728, "decoder_level3": 2_738_112, "up3_2": 663_552,
        "reduce_chan_level2": 18_432, "decoder_level2": 707_232, "up2_1": 165_888,
        "decoder_level1": 471_484, "refinement": 471_484, "output": 2_592,
    }
    assert {name: _count(getattr(paper_net, name)) for name in expected} == expected
    assert _count(paper_net) == 26_126_644
    assert not any(name.endswith(".bias") and "norm" not in name for name, _ in paper_net.named_parameters())


def test_paper_block_layout(paper_net):
    # GDFN hidden width is truncated: int(C * 2.66)
    hidden = {name: getattr(paper_net, name)[0].ffn.project_out.in_channels
              for name in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")}
    assert hidden == {"encoder_level1": 127, "encoder_level2": 255, "encoder_level3": 510, "latent": 1021}
    # decoder level 1 and refinement run at 2*dim channels with heads[0] (one head)
    for name in ("decoder_level1", "refinement"):
        block = getattr(paper_net, name)[0]
        assert block.attn.project_out.in_channels == 96
        assert block.attn.temperature.shape == (1, 1, 1)
    assert paper_net.decoder_level2[0].attn.temperature.shape == (2, 1, 1)
    assert paper_net.latent[0].attn.temperature.shape == (8, 1, 1)
    assert not hasattr(paper_net, "reduce_chan_level1")
    assert _count(paper_net.encoder_level1[0]) == 31_279
    assert _count(paper_net.decoder_level1[0]) == 117_871
    assert _count(paper_net.encoder_level2[0]) == 117_872


def test_needs_multiple_of_eight_without_padding():
    net = _small()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 72, 40)).shape == (1, 3, 72, 40)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, 68, 68))


def test_global_residual_adds_the_input():
    net = _small()
    nn.init.zeros_(net.output.weight)
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_dual_pixel_task_adds_embedded_skip_and_no_image_residual():
    net = _small(dual_pixel_task=True, inp_channels=6)
    assert net.skip_conv.weight.shape == (12, 6, 1, 1)
    x = torch.rand(1, 6, 16, 24)
    nn.init.zeros_(net.output.weight)
    with torch.no_grad():
        assert torch.equal(net(x), torch.zeros(1, 3, 16, 24))


def test_bias_free_layernorm_and_bias_option():
    sd = _small(LayerNorm_type="BiasFree", bias=True).state_dict()
    assert "encoder_level1.0.norm1.body.weight" in sd
    assert not any(k.endswith("norm1.body.bias") or k.endswith("norm2.body.bias") for k in sd)
    assert "encoder_level1.0.attn.qkv.bias" in sd and "reduce_chan_level3.bias" in sd
    # the patch embedding and the resampling convolutions never get a bias
    assert "patch_embed.proj.bias" not in sd and "down1_2.body.0.bias" not in sd and "up2_1.body.0.bias" not in sd


def test_layernorm_normalises_each_pixel_over_channels():
    net = _small()
    norm = net.encoder_level1[0].norm1
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-5).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), ref, atol=1e-5)
    bias_free = _small(LayerNorm_type="BiasFree").encoder_level1[0].norm1
    assert torch.allclose(bias_free(x), x / x.var(1, keepdim=True, unbiased=False).add(1e-5).sqrt(), atol=1e-6)


def test_attention_is_over_channels_with_per_head_temperature():
    torch.manual_seed(0)
    attn = Attention(dim=8, num_heads=2, bias=False).eval()
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 2.0]).view(2, 1, 1))
    x = torch.randn(1, 8, 6, 10)
    with torch.no_grad():
        q, k, v = attn.qkv_dwconv(attn.qkv(x)).flatten(2).chunk(3, dim=1)  # (1, 8, 60) each
        heads = []
        for g, t in enumerate((0.5, 2.0)):
            qg, kg, vg = (m[0, 4 * g:4 * g + 4] for m in (q, k, v))  # (4 channels, 60 pixels)
            a = (F.normalize(qg, dim=-1) @ F.normalize(kg, dim=-1).T * t).softmax(-1)  # 4x4
            heads.append(a @ vg)
        expected = attn.project_out(torch.cat(heads).view(1, 8, 6, 10))
        assert torch.allclose(attn(x), expected, atol=1e-5)


@pytest.mark.parametrize("bad", [
    dict(dim=7),
    dict(num_blocks=[1, 1, 1]),
    dict(heads=[1, 2, 4]),
    dict(heads=[4, 2, 2, 4]),  # 6 channels into 4 heads
    dict(LayerNorm_type="Other"),
    dict(inp_channels=6),  # image residual needs equal channels unless dual_pixel_task
])
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(ValueError):
        Restormer(**{**SMALL, **bad})
