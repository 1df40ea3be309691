"""LLFormer quirks: paper layout and sizes, unused official parameters, biases, internal padding, options."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from foundation.errors import UserError
from models import build_network
from models.llformer import LLFormer, RowAttention

SMALL = dict(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 2])


def _small(**overrides) -> LLFormer:
    torch.manual_seed(0)
    net = build_network("LLFormer", **{**SMALL, **overrides}).eval()
    with torch.no_grad():  # move the coefficients off 1 so that each weighting matters
        for name, p in net.named_parameters():
            if "coefficient" in name:
                p.uniform_(0.5, 1.5)
    return net


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_net() -> LLFormer:
    return build_network("LLFormer")


def test_paper_module_sizes(paper_net):
    assert LLFormer.size_multiple == 1
    assert _count(paper_net) == 13_151_694
    per_block = {"encoder_1": 6_934, "decoder_level1_0": 22_108, "decoder_level2_0": 76_918,
                 "decoder_level3_0": 284_650, "decoder_level4": 1_092_562}
    assert {name: _count(getattr(paper_net, name)[0]) for name in per_block} == per_block
    depth = {name: len(getattr(paper_net, name)) for name in (
        "encoder_1", "encoder_2", "encoder_3", "latent", "decoder_level1_0", "decoder_level2_0",
        "decoder_level3_0", "decoder_level4", "decoder_level3_1", "decoder_level2_1", "decoder_level1_1",
        "refinement_1", "refinement_2", "refinement_3")}
    assert depth == {"encoder_1": 1, "encoder_2": 1, "encoder_3": 1, "latent": 1, "decoder_level1_0": 1,
                     "decoder_level2_0": 2, "decoder_level3_0": 4, "decoder_level4": 8, "decoder_level3_1": 4,
                     "decoder_level2_1": 2, "decoder_level1_1": 1, "refinement_1": 2, "refinement_2": 2,
                     "refinement_3": 2}
    assert _count(paper_net.layer_fussion) == _count(paper_net.layer_fussion_2) == 10_849
    # DGFN hidden width is truncated: int(C * 2.66)
    hidden = [getattr(paper_net, name)[0].ffn.project_out.in_channels
              for name in ("encoder_1", "decoder_level1_0", "decoder_level2_0", "decoder_level3_0", "decoder_level4")]
    assert hidden == [42, 85, 170, 340, 680]
    # level 4 keeps heads[3]
    assert paper_net.decoder_level4[0].attn.row_att.num_heads == 8
    assert paper_net.coefficient.shape == (4, 2, 128) and paper_net.skip_2_1.weight.shape == (32, 32, 1, 1)


def test_biases_on_in_attention_and_lam_off_elsewhere(paper_net):
    with_bias = {name for name, _ in paper_net.named_parameters() if name.endswith(".bias") and ".norm" not in name}
    assert with_bias
    assert all(".attn." in name or name.startswith("layer_fussion") for name in with_bias)
    block = paper_net.encoder_1[0]
    for conv in (block.attn.row_att.q1, block.attn.row_att.q2, block.attn.col_att.q3, block.attn.col_att.fin):
        assert conv.bias is not None
    assert block.ffn.project_in.bias is None and paper_net.conv_fuss.bias is None


def test_exactly_the_official_unused_parameters_get_no_gradient():
    net = _small().train()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    net(x).square().mean().backward()
    no_grad = sorted(name for name, p in net.named_parameters() if p.grad is None)
    assert no_grad == ["coefficient", "skip_2_1.weight"]
    assert all(name.startswith(LLFormer.unused_parameters) for name in no_grad)


def test_internal_reflect_padding_to_16():
    net = _small()
    x = torch.rand(2, 3, 24, 37, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x)
        padded = net(F.pad(x, (0, 11, 0, 8), mode="reflect"))
    assert y.shape == x.shape
    torch.testing.assert_close(y, padded[..., :24, :37], rtol=0, atol=1e-6)


def test_sides_too_short_to_reflect_use_replication():
    net = _small()
    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x)
        padded = net(F.pad(x, (0, 9, 0, 11), mode="replicate"))
    torch.testing.assert_close(y, padded[..., :5, :7], rtol=0, atol=1e-6)


def test_row_attention_matches_explicit_softmax_attention():
    torch.manual_seed(3)
    att = RowAttention(8, num_heads=2, bias=True)
    with torch.no_grad():
        att.fac.fill_(2.5)
    x = torch.randn(2, 8, 5, 7)
    qkv = att.q3(att.q2(att.q1(x)))
    q, k, v = (t.reshape(2, 2, 4, 5, 7) for t in qkv.chunk(3, dim=1))  # (b, head, d, h, w)
    q, k = F.normalize(q, dim=2), F.normalize(k, dim=2)
    weights = (torch.einsum("bgdhw,bgdhv->bghwv", q, k) * 2.5).softmax(dim=-1)
    expected = att.fin(torch.einsum("bghwv,bgdhv->bgdhw", weights, v).reshape(2, 8, 5, 7))
    torch.testing.assert_close(att(x), expected, rtol=1e-5, atol=1e-6)


def test_column_attention_runs_on_the_transposed_map():
    net = _small()
    attn = net.encoder_1[0].attn
    x = torch.randn(1, 4, 6, 9)
    with torch.no_grad():
        expected = attn.col_att(attn.row_att(x).transpose(-2, -1)).transpose(-2, -1)
        torch.testing.assert_close(attn(x), expected)


def test_skip_adds_the_input_and_attention_flag_freezes_coefficients():
    x = torch.rand(1, 3, 16, 32, generator=torch.Generator().manual_seed(4))
    plain, residual = _small(), _small(skip=True)
    residual.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(residual(x), plain(x) + x)
    frozen = build_network("LLFormer", **SMALL, attention=False)
    assert [n for n, p in frozen.named_parameters() if not p.requires_grad] == [
        "coefficient", "coefficient_4_3", "coefficient_3_2", "coefficient_2_1", "coefficient_1_0"]


@pytest.mark.parametrize("overrides", [
    dict(dim=5), dict(heads=[1, 2, 3, 2]), dict(num_blocks=[1, 1, 1]), dict(LayerNorm_type="Other"),
    dict(skip=True, out_channels=1),
])
def test_bad_configurations_are_rejected(overrides):
    with pytest.raises(UserError):
        build_network("LLFormer", **{**SMALL, **overrides})
