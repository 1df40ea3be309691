"""MIRNet-v2 quirks: hard-wired RRG groups, shared RCB/SKFF weights, pooling, channel checks."""
from __future__ import annotations

import pytest
import torch

from models import build_network
from models.mirnet_v2 import RCB, SKFF


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_net() -> torch.nn.Module:
    return build_network("MIRNet")


def test_parameter_checkpoints_from_fact_sheet(paper_net):
    mrb = paper_net.body[0].body[0]
    assert _count(mrb) == 1_181_780
    assert [_count(getattr(mrb, n)) for n in ("dau_top", "dau_mid", "dau_bot")] == [128_080, 288_120, 648_180]
    counts = [_count(mrb.down2), _count(mrb.down4), _count(mrb.up21_1), _count(mrb.up32_1)]
    assert counts == [9_600, 31_200, 9_600, 21_600]
    assert [_count(mrb.skff_top), _count(mrb.skff_mid), _count(mrb.conv_out)] == [2_400, 5_400, 6_400]
    assert [_count(rrg) for rrg in paper_net.body] == [2_421_160, 1_463_560, 984_760, 984_760]
    assert _count(paper_net.conv_in) == _count(paper_net.conv_out) == 2_160


def test_rrg_groups_are_hard_wired_and_n_rrg_ignored(paper_net):
    assert [rrg.body[0].dau_top.body[0].groups for rrg in paper_net.body] == [1, 2, 4, 4]
    other = build_network("MIRNet", n_feat=16, n_MRB=1, n_RRG=7)
    assert len(other.body) == 4


def test_each_mrb_has_one_rcb_and_skff_per_scale(paper_net):
    # two rounds per MRB share these modules: 3 RCBs and 2 SKFFs per MRB, 2 MRBs per RRG, 4 RRGs
    assert sum(isinstance(m, RCB) for m in paper_net.modules()) == 3 * 2 * 4
    assert sum(isinstance(m, SKFF) for m in paper_net.modules()) == 2 * 2 * 4


def test_shared_rcb_runs_twice_per_forward():
    net = build_network("MIRNet", n_feat=8, chan_factor=2.0, n_MRB=1).eval()
    calls = []
    net.body[0].body[0].dau_bot.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net(torch.rand(1, 3, 8, 12))
    assert len(calls) == 2


def test_downsampling_pool_settings(paper_net):
    pool = paper_net.body[0].body[0].down2.body[0].bot[0]
    assert isinstance(pool, torch.nn.AvgPool2d)
    assert pool.ceil_mode and not pool.count_include_pad and pool.kernel_size == 2


def test_size_multiple_of_four():
    net = build_network("MIRNet", n_feat=8, chan_factor=2.0, n_MRB=1).eval()
    assert net.size_multiple == 4
    with torch.no_grad():
        assert net(torch.rand(1, 3, 12, 16)).shape == (1, 3, 12, 16)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, 10, 16))  # 10 -> 5 -> 3 -> 6 does not match the 5-row skip


@pytest.mark.parametrize("kwargs", [{"n_feat": 8}, {"n_feat": 10}, {"n_feat": 12}])
def test_inconsistent_channel_configs_rejected(kwargs):
    with pytest.raises(ValueError, match="scale channels"):
        build_network("MIRNet", **kwargs)


def test_small_configs_build():
    assert _count(build_network("MIRNet", n_feat=16, n_MRB=1)) == 123_472
    assert _count(build_network("MIRNet", n_feat=8, chan_factor=2.0, n_MRB=1)) == 71_696
