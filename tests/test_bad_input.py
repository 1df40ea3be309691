"""Bad input through run.py: each case either ends in one ``error: ...`` line on stderr with exit
code 2 (never a traceback), or is handled and training runs.

The run.py cases are separate processes, started all at once by one module fixture (each in
its own folder with its own tiny data) and checked one test per case. Disk-full checkpoint
writes and non-finite losses are simulated in-process (monkeypatching ``torch.save`` and the
trainer's ``train_step``) and still go through ``run.main``. The mixed-precision / gradient
clipping / channels_last path is checked at the end.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run
from common_utils.checkpoint import read_checkpoint
from core import TRAINERS
from core.config import load_config
from tests.helpers import make_image, make_paired_folders, tiny_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 150

# ------------------------------------------------------------------ run.py cases
#: name -> builder(case_dir) returning (config dict, extra run.py arguments)
CASES: dict[str, Callable[[Path], tuple[dict, list[str]]]] = {}


def case(fn: Callable[[Path], tuple[dict, list[str]]]):
    CASES[fn.__name__] = fn
    return fn


def _train_dirs(cfg: dict) -> tuple[Path, Path]:
    a = cfg["data"]["paired"]["args"]
    return Path(a["lq_dir"]), Path(a["gt_dir"])


def _short(cfg: dict, iters: int = 2) -> dict:
    cfg["train"].update({"iters": iters, "val_every": iters, "save_every": iters})
    return cfg


def _truncate_one_gt(cfg: dict) -> None:
    _, gt = _train_dirs(cfg)
    f = gt / "img_003.png"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@case
def truncated_png_read_by_a_worker(d: Path):
    cfg = _short(tiny_config(d, name="run", iters=8, num_workers=2), 8)
    _truncate_one_gt(cfg)
    cfg["data"]["paired"]["args"]["on_bad_image"] = "stop"
    return cfg, []


@case
def truncated_png_skipped_by_default(d: Path):
    cfg = _short(tiny_config(d, name="run", iters=8, num_workers=2), 8)
    _truncate_one_gt(cfg)
    return cfg, []


@case
def non_image_files_are_ignored(d: Path):
    cfg = _short(tiny_config(d, name="run"))
    for folder in _train_dirs(cfg):
        (folder / "README.txt").write_text("not an image\n")
        (folder / "Thumbs.db").write_bytes(b"\x00\x01junk")
        (folder / "subdir").mkdir()
    return cfg, []


@case
def gray_rgba_and_16bit_pngs_are_converted(d: Path):
    cfg = _short(tiny_config(d, name="run", num_workers=2))
    lq, gt = _train_dirs(cfg)
    rgb8 = (make_image(48, 5) * 255).round().astype(np.uint8)
    cv2.imwrite(str(lq / "img_000.png"), rgb8[:, :, 0])  # grayscale
    cv2.imwrite(str(gt / "img_000.png"), rgb8[:, :, 1])
    cv2.imwrite(str(lq / "img_001.png"), np.dstack([rgb8, np.full(rgb8.shape[:2], 128, np.uint8)]))  # RGBA
    cv2.imwrite(str(lq / "img_002.png"), rgb8.astype(np.uint16) * 257)  # 16-bit RGB
    cv2.imwrite(str(gt / "img_002.png"), (rgb8[:, :, 2].astype(np.uint16) * 257))  # 16-bit gray
    return cfg, ["train.iters=4", "train.save_every=4", "train.val_every=4"]  # visits every pair


@case
def pair_of_different_sizes(d: Path):
    cfg = _short(tiny_config(d, name="run", iters=8, num_workers=2), 8)
    _, gt = _train_dirs(cfg)
    cv2.imwrite(str(gt / "img_005.png"), (make_image((40, 44), 1) * 255).astype(np.uint8))
    return cfg, []


@case
def empty_folder(d: Path):
    cfg = _short(tiny_config(d, name="run"))
    empty = d / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here\n")
    cfg["data"]["paired"]["args"]["lq_dir"] = str(empty)
    return cfg, []


@case
def missing_folder(d: Path):
    cfg = _short(tiny_config(d, name="run"))
    cfg["data"]["val"]["args"]["gt_dir"] = str(d / "no_such_folder")
    return cfg, []


@case
def paired_folders_with_different_names(d: Path):
    cfg = _short(tiny_config(d, name="run"))
    _, gt = _train_dirs(cfg)
    for f in sorted(gt.iterdir()):
        f.rename(gt / f"gt_{f.name}")
    return cfg, []


@case
def unknown_network(d: Path):
    return _short(tiny_config(d, name="run")), ["network.name=UNett"]


@case
def checkpoint_of_another_network_as_pretrained(d: Path):
    from models import build_network

    net = build_network("NAFNet", width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], middle_blk_num=1)
    path = d / "nafnet.pth"
    torch.save({"params": net.state_dict()}, path)
    return _short(tiny_config(d, name="run")), [f"pretrained.path={path}"]


@case
def misspelt_config_key(d: Path):
    cfg = _short(tiny_config(d, name="run"))
    cfg["optim"]["lerning_rate"] = 1e-3
    return cfg, []


@case
def value_of_the_wrong_type(d: Path):
    return _short(tiny_config(d, name="run")), ["train.iters=many"]


def _start(d: Path, cfg: dict, extra: list[str]) -> subprocess.Popen:
    path = write_yaml(d / "config.yaml", cfg)
    env = dict(os.environ)
    env.pop("SSIR_DEBUG", None)
    env.pop("SSIR_KILL_AT_ITER", None)
    env.update({"OMP_NUM_THREADS": "1", "TORCH_HOME": str(d / "torch_home")})
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-c", str(path), "--no-eval", *extra],
                            cwd=str(d), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Start every run.py case at once; return name -> (case folder, CompletedProcess)."""
    root = tmp_path_factory.mktemp("bad")
    procs = {}
    for name, build in CASES.items():
        d = root / name
        d.mkdir()
        cfg, extra = build(d)
        procs[name] = (d, _start(d, cfg, extra))
    out = {}
    for name, (d, p) in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for _, q in procs.values():
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            pytest.fail(f"case {name} did not finish within {TIMEOUT} s")
        out[name] = (d, subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line, last on stderr, holding ``fragments``."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode == 2, f"rc {proc.returncode}: {proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    for frag in fragments:
        assert frag in errors[0], (frag, errors[0])
    return errors[0]


def assert_trained(d: Path, proc: subprocess.CompletedProcess, iters: int) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    last = read_checkpoint(d / "experiments" / "run" / "checkpoints" / "last.pth")
    assert last["iter"] == iters
    assert all(torch.isfinite(v).all() for v in last["networks"]["student"].values() if v.is_floating_point())


def test_truncated_png_in_training_folder_stops_with_its_name_when_asked(outcomes):
    d, proc = outcomes["truncated_png_read_by_a_worker"]
    line = assert_one_line_error(proc, str(d / "data" / "train" / "high" / "img_003.png"), "truncated",
                                 "on_bad_image")
    assert "DataLoader worker" not in line and "Original" not in line
    assert "WARN" not in proc.stderr  # run.py quiets OpenCV's own decoder warning


def test_truncated_png_in_training_folder_is_skipped_with_a_warning_by_default(outcomes):
    d, proc = outcomes["truncated_png_skipped_by_default"]
    assert_trained(d, proc, 8)
    bad = str(d / "data" / "train" / "high" / "img_003.png")
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: skipped") and bad in ln]
    assert warnings and "truncated" in warnings[0]
    assert len(warnings) == 1  # once per file: not once per read, nor once per loader worker that met it


def test_non_image_files_in_data_folders_are_ignored(outcomes):
    d, proc = outcomes["non_image_files_are_ignored"]
    assert_trained(d, proc, 2)


def test_grayscale_rgba_and_16bit_pngs_are_converted_and_train(outcomes):
    d, proc = outcomes["gray_rgba_and_16bit_pngs_are_converted"]
    assert_trained(d, proc, 4)


def test_pair_of_different_sizes_names_both_files(outcomes):
    d, proc = outcomes["pair_of_different_sizes"]
    train = d / "data" / "train"
    assert_one_line_error(proc, "size mismatch", str(train / "low" / "img_005.png"),
                          str(train / "high" / "img_005.png"))


def test_empty_folder(outcomes):
    d, proc = outcomes["empty_folder"]
    assert_one_line_error(proc, f"no images in {d / 'empty'}")
    assert not (d / "experiments" / "run" / "checkpoints" / "last.pth").exists()


def test_missing_folder(outcomes):
    d, proc = outcomes["missing_folder"]
    assert_one_line_error(proc, f"image folder not found: {d / 'no_such_folder'}")


def test_paired_folders_with_different_file_names(outcomes):
    d, proc = outcomes["paired_folders_with_different_names"]
    assert_one_line_error(proc, "have no file of the same name", str(d / "data" / "train" / "high"))


def test_unknown_network_lists_the_valid_names(outcomes):
    _, proc = outcomes["unknown_network"]
    assert_one_line_error(proc, "UNett", "did you mean 'UNet'", "NAFNet", "Restormer", "RtxICE-Net")


def test_checkpoint_of_another_network_as_pretrained_path(outcomes):
    d, proc = outcomes["checkpoint_of_another_network_as_pretrained"]
    assert_one_line_error(proc, str(d / "nafnet.pth"), "does not fit UNet")


def test_misspelt_config_key(outcomes):
    _, proc = outcomes["misspelt_config_key"]
    assert_one_line_error(proc, "unknown config key 'optim.lerning_rate'")


def test_value_of_the_wrong_type(outcomes):
    _, proc = outcomes["value_of_the_wrong_type"]
    assert_one_line_error(proc, "config key 'train.iters' must be int", "'many'")


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("chmod 0o500 does not stop this user from writing (running as root?)")
        cfg = _short(tiny_config(tmp_path, name="run"))
        cfg["output_root"] = str(locked / "experiments")
        p = _start(tmp_path, cfg, [])
        stdout, stderr = p.communicate(timeout=TIMEOUT)
        assert_one_line_error(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr),
                              "cannot write to the output folder", str(locked / "experiments" / "run"))
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------ in-process cases
def _run_main(tmp_path: Path, cfg: dict, capsys, *extra: str) -> tuple[int, str]:
    path = write_yaml(tmp_path / "config.yaml", cfg)
    capsys.readouterr()
    rc = run.main(["-c", str(path), "--no-eval", *extra])
    err = capsys.readouterr().err
    return rc, err


def _one_line(rc: int, err: str, *fragments: str) -> str:
    return assert_one_line_error(subprocess.CompletedProcess([], rc, "", err), *fragments)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path, name="run", iters=6)
    cfg["train"].update({"save_every": 2, "val_every": 100})
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iter") == 4:
            f.write(b"PK\x03\x04" + b"\x00" * 1000)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    rc, err = _run_main(tmp_path, cfg, capsys)
    ck = tmp_path / "experiments" / "run" / "checkpoints"
    # format 3 writes the weights files first: the first of them fails, last.pth is never touched
    _one_line(rc, err, f"could not write checkpoint {ck / 'net_student_iter_00000004.pth'}",
              "No space left on device", "previous checkpoint")
    monkeypatch.undo()
    last = read_checkpoint(ck / "last.pth")
    assert last["iter"] == 2  # the previous checkpoint survived, intact
    assert sorted(p.name for p in ck.glob("iter_*.pth")) == ["iter_00000002.pth"]
    assert not [p for p in ck.iterdir() if p.name.endswith(".tmp")]


