"""Hardening: runs are never lost, and every way a user can break one ends in one clear line.

Each case is what a new user did on purpose; the assertions: exit code 2, exactly one ``error:``
line naming the key or file and what to do, no traceback, and nothing on disk changed (an
earlier run in the same folder is still there, no half-written config).
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run
from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import eval_with_any_backbone
from core import TRAINERS
from data.image_io import write_image
from foundation.errors import UserError
from tests.helpers import load_tiny_config, make_image, make_paired_folders, tiny_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln[:4].isdigit()]  # log lines start with a date
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    for frag in fragments:
        assert frag in errors[0], (frag, errors[0])
    return errors[0]


@pytest.fixture
def cfg_path(tmp_path):
    return write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path, name="run", iters=2))


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ keys and values
@pytest.mark.parametrize("override,fragments", [
    ("data.batch_size=0", ["data.batch_size", "at least 1"]),
    ("data.num_workers=-1", ["data.num_workers", "at least 0"]),
    ("train.iters=-5", ["train.iters", "at least 1"]),
    ("optim.lr=0", ["optim.lr", "greater than 0"]),
    ("train.lr=0.1", ["train.lr", "did you mean 'optim.lr'"]),
    ("validation.watch=psnrr", ["validation.watch", "did you mean 'psnr'"]),
    ("network.args={dim: 47}", ["Restormer", "dim=47", "positive even number"]),
    ("ssll.lambda_p=0.2", ["ssll", "mean_teacher", "supervised"]),
    ("trainer=mean_teachr", ["trainer", "did you mean 'mean_teacher'"]),
])
def test_config_mistakes_are_one_line_and_touch_nothing(tmp_path, cfg_path, capsys, override, fragments):
    extra = ["network.name=Restormer"] if "dim" in override else []
    before = _tree(tmp_path)
    code = run.main(["-c", str(cfg_path), *extra, override])
    one_line_error(capsys, code, *fragments)
    assert _tree(tmp_path) == before


def test_iceml_trainer_rejects_a_losses_list_it_would_ignore(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="ice")
    cfg.update({"trainer": "iceml", "network": {"name": "RtxICE-Net", "args": {}}})
    code = run.main(["-c", str(write_yaml(tmp_path / "ice.yaml", cfg))])
    one_line_error(capsys, code, "losses", "iceml")


def test_training_set_smaller_than_the_batch(tmp_path, cfg_path, capsys):
    code = run.main(["-c", str(cfg_path), "data.batch_size=9"])
    one_line_error(capsys, code, "data.paired", "8 image(s)", "fewer than one batch of 9")
    assert not (tmp_path / "experiments").exists()


def test_optimizer_overflow_is_one_line(tmp_path, cfg_path, capsys):
    code = run.main(["-c", str(cfg_path), "optim.lr=1e38", "--no-eval"])
    one_line_error(capsys, code, "optim.lr", "lower optim.lr")


def test_disk_full_at_start_up_writes_nothing(tmp_path, cfg_path, capsys, monkeypatch):
    import core.run_folder as rf

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rf, "write_text_atomic", full)
    code = run.main(["-c", str(cfg_path)])
    one_line_error(capsys, code, "No space left on device", str(tmp_path / "experiments" / "run"))
    assert not (tmp_path / "experiments" / "run").exists()  # no half-made folder, no .lock left behind


# ------------------------------------------------------------------ runs are never lost
def test_a_second_run_with_the_same_name_refuses_while_the_first_runs(tmp_path):
    cfg = load_tiny_config(tmp_path, name="busy")
    first = TRAINERS.get("supervised")(cfg)
    try:
        with pytest.raises(UserError, match=r"in use by a running run \(pid \d+"):
            TRAINERS.get("supervised")(load_tiny_config(tmp_path, ["seed=1"], name="busy"))
        assert (first.exp_dir / "config.yaml").is_file()
        first.train()
        assert (first.ckpt_dir / "last.pth").is_file()
        assert not list(tmp_path.glob("experiments/busy_archived_*"))
    finally:
        first.close()
    again = TRAINERS.get("supervised")(load_tiny_config(tmp_path, ["seed=1"], name="busy"))  # lock released
    again.close()


def test_a_failed_start_leaves_the_previous_run_in_place(tmp_path, capsys):
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path, name="keep", iters=2))
    assert run.main(["-c", str(path), "--no-eval"]) == 0
    exp = tmp_path / "experiments" / "keep"
    before = _tree(exp)
    capsys.readouterr()
    for bad in (["train.iters=-5"], ["data.num_workers=-1"], [f"data.paired.args.lq_dir={tmp_path / 'nowhere'}"]):
        assert run.main(["-c", str(path), *bad]) == 2
        assert _tree(exp) == before, bad
    assert not list(tmp_path.glob("experiments/keep_archived_*"))
    assert run.main(["-c", str(path), "--resume", str(exp / "checkpoints" / "last.pth"), "--no-eval",
                     "train.iters=3"]) == 0


def test_a_new_run_archives_the_previous_one_only_once_it_starts(tmp_path):
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(tmp_path, name="arch", iters=2))
    assert run.main(["-c", str(path), "--no-eval"]) == 0
    assert run.main(["-c", str(path), "--no-eval", "seed=4"]) == 0
    archived = list(tmp_path.glob("experiments/arch_archived_*"))
    assert len(archived) == 1 and (archived[0] / "checkpoints" / "last.pth").is_file()
    assert (tmp_path / "experiments" / "arch" / "checkpoints" / "last.pth").is_file()
    assert "git_revision:" in (tmp_path / "experiments" / "arch" / "environment.txt").read_text()


# ------------------------------------------------------------------ evaluation
@pytest.fixture
def unet_ckpt(tmp_path):
    torch.manual_seed(0)
    from models import build_network

    path = tmp_path / "unet.pth"
    torch.save(build_network("UNet", width=4).state_dict(), path)
    return path


def _eval(args, ckpt, *extra):
    return eval_cli.main(["-n", "UNet", "-w", str(ckpt), "--network-args", '{"width": 4}', "--device", "cpu",
                          "--workers", "0", "--no-lpips", *args, *extra])


def test_evaluation_pairs_by_name_never_by_position(tmp_path, unet_ckpt, capsys):
    write_image(tmp_path / "set" / "low" / "22.png", make_image(32, 1))
    write_image(tmp_path / "set" / "normal" / "99.png", make_image(32, 2))
    code = _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out")], unet_ckpt)
    line = one_line_error(capsys, code, "22.png", "99.png", "--pairing sorted")
    assert "missing" not in line.split("22.png")[0]
    assert _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out2"), "--pairing", "sorted"], unet_ckpt) == 0


def test_lolv2_style_role_prefixes_still_pair(tmp_path):
    from data.datasets import PairedFolderDataset

    write_image(tmp_path / "Low" / "low00690.png", make_image(16, 1))
    write_image(tmp_path / "Normal" / "normal00690.png", make_image(16, 2))
    ds = PairedFolderDataset(str(tmp_path / "Low"), str(tmp_path / "Normal"), pairing="auto")
    assert [(a.name, b.name) for a, b in ds.pairs] == [("low00690.png", "normal00690.png")]


def test_unreadable_and_tiny_images_are_reported_and_skipped_or_stop(tmp_path, unet_ckpt, capfd):
    lq, gt = make_paired_folders(tmp_path / "set", n=3, size=24)
    bad = lq / "img_001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    write_image(lq / "tiny.png", make_image((5, 7), 3))
    write_image(gt / "tiny.png", make_image((5, 7), 4))
    assert _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out")], unet_ckpt) == 0
    out = capfd.readouterr()  # file-descriptor level: a C library's own line would show here
    assert "libpng" not in out.err and "Traceback" not in out.err
    import json

    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["set"]
    assert entry["images"] == 2 and len(entry["skipped"]) == 2
    assert any(str(bad) in s and "truncated" in s for s in entry["skipped"])
    assert any("tiny: 7x5 pixels" in s for s in entry["skipped"])
    code = _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out2"), "--on-bad-image", "stop"], unet_ckpt)
    one_line_error(capfd, code, str(bad))


def test_an_evaluation_failure_is_said_once(tmp_path, unet_ckpt, capfd):
    lq, _ = make_paired_folders(tmp_path / "set", n=2, size=24)
    bad = lq / "img_001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    code = _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out"), "--on-bad-image", "stop"], unet_ckpt)
    one_line_error(capfd, code, str(bad))  # reads the captured output: run again to count every line
    _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "out3"), "--on-bad-image", "stop"], unet_ckpt)
    out = capfd.readouterr()
    assert (out.out + out.err).count(f"{bad}: the PNG file is truncated") == 1, out


@pytest.mark.parametrize("cli", ["eval", "enhance"])
def test_output_folder_under_a_file_fails_before_any_work(tmp_path, unet_ckpt, capsys, cli):
    make_paired_folders(tmp_path / "set", n=2, size=24)
    (tmp_path / "afile").write_text("x")
    if cli == "eval":
        code = _eval(["-d", str(tmp_path / "set"), "-o", str(tmp_path / "afile" / "out")], unet_ckpt)
    else:
        code = eval_with_any_backbone.main(["-n", "UNet", "-w", str(unet_ckpt), "--network-args", '{"width": 4}',
                                            "--set", str(tmp_path / "set" / "low"), "--output",
                                            str(tmp_path / "afile" / "out")])
    one_line_error(capsys, code, str(tmp_path / "afile"), "is a file")


def test_eval_py_and_run_py_score_the_same_network_of_a_checkpoint(tmp_path, capsys):
    import json

    cfg = tiny_config(tmp_path, name="same", iters=4, eval_datasets=True)
    assert run.main(["-c", str(write_yaml(tmp_path / "same.yaml", cfg))]) == 0
    summary = json.loads((tmp_path / "experiments" / "same" / "results" / "summary.json").read_text())["tiny_test"]
    ckpt = tmp_path / "experiments" / "same" / "checkpoints" / "last.pth"
    assert eval_cli.main(["-n", "UNet", "-w", str(ckpt), "-d", str(tmp_path / "data" / "val"), "--device", "cpu",
                          "--workers", "0", "--no-lpips", "-o", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "summary.json").read_text())["val"]
    assert summary["network"] == "teacher" and "teacher]" in ev.get("weight", json.loads(
        (tmp_path / "ev" / "summary.json").read_text())["_protocol"]["weight"])
    assert ev["psnr"] == pytest.approx(summary["psnr"], abs=1e-9)


def test_a_run_worse_than_its_input_ends_with_a_warning(tmp_path, capsys):
    import json

    cfg = tiny_config(tmp_path, name="bad", iters=4, eval_datasets=True)
    assert run.main(["-c", str(write_yaml(tmp_path / "bad.yaml", cfg)), "optim.lr=1e3"]) == 0
    summary = json.loads((tmp_path / "experiments" / "bad" / "results" / "summary.json").read_text())
    assert summary["warnings"] and "below its own input" in summary["warnings"][0]
    log = (tmp_path / "experiments" / "bad" / "logs" / "train.log").read_text()
    assert "WARNING: on tiny_test" in log


def test_the_warning_tells_unlearned_from_a_side_effect():
    from common_utils.evaluation.runner import worse_than_input

    inp = {"psnr": 12.8, "ssim": 0.75}
    both = worse_than_input({"set": {"network": "rtx", "psnr": 10.0, "ssim": 0.5, "input": inp}})
    one = worse_than_input({"set": {"network": "rtx", "psnr": 16.2, "ssim": 0.6, "input": inp}})
    none = worse_than_input({"set": {"network": "rtx", "psnr": 16.2, "ssim": 0.8, "input": inp},
                             "_protocol": {"psnr": "RGB"}})
    assert len(both) == 1 and "did not learn" in both[0] and "PSNR 10 < input 12.8" in both[0]
    assert len(one) == 1 and "did not learn" not in one[0] and "its PSNR is above the input's" in one[0]
    assert "SSIM 0.6 < input 0.75" in one[0] and none == []


# ------------------------------------------------------------------ paths
def test_command_line_paths_resolve_from_the_current_directory(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    cfg = tiny_config(tmp_path, name="cwd", iters=2)
    write_yaml(work / "cfg.yaml", cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-c", "cfg.yaml", "--no-eval"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = tmp_path / "experiments" / "cwd" / "checkpoints" / "last.pth"
    proc = subprocess.run([sys.executable, str(ROOT / "common_utils" / "evaluation" / "eval.py"), "-n", "UNet", "-w",
                           os.path.relpath(last, work), "-d", os.path.relpath(tmp_path / "data" / "val", work),
                           "--device", "cpu", "--workers", "0", "--no-lpips", "-o", "results_here"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "results_here" / "summary.json").is_file()
    assert not (ROOT / "results_here").exists()


def test_allocator_setting_applies_and_can_be_turned_off(monkeypatch):
    from common_utils.cli import ALLOCATOR_OPT_OUT, keep_freed_memory

    monkeypatch.setenv(ALLOCATOR_OPT_OUT, "1")
    assert keep_freed_memory() is False
    monkeypatch.delenv(ALLOCATOR_OPT_OUT)
    if sys.platform.startswith("linux"):
        import platform

        assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
