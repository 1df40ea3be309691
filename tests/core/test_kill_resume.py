"""Crash and resume through run.py: a run SIGKILLed mid-way and resumed from ``last.pth`` ends with
exactly the weights of an uninterrupted run, for every trainer and both ICEML stages.

The kill is deterministic: ``tests/kill_points.py`` (run.py with the trainer patched) makes the
process SIGKILL itself at a chosen point of a chosen iteration (no cleanup of any kind runs, as
after a power cut or an OOM kill): after the iteration's checkpoint, mid-step (after backward,
before the optimizer step), mid-validation (scored, best checkpoints not yet written) and
mid-checkpoint (the new ``last.pth`` on disk but not yet in place). All runs are separate
``run.py`` processes; the ones that do not depend on each other run concurrently (phase 1: the
uninterrupted references and the runs to kill; phase 2: the resumes).

Also: only the last ``keep_last`` ``iter_*.pth`` (and ``net_*_iter_*.pth``) files are kept, and a truncated ``last.pth``
is refused with one line that offers the previous, intact checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common_utils.checkpoint import read_checkpoint
from data.image_io import write_image
from tests.helpers import REPO_ROOT, make_image, make_paired_folders, tiny_config, write_yaml

ROOT = REPO_ROOT
TIMEOUT = 150


# ------------------------------------------------------------------ configs
def _supervised(tmp: Path) -> dict:
    cfg = tiny_config(tmp, name="sup", iters=8)
    cfg["train"].update({"save_every": 2, "keep_last": 2, "val_every": 4})
    return cfg


def _ssll(tmp: Path) -> dict:
    """Mean Teacher: 4 iterations per epoch, semi-supervised from epoch 2 (iteration 5), two workers."""
    cfg = tiny_config(tmp, name="ssll", iters=10, num_workers=2)
    un_dir = tmp / "data" / "unpaired"
    if not un_dir.is_dir():
        make_paired_folders(tmp / "data" / "unp", n=6, size=40, seed=9)
        (tmp / "data" / "unp" / "low").rename(un_dir)
    cfg["trainer"] = "mean_teacher"
    cfg["data"]["unpaired"] = {"type": "unpaired_folder", "args": {"root": str(un_dir), "crop_size": 32,
                                                                    "flip": True}}
    cfg["ssll"] = {"semi_start_epoch": 2, "curriculum_epochs": 3, "ramp_epochs": 3, "lambda_p": 0.2,
                   "unpaired_losses": [{"name": "consistency", "weight": 1.0},
                                       {"name": "pico_unpaired", "weight": 0.1, "args": {"gamma": 5, "margin": 0.0}}]}
    cfg["train"].update({"save_every": 1, "keep_last": 3, "val_every": 4})
    return cfg


def make_haze_data(root: Path, n: int = 6, size: int = 40) -> Path:
    """RESIDE-style ``hazy/<id>_<k>_<A>.png``, ``clear/<id>.png``, ``trans/<id>_<k>.png`` + unpaired hazy."""
    rng = np.random.default_rng(0)
    for i in range(n):
        clear = make_image(size, 70 + i)
        t = np.linspace(0.9, 0.3, size, dtype=np.float32)[:, None].repeat(size, 1)
        a = round(float(rng.uniform(0.75, 0.95)), 5)
        hazy = clear * t[..., None] + a * (1 - t[..., None])
        write_image(root / "train" / "clear" / f"{i}.png", clear)
        write_image(root / "train" / "hazy" / f"{i}_1_{a:.5f}.png", hazy)
        write_image(root / "train" / "trans" / f"{i}_1.png", np.repeat(t[..., None], 3, 2))
        write_image(root / "unpaired" / "hazy" / f"u{i}.png", np.ascontiguousarray(hazy[:, ::-1]))
    return root


def _iceml(tmp: Path) -> dict:
    """ICEML: pre-training iterations 1-4, mutual learning 5-8 (with the synthetic safeguard batch)."""
    root = tmp / "haze"
    if not root.is_dir():
        make_haze_data(root)
    return {
        "name": "iceml", "seed": 1, "trainer": "iceml", "device": "cpu",
        "output_root": str(tmp / "experiments"),
        "network": {"name": "RtxICE-Net", "args": {"dim": 16}},
        "data": {"num_workers": 0, "pin_memory": False, "batch_size": 2,
                 "paired": {"type": "haze_synthetic", "args": {"root": str(root / "train"), "crop_size": 32,
                                                               "flip": True}},
                 "unpaired": {"type": "unpaired_folder",
                              "args": {"root": str(root / "unpaired" / "hazy"), "crop_size": 32, "flip": True}}},
        "optim": {"type": "adam", "lr": 1e-3},
        "train": {"iters": 8, "ema_decay": None, "log_every": 2, "save_every": 1, "keep_last": 3},
        "iceml": {"pretrain_iters": 4, "w_supervised": 0.5, "w_dcp_t": 0.1, "w_rtx_inv": 0.1},
        "eval": {"after_train": False},
    }


# ------------------------------------------------------------------ processes
def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("SSIR_DEBUG", None)
    env.pop("SSIR_KILL_AT_ITER", None)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _start(tmp: Path, cfg_path: Path, *args: str, kill_at: str | None = None) -> subprocess.Popen:
    env = _env(TORCH_HOME=str(tmp / "torch_home"))
    entry = [str(ROOT / "tests" / "kill_points.py"), kill_at] if kill_at else [str(ROOT / "run.py")]
    return subprocess.Popen([sys.executable, *entry, "-c", str(cfg_path), "--no-eval", *args],
                            cwd=str(tmp), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait(procs: dict[str, subprocess.Popen]) -> dict[str, subprocess.CompletedProcess]:
    out = {}
    for key, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            p.communicate()
            pytest.fail(f"run '{key}' did not finish within {TIMEOUT} s")
        out[key] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


#: trainer -> {kill point: iteration of the last checkpoint the crash leaves}; iceml: kills in both stages
KILLS = {"sup": {"6": 6, "5:step": 4, "4:validation": 2, "6:checkpoint": 4},
         "ssll": {"6": 6, "7:step": 6, "8:checkpoint": 7},
         "iceml": {"2": 2, "6": 6, "3:step": 2}}


def _run_name(key: str, spec: str) -> str:
    return f"{key}_k{spec.replace(':', '_')}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Phase 1: an uninterrupted reference run per trainer (``<name>_ref``) and one run per kill
    point (``<name>_k<iter>``), all at once; phase 2: resume every killed run from its last.pth."""
    tmp = tmp_path_factory.mktemp("kill")
    builders = {"sup": _supervised, "ssll": _ssll, "iceml": _iceml}
    cfgs = {key: write_yaml(tmp / f"{key}.yaml", build(tmp)) for key, build in builders.items()}
    phase1 = {f"{key}_ref": _start(tmp, path, f"name={key}_ref") for key, path in cfgs.items()}
    for key, path in cfgs.items():
        for spec in KILLS[key]:
            phase1[_run_name(key, spec)] = _start(tmp, path, f"name={_run_name(key, spec)}", kill_at=spec)
    first = _wait(phase1)
    killed_state = {}
    for name, proc in first.items():
        if name.endswith("_ref"):
            assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
            continue
        assert proc.returncode == -signal.SIGKILL, f"{name}: rc {proc.returncode}: {proc.stderr[-3000:]}"
        ck = tmp / "experiments" / name / "checkpoints"
        last = read_checkpoint(ck / "last.pth")
        killed_state[name] = (last["iter"], sorted(p.name for p in ck.glob("iter_*.pth")), last["networks"],
                              sorted(p.name for p in ck.glob("net_*.pth")),
                              torch.load(ck / "last.pth", weights_only=True)["weight_files"])
    phase2 = {}
    for key, path in cfgs.items():
        for spec in KILLS[key]:
            name = _run_name(key, spec)
            last = tmp / "experiments" / name / "checkpoints" / "last.pth"
            phase2[name] = _start(tmp, path, f"name={name}", "--resume", str(last))
    second = _wait(phase2)
    for name, proc in second.items():
        assert proc.returncode == 0, f"{name} (resumed): {proc.stderr[-3000:]}"
    return tmp, killed_state, second