def _nan_train_step(monkeypatch, trainer_name: str, bad_iters: set[int]) -> None:
    """Make the trainer's train_step report a NaN loss term at the given 1-based iterations."""
    cls = TRAINERS.get(trainer_name)
    step = cls.train_step

    def nan_step(self, batch):
        terms = step(self, batch)
        if self.iter + 1 in bad_iters:
            terms = {**terms, "l1": terms["l1"] * float("nan")}
        return terms

    monkeypatch.setattr(cls, "train_step", nan_step)


def test_non_finite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, name="nan", iters=8)
    cfg["train"].update({"save_every": 2, "val_every": 100, "max_nonfinite": 3})
    _nan_train_step(monkeypatch, "supervised", {3, 4, 8})  # the last iteration too
    tr = TRAINERS.get("supervised")(load_config(write_yaml(tmp_path / "nan.yaml", cfg)))
    try:
        tr.train()
    finally:
        tr.close()
    assert tr.iter == 8 and tr.nonfinite_total == 3
    # the schedule follows the iterations, skipped ones included: after all 8 the cosine is at its floor
    assert tr.scheduler.last_epoch == 8
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(cfg["scheduler"]["eta_min"], rel=1e-6)
    ck = tmp_path / "experiments" / "nan" / "checkpoints"
    at2, at4, at6, at8 = (read_checkpoint(ck / f"iter_{i:08d}.pth") for i in (2, 4, 6, 8))
    for net in ("student", "teacher"):  # skipped steps change neither the student nor its EMA
        assert all(torch.equal(v, at4["networks"][net][k]) for k, v in at2["networks"][net].items()), net
        assert not all(torch.equal(v, at6["networks"][net][k]) for k, v in at4["networks"][net].items()), net
        assert all(torch.isfinite(v).all() for v in at8["networks"][net].values() if v.is_floating_point())
    assert at8["iter"] == 8 and at8["nonfinite_total"] == 3  # written although the last step was skipped
    log = (tmp_path / "experiments" / "nan" / "logs" / "train.log").read_text()
    assert "iteration 3: non-finite loss (l1=nan" in log and "(2 in a row, 2 in total)" in log
    assert "iteration 8: non-finite loss" in log and "(1 in a row, 3 in total)" in log


