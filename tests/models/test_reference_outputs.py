"""Numerical fidelity: our networks reproduce outputs recorded from the official code.

Each ``tests/fixtures/reference/<name>*.pt`` was produced by running the official implementation
(outside this repository) at a small configuration: it holds the constructor arguments, the
state dict, an input and the official output. Loading that state dict strictly into our network
and running the same input must give the same output to 1e-5 relative error (float32).
"""
from __future__ import annotations

import pytest
import torch

from models import build_network, list_networks
from tests.helpers import FIXTURES

FIXTURES = sorted((FIXTURES / "reference").glob("*.pt"))


def test_every_registered_network_has_an_official_reference():
    """The parametrised test below runs over a glob: if the fixtures vanished it would run nothing."""
    covered = {torch.load(p, map_location="cpu", weights_only=True)["network"] for p in FIXTURES}
    assert FIXTURES and set(list_networks()) <= covered, sorted(set(list_networks()) - covered)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_output_equals_official(path):
    ref = torch.load(path, map_location="cpu", weights_only=True)
    net = build_network(ref["network"], **ref.get("kwargs", {}))
    net.load_state_dict(ref["state_dict"], strict=True)
    net.eval()
    with torch.no_grad():
        out = net(ref["input"])
    expected = ref["output"]
    assert out.shape == expected.shape
    rel = (out - expected).abs().max() / expected.abs().max().clamp_min(1e-12)
    assert rel < 1e-5, f"max relative error {rel:.3e}"
