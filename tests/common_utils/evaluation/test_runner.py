"""common_utils/evaluation/runner.py: the named protocols of the papers."""
from __future__ import annotations

import pytest
import torch

from common_utils.evaluation.evaluator import evaluate
from common_utils.evaluation.runner import build_protocol
from common_utils.metrics import ssim_rgb, ssim_y


def test_the_paper_protocol_scores_ssim_on_y_at_full_resolution():
    """The SSLL paper reports SSIM on the luma channel (spec ssll.md), on the unresized image."""
    g = torch.Generator().manual_seed(4)
    gt = torch.rand(1, 3, 20, 26, generator=g)
    lq = (gt * torch.tensor([0.3, 1.0, 0.8]).view(1, 3, 1, 1) + 0.15).clamp(0, 1)
    protocol = build_protocol("paper", lpips=False)
    assert protocol.resize is None
    row = evaluate(lambda x: x, [{"lq": lq, "gt": gt, "name": ["a"]}], torch.device("cpu"), protocol).rows[0]
    assert abs(ssim_y(lq, gt).item() - ssim_rgb(lq, gt).item()) > 0.01  # the pair tells Y from RGB
    assert row["ssim"] == pytest.approx(ssim_y(lq, gt).item(), abs=1e-6)

