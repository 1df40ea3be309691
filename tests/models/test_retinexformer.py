"""Retinexformer quirks: construction rules, head layout, the two residual paths, attention form, init."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import build_network
from models.retinexformer import IGMSA, RetinexFormer

SMALL = dict(n_feat=8, stage=1, num_blocks=[1, 1, 1])


def _small(**overrides) -> RetinexFormer:
    torch.manual_seed(0)
    return build_network("RetinexFormer", **{**SMALL, **overrides}).eval()


def test_paper_defaults_and_size_multiple():
    net = build_network("RetinexFormer")
    assert net.stage == 1 and len(net.body) == 1
    assert RetinexFormer.size_multiple == 4
    assert RetinexFormer.unused_parameters == ()


@pytest.mark.parametrize("n_feat", [31, 6, 0])
def test_n_feat_must_be_multiple_of_four(n_feat):
    # the official class default n_feat=31 cannot be built (the estimator's 5x5 conv has 4 groups)
    with pytest.raises(ValueError, match="multiple of 4"):
        RetinexFormer(n_feat=n_feat)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        RetinexFormer(num_blocks=[1, 2])
    with pytest.raises(ValueError):
        RetinexFormer(in_channels=4)
    with pytest.raises(ValueError):
        RetinexFormer(stage=0)


def test_heads_are_channels_over_n_feat():
    sd = _small().state_dict()
    heads = {k: v.shape[0] for k, v in sd.items() if k.endswith("rescale")}
    assert heads["body.0.denoiser.encoder_layers.0.0.blocks.0.0.rescale"] == 1
    assert heads["body.0.denoiser.encoder_layers.1.0.blocks.0.0.rescale"] == 2
    assert heads["body.0.denoiser.bottleneck.blocks.0.0.rescale"] == 4
    assert heads["body.0.denoiser.decoder_layers.0.2.blocks.0.0.rescale"] == 2
    assert heads["body.0.denoiser.decoder_layers.1.2.blocks.0.0.rescale"] == 1


def test_needs_multiple_of_four_without_padding():
    net = _small()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 36, 52)).shape == (1, 3, 36, 52)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, 34, 52))


def test_stage_two_chains_two_independent_stages():
    one = _small()
    two = _small(stage=2)
    n1 = sum(p.numel() for p in one.parameters())
    assert sum(p.numel() for p in two.parameters()) == 2 * n1
    assert any(k.startswith("body.1.estimator.") for k in two.state_dict())
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        y = two(x)
        assert torch.allclose(y, two.body[1](two.body[0](x)))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_residual_adds_the_lit_up_image():
    net = _small()
    stage = net.body[0]
    with torch.no_grad():
        stage.denoiser.mapping.weight.zero_()
        x = torch.rand(1, 3, 32, 48)
        _, illu_map = stage.estimator(x)
        assert torch.allclose(net(x), x * illu_map + x, atol=1e-6)


def test_positional_branch_uses_unmodulated_values():
    torch.manual_seed(0)
    msa = IGMSA(dim=16, dim_head=8, heads=2).eval()
    x = torch.randn(1, 4, 6, 16)
    with torch.no_grad():
        msa.proj.bias.normal_()
        out = msa(x, torch.zeros_like(x))  # zero illumination: modulated values vanish
        v = msa.to_v(x).permute(0, 3, 1, 2)
        expected = msa.proj.bias + msa.pos_emb(v).permute(0, 2, 3, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_attention_matrix_is_k_times_q_transposed():
    torch.manual_seed(1)
    msa = IGMSA(dim=16, dim_head=8, heads=2).eval()
    with torch.no_grad():
        msa.rescale.uniform_(0.5, 2.0)
        msa.proj.bias.normal_()
    x = torch.randn(2, 4, 6, 16)
    illu = torch.randn(2, 4, 6, 16)
    with torch.no_grad():
        out = msa(x, illu)
        tok = x.reshape(2, 24, 16)
        q, k = msa.to_q(tok), msa.to_k(tok)
        v = msa.to_v(tok) * illu.reshape(2, 24, 16)
        heads = []
        for g in range(2):
            sl = slice(8 * g, 8 * (g + 1))
            qg = F.normalize(q[..., sl].transpose(1, 2), dim=-1)  # (B, d, N)
            kg = F.normalize(k[..., sl].transpose(1, 2), dim=-1)
            a = torch.softmax(kg @ qg.transpose(1, 2) * msa.rescale[g], dim=-1)
            heads.append((a @ v[..., sl].transpose(1, 2)).transpose(1, 2))
        attn_out = msa.proj(torch.cat(heads, dim=-1)).reshape(2, 4, 6, 16)
        pos = msa.pos_emb(msa.to_v(tok).reshape(2, 4, 6, 16).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.allclose(out, attn_out + pos, atol=1e-5)


def test_denoiser_init():
    net = build_network("RetinexFormer")
    den = net.body[0].denoiser
    linears = [m for m in den.modules() if isinstance(m, torch.nn.Linear)]
    w = torch.cat([m.weight.flatten() for m in linears])
    assert abs(w.std().item() - 0.02) < 0.002
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in linears)
    for m in den.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert all(torch.all(p == 1) for n, p in den.named_parameters() if n.endswith("rescale"))
