"""How clusters stop jobs, as real processes on the CPU: SIGTERM to a whole process group (what
``timeout``, ``torchrun`` and schedulers send), and a stalled DDP rank (``kill -STOP``).

- SIGTERM to the group of ``run.py`` with loader workers: the workers ignore it, the main
  process finishes its iteration, writes ``last.pth`` and prints the ``--resume`` line (exit 143),
  within a few seconds; the run then resumes from that iteration.
- SIGTERM to ``torchrun``: torchrun signals each rank's process group (rank and workers); every
  rank stops at the same iteration, rank 0 writes ``last.pth``, no rank prints a traceback.
- a rank stopped with SIGSTOP: the other reports it in one line within ``train.ddp_timeout``.
- Ctrl-C during a validation (in the run and at its last iteration) ends it before the next
  image with ``last.pth`` written; the resumed run validates that iteration first and ends with
  the weights and best scores of an uninterrupted run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from common_utils.checkpoint import read_checkpoint
from tests.helpers import REPO_ROOT, tiny_config, write_yaml

ROOT = REPO_ROOT


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp / "torch_home")}
    env.pop("SSIR_DEBUG", None)
    return env


def _long_config(tmp: Path, name: str, workers: int) -> Path:
    """A run far longer than the test (it is stopped): logs every 2 iterations, no periodic checkpoint."""
    cfg = tiny_config(tmp, name=name, iters=100000, num_workers=workers)
    cfg["train"].update({"log_every": 2, "save_every": 100000, "val_every": 100000})
    return write_yaml(tmp / f"{name}.yaml", cfg)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no {what} within {timeout} s")


def _logged_iteration(log: Path) -> int:
    if not log.is_file():
        return 0
    its = [int(ln.split("iter ", 1)[1].split("/", 1)[0]) for ln in log.read_text().splitlines() if " iter " in ln]
    return max(its, default=0)


def _session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")
def test_sigterm_to_the_process_group_writes_the_final_checkpoint(tmp_path):
    cfg = _long_config(tmp_path, "term", workers=2)
    exp = tmp_path / "experiments" / "term"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-c", str(cfg), "--no-eval"], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(lambda: _logged_iteration(exp / "logs" / "train.log") >= 6, 180, proc, "iteration 6")
    assert len(_session_processes(proc.pid)) >= 3  # the main process and its two loader workers
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # as `timeout -s TERM`, a scheduler or torchrun: the whole group
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not stop within 60 s of SIGTERM")
    took = time.monotonic() - sent
    assert proc.returncode == 143, err[-3000:]
    assert "DataLoader worker" not in err and "Traceback" not in err, err[-3000:]
    last = exp / "checkpoints" / "last.pth"
    assert f"--resume {last}" in err
    ckpt = read_checkpoint(last)
    assert ckpt["iter"] >= 6  # every iteration up to the signal is kept (no periodic save ran)
    assert took < 60, took  # a few seconds on an idle 2-core machine (README: grace period)
    time.sleep(1.0)
    assert _session_processes(proc.pid) == []  # no worker left behind
    from run import main

    assert main(["-c", str(cfg), "--no-eval", "--resume", str(last), f"train.iters={ckpt['iter'] + 2}"]) == 0


needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available())
                                or not sys.platform.startswith("linux"),
                                reason="torch.distributed with gloo on Linux")


def _torchrun(tmp: Path, cfg: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "--shutdown-timeout", "5", str(ROOT / "run.py"), "-c", str(cfg), "--no-eval", *extra]
    return subprocess.Popen(cmd, cwd=tmp, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _rank_pids(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes torchrun started (read from their environment)."""
    out = {}
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            stat = (env.parent / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != torchrun_pid:
                continue
            items = dict(kv.split("=", 1) for kv in env.read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in items:
            out[int(items["RANK"])] = int(env.parent.name)
    return out


@needs_gloo
def test_sigterm_to_torchrun_stops_every_rank_with_a_checkpoint(tmp_path):
    cfg = _long_config(tmp_path, "ddpterm", workers=1)
    exp = tmp_path / "experiments" / "ddpterm"
    proc = _torchrun(tmp_path, cfg)
    _wait_for(lambda: _logged_iteration(exp / "logs" / "train.log") >= 4, 240, proc, "iteration 4")
    os.kill(proc.pid, signal.SIGTERM)  # kill -TERM <torchrun pid>
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("torchrun did not stop within 90 s of SIGTERM")
    ckpt = read_checkpoint(exp / "checkpoints" / "last.pth")
    assert ckpt["iter"] >= 4 and len(ckpt["rng_ranks"]) == 2
    assert err.count("SIGTERM received: stopped after writing") == 2, err[-4000:]  # both ranks, one line each
    assert "DataLoader worker" not in err and "exitcode  : 1" not in err, err[-4000:]
    rank_tracebacks = [ln for ln in err.splitlines() if ln.startswith("[rank")]
    assert not rank_tracebacks, err[-4000:]


@needs_gloo
def test_a_stalled_rank_is_reported_within_the_ddp_timeout(tmp_path):
    cfg = _long_config(tmp_path, "stall", workers=0)
    exp = tmp_path / "experiments" / "stall"
    proc = _torchrun(tmp_path, cfg, "train.ddp_timeout=8")
    _wait_for(lambda: _logged_iteration(exp / "logs" / "train.log") >= 4, 240, proc, "iteration 4")
    ranks = _rank_pids(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail("no report within 90 s of stopping rank 1")
    finally:
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    took = time.monotonic() - stopped
    lines = [ln for ln in err.splitlines() if ln.startswith("error: rank 0 of 2 waited more than 8 s")]
    assert len(lines) == 1, err[-4000:]
    assert "train.ddp_timeout" in lines[0] and "stopped, hung or dead" in lines[0]
    assert took < 8 + 40, took  # the timeout, then torchrun's 5 s shutdown of the stopped rank


def _signal_self_then_work(signum: int, sent: list, seconds: float = 60.0):
    """A stand-in for a long evaluation: the signal arrives, then 'work' would go on for a minute."""
    def work(*args, **kwargs):
        sent.append(time.monotonic())
        os.kill(os.getpid(), signum)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
        return {}
    return work


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_the_final_evaluation_ends_it_at_once(tmp_path, capsys, monkeypatch, signum):
    import core.final_evaluation as fe
    import run

    sent: list[float] = []
    monkeypatch.setattr(fe, "final_evaluation", _signal_self_then_work(signum, sent))
    path = write_yaml(tmp_path / "t.yaml", tiny_config(tmp_path, name="fin", iters=2, eval_datasets=True))
    code = run.main(["-c", str(path)])
    took = time.monotonic() - sent[0]
    err = capsys.readouterr().err
    last = tmp_path / "experiments" / "fin" / "checkpoints" / "last.pth"
    assert code == 128 + signum, err[-2000:]
    assert f"{signal.Signals(signum).name} received during the final evaluation" in err
    assert f"--resume {last}" in err and "Traceback" not in err
    assert read_checkpoint(last)["iter"] == 2
    assert took < 30  # not the minute the evaluation would have taken


SLOW_IMAGE_S = 3.0  # each validation image takes this long to arrive (a full-resolution decode and forward)


def _slow_validation(monkeypatch, signum: int, at_step: int, sent: list) -> None:
    """Validation images arrive one per SLOW_IMAGE_S; the signal comes with the first image at ``at_step``."""
    import core.validation as validation

    run, evaluate = validation.Validator.run, validation.evaluate
    state = {"step": None}

    def recording_run(self, networks, step, **kwargs):
        state["step"] = step
        return run(self, networks, step, **kwargs)

    def slow_evaluate(net, batches, *args, **kwargs):
        def slow():
            for batch in batches:
                if state["step"] == at_step and not sent:
                    sent.append(time.monotonic())
                    os.kill(os.getpid(), signum)
                time.sleep(SLOW_IMAGE_S)
                yield batch
        return evaluate(net, slow(), *args, **kwargs)

    monkeypatch.setattr(validation.Validator, "run", recording_run)
    monkeypatch.setattr(validation, "evaluate", slow_evaluate)


def _networks(path: Path) -> dict:
    return read_checkpoint(path)["networks"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 6-iteration run validating every 2 iterations, never stopped: (its config dict, its last.pth)."""
    import run

    tmp = tmp_path_factory.mktemp("uninterrupted")
    cfg = tiny_config(tmp, name="ref", iters=6, n_val=4, eval_datasets=True)
    cfg["train"].update({"val_every": 2, "save_every": 100})
    assert run.main(["-c", str(write_yaml(tmp / "ref.yaml", cfg)), "--no-eval"]) == 0
    return cfg, tmp / "experiments" / "ref" / "checkpoints" / "last.pth"


@pytest.mark.parametrize("at_step", [4, 6])  # a validation within the run, and the one at its last iteration
def test_a_stop_during_validation_ends_it_before_the_next_image(tmp_path, capsys, monkeypatch, uninterrupted,
                                                               at_step):
    import run

    base, ref_last = uninterrupted
    cut = write_yaml(tmp_path / "cut.yaml", {**base, "name": "cut", "output_root": str(tmp_path / "experiments")})
    sent: list[float] = []
    with monkeypatch.context() as patch:
        _slow_validation(patch, signal.SIGINT, at_step, sent)
        code = run.main(["-c", str(cut)])
        took = time.monotonic() - sent[0]
    err = capsys.readouterr().err
    exp = tmp_path / "experiments" / "cut"
    last = exp / "checkpoints" / "last.pth"
    assert code == 130, err[-3000:]
    assert f"--resume {last}" in err and "Traceback" not in err, err[-3000:]
    # 4 images x 2 networks x 3 s = 24 s if the validation ran to its end; one image here
    assert took < 3 * SLOW_IMAGE_S, took
    ckpt = read_checkpoint(last)
    assert ckpt["iter"] == at_step and ckpt["validation_pending"] is True
    assert not (exp / "results" / "summary.json").exists()  # the final evaluation did not start
    log = (exp / "logs" / "train.log").read_text()
    assert f"validation @ {at_step}:" not in log and f"SIGINT received at iteration {at_step} during validation" in log

    # the resumed run validates that iteration first and ends as the uninterrupted one did
    assert run.main(["-c", str(cut), "--resume", str(last)]) == 0
    log = (exp / "logs" / "train.log").read_text()
    assert log.count(f"validation @ {at_step}:") == 1
    for key, sd in _networks(ref_last).items():
        for name, tensor in sd.items():
            assert torch.equal(tensor, _networks(last)[key][name]), (key, name)
    ref_best = read_checkpoint(ref_last)["best"]
    assert read_checkpoint(last)["best"] == ref_best
    assert (exp / "results" / "summary.json").exists()
