"""Distributed training: two CPU processes (gloo) under torchrun, through run.py.

``tests/ddp_probe.py`` is run.py's ``main`` with observers: it records the batches each rank
draws and, when the trainer closes, all-gathers per-tensor checksums of the student and EMA
teacher, which rank 0 writes to a JSON file. The tests check that

- both ranks end with bit-identical student and teacher weights (equal to ``last.pth``),
- the ranks drew disjoint shares of every epoch of the paired and the unpaired stream,
- only rank 0 wrote: one run folder, one log file, one set of checkpoints,
- validation with fewer images than ranks (an empty shard on rank 1) does not hang,
- a non-finite loss on one rank only makes every rank skip that step,
- a run killed under torchrun resumes to the weights of the uninterrupted run,
- ICEML's two networks, which register modules their forward never uses, train under DDP.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from common_utils.checkpoint import read_checkpoint
from tests.core.test_kill_resume import make_haze_data
from tests.helpers import REPO_ROOT, make_paired_folders, tiny_config, write_yaml

ROOT = REPO_ROOT
PROBE = ROOT / "tests" / "ddp_probe.py"
ITERS = 6

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this PyTorch build")


def _ssll_config(tmp_path: Path, name: str) -> Path:
    """Mean-Teacher (SSLL) on 8 pairs + 6 unpaired images: 2 iterations per epoch and rank,
    semi-supervised from epoch 2 (iterations 3-6), validation on 1 image (rank 1's shard is empty)."""
    cfg = tiny_config(tmp_path, name=name, iters=ITERS, n_train=8, n_val=2)
    un_dir = tmp_path / "data" / "unpaired"
    if not un_dir.is_dir():
        make_paired_folders(tmp_path / "data" / "unp", n=6, size=40, seed=9)
        (tmp_path / "data" / "unp" / "low").rename(un_dir)
    cfg["trainer"] = "mean_teacher"
    cfg["data"]["unpaired"] = {"type": "unpaired_folder",
                               "args": {"root": str(un_dir), "crop_size": 32, "flip": True}}
    cfg["ssll"] = {"semi_start_epoch": 2, "curriculum_epochs": 3, "ramp_epochs": 3, "lambda_p": 0.2,
                   "unpaired_losses": [{"name": "consistency", "weight": 1.0},
                                       {"name": "pico_unpaired", "weight": 0.1, "args": {"gamma": 5, "margin": 0.0}}]}
    cfg["train"].update({"log_every": 2, "val_every": 2, "save_every": 2, "keep_last": 10})
    cfg["validation"]["max_images"] = 1
    return write_yaml(tmp_path / f"{name}.yaml", cfg)


def _torchrun(tmp_path: Path, cfg: Path, out: Path, *extra: str, env_extra: dict | None = None,
              timeout: int = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch_home")})
    env.pop("SSIR_DEBUG", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(PROBE), str(out), "-c", str(cfg), "--no-eval", *extra]
    return run_in_own_group(cmd, cwd=str(tmp_path), env=env, timeout=timeout)


def run_in_own_group(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that cannot leave a hang behind: on timeout torchrun gets SIGTERM (it
    terminates its workers, which run in their own sessions), then every process of the tree
    gets SIGKILL, and the test fails with the output so far."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = _descendants(proc.pid)
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        for pid in [proc.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait()
        pytest.fail(f"timed out after {timeout} s (a hang?): {' '.join(cmd)}\n{(err or '')[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _ranks(out: Path) -> list[dict]:
    return json.loads(out.read_text())["ranks"]


#: rank 1 (only) reports a NaN loss at iteration 3: every rank must skip that step
NAN_ENV = {"PROBE_NAN_RANK1_AT": "3"}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 6-iteration run on two ranks (also the reference of the kill/resume test)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = _ssll_config(tmp, "ddp")
    out = tmp / "probe.json"
    proc = _torchrun(tmp, cfg, out, env_extra=NAN_ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return tmp, cfg, out, proc


def test_ranks_end_with_identical_student_and_teacher(ddp_run):
    tmp, _, out, _ = ddp_run
    r0, r1 = _ranks(out)
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["iter"] == r1["iter"] == ITERS
    assert any(k.startswith("teacher/") for k in r0["checksums"]) and any(
        k.startswith("student/") for k in r0["checksums"])
    assert r0["checksums"] == r1["checksums"]
    # the rank-0 weights are those of the checkpoint, and training did change them
    last = read_checkpoint(tmp / "experiments" / "ddp" / "checkpoints" / "last.pth")
    from tests.ddp_probe import tensor_checksum

    for net, sd in last["networks"].items():
        for key, t in sd.items():
            assert tensor_checksum(t) == r0["checksums"][f"{net}/{key}"], (net, key)
    assert last["iter"] == ITERS
    assert len(last["rng_ranks"]) == 2  # each rank's random state, for an exact resume
    first = read_checkpoint(tmp / "experiments" / "ddp" / "checkpoints" / "iter_00000002.pth")
    assert not all(torch.equal(first["networks"]["teacher"][k], v) for k, v in last["networks"]["teacher"].items())


def test_ranks_draw_disjoint_shares_of_each_epoch(ddp_run):
    _, _, out, _ = ddp_run
    r0, r1 = _ranks(out)
    paired_per_epoch, unpaired_per_epoch = 2, 1  # 8 pairs / 2 ranks / batch 2; 6 unpaired -> 1 whole batch
    for stream, per_epoch, first_iter, n_items in (("paired", paired_per_epoch, 0, 8),
                                                   ("unpaired", unpaired_per_epoch, 2, 6)):
        epochs: dict[int, list[set]] = {}
        for rank, r in enumerate((r0, r1)):
            for b in r["batches"]:
                if b["stream"] != stream:
                    continue
                e = (b["iter"] - first_iter) // per_epoch
                epochs.setdefault(e, [set(), set()])[rank].update(b["names"])
        assert epochs, stream
        expected_epochs = (ITERS - first_iter) // per_epoch
        assert len(epochs) == expected_epochs, (stream, sorted(epochs))
        for e, (a, b) in epochs.items():
            assert a and b and not (a & b), (stream, e, a, b)
            assert len(a) == len(b) == per_epoch * 2
            assert len(a | b) <= n_items
        if stream == "paired":  # whole epochs: together the ranks see every pair once
            assert all(len(a | b) == n_items for a, b in epochs.values())


def test_only_rank_zero_writes_outputs(ddp_run):
    tmp, _, _, proc = ddp_run
    exp_root = tmp / "experiments"
    assert [p.name for p in exp_root.iterdir()] == ["ddp"]  # no second or archived run folder
    run_dir = exp_root / "ddp"
    ck = run_dir / "checkpoints"
    assert [p for p in run_dir.rglob("checkpoints") if p.is_dir()] == [ck]
    assert sorted(p.name for p in ck.glob("iter_*.pth")) == [f"iter_{i:08d}.pth" for i in (2, 4, 6)]
    assert (ck / "last.pth").is_file() and (ck / "best.pth").is_file()
    assert not list(ck.glob(".*.tmp"))
    logs = [p for p in run_dir.rglob("*.log")]
    assert logs == [run_dir / "logs" / "train.log"]
    text = logs[0].read_text()
    assert text.count("run folder") == 1 and "world size 2" in text
    assert text.count("validation @ 6") == 1
    assert "training finished at iteration 6" in text
    assert (run_dir / "command.txt").read_text().count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_validation_scores_every_image_once_across_ranks(ddp_run):
    tmp, _, _, _ = ddp_run
    best = read_checkpoint(tmp / "experiments" / "ddp" / "checkpoints" / "best.pth")
    # max_images=1 with two ranks: rank 1's shard is empty, and the reduced count is 1
    assert all(entry["images"] == 1 for entry in best["best"].values())


def test_non_finite_loss_on_one_rank_is_skipped_by_all(ddp_run):
    tmp, _, out, _ = ddp_run
    r0, r1 = _ranks(out)
    assert r0["nonfinite_total"] == r1["nonfinite_total"] == 1
    assert r0["checksums"] == r1["checksums"]  # (a rank stepping alone would diverge)
    assert all(v[0] == v[0] for v in r0["checksums"].values())  # no NaN reached the weights
    log = (tmp / "experiments" / "ddp" / "logs" / "train.log").read_text()
    line = next(ln for ln in log.splitlines() if "iteration 3: non-finite loss" in ln)
    assert "non-finite on another rank" in line  # rank 0's own terms were finite


def test_killed_ddp_run_resumes_exactly(ddp_run):
    """Both ranks SIGKILL themselves after the iteration-4 checkpoint (SSIR_KILL_AT_ITER); the
    resumed run (each rank restoring its own RNG state) ends with the reference run's weights."""
    tmp, cfg, out_full, _ = ddp_run
    out_res = tmp / "resumed.json"
    killed = _torchrun(tmp, cfg, tmp / "unused.json", "name=ddp_kill",
                       env_extra={**NAN_ENV, "SSIR_KILL_AT_ITER": "4"})
    assert killed.returncode != 0
    last = tmp / "experiments" / "ddp_kill" / "checkpoints" / "last.pth"
    assert read_checkpoint(last)["iter"] == 4
    resumed = _torchrun(tmp, cfg, out_res, "name=ddp_kill", "--resume", str(last), env_extra=NAN_ENV)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    (a0, _), (b0, b1) = _ranks(out_full), _ranks(out_res)
    assert b0["iter"] == ITERS and b0["nonfinite_total"] == 1  # the count survives the resume
    assert b0["checksums"] == a0["checksums"]
    assert b1["checksums"] == a0["checksums"]


def test_iceml_both_stages_under_ddp(tmp_path):
    """RtxICE-Net / ASMICE-Net declare unused parameters (DDP needs find_unused_parameters, set
    automatically), and stage 2 runs each network twice before one backward."""
    root = make_haze_data(tmp_path / "haze")
    cfg = {
        "name": "iceml_ddp", "seed": 1, "trainer": "iceml", "device": "cpu",
        "output_root": str(tmp_path / "experiments"),
        "network": {"name": "RtxICE-Net", "args": {"dim": 16}},
        "data": {"num_workers": 0, "pin_memory": False, "batch_size": 1,
                 "paired": {"type": "haze_synthetic", "args": {"root": str(root / "train"), "crop_size": 32}},
                 "unpaired": {"type": "unpaired_folder",
                              "args": {"root": str(root / "unpaired" / "hazy"), "crop_size": 32}}},
        "optim": {"type": "adam", "lr": 1e-3},
        "train": {"iters": 4, "ema_decay": None, "log_every": 2, "save_every": 4},
        "iceml": {"pretrain_iters": 2, "w_supervised": 0.5},
    }
    out = tmp_path / "probe.json"
    proc = _torchrun(tmp_path, write_yaml(tmp_path / "iceml.yaml", cfg), out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = _ranks(out)
    assert r0["iter"] == r1["iter"] == 4
    assert {k.split("/")[0] for k in r0["checksums"]} == {"rtx", "asm"}
    assert r0["checksums"] == r1["checksums"]
    assert {b["stream"] for b in r0["batches"]} == {"paired", "unpaired"}
    assert "find_unused_parameters on" in (tmp_path / "experiments" / "iceml_ddp" / "logs" / "train.log").read_text()