def _last(tmp: Path, name: str) -> dict:
    """A run's last.pth with its networks (read from the weights files it names)."""
    return read_checkpoint(tmp / "experiments" / name / "checkpoints" / "last.pth")


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["iter"] == b["iter"]
    assert a["networks"].keys() == b["networks"].keys()
    for net in a["networks"]:
        sa, sb = a["networks"][net], b["networks"][net]
        assert sa.keys() == sb.keys(), net
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{net}.{k} differs after resume"
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b["optimizer"]["state"][pid][k]), f"optimizer state {pid}.{k}"
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def _check_resume(runs, key: str, spec: str, final_iter: int) -> dict:
    tmp, killed_state, second = runs
    name = _run_name(key, spec)
    at = KILLS[key][spec]
    assert killed_state[name][0] == at
    assert f"resumed from {tmp / 'experiments' / name / 'checkpoints' / 'last.pth'} at iteration {at}" in \
        second[name].stderr
    ref, resumed = _last(tmp, f"{key}_ref"), _last(tmp, name)
    assert ref["iter"] == final_iter
    _assert_same_training_state(ref, resumed)
    # not vacuous: the iterations after the kill changed every network
    at_kill = killed_state[name][2]
    for net, sd in ref["networks"].items():
        assert any(not torch.equal(v, at_kill[net][k]) for k, v in sd.items()), net
    return ref


