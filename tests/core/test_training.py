"""End-to-end training on tiny generated data: outputs, exact resume, and the ``run.py`` command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common_utils.checkpoint import FORMAT, FORMAT_VERSION, load_network, read_checkpoint
from core import TRAINERS
from core.config import load_config
from data.paths import REPO_ROOT
from tests.helpers import tiny_config, write_yaml

ITERS = 8


def _load(tmp_path: Path, name: str, num_workers: int = 0, **overrides):
    cfg = tiny_config(tmp_path, name=name, iters=ITERS, num_workers=num_workers)
    return load_config(write_yaml(tmp_path / f"{name}.yaml", cfg), [f"{k}={v}" for k, v in overrides.items()])


def _finish(trainer) -> None:
    """Close the run and drop its endless data stream, so loader workers stop now rather than at
    interpreter exit (where each one waits out a 5 s join timeout)."""
    trainer.close()
    trainer.paired_stream = None


def _train(cfg, resume: str | None = None):
    trainer = TRAINERS.get("supervised")(cfg, resume=resume)
    try:
        trainer.train()
    finally:
        _finish(trainer)
    return trainer


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """One uninterrupted 8-iteration run (num_workers=0), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("train")
    trainer = _train(_load(tmp, "run_a"))
    return tmp, trainer


