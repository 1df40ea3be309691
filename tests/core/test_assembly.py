"""core/assembly.py: what a trainer is built from (validation set, pretrained weights and their EMA count)."""
from __future__ import annotations

import pytest
import torch

from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from core import TRAINERS
from core.config import load_config
from core.ema import ema_decay_at
from data import build_dataset
from tests.helpers import tiny_config, write_yaml


def _trainer(tmp_path, cfg):
    return TRAINERS.get(cfg["trainer"])(load_config(write_yaml(tmp_path / f"{cfg['name']}.yaml", cfg)))


def test_validation_scores_the_validation_set_not_the_training_split(tmp_path):
    cfg = tiny_config(tmp_path, name="valsplit", iters=1, n_train=8, n_val=2)
    tr = _trainer(tmp_path, cfg)
    try:
        results = tr.validate()
        student = tr.networks["student"].eval()
        val = build_dataset("paired_folder", **cfg["data"]["val"]["args"])
        batches = [{"lq": it["lq"][None], "gt": it["gt"][None], "name": [it["name"]]} for it in
                   (val[i] for i in range(len(val)))]
        want = evaluate(student, batches, torch.device("cpu"), EvalProtocol(ssim="y")).summary()
    finally:
        tr.close()
    assert results["student"]["images"] == 2  # the 2 validation pairs, not the 8 training ones
    assert results["student"]["psnr"] == pytest.approx(want["psnr"], abs=1e-4)
    assert results["student"]["ssim"] == pytest.approx(want["ssim"], abs=1e-5)


def test_a_pretrained_start_continues_the_teachers_ema_count(tmp_path):
    """Started from a 2-iteration run, the teacher's first EMA step uses the decay of step 3, not of
    step 1 (which would pull the pretrained teacher halfway to the new student at once)."""
    pre = tiny_config(tmp_path, name="pre", iters=2)
    pre["train"].update({"val_every": None, "save_every": 2})
    pre["data"].pop("val")
    tr = _trainer(tmp_path, pre)
    try:
        tr.train()
        last = tr.ckpt_dir / "last.pth"
    finally:
        tr.close()
    post = {**tiny_config(tmp_path, name="post", iters=1), "pretrained": {"path": str(last)}}
    post["train"].update({"val_every": None, "save_every": 1})
    post["data"].pop("val")
    tr = _trainer(tmp_path, post)
    try:
        t0 = [p.detach().clone() for p in tr.teachers["teacher"].parameters()]
        tr.train()
        s1 = [p.detach() for p in tr.networks["student"].parameters()]
        t1 = [p.detach() for p in tr.teachers["teacher"].parameters()]
    finally:
        tr.close()
    alpha = ema_decay_at(2 + 1, 0.99)
    assert alpha != ema_decay_at(1, 0.99)
    for a, b, s in zip(t1, t0, s1):
        torch.testing.assert_close(a, alpha * b + (1 - alpha) * s, rtol=1e-5, atol=1e-6)


def test_a_pretrained_start_from_a_pretrained_run_adds_that_runs_ema_offset(tmp_path):
    """A run that itself started pretrained (offset 3) and trained 2 iterations has taken 5 EMA steps:
    the next start continues from 5, not from its 2 iterations."""
    from core.assembly import TrainerAssembly

    path = tmp_path / "chained.pth"
    torch.save({"iter": 2, "ema_steps_offset": 3, "networks": {}}, path)
    assert TrainerAssembly._pretrained_iteration(str(path)) == 5
    torch.save({"iter": 2, "networks": {}}, path)  # written before the offset was recorded
    assert TrainerAssembly._pretrained_iteration(str(path)) == 2
    torch.save({"student": {}}, path)  # a plain weights file: no count to continue
    assert TrainerAssembly._pretrained_iteration(str(path)) is None