@pytest.mark.parametrize("spec", list(KILLS["sup"]))
def test_supervised_resumes_exactly_after_sigkill(runs, spec):
    ref = _check_resume(runs, "sup", spec, 8)
    assert set(ref["networks"]) == {"student", "teacher"}


@pytest.mark.parametrize("spec", list(KILLS["ssll"]))
def test_ssll_resumes_exactly_after_sigkill_in_the_semi_phase(runs, spec):
    tmp, _, second = runs
    ref = _check_resume(runs, "ssll", spec, 10)
    assert set(ref["networks"]) == {"student", "teacher"}
    log = (tmp / "experiments" / _run_name("ssll", spec) / "logs" / "train.log").read_text()
    assert "pico_unpaired" in log.split("resumed from")[1]  # the resumed part is semi-supervised


@pytest.mark.parametrize("spec", ["2", "3:step"])
def test_iceml_resumes_exactly_after_sigkill_in_pretraining(runs, spec):
    ref = _check_resume(runs, "iceml", spec, 8)
    assert set(ref["networks"]) == {"rtx", "asm"}


def test_iceml_resumes_exactly_after_sigkill_in_mutual_learning(runs):
    tmp, _, _ = runs
    _check_resume(runs, "iceml", "6", 8)
    log = (tmp / "experiments" / "iceml_k6" / "logs" / "train.log").read_text()
    assert "inverse=" in log.split("resumed from")[1]


def test_a_kill_mid_checkpoint_leaves_the_previous_checkpoint_and_a_stray_temporary(runs):
    tmp, killed_state, _ = runs
    assert killed_state["sup_k6_checkpoint"][0] == 4  # iteration 6's last.pth never replaced iteration 4's
    # the weights files of iteration 6 were written first; the state of iteration 4 still names its own
    _, _, _, weights_files, named = killed_state["sup_k6_checkpoint"]
    assert "net_student_iter_00000006.pth" in weights_files and "net_teacher_iter_00000006.pth" in weights_files
    assert named == {"student": "net_student_iter_00000004.pth", "teacher": "net_teacher_iter_00000004.pth"}


