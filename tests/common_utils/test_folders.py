"""Output folders (common_utils/folders.py, core/run_folder.py): one writer, nothing stale, nothing lost.

Run folders and evaluation folders share the lock and the "move an earlier result aside" rule;
a ``kill -9`` leaves no lock behind even while forked children (loader workers) outlive the
killed process; unfinished temporary files of a killed checkpoint write are removed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import run
from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import eval_with_any_backbone
from common_utils.folders import FolderLock, OutputFolder
from foundation.errors import UserError
from tests.helpers import REPO_ROOT, make_paired_folders, tiny_config, write_yaml
from tests.test_hardening import one_line_error

ROOT = REPO_ROOT


# ------------------------------------------------------------------ the lock
def test_a_killed_process_leaves_no_lock_even_while_its_forked_children_live(tmp_path):
    """kill -9 of the holder: the lock is free at once, although a forked child (as a DataLoader
    worker) still runs with a copy of the holder's file descriptors."""
    script = textwrap.dedent(f"""
        import multiprocessing as mp, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from common_utils.folders import FolderLock
        lock = FolderLock(__import__("pathlib").Path({str(tmp_path)!r}), "run folder")
        lock.take()
        ctx = mp.get_context("fork")
        started = ctx.Event()

        def worker():  # runs after the fork hooks: once it has started, the child's copy is dropped
            started.set()
            time.sleep(60)

        child = ctx.Process(target=worker, daemon=False)
        child.start()
        started.wait(30)  # a loaded machine may schedule the child late (the race this test once lost)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    try:
        with pytest.raises(UserError, match=f"pid {proc.pid} "):  # held while the process lives
            FolderLock(tmp_path).take()
        proc.kill()
        proc.wait(timeout=10)
        os.kill(child_pid, 0)  # the orphaned child is still alive ...
        lock = FolderLock(tmp_path)
        lock.take()  # ... and the lock is free
        lock.release()
    finally:
        proc.kill()
        try:
            os.kill(child_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lock_left_by_an_ended_process_is_not_called_a_running_run(tmp_path, monkeypatch):
    lock = FolderLock(tmp_path, "run folder", holder_kind="run")
    lock.take()
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        text = (tmp_path / ".lock").read_text().replace(f"pid {os.getpid()} ", f"pid {dead} ")
        (tmp_path / ".lock").write_text(text)
        with pytest.raises(UserError, match=f"child processes of pid {dead}, which has ended") as err:
            FolderLock(tmp_path, "run folder", holder_kind="run").take()
        assert "running run" not in str(err.value)
    finally:
        lock.release()


# ------------------------------------------------------------------ run folders
def test_a_run_that_crashed_before_its_first_checkpoint_is_moved_aside_not_appended_to(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="crash", iters=2)
    bad = Path(cfg["data"]["paired"]["args"]["gt_dir"]) / "img_003.png"
    good = bad.read_bytes()
    bad.write_bytes(good[:50])
    cfg["data"]["paired"]["args"]["on_bad_image"] = "stop"
    path = write_yaml(tmp_path / "crash.yaml", cfg)
    assert run.main(["-c", str(path), "--no-eval", "data.batch_size=8"]) == 2  # fails at iteration 1
    exp = tmp_path / "experiments" / "crash"
    assert not list((exp / "checkpoints").iterdir()) and (exp / "logs" / "train.log").is_file()
    first_log = (exp / "logs" / "train.log").read_text()
    bad.write_bytes(good)
    assert run.main(["-c", str(path), "--no-eval", "seed=5"]) == 0
    archived = list(tmp_path.glob("experiments/crash_archived_*"))
    assert len(archived) == 1 and (archived[0] / "logs" / "train.log").read_text() == first_log
    log = (exp / "logs" / "train.log").read_text()
    assert log.count("run folder ") == 1 and "student: UNet" in log  # the new log holds only the new run
    steps = [json.loads(ln)["step"] for ln in (exp / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] <= 2  # one run's curve, not two runs' mixed


def test_unfinished_checkpoint_temporaries_are_removed_when_the_run_continues(tmp_path, capsys):
    path = write_yaml(tmp_path / "t.yaml", tiny_config(tmp_path, name="tmp", iters=2))
    assert run.main(["-c", str(path), "--no-eval"]) == 0
    ckpts = tmp_path / "experiments" / "tmp" / "checkpoints"
    stray = [ckpts / ".last.pth.k1ll3d.tmp", ckpts / ".last.pth.x9z8.tmp"]
    for s in stray:
        s.write_bytes(b"\0" * 4096)  # what atomic_save leaves when killed mid-write
    capsys.readouterr()
    assert run.main(["-c", str(path), "--no-eval", "--resume", str(ckpts / "last.pth"), "train.iters=3"]) == 0
    assert not any(s.exists() for s in stray)
    assert "removed 2 unfinished temporary file(s)" in capsys.readouterr().err


# ------------------------------------------------------------------ evaluation folders
@pytest.fixture
def unet_ckpt(tmp_path):
    torch.manual_seed(0)
    from models import build_network

    path = tmp_path / "unet.pth"
    torch.save(build_network("UNet", width=4).state_dict(), path)
    return path


def _eval(ckpt, data, out, *extra):
    return eval_cli.main(["-n", "UNet", "-w", str(ckpt), "--network-args", '{"width": 4}', "--device", "cpu",
                          "--workers", "0", "--no-lpips", "-d", str(data), "-o", str(out), *extra])


def test_a_second_evaluation_into_a_busy_folder_refuses(tmp_path, unet_ckpt, capsys):
    make_paired_folders(tmp_path / "set", n=2, size=24)
    out = tmp_path / "out"
    first = OutputFolder(out)
    first.claim()  # an evaluation in progress
    try:
        one_line_error(capsys, _eval(unet_ckpt, tmp_path / "set", out), str(out), "in use by a running evaluation")
        assert not (out / "summary.json").exists()
    finally:
        first.release()
    assert _eval(unet_ckpt, tmp_path / "set", out) == 0


def test_output_folder_block_releases_the_lock_whatever_happens(tmp_path):
    """``with OutputFolder(path):`` (both evaluation CLIs) holds the folder for the block only, even when it fails."""
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="mid-evaluation"), OutputFolder(out) as folder:
        assert folder.lock.held
        with pytest.raises(UserError, match="in use"):
            OutputFolder(out).claim()  # a second writer is refused while the block runs
        raise RuntimeError("mid-evaluation")
    assert not folder.lock.held
    again = OutputFolder(out)
    again.claim()  # free again
    again.release()


def test_re_evaluating_into_a_folder_leaves_no_stale_images(tmp_path, unet_ckpt, capsys):
    make_paired_folders(tmp_path / "set", n=3, size=24)
    out = tmp_path / "out"
    assert _eval(unet_ckpt, tmp_path / "set", out, "--save") == 0
    assert len(list((out / "set" / "images").glob("*.png"))) == 3
    (tmp_path / "set" / "low" / "img_002.png").unlink()
    (tmp_path / "set" / "high" / "img_002.png").unlink()
    assert _eval(unet_ckpt, tmp_path / "set", out, "--save") == 0
    assert sorted(p.name for p in (out / "set" / "images").glob("*.png")) == ["img_000.png", "img_001.png"]
    assert json.loads((out / "summary.json").read_text())["set"]["images"] == 2
    archived = list(tmp_path.glob("out_archived_*"))
    assert len(archived) == 1 and len(list((archived[0] / "set" / "images").glob("*.png"))) == 3
    assert _eval(unet_ckpt, tmp_path / "set", out) == 0  # without --save: no images of the earlier one remain
    assert not (out / "set" / "images").exists()


def test_enhancing_into_a_folder_of_other_files_refuses_and_touches_nothing(tmp_path, unet_ckpt, capsys):
    lq, _ = make_paired_folders(tmp_path / "set", n=2, size=24)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"mine")
    args = ["-n", "UNet", "-w", str(unet_ckpt), "--network-args", '{"width": 4}', "--device", "cpu",
            "--workers", "0", "--set", str(lq)]
    one_line_error(capsys, eval_with_any_backbone.main([*args, "--output", str(mine)]), str(mine),
                   "choose a new or empty folder")
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]
    assert eval_with_any_backbone.main([*args, "--output", str(tmp_path / "enh")]) == 0
    time.sleep(0.01)
    assert eval_with_any_backbone.main([*args, "--output", str(tmp_path / "enh")]) == 0  # an earlier output: moved
    assert len(list(tmp_path.glob("enh_archived_*"))) == 1
