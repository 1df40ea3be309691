"""SSLL: PICo, CutMix, EMA, the ramp, one semi-supervised step, the paper configs, exact resume."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core import TRAINERS
from core.config import load_config
from core.ema import ema_decay_at, ema_update
from core.mean_teacher import sigmoid_ramp
from data.cutmix import boxes_to_mask, curriculum_mean, cutmix, cutmix_rng, sample_boxes
from losses import build_loss
from losses.semi import brightness_adjust
from tests.helpers import REPO_ROOT, make_paired_folders, tiny_config, write_yaml

CONFIG_DIR = REPO_ROOT / "config"


# ---------------------------------------------------------------- PICo
def _phi(d: float) -> float:
    return 1.0 / (d + 0.5) - 1.0


def test_pico_equals_formula_without_mask():
    """spec ssll.md §4 by hand: softplus(gamma (phi(d_n) + m - phi(d_p))), batch mean. The samples are
    no mirror images of each other (d_p, d_n differ per sample), so swapping the positive and the
    negative, or the sign of the argument, changes the value."""
    a = torch.tensor([[[[0.2, 0.4, 0.7]]], [[[0.9, 0.1, 0.5]]], [[[0.3, 0.3, 0.3]]]])  # (3,1,1,3)
    p = torch.tensor([[[[0.3, 0.4, 0.6]]], [[[0.6, 0.4, 0.5]]], [[[0.2, 0.5, 0.3]]]])
    n = torch.tensor([[[[0.0, 1.0, 0.1]]], [[[0.9, 0.0, 0.2]]], [[[0.9, 0.3, 0.0]]]])
    gamma, m = 10.0, -0.25
    expected = []
    for b in range(3):
        dp = (a[b] - p[b]).abs().mean().item()
        dn = (a[b] - n[b]).abs().mean().item()
        expected.append(math.log1p(math.exp(gamma * (_phi(dn) + m - _phi(dp)))))
    assert len({round(e, 3) for e in expected}) == 3
    loss = build_loss("pico", gamma=gamma, margin=m)(a, p, n)
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    for b in range(3):  # per sample too: the one whose anchor is nearer its negative costs most
        one = build_loss("pico", gamma=gamma, margin=m)(a[b:b + 1], p[b:b + 1], n[b:b + 1])
        assert one.item() == pytest.approx(expected[b], rel=1e-5)
    assert max(expected) == expected[1]


def test_pico_equals_formula_with_mask_counting_channels():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.rand(2, 3, 4, 5, generator=g) for _ in range(3))
    mask = torch.zeros(2, 3, 4, 5)
    mask[0, :, :2, :3] = 1  # 18 entries (channels counted)
    mask[1, :, 1:, :] = 1   # 45 entries
    gamma, m = 5.0, 0.25
    expected = []
    for b in range(2):
        sel = mask[b].bool()
        dp = (a[b] - p[b]).abs()[sel].sum().item() / sel.sum().item()
        dn = (a[b] - n[b]).abs()[sel].sum().item() / sel.sum().item()
        expected.append(math.log1p(math.exp(gamma * (_phi(dn) + m - _phi(dp)))))
    loss = build_loss("pico", gamma=gamma, margin=m)(a, p, n, mask=mask)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_pico_decreases_as_anchor_moves_toward_positive_and_grads_only_anchor():
    g = torch.Generator().manual_seed(1)
    p, n = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    loss_fn = build_loss("pico", gamma=10.0, margin=0.0)
    values = [loss_fn(n + t * (p - n), p, n).item() for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(x > y for x, y in zip(values, values[1:]))
    a = (0.5 * (p + n)).requires_grad_()
    pp, nn_ = p.clone().requires_grad_(), n.clone().requires_grad_()
    loss_fn(a, pp, nn_).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert pp.grad is None and nn_.grad is None


# ---------------------------------------------------------------- CutMix
def test_cutmix_boxes_have_the_drawn_area_up_to_border_clipping():
    rng = random.Random(3)
    boxes = sample_boxes(200, 64, 64, mean=0.5, rng=rng, sigma=1.0, r_min=0.1, r_max=0.9)
    for top, bottom, left, right, r in boxes:
        assert 0.1 <= r <= 0.9
        side_h, side_w = int(64 * math.sqrt(r)), int(64 * math.sqrt(r))
        # half-sizes by integer division: the unclipped box is 2*(side//2) wide
        assert bottom - top <= 2 * (side_h // 2) and right - left <= 2 * (side_w // 2)
        assert (bottom - top) * (right - left) > 0
        if top > 0 and bottom < 64 and left > 0 and right < 64:  # untouched by the border
            assert (bottom - top) == 2 * (side_h // 2) and (right - left) == 2 * (side_w // 2)


def test_cutmix_pastes_paired_content_inside_the_box_only():
    x_p = torch.rand(2, 3, 32, 32)
    x_u = torch.rand(2, 3, 32, 32)
    boxes = [(2, 20, 5, 30, 0.5), (0, 10, 0, 10, 0.1)]
    mask = boxes_to_mask(boxes, (2, 3, 32, 32))
    x_c = cutmix(x_p, x_u, mask)
    assert mask[0].sum() == 3 * 18 * 25 and mask[1].sum() == 3 * 100
    inside = mask.bool()
    assert torch.equal(x_c[inside], x_p[inside])
    assert torch.equal(x_c[~inside], x_u[~inside])


def test_cutmix_draws_are_seeded_and_the_curriculum_shrinks():
    a = sample_boxes(4, 48, 48, 0.8, cutmix_rng(1, 10))
    b = sample_boxes(4, 48, 48, 0.8, cutmix_rng(1, 10))
    c = sample_boxes(4, 48, 48, 0.8, cutmix_rng(1, 11))
    assert a == b and a != c
    assert curriculum_mean(51, 51, 350) == 1.0
    assert curriculum_mean(90, 51, 350) == pytest.approx(1 - 39 / 299)
    assert curriculum_mean(600, 201, 700) == pytest.approx(1 - 399 / 499)


# ---------------------------------------------------------------- EMA and ramp
def test_ema_arithmetic_with_bias_correction():
    assert ema_decay_at(0, 0.99) == 0.0
    assert ema_decay_at(1, 0.99) == 0.5
    assert ema_decay_at(9, 0.99) == pytest.approx(0.9)
    assert ema_decay_at(10_000, 0.99) == 0.99
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    alpha = ema_update(teacher, student, step=3, decay=0.99)
    assert alpha == pytest.approx(0.75)
    for t_new, t_old, s in zip(teacher.parameters(), t0, student.parameters()):
        assert torch.allclose(t_new, 0.75 * t_old + 0.25 * s.detach())


def test_sigmoid_ramp_values():
    assert sigmoid_ramp(350, 350) == pytest.approx(1.0)
    assert sigmoid_ramp(700, 350) == pytest.approx(1.0)
    assert sigmoid_ramp(51, 350) == pytest.approx(math.exp(-5 * (1 - 51 / 350) ** 2))
    assert sigmoid_ramp(90, 350) == pytest.approx(0.0633, abs=5e-4)  # spec §5.1: Restormer 0.026 -> 0.063
    assert sigmoid_ramp(51, 350) == pytest.approx(0.026, abs=5e-4)


# ---------------------------------------------------------------- one semi-supervised step
def _ssll_cfg(tmp_path: Path, name: str, iters: int = 8, semi_start: int = 1, fused: bool = True,
              workers: int = 0) -> dict:
    cfg = tiny_config(tmp_path, name=name, iters=iters, num_workers=workers)
    un_dir = tmp_path / "data" / "unpaired"
    if not un_dir.is_dir():
        make_paired_folders(tmp_path / "data" / "unp", n=6, size=40, seed=9)
        (tmp_path / "data" / "unp" / "low").rename(un_dir)
    cfg["trainer"] = "mean_teacher"
    cfg["data"]["unpaired"] = {"type": "unpaired_folder", "args": {"root": str(un_dir), "crop_size": 32,
                                                                    "flip": True}}
    cfg["ssll"] = {"semi_start_epoch": semi_start, "curriculum_epochs": 4, "ramp_epochs": 4,
                   "fused_student_forward": fused, "lambda_p": 0.2, "margin_p": -0.25, "gamma_p": 10,
                   "unpaired_losses": [{"name": "consistency", "weight": 1.0},
                                       {"name": "pico_unpaired", "weight": 0.1, "args": {"gamma": 5, "margin": 0.0}}]}
    return cfg


def _trainer(tmp_path: Path, cfg: dict, resume: str | None = None):
    path = write_yaml(tmp_path / f"{cfg['name']}.yaml", cfg)
    return TRAINERS.get(cfg["trainer"])(load_config(path), resume=resume)


def test_semi_step_terms_weights_and_gradients(tmp_path):
    tr = _trainer(tmp_path, _ssll_cfg(tmp_path, "step"))
    tr.start_streams()
    tr.iter = 4  # epoch 2 (4 iterations per epoch): inside the semi phase
    batch = tr.next_batches()
    assert "unpaired" in batch
    tr.optimizer.zero_grad(set_to_none=True)
    terms = tr.train_step(batch)
    assert set(terms) == {"l1", "ssim", "pico_paired", "consistency", "pico_unpaired"}
    student, teacher = tr.networks["student"], tr.teachers["teacher"]
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    # recompute every term by hand with the same draws
    s = tr.cfg.ssll
    x_p, g = batch["lq"], batch["gt"]
    x_c, m_p = tr.mix(x_p, batch["unpaired"]["lq"])
    with torch.no_grad():
        y_p, y_c = student(x_p).clamp(0, 1), student(x_c).clamp(0, 1)
        t_p, t_c = teacher(x_p).clamp(0, 1), teacher(x_c).clamp(0, 1)
    w = sigmoid_ramp(tr.epoch, s.ramp_epochs, s.semi_weight)
    m_u = 1 - m_p
    con = ((y_c - t_c).abs() * m_u).flatten(1).sum(1) / m_u.flatten(1).sum(1)
    assert terms["l1"].item() == pytest.approx(F.l1_loss(y_p, g).item(), rel=1e-5)
    assert terms["consistency"].item() == pytest.approx(w * con.mean().item(), rel=1e-5)
    pico_p = build_loss("pico", gamma=10, margin=-0.25)(y_p, g, t_p)
    assert terms["pico_paired"].item() == pytest.approx(0.2 * pico_p.item(), rel=1e-5)
    ba = brightness_adjust(x_c, t_c)
    assert torch.allclose(ba.flatten(1).mean(1), t_c.flatten(1).mean(1), rtol=1e-5)
    pico_u = build_loss("pico", gamma=5, margin=0.0)(y_c, t_c, ba, m_u)
    assert terms["pico_unpaired"].item() == pytest.approx(w * 0.1 * pico_u.item(), rel=1e-5)
    tr.close()


def test_cutmix_draws_a_new_box_each_iteration_and_the_same_one_on_a_replay(tmp_path):
    """The trainer's CutMix generator follows the iteration (a fixed one pastes the same box every
    step) and is reproducible at a given iteration (exact resume)."""
    tr = _trainer(tmp_path, _ssll_cfg(tmp_path, "boxes"))
    try:
        x_p, x_u = torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32)
        masks = {}
        for it in (4, 5, 6, 4):
            tr.iter = it
            x_c, m_p = tr.mix(x_p, x_u)
            assert torch.equal(x_c, 1 - m_p)  # paired content (zeros) exactly inside the box
            if it in masks:
                assert torch.equal(m_p, masks[it])
            masks[it] = m_p
        assert not torch.equal(masks[4], masks[5]) and not torch.equal(masks[5], masks[6])
    finally:
        tr.close()


def test_fused_and_two_pass_steps_give_the_same_gradients(tmp_path):
    grads = []
    for fused in (True, False):
        tr = _trainer(tmp_path, _ssll_cfg(tmp_path, f"fused_{fused}", fused=fused))
        tr.start_streams()
        tr.iter = 4
        batch = tr.next_batches()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.train_step(batch)
        grads.append([p.grad.clone() for p in tr.networks["student"].parameters()])
        tr.close()
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resume_in_semi_phase_matches_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path, {**_ssll_cfg(tmp_path, "full", iters=10, semi_start=2), "name": "full"})
    full.train()
    ref = {k: v.clone() for k, v in full.networks["student"].state_dict().items()}
    ref_t = {k: v.clone() for k, v in full.teachers["teacher"].state_dict().items()}
    mid = full.ckpt_dir / "iter_00000006.pth"  # epoch 2, inside the semi phase (4 iterations per epoch)
    assert mid.exists()
    full.close()
    resumed = _trainer(tmp_path, _ssll_cfg(tmp_path, "resumed", iters=10, semi_start=2), resume=str(mid))
    assert resumed.iter == 6 and resumed.in_semi_phase()
    resumed.train()
    for k, v in resumed.networks["student"].state_dict().items():
        assert torch.equal(v, ref[k]), k
    for k, v in resumed.teachers["teacher"].state_dict().items():
        assert torch.equal(v, ref_t[k]), k
    resumed.close()


# ---------------------------------------------------------------- the paper's configs
PAPER_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("s*_*.yaml"))


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_loads_builds_and_trains_two_iterations(tmp_path, name):
    tiny = _ssll_cfg(tmp_path, "x")
    d = tiny["data"]
    overrides = [
        f"output_root={tmp_path / 'exp'}", "device=cpu", "data.num_workers=0", "data.pin_memory=false",
        "data.batch_size=2", "data.paired.batch_size=2", "data.unpaired.batch_size=2",
        f"data.paired.args.lq_dir={d['paired']['args']['lq_dir']}",
        f"data.paired.args.gt_dir={d['paired']['args']['gt_dir']}", "data.paired.args.crop_size=32",
        "data.val.type=", "train.keep_last=1", "eval.after_train=false",
        f"data.unpaired.args.root={d['unpaired']['args']['root']}", "data.unpaired.args.crop_size=32",
        "losses=[ssim]", "train.iters=2", "train.val_every=100", "train.deterministic=false",
    ]
    cfg = load_config(CONFIG_DIR / name, overrides)
    assert cfg.network.args.to_dict() == {}  # the paper's configuration
    if cfg.trainer == "mean_teacher":
        overrides.append("ssll.semi_start_epoch=1")  # exercise the semi-supervised step
        cfg = load_config(CONFIG_DIR / name, overrides)
    tr = TRAINERS.get(cfg.trainer)(cfg)
    tr.train()
    assert tr.iter == 2
    assert (tr.ckpt_dir / "last.pth").exists()
    tr.close()


def test_fused_student_forward_auto_is_two_passes_on_the_cpu(tmp_path):
    tr = _trainer(tmp_path, _ssll_cfg(tmp_path, "auto", fused="auto"))
    try:
        assert tr.device.type == "cpu" and tr.fused_student_forward is False
    finally:
        tr.close()