def test_only_the_last_k_iteration_checkpoints_are_kept(runs):
    tmp, killed_state, _ = runs
    # supervised: save_every=2, keep_last=2, killed at 6 -> 2 was deleted
    assert killed_state["sup_k6"][1] == ["iter_00000004.pth", "iter_00000006.pth"]
    ck = tmp / "experiments" / "sup_k6" / "checkpoints"
    assert sorted(p.name for p in ck.glob("iter_*.pth")) == ["iter_00000006.pth", "iter_00000008.pth"]
    # save_every=1, keep_last=3
    assert killed_state["ssll_k6"][1] == [f"iter_{i:08d}.pth" for i in (4, 5, 6)]
    ck = tmp / "experiments" / "ssll_k6" / "checkpoints"
    assert sorted(p.name for p in ck.glob("iter_*.pth")) == [f"iter_{i:08d}.pth" for i in (8, 9, 10)]
    for entry in ("student", "teacher"):  # the weights files of the same saves, no others
        assert sorted(p.name for p in ck.glob(f"net_{entry}_*.pth")) == [f"net_{entry}_iter_{i:08d}.pth"
                                                                         for i in (8, 9, 10)]
    for name in ("sup_k6", "ssll_k6", "iceml_k2", "iceml_k6"):
        assert not list((tmp / "experiments" / name / "checkpoints").glob(".*.tmp")), name
    # a kept file is a complete training checkpoint of its iteration
    assert torch.load(ck / "iter_00000009.pth", weights_only=True)["iter"] == 9


def test_truncated_last_checkpoint_is_refused_and_the_previous_one_offered(runs):
    tmp, _, _ = runs
    ck = tmp / "experiments" / "iceml_k6" / "checkpoints"
    last = ck / "last.pth"
    linked = ck / "iter_00000008.pth"  # a hard link of last.pth: truncating one truncates both
    size = last.stat().st_size
    with open(last, "r+b") as fh:
        fh.truncate(size // 2)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-c", str(tmp / "iceml.yaml"), "--no-eval",
                           "name=iceml_k6", "--resume", str(last)], cwd=str(tmp), env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(last) in lines[0] and "truncated or corrupt" in lines[0]
    offered = ck / "iter_00000007.pth"
    if linked.exists() and linked.stat().st_size != size // 2:  # (no hard links on this file system)
        offered = linked
    assert f"the previous checkpoint of this run is {offered}" in lines[0]
    assert torch.load(offered, weights_only=True)["iter"] == int(offered.stem.split("_")[1])


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_matches(tmp_path):
    """What a cluster scheduler sends before it kills a job: the run finishes its iteration, writes
    last.pth, exits with 143 and one line; --resume then ends with the uninterrupted run's weights."""
    import time

    cfg = tiny_config(tmp_path, name="term", iters=400)
    cfg["train"].update({"save_every": 1000, "log_every": 1, "val_every": None, "keep_last": 1})
    path = write_yaml(tmp_path / "term.yaml", cfg)
    ref = _start(tmp_path, path, "name=term_ref")
    proc = _start(tmp_path, path, "name=term")
    log = tmp_path / "experiments" / "term" / "logs" / "train.log"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and not (log.is_file() and "iter 20/400" in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    done = _wait({"term": proc, "term_ref": ref})
    stopped = done["term"]
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    last = tmp_path / "experiments" / "term" / "checkpoints" / "last.pth"
    at = torch.load(last, weights_only=True)["iter"]
    assert 20 <= at < 400
    assert f"stopped: SIGTERM received: stopped after writing {last}" in stopped.stderr
    resumed = _wait({"term": _start(tmp_path, path, "name=term", "--resume", str(last))})["term"]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_training_state(_last(tmp_path, "term_ref"), _last(tmp_path, "term"))