def test_run_writes_checkpoints_and_logs(run_a):
    tmp, trainer = run_a
    exp = tmp / "experiments" / "run_a"
    ck = exp / "checkpoints"
    assert trainer.iter == ITERS
    for name in ("last.pth", "best.pth", "best_student.pth", "best_teacher.pth"):
        assert (ck / name).is_file(), name
    # save_every=2, keep_last=10: every second iteration kept
    assert sorted(p.name for p in ck.glob("iter_*.pth")) == [f"iter_{i:08d}.pth" for i in (2, 4, 6, 8)]
    assert not list(ck.glob("*.tmp")) and not list(ck.glob(".*.tmp"))
    log = (exp / "logs" / "train.log").read_text()
    assert "validation @ 4" in log and "validation @ 8" in log and f"training finished at iteration {ITERS}" in log
    assert (exp / "config.yaml").is_file()
    raw = torch.load(ck / "last.pth", weights_only=True)
    assert (raw["format"], raw["version"], raw["kind"]) == (FORMAT, FORMAT_VERSION, "training")
    # the state holds no network tensor: it names its weights files, written next to it
    assert "networks" not in raw and raw["weight_files"] == {e: f"net_{e}_iter_{ITERS:08d}.pth"
                                                             for e in ("student", "teacher")}
    last = read_checkpoint(ck / "last.pth")  # the reader puts them back
    assert last["iter"] == ITERS
    assert set(last["networks"]) == {"student", "teacher"}
    assert _states_equal(last["networks"]["student"], trainer.networks["student"].state_dict())
    assert _states_equal(last["networks"]["teacher"], trainer.teachers["teacher"].state_dict())
    # the teacher is an EMA, not a copy of the student
    assert not _states_equal(last["networks"]["student"], last["networks"]["teacher"])
    # best.pth: a small index naming the weights files of the best iteration, read like a weights file
    raw_best = torch.load(ck / "best.pth", weights_only=True)
    best = read_checkpoint(ck / "best.pth")
    assert best["best_network"] in ("student", "teacher")
    assert best["iter"] == trainer.best[best["best_network"]]["iter"]
    assert "networks" not in raw_best and (ck / "best.pth").stat().st_size < 20_000
    assert raw_best["weight_files"][best["best_network"]] == f"net_{best['best_network']}_iter_{best['iter']:08d}.pth"
    assert last["best"]["student"]["psnr"] == pytest.approx(trainer.best["student"]["psnr"])
    # a small weights file per network and save, no optimizer, kept for the same iterations as the states
    weights_bytes = 0
    for entry, net in (("student", trainer.networks["student"]), ("teacher", trainer.teachers["teacher"])):
        files = sorted(p.name for p in ck.glob(f"net_{entry}_iter_*.pth"))
        assert files == [f"net_{entry}_iter_{i:08d}.pth" for i in (2, 4, 6, 8)]
        weights = torch.load(ck / files[-1], weights_only=True)
        assert weights["kind"] == "weights" and set(weights["networks"]) == {entry} and "optimizer" not in weights
        weights_bytes += (ck / files[-1]).stat().st_size
        loaded, info = load_network("UNet", ck / files[-1])
        assert info["weights"] == entry and _states_equal(loaded.state_dict(), net.state_dict())
        # best_<entry>.pth: the weights file of that network's best iteration, linked (no second copy)
        at = trainer.best[entry]["iter"]
        assert os.path.samefile(ck / f"best_{entry}.pth", ck / f"net_{entry}_iter_{at:08d}.pth")
    # the state's size is AdamW's two moments of the student and little else (format 2 held both networks
    # too: twice this bound); the weights of one save are the two networks
    assert (ck / "last.pth").stat().st_size < 1.2 * weights_bytes
    # cosine schedule by iteration reaches eta_min at the end
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def _check_exact_resume(tmp: Path, full, num_workers: int, src_ckpt: Path) -> None:
    cfg = _load(tmp, f"resumed_nw{num_workers}", num_workers=num_workers)
    ck = read_checkpoint(src_ckpt)
    assert ck["iter"] == 4
    # not vacuous: iterations 5-8 do change both networks
    assert not _states_equal(ck["networks"]["student"], full.networks["student"].state_dict())
    assert not _states_equal(ck["networks"]["teacher"], full.teachers["teacher"].state_dict())
    resumed = TRAINERS.get("supervised")(cfg, resume=str(src_ckpt))
    assert resumed.iter == 4
    try:
        resumed.train()
    finally:
        _finish(resumed)
    assert resumed.iter == ITERS
    assert _states_equal(resumed.networks["student"].state_dict(), full.networks["student"].state_dict())
    assert _states_equal(resumed.teachers["teacher"].state_dict(), full.teachers["teacher"].state_dict())
    opt_a, opt_b = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for pid, st in opt_a["state"].items():
        assert torch.equal(st["exp_avg"], opt_b["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], opt_b["state"][pid]["exp_avg_sq"])
    assert opt_a["param_groups"][0]["lr"] == opt_b["param_groups"][0]["lr"]
    assert resumed.best == full.best


def test_exact_resume_num_workers_0(run_a):
    """Resume from the iteration-4 checkpoint of run A into a new run: iterations 5-8 reproduce A exactly."""
    tmp, full = run_a
    _check_exact_resume(tmp, full, 0, tmp / "experiments" / "run_a" / "checkpoints" / "iter_00000004.pth")


def test_exact_resume_num_workers_2(run_a):
    """Same with two loader workers: the full run with workers equals run A (data does not depend on
    the workers), and resuming it at iteration 4 reproduces it exactly."""
    tmp, full0 = run_a
    full2 = _train(_load(tmp, "run_a_nw2", num_workers=2))
    assert _states_equal(full2.networks["student"].state_dict(), full0.networks["student"].state_dict())
    assert _states_equal(full2.teachers["teacher"].state_dict(), full0.teachers["teacher"].state_dict())
    _check_exact_resume(tmp, full2, 2, tmp / "experiments" / "run_a_nw2" / "checkpoints" / "iter_00000004.pth")


def test_new_run_with_same_name_archives_the_old_one(tmp_path):
    cfg = _load(tmp_path, "same", **{"train.iters": 2, "train.val_every": 2})
    _train(cfg)
    _train(cfg)
    archived = [p for p in (tmp_path / "experiments").iterdir() if p.name.startswith("same_archived_")]
    assert len(archived) == 1 and (archived[0] / "checkpoints" / "last.pth").is_file()
    assert (tmp_path / "experiments" / "same" / "checkpoints" / "last.pth").is_file()


# --------------------------------------------------------------------------- run.py
def _run_py(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LPIPS_ALEXNET_WEIGHTS", None)
    env.pop("SSIR_DEBUG", None)
    env["TORCH_HOME"] = str(tmp_path / "empty_torch_home")  # no AlexNet weights: LPIPS must be null
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *args], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_py_end_to_end(tmp_path):
    cfg = tiny_config(tmp_path, name="cli_run", iters=4, eval_datasets=True)
    path = write_yaml(tmp_path / "cli.yaml", cfg)
    proc = _run_py(["-c", str(path), "train.iters=2", "train.val_every=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "experiments" / "cli_run"
    assert (exp / "checkpoints" / "last.pth").is_file()
    saved = load_config(exp / "config.yaml")
    assert saved.train.iters == 2  # the command-line override reached the run
    summary = json.loads((exp / "results" / "summary.json").read_text())
    entry = summary["tiny_test"]
    assert isinstance(entry["psnr"], float) and isinstance(entry["ssim"], float)
    assert entry["lpips"] is None
    assert entry["images"] == 2
    assert entry["network"] == "teacher" and entry["checkpoint"] == "last.pth"
    for key in ("input", "student", "teacher"):
        assert isinstance(entry[key]["psnr"], float) and entry[key]["lpips"] is None and entry[key]["images"] == 2
    assert entry["psnr"] == pytest.approx(entry["teacher"]["psnr"])
    assert "unavailable" in summary["_protocol"]["lpips"]
    assert (exp / "results" / "tiny_test" / "per_image.csv").is_file()
    assert (exp / "results" / "summary.md").is_file()
    # --resume takes the run folder too: its checkpoints/last.pth
    proc = _run_py(["-c", str(path), "train.iters=4", "train.val_every=2", "--no-eval", "--resume", str(exp)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {exp.resolve() / 'checkpoints' / 'last.pth'} at iteration 2" in proc.stderr


def test_run_py_misspelt_key_is_one_line_error(tmp_path):
    cfg = tiny_config(tmp_path, name="cli_err")
    path = write_yaml(tmp_path / "cli.yaml", cfg)
    proc = _run_py(["-c", str(path), "train.itres=5"], tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "train.itres" in lines[0] and "train.iters" in lines[0]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert not (tmp_path / "experiments" / "cli_err").exists()


def test_output_clamp_modes_same_values_different_gradients():
    """hard = torch.clamp (no gradient outside [0, 1]); straight_through passes it on."""
    from core.assembly import clamp_output

    y0 = torch.tensor([-0.5, 0.25, 0.75, 1.5])
    target = torch.tensor([0.4, 0.5, 0.5, 0.9])
    grads = {}
    for mode in ("hard", "straight_through"):
        y = y0.clone().requires_grad_(True)
        out = clamp_output(y, mode)
        assert torch.equal(out, torch.tensor([0.0, 0.25, 0.75, 1.0]))
        (out - target).abs().sum().backward()
        grads[mode] = y.grad
    # d|c - t|/dc = sign(c - t) at the clamped value c
    assert torch.equal(grads["hard"], torch.tensor([0.0, -1.0, 1.0, 0.0]))
    assert torch.equal(grads["straight_through"], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError):
        clamp_output(y0, "soft")


def test_output_clamp_is_validated_in_the_config(tmp_path):
    from foundation.errors import UserError

    cfg = tiny_config(tmp_path)
    cfg["train"]["output_clamp"] = "soft"
    with pytest.raises(UserError, match="output_clamp"):
        load_config(write_yaml(tmp_path / "c.yaml", cfg))


class _DropoutNet(torch.nn.Module):
    """A tiny network that draws from the global torch RNG in every training forward (dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.conv(x))


@pytest.fixture
def dropout_net_registered():
    """``test-dropout-net`` in NETWORKS for one test only: a leaked entry would make later tests see
    a network without an official reference (tests/models/test_reference_outputs.py)."""
    from models import NETWORKS

    NETWORKS.register("test-dropout-net")(_DropoutNet)
    yield
    NETWORKS.unregister("test-dropout-net")


def test_resume_restores_the_rng_state(tmp_path, dropout_net_registered):
    """A run that draws random numbers in its steps resumes bit-identically only if the checkpoint's
    RNG state is restored (the data stream and CutMix are seeded by iteration and would not notice)."""
    base = tiny_config(tmp_path)
    base["network"] = {"name": "test-dropout-net", "args": {}}
    base["scheduler"] = {"type": "constant"}
    base["train"].update({"iters": 8, "save_every": 4, "val_every": None, "ema_decay": None})
    base["data"].pop("val")

    def run(name: str, iters: int, resume: str | None = None):
        cfg = load_config(write_yaml(tmp_path / f"{name}.yaml", {**base, "name": name}), [f"train.iters={iters}"])
        tr = TRAINERS.get("supervised")(cfg, resume=resume)
        try:
            tr.train()
            return {k: v.clone() for k, v in tr.networks["student"].state_dict().items()}, tr.ckpt_dir
        finally:
            tr.close()

    whole, _ = run("whole", 8)
    _, ck = run("half", 4)
    torch.manual_seed(12345)  # whatever the process did in between
    resumed, _ = run("half", 8, resume=str(ck / "last.pth"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_log_lines_name_the_epoch_of_the_logged_iteration(run_a):
    """8 pairs at batch 2 are 4 iterations per epoch: iterations 1-4 are epoch 1, 5-8 epoch 2 (the log once
    printed the next iteration's epoch, "iter 4 epoch 2")."""
    tmp, trainer = run_a
    assert trainer.iters_per_epoch == 4
    assert [trainer.epoch_of(k) for k in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    log = (tmp / "experiments" / "run_a" / "logs" / "train.log").read_text()
    logged = re.findall(rf"iter (\d+)/{ITERS} epoch (\d+) ", log)
    assert logged == [("2", "1"), ("4", "1"), ("6", "2"), ("8", "2")]
