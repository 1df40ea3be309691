"""Gradient checkpointing (models/grad_checkpoint.py, ``train.grad_checkpoint``): the same gradients
with fewer saved activations, for each network that supports it; a clear error for the others."""
from __future__ import annotations

import pytest
import torch

from core.assembly import TrainerAssembly
from core.config import ConfigError
from foundation.errors import UserError
from models import build_network, list_networks
from models.grad_checkpoint import set_grad_checkpoint, supports_grad_checkpoint
from tests.helpers import load_tiny_config

# small configurations of the three heavy backbones (a few blocks per level)
TINY = {
    "Restormer": dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2)),
    "LLFormer": dict(dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1)),
    "MIRNet": dict(n_feat=16, n_MRB=1),
}


def test_the_heavy_backbones_and_only_they_support_it():
    from models import NETWORKS

    assert sorted(n for n in list_networks() if supports_grad_checkpoint(NETWORKS.get(n))) == sorted(TINY)


def _gradients(net: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """Parameter gradients of a loss on ``net(x)``, and how many tensors the forward kept for backward."""
    net.zero_grad(set_to_none=True)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = net(x)
    ((y - 0.5) ** 2).mean().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, saved


@pytest.mark.parametrize("name", sorted(TINY))
def test_checkpointed_gradients_equal_the_plain_ones_with_fewer_saved_tensors(name):
    torch.manual_seed(0)
    net = build_network(name, **TINY[name]).double()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    plain, saved_plain = _gradients(net, x)
    set_grad_checkpoint(net)
    ckpt, saved_ckpt = _gradients(net, x)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-10, atol=1e-12, msg=k)
    assert saved_ckpt < saved_plain / 2  # the blocks' activations were not kept
    with torch.no_grad():  # no gradients: the blocks run as usual, same output
        set_grad_checkpoint(net, False)
        y0 = net(x)
        set_grad_checkpoint(net)
        assert torch.equal(net(x), y0)


def test_a_network_without_support_is_refused():
    with pytest.raises(UserError, match=r"train\.grad_checkpoint.*UNet does not support.*Restormer"):
        set_grad_checkpoint(build_network("UNet", width=4))


def test_the_config_switch_is_checked_at_load_and_applied_to_the_trained_networks(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.grad_checkpoint.*UNet does not support"):
        load_tiny_config(tmp_path, ["train.grad_checkpoint=true"])
    cfg = load_tiny_config(tmp_path, ["train.grad_checkpoint=true", "network.name=MIRNet",
                                      "network.args={n_feat: 16, n_MRB: 1}"])

    class Parts(TrainerAssembly):
        pass

    parts = Parts()
    parts.cfg, parts.device = cfg, torch.device("cpu")
    net = parts.new_network()
    flags = [m.grad_checkpoint for m in net.modules() if hasattr(m, "grad_checkpoint")]
    assert flags and all(flags)
