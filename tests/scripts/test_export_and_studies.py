"""Sharing weights (scripts/export_weights.py) and the study machinery (common_utils/study.py),
on generated data only."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from common_utils.checkpoint import check_format, load_network, save_training_state, training_checkpoint
from common_utils.study import mean_std, pm
from models import build_network
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_checkpoint(tmp_path: Path, network: str, args: dict, nets: dict, **extra: object) -> Path:
    """A framework training checkpoint (last.pth) holding ``nets`` under their entry names."""
    path = tmp_path / "last.pth"
    torch.save({"format": "ssir-train-v1", "network": network, "network_args": args,
                "networks": {k: n.state_dict() for k, n in nets.items()}, **extra}, path)
    return path


def test_exported_weights_load_like_the_run_and_are_small(tmp_path):
    torch.manual_seed(0)
    s, t = build_network("UNet", width=4), build_network("UNet", width=4)
    run_ckpt = _run_checkpoint(tmp_path, "UNet", {"width": 4}, {"student": s, "teacher": t}, iter=7,
                               optimizer={"state": {0: {"exp_avg": torch.zeros(1000)}}})
    out = tmp_path / "shared.pth"
    export = _script("export_weights")
    assert export.main(["--checkpoint", str(run_ckpt), "--network", "UNet", "--which", "teacher", "--out", str(out),
                        "--note", "a test"]) == 0
    saved = torch.load(out, weights_only=True)
    assert set(saved["networks"]) == {"teacher"} and "optimizer" not in saved and saved["note"] == "a test"
    net, info = load_network("UNet", out)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in t.state_dict().items())
    assert info["network_args"] == {"width": 4}



def test_export_takes_a_format_3_run_folder(tmp_path):
    """A run folder (format 3: last.pth names its weights files) exports like the file: its best.pth, else last.pth."""
    torch.manual_seed(1)
    s, t = build_network("UNet", width=4), build_network("UNet", width=4)
    specs = {e: ("UNet", {"width": 4}) for e in ("student", "teacher")}
    state = training_checkpoint({"student": s.state_dict(), "teacher": t.state_dict()}, specs, "UNet", 3, {},
                                optimizer={}, scheduler={}, scaler={}, ema_steps_offset=0, best={},
                                nonfinite_total=0, nonfinite_streak=0, rng={}, trainer={}, amp="off")
    save_training_state(state, tmp_path / "run" / "checkpoints", keep_iter=False)
    out = tmp_path / "shared.pth"
    assert _script("export_weights").main(["--checkpoint", str(tmp_path / "run"), "--network", "UNet",
                                           "--which", "student", "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert set(saved["networks"]) == {"student"} and saved["iter"] == 3
    assert all(torch.equal(saved["networks"]["student"][k], v) for k, v in s.state_dict().items())

def test_exported_iceml_weights_keep_both_networks(tmp_path):
    torch.manual_seed(1)
    rtx, asm = build_network("RtxICE-Net", dim=16), build_network("ASMICE-Net", dim=16)
    run_ckpt = _run_checkpoint(tmp_path, "RtxICE-Net", {"dim": 16}, {"rtx": rtx, "asm": asm}, iter=3,
                               config={"iceml": {"t_min": 0.3}})
    out = tmp_path / "iceml.pth"
    assert _script("export_weights").main(["--checkpoint", str(run_ckpt), "--network", "RtxICE-Net",
                                           "--out", str(out)]) == 0
    for name, ref in (("RtxICE-Net", rtx), ("ASMICE-Net", asm)):
        net, _ = load_network(name, out)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in ref.state_dict().items())
    assert load_network("ASMICE-Net", out)[0].t_min == 0.3  # the run's iceml.t_min travels with the weights
    assert "optimizer" not in torch.load(out, weights_only=True)


def test_mean_and_spread_for_study_tables():
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == 1.0
    assert mean_std([None]) == (None, None)
    assert pm([19.08, 18.94], 2) == "19.01 ± 0.10"
    assert pm([5.0]) == "5.00"


def test_ssll_study_runs_and_reports_end_to_end(tmp_path, monkeypatch):
    """The one-command study on a generated LOL tree: both methods, a label budget, the report."""
    from data.image_io import write_image
    from tests.helpers import make_image, make_paired_folders

    data = tmp_path / "datasets"
    make_paired_folders(data / "LOL" / "our485", n=6, size=40, seed=1)
    make_paired_folders(data / "LOL" / "eval15", n=2, size=40, seed=2)
    for i in range(4):
        write_image(data / "SICE" / f"{i}.jpg", make_image(48, 20 + i) * 0.3)
    monkeypatch.setenv("SSIR_DATA_ROOT", str(data))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = _script("ssll_study")
    overrides = ["network.name=UNet", "network.args={width: 4}", "train.epochs=4", "train.iters_per_epoch=1",
                 "data.num_workers=0", "data.batch_size=2", "data.paired.args.crop_size=32",
                 "validation.max_images=1", "train.val_every_epochs=2", "train.sample_images=0"]
    ssll_only = [f"data.unpaired.args={{root: [{data / 'SICE'}], crop_size: 32}}", "ssll.semi_start_epoch=3"]
    base_cfg = tmp_path / "base.yaml"
    ssll_cfg = tmp_path / "ssll.yaml"
    import yaml

    base_cfg.write_text(yaml.safe_dump({"_base_": str(ROOT / "config/study/lol_cidnet_sup.yaml")}))
    ssll_cfg.write_text(yaml.safe_dump({"_base_": str(ROOT / "config/study/lol_cidnet_ssll.yaml")}))
    out, runs = tmp_path / "report", tmp_path / "runs"
    argv = ["--baseline", str(base_cfg), "--ssll", str(ssll_cfg), "--budgets", "3", "--seeds", "0", "--runs",
            str(runs), "--out", str(out), "--grid", "1", "--tag", "t", "--set", *overrides, "--set-ssll", *ssll_only]
    assert study.main(argv) == 0
    report = (out / "README.md").read_text()
    assert "| 3 | 0 |" in report and "mean ± std" in report
    assert (out / "results.csv").read_text().count("\n") == 3  # header + 2 runs
    assert (out / "grid_n3_seed0.jpg").is_file()
    pool = (runs / "t_ssll_n3_s0" / "logs" / "train.log").read_text()
    assert "unpaired pool: 7 images (3 of them inputs of withheld pairs)" in pool
    assert study.main([*argv, "--report-only"]) == 0  # rebuilt from the run folders alone


def test_committed_weights_load_as_the_readme_says_and_brighten_a_dark_image():
    """pretrained/*.pth: under 10 MB, read by the one checkpoint reader, and doing their job on a tiny image."""
    root = REPO_ROOT / "pretrained"
    cases = {"cidnet_lol_real.pth": ["CIDNet"], "iceml_sots_stage1.pth": ["RtxICE-Net", "ASMICE-Net"]}
    dark = torch.linspace(0.02, 0.12, 32 * 32 * 3).reshape(1, 3, 32, 32)
    for file, names in cases.items():
        path = root / file
        assert path.stat().st_size < 10 * 2**20, file
        saved = torch.load(path, weights_only=True)
        meta = check_format(saved, file)  # the reader's own format check (v1 files are upgraded on reading)
        assert meta is not None and meta["kind"] == "weights" and saved["note"] and saved["scores"], file
        for name in names:
            net, _ = load_network(name, path)
            with torch.no_grad():
                out = net.eval()(dark)
            out = out[0] if isinstance(out, (tuple, list)) else out
            assert out.shape == dark.shape and torch.isfinite(out).all(), (file, name)
            if name == "CIDNet":  # trained on real LOL pairs: a dark image comes out brighter
                assert out.mean() > 2 * dark.mean()
