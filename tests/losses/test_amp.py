"""Mixed precision: losses that need fp32 stay in fp32 under autocast."""
from __future__ import annotations

import torch

from losses import build_loss


def test_ssim_loss_under_bf16_autocast_equals_fp32():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    loss = build_loss("ssim")
    ref = loss(x, y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = loss(x, y)
    assert torch.isfinite(low) and low.dtype == torch.float32
    assert torch.allclose(low, ref, rtol=1e-6)
