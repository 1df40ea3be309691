"""scripts/compare_official.py and its package scripts/official_compare/: the parts that need neither
the official code nor a network.

The side-by-side run itself needs a checkout of github.com/eezkni/CMT; the one test that reads it
is skipped when none is found (``SSIR_OFFICIAL_CMT`` or ``/work/official/CMT``).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.official_compare import official, protocol, report
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def _script():
    name = "ssir_compare_official_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "compare_official.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_missing_official_checkout_is_one_line(tmp_path, capsys):
    script = _script()
    code = script.main(["--official", str(tmp_path / "no_such_checkout"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2
    assert len(out) == 1 and "not found" in out[0] and "no_such_checkout" in out[0]
    assert not (tmp_path / "out").exists()  # nothing was run


def test_package_loads_nothing_of_the_framework():
    """The official worker imports this package before the official code, whose packages (data, models,
    common_utils) share our names: loading the harness must not import any of ours."""
    ours = ["foundation", "models", "losses", "data", "core", "common_utils", "torch"]
    code = (f"import sys; sys.path.insert(0, 'scripts'); import official_compare.cli; "
            f"print(sorted(set({ours}) & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_worker_protocol_round_trip(tmp_path):
    """The parent starts a worker through the command file and talks to it in JSON lines."""
    env = {**os.environ, "PYTHONPATH": ""}
    argv = [sys.executable, str(protocol.ENTRY), "--worker", "ours", "--work", str(tmp_path), "--crop", "32"]
    worker = protocol.Worker("ours", argv, env, ROOT, tmp_path / "worker.log")
    try:
        info = worker.call("info")
        assert Path(info["core_imported_from"]) == ROOT / "core" and info["threads"] == 1
        with pytest.raises(protocol.WorkerError, match="no_such_trainer"):  # the worker's traceback comes back
            worker.call("block", mode="sup", variant="no_such_trainer", feed="premade", iters=1, warmup=0)
        assert worker.call("info")["repo"] == str(ROOT)  # and the worker lives on after an error
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_stamped_iterable_and_intervals():
    stamps: list[float] = []
    items = list(protocol.Stamped(lambda: iter(range(10)), 4, stamps))
    assert items == [0, 1, 2, 3] and len(stamps) == 4
    assert stamps == sorted(stamps)
    assert protocol.intervals([0.0, 1.0, 3.0, 6.0], warmup=1) == [2.0, 3.0]


def test_official_json_comments_are_stripped(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{\n  "a": 1, // a comment\n  "b": [2, 3]\n}\n')
    assert official.read_official_json(cfg) == {"a": 1, "b": [2, 3]}


def test_markdown_report_tables():
    result = {
        "machine": {"date": "2026-01-01T00:00:00", "cpu": "CPU", "logical_cpus": 2, "load_avg_at_start": None},
        "command": "python scripts/compare_official.py --official X", "official": "X", "torch": "2.x",
        "settings": {"crop": 128, "rounds": 3, "iters": 3, "warmup": 1, "fast_switches": ["train.compile=true"],
                     "ours_env": []},
        "training": [{"backbone": "UNet", "mode": "sup", "feed": "premade", "batch": 3,
                      "median_s": {"official": 2.0, "ours": 1.5, "ours_fast": 1.0},
                      "ratio": {"ours": 0.75, "ours_fast": 0.5}},
                     {"backbone": "UNet", "mode": "ssll", "error": "boom\ntraceback"}],
        "equality": [{"backbone": "UNet", "mode": "sup", "epoch": 600, "iters": 5,
                      "max_abs_diff": {"ssim": 1e-5, "lpips": 2e-7}}],
        "eval": {"network": "UNet", "images": 15, "weights": "random",
                 "wall_s": {"official": 10.0, "ours": 5.0}, "images_per_s": {"official": 1.5, "ours": 3.0},
                 "speedup_end_to_end": {"ours": 2.0}, "loop_images_per_s": {"official": 2.0, "ours": 4.0},
                 "metric_share": {"official": 0.2, "ours": 0.05},
                 "means": {"official": {"psnr": 7.5, "ssim": 0.18, "lpips": 0.24},
                           "ours": {"psnr": 7.5, "ssim": 0.18, "lpips": 0.24}},
                 "max_abs_diff_per_image": {"ours": {"psnr": 1e-6, "ssim": 3e-6, "lpips": 0.0}}},
        "errors": [],
    }
    md = report.markdown(result)
    assert "| UNet | sup | 3 | premade | 2.000 | 1.500 | 0.75 | 1.000 | 0.50 |" in md
    assert "failed: boom" in md and "traceback" not in md
    assert "| UNet | sup | 600 | 5 | 1.0e-05 | 2.0e-07 | – | – | – |" in md
    assert "| ours | 5.0 | 3.000 | 2.00x |" in md


def test_official_checkout_is_recognised():
    checkout = Path(os.environ.get("SSIR_OFFICIAL_CMT", "/work/official/CMT"))
    if official.official_missing(checkout) is not None:
        pytest.skip(f"no official SSLL checkout at {checkout} (set SSIR_OFFICIAL_CMT)")
    for bb in protocol.BACKBONES.values():
        for kind in ("Baseline", "Contra"):
            cfg = official.read_official_json(checkout / "config" / f"{bb.official_prefix}_{kind}.json")
            assert cfg["model"]["which_losses"]["supervised_loss"]
        finish, semi_start = official.official_epochs(checkout, bb)
        assert finish > semi_start > 1
