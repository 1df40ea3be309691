"""ONNX export (dynamic H/W, parity with eager PyTorch) and running exported files in the CLIs."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from common_utils.onnx_export import OptionalDependencyMissing, _require, parity_sizes
from data.image_io import read_image, write_image
from foundation.errors import UserError
from models import build_network
from tests.helpers import REPO_ROOT, make_image

ROOT = REPO_ROOT
MISSING = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"optional package(s) {', '.join(MISSING)} not installed "
                                "(pip install onnx onnxruntime): ONNX export is not tested")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_export_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_optional_package_names_the_install() -> None:
    with pytest.raises(OptionalDependencyMissing, match="pip install onnx onnxscript onnxruntime"):
        _require("onnx_package_that_is_not_there")


def test_parity_crops_are_new_sizes_of_the_multiple() -> None:
    img = torch.rand(1, 3, 50, 75)
    for m in (1, 4, 8):
        first, second = parity_sizes(img, m)
        assert [s % m for s in (*first.shape[-2:], *second.shape[-2:])] == [0, 0, 0, 0]
        assert first.shape[-2:] != second.shape[-2:] and second.shape[-2] > second.shape[-1]  # portrait
    assert [s % 2 for s in parity_sizes(img, 1)[1].shape[-2:]] == [1, 1]  # odd: internal padding is exercised


@needs_onnx
@pytest.mark.parametrize("name, kwargs", [("UNet", {"width": 4}), ("RtxICE-Net", {"dim": 16})])
def test_export_is_dynamic_and_matches_eager(tmp_path, name, kwargs) -> None:
    from common_utils.inference import forward_padded
    from common_utils.onnx_export import OnnxNetwork, export_onnx

    torch.manual_seed(0)
    net = build_network(name, **kwargs).eval()
    path = export_onnx(net, tmp_path / "net.onnx", torch.rand(1, 3, 32, 48), name)
    runner = OnnxNetwork(path, threads=1)
    assert runner.network == name and runner.size_multiple == getattr(net, "size_multiple", 1)
    for h, w in ((32, 48), (44, 28), (30, 42)):  # the tracing size, then sizes it never saw (30x42: padded)
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            want = forward_padded(net, x)
        got = forward_padded(runner, x)
        assert got.shape == want.shape == x.shape
        assert float((got - want).abs().max()) < 1e-5
    if name == "RtxICE-Net":  # the maps are exported too, in forward_maps order
        x = torch.rand(1, 3, 24, 36)
        with torch.no_grad():
            want = net.forward_maps(x)
        got = runner.forward_maps(x)
        assert runner.output_names == ["output", "map_1"]
        assert max(float((a - b).abs().max()) for a, b in zip(got, want)) < 1e-5
        # a size the graph cannot take (unpadded, not a multiple of 4) is one line naming the file
        with pytest.raises(UserError, match=r"net.onnx does not run at 42x30"):
            runner(torch.rand(1, 3, 30, 42))


@needs_onnx
@pytest.mark.parametrize("trace_hw, run_hw", [((16, 20), (56, 72)), ((56, 72), (16, 20))])
def test_nafnet_local_pooling_exports_for_every_size(tmp_path, trace_hw, run_hw) -> None:
    # NAFNetLocal pools globally where its window covers the feature map and locally elsewhere;
    # a graph traced on one side of that switch must still be right on the other side
    from common_utils.onnx_export import OnnxNetwork, export_onnx

    torch.manual_seed(0)
    net = build_network("NAFNet", width=4, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1],
                        train_size=16).eval()  # windows 24, 12, 6: 16x20 pools globally at every level, 56x72 locally
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():  # beta/gamma start at zero: make every block count
            if name.endswith((".beta", ".gamma")):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    runner = OnnxNetwork(export_onnx(net, tmp_path / "nafnet.onnx", torch.rand(1, 3, *trace_hw), "NAFNet"), threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
        traced = torch.jit.trace(net, torch.rand(1, 3, *trace_hw))
    for hw in (trace_hw, run_hw, (37, 61)):
        x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0]))
        with torch.no_grad():
            want = net(x)
        assert float((runner(x) - want).abs().max()) < 1e-5
        with torch.no_grad():
            assert float((traced(x) - want).abs().max()) < 1e-5


@needs_onnx
def test_export_script_reports_parity_and_torchscript(tmp_path, capsys) -> None:
    import json

    weights = tmp_path / "unet.pth"
    torch.manual_seed(3)
    torch.save(build_network("UNet", width=4).state_dict(), weights)
    img = tmp_path / "photo.png"
    write_image(img, make_image((40, 56), 1))
    rc = _script("export_onnx").main(["-n", "UNet", "-w", str(weights), "--network-args", '{"width": 4}',
                                      "--out", str(tmp_path / "u.onnx"), "--torchscript", "--image", str(img),
                                      "--size", "0", "--json", str(tmp_path / "u.json")])
    assert rc == 0
    record = json.loads((tmp_path / "u.json").read_text())
    sizes = [row["size"] for row in record["onnx"]["parity"]]
    assert sizes == ["56x40", "19x29"]
    assert all(row["max_abs_diff"] < 1e-5 for row in record["onnx"]["parity"])
    assert record["torchscript"]["status"] == "exported" and (tmp_path / "u.pt").is_file()
    assert "parity vs eager fp32" in capsys.readouterr().out


@needs_onnx
def test_enhance_cli_runs_an_onnx_file_like_the_checkpoint(tmp_path) -> None:
    from common_utils.evaluation import eval_with_any_backbone as enhance
    from common_utils.onnx_export import export_onnx

    torch.manual_seed(1)
    net = build_network("UNet", width=4).eval()
    torch.save(net.state_dict(), tmp_path / "unet.pth")
    export_onnx(net, tmp_path / "unet.onnx", torch.rand(1, 3, 32, 32), "UNet")
    photos = tmp_path / "photos"
    write_image(photos / "a.png", make_image((36, 52), 2))
    common = ["--set", str(photos), "--network-args", '{"width": 4}', "--workers", "0", "--threads", "1"]
    assert enhance.main(["-n", "UNet", "-w", str(tmp_path / "unet.pth"), "-o", str(tmp_path / "pt"), *common]) == 0
    assert enhance.main(["-n", "UNet", "-w", str(tmp_path / "unet.onnx"), "-o", str(tmp_path / "ox"), *common]) == 0
    a, b = read_image(tmp_path / "pt" / "a.png"), read_image(tmp_path / "ox" / "a.png")
    assert a.shape == b.shape == (36, 52, 3)
    assert np.abs(a - b).max() <= 1 / 255 + 1e-6  # the same up to 8-bit rounding
    with pytest.raises(UserError, match="exported from UNet, not CIDNet"):
        enhance.run(enhance.build_parser().parse_args(["-n", "CIDNet", "-w", str(tmp_path / "unet.onnx"),
                                                      "-o", str(tmp_path / "bad"), *common]))


@needs_onnx
def test_dehaze_script_runs_an_onnx_file_with_its_transmission_map(tmp_path) -> None:
    from common_utils.dehaze_tools import JOBS, dehaze_folder
    from common_utils.onnx_export import export_onnx

    torch.manual_seed(2)
    net = build_network("ASMICE-Net", dim=16).eval()
    torch.save(net.state_dict(), tmp_path / "asm.pth")
    export_onnx(net, tmp_path / "asm.onnx", torch.rand(1, 3, 32, 32), "ASMICE-Net")
    hazy = tmp_path / "hazy"
    write_image(hazy / "h1.png", make_image((30, 46), 4))
    for kind in ("pth", "onnx"):
        dehaze_folder(JOBS["asm"], hazy, tmp_path / kind, tmp_path / f"asm.{kind}", size=0, device="cpu")
    for folder in JOBS["asm"].folders:  # dehazed image and transmission map
        a, b = read_image(tmp_path / "pth" / folder / "h1.png"), read_image(tmp_path / "onnx" / folder / "h1.png")
        assert a.shape == b.shape == (30, 46, 3)
        assert np.abs(a - b).max() <= 1 / 255 + 1e-6
    with pytest.raises(UserError, match="exported from ASMICE-Net, not RtxICE-Net; run scripts/test_asmice_only.py"):
        dehaze_folder(JOBS["rtx"], hazy, tmp_path / "bad", tmp_path / "asm.onnx", size=0, device="cpu")


@needs_onnx
def test_onnx_benchmark_warms_up_every_pair_and_keeps_every_row(tmp_path) -> None:
    import json

    out = tmp_path / "bench.json"
    # --max-forward-s 0: every forward counts as slow: one timed call, but still a warm-up at its own size
    bench = _script("benchmark_onnx")
    assert bench.main(["--networks", "RtxICE-Net", "--sizes", "48x32,32x32", "--threads", "1,2", "--repeats", "2",
                       "--max-forward-s", "0", "--budget-s", "600", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["complete"] is True
    rows = [(r["threads"], r["size"], "warmup_s" in r, r["eager"]["n"], r["onnxruntime"]["n"]) for r in data["rows"]]
    assert rows == [(1, "32x32", True, 1, 1), (1, "48x32", True, 1, 1), (2, "32x32", True, 1, 1),
                    (2, "48x32", True, 1, 1)]
    assert bench.main(["--networks", "RtxICE-Net", "--sizes", "32x32,48x32", "--repeats", "2", "--max-forward-s",
                       "60", "--skip", "RtxICE-Net@48x32=about 9 GB", "--out", str(out)]) == 0
    row, skipped = json.loads(out.read_text())["rows"]
    assert "warmup_s" in row and row["eager"]["n"] == row["onnxruntime"]["n"] == 2
    assert skipped["status"] == "skipped" and skipped["note"] == "not run: about 9 GB"
    assert all(r["load_before"] is not None and r["peak_rss_mib"] > 0 for r in data["rows"])
