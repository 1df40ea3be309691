"""common_utils/evaluation/evaluator.py: the one evaluation loop scores with the protocol it is given."""
from __future__ import annotations

import pytest
import torch

from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from common_utils.metrics import psnr, ssim_rgb, ssim_y


def _batches():
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(1, 3, 24, 28, generator=g)
    lq = (0.5 * gt + 0.1 * torch.rand(1, 3, 24, 28, generator=g)).clamp(0, 1)
    return [{"lq": lq, "gt": gt, "name": ["a"]}], lq, gt


def _darken_red(x: torch.Tensor) -> torch.Tensor:
    """A net whose error is mostly in one channel, so that Y and RGB SSIM differ clearly."""
    return x * torch.tensor([0.4, 1.0, 0.9]).view(1, 3, 1, 1) + 0.2


@pytest.mark.parametrize("variant", ["y", "rgb"])
def test_evaluator_scores_ssim_with_the_protocol_variant(variant):
    batches, lq, gt = _batches()
    out = _darken_red(lq).clamp(0, 1)
    want = {"y": ssim_y(out, gt).item(), "rgb": ssim_rgb(out, gt).item()}
    assert abs(want["y"] - want["rgb"]) > 0.01  # the image tells the variants apart
    row = evaluate(_darken_red, batches, torch.device("cpu"), EvalProtocol(ssim=variant)).rows[0]
    assert row["ssim"] == pytest.approx(want[variant], abs=1e-6)
    assert row["psnr"] == pytest.approx(psnr(out, gt).item(), abs=1e-4)


def test_the_default_protocol_is_ssim_on_y():
    batches, lq, gt = _batches()
    row = evaluate(_darken_red, batches, torch.device("cpu"), EvalProtocol()).rows[0]
    assert row["ssim"] == pytest.approx(ssim_y(_darken_red(lq).clamp(0, 1), gt).item(), abs=1e-6)
