"""LPIPS weight lookup: offline, never random weights, clear message, reported as unavailable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from common_utils.evaluation.report import write_summary
from models.lpips import ALEXNET_FILE, ENV_VAR, LPIPSMetric, LPIPSUnavailable, find_alexnet_weights, try_build_lpips

ALEX_CONVS = (0, 3, 6, 8, 10)  # indices of the conv layers in torchvision's alexnet.features


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


ALEX_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}


@pytest.fixture(scope="module")
def fake_alexnet_state() -> dict[str, torch.Tensor]:
    """Random tensors with the keys and shapes of torchvision's AlexNet features (the classifier,
    which LPIPS ignores, is left out to keep the test fast)."""
    import torchvision

    g = torch.Generator().manual_seed(123)
    state = {}
    for i, shape in ALEX_SHAPES.items():
        state[f"features.{i}.weight"] = torch.randn(shape, generator=g) * 0.05
        state[f"features.{i}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    # same keys and shapes as the real architecture (built on the meta device: no memory, no time)
    with torch.device("meta"):
        real = torchvision.models.alexnet(weights=None)
    ref = {f"features.{k}": v.shape for k, v in real.features.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == ref
    return state


def _backbone_convs(metric: LPIPSMetric) -> dict[int, torch.nn.Conv2d]:
    net = metric.model.net
    convs = {}
    for sl in (net.slice1, net.slice2, net.slice3, net.slice4, net.slice5):
        for name, m in sl.named_children():
            if isinstance(m, torch.nn.Conv2d):
                convs[int(name)] = m
    return convs


def test_missing_weights_message_names_file_and_folder(empty_torch_home):
    with pytest.raises(LPIPSUnavailable) as info:
        LPIPSMetric()
    msg = str(info.value)
    assert ALEXNET_FILE == "alexnet-owt-7be5be79.pth"
    assert ALEXNET_FILE in msg
    assert str(empty_torch_home / "hub" / "checkpoints") in msg
    assert ENV_VAR in msg
    # nothing was downloaded or created
    assert not (empty_torch_home / "hub" / "checkpoints" / ALEXNET_FILE).exists()


def test_missing_explicit_path_is_listed(empty_torch_home, tmp_path):
    with pytest.raises(LPIPSUnavailable) as info:
        LPIPSMetric(weights=str(tmp_path / "nowhere.pth"))
    assert str(tmp_path / "nowhere.pth") in str(info.value)


def test_try_build_lpips_returns_reason(empty_torch_home):
    metric, reason = try_build_lpips()
    assert metric is None
    assert isinstance(reason, str) and ALEXNET_FILE in reason and str(empty_torch_home) in reason


def test_evaluator_reports_lpips_none(empty_torch_home, tmp_path):
    _, reason = try_build_lpips()
    protocol = EvalProtocol(ssim="y", lpips=None, lpips_reason=reason)
    g = torch.Generator().manual_seed(0)
    batches = [{"lq": torch.rand(1, 3, 24, 24, generator=g), "gt": torch.rand(1, 3, 24, 24, generator=g),
                "name": [f"im{i}"]} for i in range(2)]
    res = evaluate(lambda x: x, batches, torch.device("cpu"), protocol, time_forward=False)
    assert [r["lpips"] for r in res.rows] == [None, None]
    summary = res.summary()
    assert summary["lpips"] is None
    assert isinstance(summary["psnr"], float) and isinstance(summary["ssim"], float) and summary["images"] == 2
    desc = protocol.describe(torch.device("cpu"))
    assert desc["lpips"].startswith("unavailable") and ALEXNET_FILE in desc["lpips"]
    write_summary(tmp_path / "res", {"set": summary}, desc)
    data = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert data["set"]["lpips"] is None  # JSON null, not NaN or 0


def test_fake_alexnet_file_is_loaded(empty_torch_home, fake_alexnet_state):
    """Tests the weight *loading path* only: the file holds random tensors in AlexNet's layout, so
    the metric's values are meaningless; we check that exactly the file's tensors end up in the
    LPIPS backbone (found in $TORCH_HOME/hub/checkpoints, as torchvision would store it)."""
    path = empty_torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    path.parent.mkdir(parents=True)
    torch.save(fake_alexnet_state, path)
    metric = LPIPSMetric()
    assert metric.weights_path == str(path)
    convs = _backbone_convs(metric)
    assert sorted(convs) == list(ALEX_CONVS)
    for i, conv in convs.items():
        assert torch.equal(conv.weight, fake_alexnet_state[f"features.{i}.weight"])
        assert torch.equal(conv.bias, fake_alexnet_state[f"features.{i}.bias"])
    assert not any(p.requires_grad for p in metric.parameters())
    x = torch.rand(2, 3, 32, 32)
    d = metric(x, x.flip(-1))
    assert d.shape == (2,) and torch.isfinite(d).all()
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)


def test_lookup_order_explicit_then_env_then_torch_home(empty_torch_home, tmp_path, monkeypatch):
    hub = empty_torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    env = tmp_path / "env" / "alex.pth"
    explicit = tmp_path / "explicit" / "alex.pth"
    for p in (hub, env, explicit):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    monkeypatch.setenv(ENV_VAR, str(env))
    assert find_alexnet_weights(str(explicit)) == explicit
    assert find_alexnet_weights() == env
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.pth"))  # a stale variable falls through
    assert find_alexnet_weights() == hub


def test_try_build_lpips_with_file(empty_torch_home, tmp_path, fake_alexnet_state):
    path = tmp_path / "a.pth"
    torch.save(fake_alexnet_state, path)
    metric, reason = try_build_lpips(str(path))
    assert reason is None and isinstance(metric, LPIPSMetric)


def test_wrong_file_is_unavailable_not_random(empty_torch_home, tmp_path):
    path = tmp_path / "not_alexnet.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(LPIPSUnavailable, match="not an AlexNet checkpoint"):
        LPIPSMetric(weights=str(path))


def test_truncated_weights_file_is_unavailable(empty_torch_home, fake_alexnet_state):
    """An interrupted download in the hub folder must not crash evaluation with a traceback."""
    path = empty_torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    path.parent.mkdir(parents=True)
    torch.save(fake_alexnet_state, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(LPIPSUnavailable) as info:  # an error to fix, not a metric left out silently
        try_build_lpips()
    assert str(path) in str(info.value) and "truncated or corrupt" in str(info.value)
