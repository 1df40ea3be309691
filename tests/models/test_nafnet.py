"""NAFNet-specific behaviour: TLSC local-pooling windows, their global fallback, internal padding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import build_network
from models.nafnet import LocalAvgPool2d, local_pool_kernel_sizes
from tests.helpers import FIXTURES

SMALL = {"width": 4, "enc_blk_nums": [1, 1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}
FIXTURE = FIXTURES / "reference" / "NAFNet.pt"


def _randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make beta/gamma non-zero so that no block is the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith((".beta", ".gamma")):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return net.eval()


def _pair(kwargs: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights as TLSC NAFNetLocal and as plain (global pooling) NAFNet."""
    torch.manual_seed(seed)
    local = _randomised(build_network("NAFNet", **kwargs), seed)
    plain = build_network("NAFNet", **kwargs, local_pooling=False)
    plain.load_state_dict(local.state_dict(), strict=True)
    return local, plain.eval()


def _level_of(name: str, num_levels: int) -> int:
    part, index = name.split(".")[:2]
    if part == "middle_blks":
        return num_levels
    return int(index) if part == "encoders" else num_levels - 1 - int(index)


def test_kernel_sizes_for_train_size_192():
    expected = [(288, 288), (144, 144), (72, 72), (36, 36), (18, 18)]
    assert local_pool_kernel_sizes((1, 3, 192, 192), 4) == expected
    assert local_pool_kernel_sizes(192, 4) == expected
    net = build_network("NAFNet", **SMALL, train_size=[1, 3, 192, 192])
    assert net.base_size == (288, 288)
    assert net.pool_kernel_sizes == expected
    pools = {n: m for n, m in net.named_modules() if isinstance(m, LocalAvgPool2d)}
    assert len(pools) == 9  # 4 encoder + 1 middle + 4 decoder blocks
    for name, pool in pools.items():
        assert name.endswith("sca.0")
        assert pool.kernel_size == expected[_level_of(name, 4)], name


def test_kernel_sizes_use_padded_training_features():
    # 40x56 is zero-padded to 48x64 before the first level (values checked against the official code).
    assert local_pool_kernel_sizes([1, 3, 40, 56], 4) == [(72, 96), (36, 48), (18, 24), (9, 12), (4, 6)]


def test_plain_nafnet_has_global_pooling_and_same_state_dict_keys():
    local = build_network("NAFNet", **SMALL, train_size=32)
    plain = build_network("NAFNet", **SMALL, train_size=32, local_pooling=False)
    assert plain.pool_kernel_sizes is None
    assert not any(isinstance(m, LocalAvgPool2d) for m in plain.modules())
    assert local.state_dict().keys() == plain.state_dict().keys()


def test_construction_draws_no_extra_random_numbers():
    # Unlike the official NAFNetLocal (a forward on torch.rand(train_size)), only init uses the RNG.
    torch.manual_seed(3)
    build_network("NAFNet", **SMALL, train_size=32)
    after_local = torch.rand(4)
    torch.manual_seed(3)
    build_network("NAFNet", **SMALL, train_size=32, local_pooling=False)
    assert torch.equal(after_local, torch.rand(4))


@pytest.mark.parametrize("size", [(48, 48), (33, 47), (17, 48), (1, 1)])
def test_inputs_up_to_base_size_equal_global_pooling(size):
    local, plain = _pair({**SMALL, "train_size": [1, 3, 32, 32]})  # base size 48
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(local(x), plain(x))


def test_base_size_288_for_train_size_192():
    local, plain = _pair({**SMALL, "train_size": [1, 3, 192, 192]})
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        x = torch.rand(1, 3, 288, 280, generator=gen)
        assert torch.equal(local(x), plain(x))
        x = torch.rand(1, 3, 300, 200, generator=gen)  # taller than the 288 window at level 0
        assert (local(x) - plain(x)).abs().max() > 1e-5


def test_larger_inputs_use_local_statistics():
    local, plain = _pair({**SMALL, "train_size": [1, 3, 32, 32]})
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y_local, y_plain = local(x), plain(x)
    assert y_local.shape == x.shape
    assert (y_local - y_plain).abs().max() > 1e-4


@pytest.mark.parametrize("kernel, size", [((3, 5), (9, 11)), ((4, 4), (7, 16)), ((20, 6), (9, 11))])
def test_local_pool_is_replicate_padded_box_mean(kernel, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    kh, kw = min(kernel[0], size[0]), min(kernel[1], size[1])
    box = F.avg_pool2d(x, (kh, kw), stride=1)
    dh, dw = size[0] - box.shape[-2], size[1] - box.shape[-1]
    expected = F.pad(box, (dw // 2, (dw + 1) // 2, dh // 2, (dh + 1) // 2), mode="replicate")
    torch.testing.assert_close(LocalAvgPool2d(kernel)(x), expected)


def test_local_pool_falls_back_to_global_mean():
    x = torch.randn(1, 2, 6, 9, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(LocalAvgPool2d((6, 9))(x), x.mean(dim=(-2, -1), keepdim=True))


@pytest.mark.parametrize("kernel", [(5, 7), (6, 4), (18, 18)])
def test_branch_free_pool_for_tracing_equals_the_eager_pool(kernel):
    # the path the tracing exporters record has no Python branch on the size: it must give the eager
    # result on both sides of the global/local switch, and where only one side of the window is clamped
    pool = LocalAvgPool2d(kernel)
    for size in [(3, 4), (5, 7), (6, 6), (9, 20), (40, 3), (17, 33), (50, 50)]:
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]), dtype=torch.float64)
        eager = pool(x)
        traced_path = pool._box_mean_any_size(x)
        assert traced_path.shape == x.shape
        torch.testing.assert_close(traced_path, eager.expand_as(x), rtol=1e-12, atol=1e-12)


def test_internal_padding_accepts_any_size():
    local, _ = _pair({**SMALL, "train_size": 32})
    assert local.size_multiple == 1
    for size in [(5, 7), (37, 53), (50, 17)]:
        with torch.no_grad():
            assert local(torch.rand(1, 3, *size)).shape == (1, 3, *size)


def test_reference_fixture_exercises_local_pooling():
    ref = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    plain = build_network("NAFNet", **ref["kwargs"], local_pooling=False)
    plain.load_state_dict(ref["state_dict"], strict=True)
    with torch.no_grad():
        assert (plain.eval()(ref["input"]) - ref["output"]).abs().max() > 1e-4