def test_too_many_non_finite_losses_in_a_row_stop_the_run(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path, name="run", iters=10)
    cfg["train"].update({"save_every": 2, "val_every": 100, "max_nonfinite": 3})
    _nan_train_step(monkeypatch, "supervised", set(range(5, 11)))
    rc, err = _run_main(tmp_path, cfg, capsys)
    last = tmp_path / "experiments" / "run" / "checkpoints" / "last.pth"
    line = _one_line(rc, err, "stopped at iteration 7", "3 non-finite losses in a row", "l1=nan", "ssim=",
                     f"last good checkpoint: {last}")
    assert "non-finite" in line
    ck = read_checkpoint(last)
    assert ck["iter"] == 6 and all(torch.isfinite(v).all() for v in ck["networks"]["student"].values()
                                   if v.is_floating_point())


# ------------------------------------------------------------------ precision and memory-format paths
@pytest.mark.parametrize("trainer", ["supervised", "mean_teacher"])
def test_bf16_autocast_grad_clip_and_channels_last_train_on_cpu(tmp_path, monkeypatch, trainer):
    cfg = tiny_config(tmp_path, name=f"amp_{trainer}", iters=2)
    if trainer == "mean_teacher":
        un = tmp_path / "data" / "unpaired"
        make_paired_folders(tmp_path / "data" / "unp", n=4, size=40, seed=4)
        (tmp_path / "data" / "unp" / "low").rename(un)
        cfg["trainer"] = "mean_teacher"
        cfg["data"]["unpaired"] = {"type": "unpaired_folder", "args": {"root": str(un), "crop_size": 32}}
        cfg["ssll"] = {"semi_start_epoch": 1, "ramp_epochs": 2, "curriculum_epochs": 2}
    cfg["train"].update({"amp": "bf16", "grad_clip": 0.01, "channels_last": True, "compile": False,
                         "val_every": 2, "save_every": 2})
    tr = TRAINERS.get(trainer)(load_config(write_yaml(tmp_path / "amp.yaml", cfg)))
    before = {k: v.detach().clone() for k, v in tr.networks["student"].state_dict().items()}
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        norm = clip(params, max_norm, *a, **kw)
        clipped.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if
                                                                    p.grad is not None]))))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    try:
        tr.train()
    finally:
        tr.close()
    assert tr.iter == 2 and tr.nonfinite_total == 0
    assert len(clipped) == 2 and all(n <= 0.01 * 1.001 for n in clipped)
    conv = next(m for m in tr.networks["student"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    after = tr.networks["student"].state_dict()
    assert any(not torch.equal(before[k], v) for k, v in after.items())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert (tr.ckpt_dir / "last.pth").is_file()


def test_missing_dependency_is_one_line_naming_the_package(capsys, monkeypatch):
    from common_utils.cli import run_cli

    monkeypatch.delenv("SSIR_DEBUG", raising=False)

    def job() -> None:
        import not_an_installed_package.sub  # noqa: F401

    assert run_cli(job) == 2
    err = capsys.readouterr().err
    assert "'not_an_installed_package' is not installed" in err and "requirements.txt" in err
    assert "Traceback" not in err and err.count("\n") == 1
