"""The ICEML command-line scripts (test_rtxice_only, test_asmice_only, model_size, model_latency), run in-process."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.image_io import read_image, write_image
from tests.helpers import REPO_ROOT, make_image

ROOT = REPO_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_iceml_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def combined_ckpt(tmp_path_factory) -> Path:
    """An official-layout CombinedModel checkpoint (a plain state dict, keys asm_model.* / retinex_model.*)."""
    from models.iceml_nets import ICEMLCombinedModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "final_dehazing_model.pth"
    torch.save(ICEMLCombinedModel().state_dict(), path)
    return path


@pytest.fixture()
def hazy_dir(tmp_path) -> Path:
    """Two images whose natural order differs from the plain one; one size is not a multiple of 4."""
    d = tmp_path / "test_input"
    write_image(d / "img10.png", make_image((40, 52), 1))
    write_image(d / "img2.jpg", make_image((42, 50), 2))
    return d


def test_natural_order():
    from common_utils.dehaze_tools import natural_key

    names = ["img10.png", "img2.jpg", "Img1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["Img1.png", "img2.jpg", "img2b.png", "img10.png"]


def test_rtxice_resized_outputs(combined_ckpt, hazy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _script("test_rtxice_only").main(["--input", str(hazy_dir), "--output", str(out),
                                           "--weights", str(combined_ckpt), "--size", "32", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == ["Image Processed:img2.jpg", "Image Processed:img10.png"]
    assert len(printed) == 3 and printed[2].startswith("RtxICE-Net: processed 2 of 2 image(s)")  # the count line
    assert sorted(p.name for p in (out / "J_RtxICE-Net").iterdir()) == ["img10.png", "img2.jpg"]
    assert (out / "J_RtxICE-Net" / "img2.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG kept as JPEG
    for f in (out / "J_RtxICE-Net").iterdir():
        assert read_image(f).shape == (32, 32, 3)


def test_rtxice_matches_network_on_png(combined_ckpt, tmp_path):
    """The saved image is clamp(I * lr_inv, 0, 1) of the checkpoint's retinex_model, 8-bit rounded."""
    from models.iceml_nets import RtxICENet

    d = tmp_path / "in"
    img = make_image((32, 32), 5)
    write_image(d / "a.png", img)
    out = tmp_path / "out"
    assert _script("test_rtxice_only").main(["--input", str(d), "--output", str(out), "--weights",
                                             str(combined_ckpt), "--size", "32", "--device", "cpu"]) == 0
    sd = torch.load(combined_ckpt, weights_only=True)
    net = RtxICENet().eval()
    net.load_state_dict({k[len("retinex_model."):]: v for k, v in sd.items() if k.startswith("retinex_model.")})
    with torch.no_grad():
        ref = net(torch.from_numpy(img).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(read_image(out / "J_RtxICE-Net" / "a.png") - ref).max() <= 1 / 255 + 1e-6


def test_asmice_keeps_size_with_size_0(combined_ckpt, hazy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _script("test_asmice_only").main(["--input", str(hazy_dir), "--output", str(out),
                                           "--weights", str(combined_ckpt), "--size", "0", "--device", "cpu"])
    assert rc == 0
    assert capsys.readouterr().out.count("Image Processed:") == 2
    for folder in ("J_ASMICE-Net", "trm_ASMICE-Net"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["img10.png", "img2.jpg"]
        assert read_image(out / folder / "img10.png").shape == (40, 52, 3)
        assert read_image(out / folder / "img2.jpg").shape == (42, 50, 3)
    trm = read_image(out / "trm_ASMICE-Net" / "img10.png")
    assert np.array_equal(trm[..., 0], trm[..., 1]) and np.array_equal(trm[..., 0], trm[..., 2])


def test_plain_and_training_checkpoints_are_accepted(hazy_dir, tmp_path):
    from models.iceml_nets import ASMICENet, RtxICENet

    plain = tmp_path / "asm.pth"
    torch.save({"params": ASMICENet(dim=16).state_dict()}, plain)
    train = tmp_path / "train.pth"
    torch.save({"format": "ssir-weights-v1", "network": "RtxICE-Net",
                "networks": {"rtx": RtxICENet(dim=16).state_dict(), "asm": ASMICENet(dim=16).state_dict()}}, train)
    common = ["--input", str(hazy_dir), "--size", "16", "--device", "cpu"]
    assert _script("test_asmice_only").main(common + ["--output", str(tmp_path / "a"), "--weights", str(plain)]) == 0
    assert _script("test_rtxice_only").main(common + ["--output", str(tmp_path / "b"), "--weights", str(train)]) == 0
    assert len(list((tmp_path / "a" / "trm_ASMICE-Net").iterdir())) == 2
    assert len(list((tmp_path / "b" / "J_RtxICE-Net").iterdir())) == 2


def test_missing_weights_says_where_they_go(hazy_dir, tmp_path, capsys):
    rc = _script("test_asmice_only").main(["--input", str(hazy_dir), "--output", str(tmp_path / "o"),
                                           "--weights", str(tmp_path / "nope.pth"), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "nope.pth" in err and "models/final_dehazing_model.pth" in err


def test_foreign_and_wrong_iceml_checkpoints_are_named(hazy_dir, tmp_path, capsys):
    from models import build_network
    from models.iceml_nets import RtxICENet

    unet = tmp_path / "unet.pth"
    torch.save(build_network("UNet", width=4).state_dict(), unet)
    rtx = tmp_path / "rtx.pth"
    torch.save(RtxICENet(dim=16).state_dict(), rtx)
    common = ["--input", str(hazy_dir), "--output", str(tmp_path / "o"), "--size", "16", "--device", "cpu"]
    assert _script("test_rtxice_only").main(common + ["--weights", str(unet)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "UNet" in err and "\n" not in err
    assert _script("test_asmice_only").main(common + ["--weights", str(rtx)]) == 2
    err = capsys.readouterr().err.strip()
    assert "RtxICE-Net" in err and "test_rtxice_only.py" in err


def test_bad_size_is_a_user_error(combined_ckpt, hazy_dir, tmp_path, capsys):
    rc = _script("test_rtxice_only").main(["--input", str(hazy_dir), "--output", str(tmp_path / "o"),
                                           "--weights", str(combined_ckpt), "--size", "30", "--device", "cpu"])
    assert rc == 2 and "multiple of 4" in capsys.readouterr().err


def test_model_size_file_is_the_original_two_lines(tmp_path, capsys):
    out = tmp_path / "out"
    assert _script("model_size").main(["--output", str(out)]) == 0
    text = (out / "model_info.txt").read_text()
    assert text == "ASMICE-Net: 1.068 Million params, 4.074 MB\nRtxICE-Net: 0.534 Million params, 2.037 MB\n"
    printed = capsys.readouterr().out
    assert printed.startswith(f"Model info saved to {out / 'model_info.txt'}\n") and printed.endswith(text)


LATENCY_LINES = [
    r"Image size: \(\d+, \d+\)",
    r"ASMICE-Net Average Latency:  \d+\.\d{3} seconds",
    r"ASMICE-Net FPS:  \d+\.\d",
    r"RtxICE-Net Average Latency:  \d+\.\d{3} seconds",
    r"RtxICE-Net FPS:  \d+\.\d",
    r"",
]


def test_model_latency_file_format_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    js = tmp_path / "lat.json"
    rc = _script("model_latency").main(["--sizes", "32", "16x24", "--warmup", "1", "--repeats", "2", "--device",
                                        "cpu", "--output", str(out), "--json", str(js), "--cuda-graph"])
    assert rc == 0
    lines = (out / "latency_results.txt").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 2 * len(LATENCY_LINES) + 1
    for i, line in enumerate(lines[:-1]):
        assert re.fullmatch(LATENCY_LINES[i % len(LATENCY_LINES)], line), line
    assert lines[0] == "Image size: (32, 32)" and lines[6] == "Image size: (16, 24)"
    assert "ignored" in capsys.readouterr().err  # --cuda-graph on CPU: a message, not an error
    report = json.loads(js.read_text())
    assert report["torch"] == torch.__version__ and report["device"]["name"]
    assert report["options"]["cuda_graph"] is False and report["options"]["dtype"] == "float32"
    assert [(r["network"], r["size"]) for r in report["results"]] == [
        ("ASMICE-Net", [32, 32]), ("ASMICE-Net", [16, 24]), ("RtxICE-Net", [32, 32]), ("RtxICE-Net", [16, 24])]
    for r in report["results"]:
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["fps"] == pytest.approx(1 / r["median_s"])


def test_model_latency_compile_falls_back_to_eager_with_a_note(tmp_path, capsys, monkeypatch):
    """--compile where compilation fails: timed eager, said once, recorded in the JSON."""
    def failing_compile(fn, dynamic):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    js = tmp_path / "lat.json"
    rc = _script("model_latency").main(["--sizes", "32", "--warmup", "1", "--repeats", "2", "--device", "cpu",
                                        "--output", str(tmp_path / "out"), "--json", str(js), "--compile"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("--compile ignored") == 2 and "no C++ compiler" in err  # once per network
    results = json.loads(js.read_text())["results"]
    assert [r["compiled"] for r in results] == [False, False] and all(r["median_s"] > 0 for r in results)


def test_model_latency_rejects_bad_sizes(tmp_path, capsys):
    rc = _script("model_latency").main(["--sizes", "30", "--output", str(tmp_path)])
    assert rc == 2 and "multiples of 4" in capsys.readouterr().err


def test_scripts_run_without_pythonpath(tmp_path):
    """`python scripts/x.py --help` works from anywhere without PYTHONPATH (the repo root is inserted)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "test_asmice_only.py"), "--help"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--weights" in r.stdout and "models/final_dehazing_model.pth" in r.stdout
