"""Properties every registered network must have, checked against the official manifests.

For each network at the papers' configuration: parameter count and state-dict keys/shapes
equal the official implementation's; a state dict built from the manifest loads strictly; an
odd-sized input comes back at its own size through the framework's inference path; outputs
are finite; gradients reach every parameter the official forward uses.

The tests enrol every registered network by themselves (``list_networks()``): an 8th backbone
is covered as soon as it is registered, and it must ship its manifest (``models/manifests``).
Every manifest must belong to a registered network or to a documented checkpoint form.
"""
from __future__ import annotations

import pytest
import torch

from common_utils.checkpoint import COMBINED_MANIFEST
from common_utils.inference import forward_padded
from models import build_network, list_networks
from models.manifest import load_manifest, manifest_names

NETWORKS = list_networks()

_cache: dict[str, torch.nn.Module] = {}


def _net(name: str) -> torch.nn.Module:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = build_network(name)
    return _cache[name]


def test_every_network_has_a_manifest_and_every_manifest_a_use():
    assert len(NETWORKS) >= 9  # the seven backbones and the two ICEML networks
    manifests = set(manifest_names())
    assert set(NETWORKS) - manifests == set(), "a registered network ships no official manifest"
    assert manifests - set(NETWORKS) == {COMBINED_MANIFEST}  # the ICEML checkpoint form, not a network


@pytest.mark.parametrize("name", NETWORKS)
def test_parameter_count_matches_official(name):
    net = _net(name)
    assert sum(p.numel() for p in net.parameters()) == load_manifest(name).num_parameters


@pytest.mark.parametrize("name", NETWORKS)
def test_state_dict_keys_and_shapes_match_official(name):
    ours = {k: tuple(v.shape) for k, v in _net(name).state_dict().items()}
    official = load_manifest(name).shapes
    assert sorted(set(ours) - set(official)) == []
    assert sorted(set(official) - set(ours)) == []
    assert ours == official


@pytest.mark.parametrize("name", NETWORKS)
def test_strict_load_of_manifest_shaped_state_dict(name):
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=gen) if s else torch.randn((), generator=gen)
          for k, s in load_manifest(name).shapes.items()}
    net = build_network(name)
    net.load_state_dict(sd, strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("name", NETWORKS)
def test_odd_size_forward_finite_and_gradients_reach_used_parameters(name):
    net = _net(name)
    net.train()
    net.zero_grad(set_to_none=True)
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    y = forward_padded(net, x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    unused = tuple(getattr(net, "unused_parameters", ()))
    missing = [n for n, p in net.named_parameters()
               if p.grad is None and not n.startswith(unused)]
    assert missing == []
    net.zero_grad(set_to_none=True)
    net.eval()
