"""losses/: the call contract of every registered unpaired loss, and which losses may be listed as one."""
from __future__ import annotations

import pytest
import torch

from core.config import ConfigError, load_config
from losses import LOSSES, build_loss
from losses.semi import UnpairedLoss, unpaired_loss_names
from tests.helpers import tiny_config, write_yaml

UNPAIRED = unpaired_loss_names()


def test_the_paper_terms_are_enrolled_as_unpaired_losses():
    assert {"consistency", "pico_unpaired"} <= set(UNPAIRED)
    assert not {"l1", "pico", "masked_l1"} & set(UNPAIRED)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = torch.rand(2, 3, 8, 8, generator=g)
    teacher = torch.rand(2, 3, 8, 8, generator=g)
    inputs = 0.3 * torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:7, 1:5] = 1.0  # the unpaired region; the paired box is the rest
    mask[1, :, 0, :] = 1.0  # a different region per sample
    return student, teacher, inputs, mask.expand(2, 3, 8, 8).contiguous()


@pytest.mark.parametrize("name", UNPAIRED)
def test_unpaired_loss_contract(name):
    """Called as (student, teacher, input, mask): a scalar, no gradient to the teacher, the mask respected."""
    loss_fn = build_loss(name)
    assert isinstance(loss_fn, UnpairedLoss)
    student, teacher, inputs, mask = _batch()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    value = loss_fn(student, teacher, inputs, mask)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert teacher.grad is None or not teacher.grad.any(), "the teacher's output must be detached"
    assert student.grad is not None and student.grad[mask.bool()].abs().sum() > 0
    assert not student.grad[~mask.bool()].any(), "gradient reached the student outside the mask"

    # the student's output outside the mask does not change the value
    changed = student.detach().clone()
    changed[~mask.bool()] = 1.0 - changed[~mask.bool()]
    torch.testing.assert_close(loss_fn(changed, teacher.detach(), inputs, mask), value.detach(), rtol=0, atol=1e-6)
    # ... inside it, it does
    inside = student.detach().clone()
    inside[mask.bool()] = 1.0 - inside[mask.bool()]
    assert abs(float(loss_fn(inside, teacher.detach(), inputs, mask)) - value.item()) > 1e-4


def test_only_unpaired_losses_may_be_listed_as_unpaired_terms(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.update(trainer="mean_teacher", ssll={"unpaired_losses": [{"name": "l1", "weight": 1.0}]})
    cfg["train"]["ema_decay"] = 0.99
    with pytest.raises(ConfigError, match=r"'ssll.unpaired_losses\[0\]': 'l1' is not an unpaired loss.*consistency"):
        load_config(write_yaml(tmp_path / "c.yaml", cfg))
    assert "l1" in LOSSES
