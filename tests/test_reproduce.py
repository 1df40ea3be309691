"""The reproduction report (scripts/reproduce_tables.py) end to end on tiny checkpoints and data."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from common_utils.checkpoint import load_network
from common_utils.evaluation.reproduce import (
    COMBINED_CHECKPOINT,
    count_improved,
    find_checkpoints,
    find_dehazing_checkpoints,
    load_paper_tables,
    paper_lowlight,
    split_network_args,
)
from data.layouts import ALL_LOWLIGHT
from models import build_network
from tests.test_layouts_eval import make_lowlight_root

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_tables", ROOT / "scripts/reproduce_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_figures_improved_count():
    paper = paper_lowlight()
    assert set(paper) == {"UNet", "LLFormer", "RetinexFormer", "MIRNet", "CIDNet", "NAFNet", "Restormer"}
    assert count_improved(paper) == (98, 105)


def test_checkpoint_naming(tmp_path):
    for name in ("UNet_baseline.pth", "unet_SSLL.pth", "MIRNetv2_baseline.pth", "Foo_ssll.pth", "other.pth",
                 "RtxICE-Net.pth"):
        (tmp_path / name).write_bytes(b"")
    found, ignored = find_checkpoints(tmp_path)
    assert {b: sorted(v) for b, v in found.items()} == {"UNet": ["baseline", "ssll"], "MIRNet": ["baseline"]}
    assert any("Foo_ssll.pth" in s for s in ignored) and "other.pth" in ignored
    assert find_dehazing_checkpoints(tmp_path) == {"RtxICE-Net": tmp_path / "RtxICE-Net.pth"}
    assert split_network_args({"unet": {"width": 4}}) == {"UNet": {"width": 4}}
    assert split_network_args({"width": 4}) == {"*": {"width": 4}}


def test_combined_dehazing_checkpoint(tmp_path):
    torch.manual_seed(0)
    rtx, asm = build_network("RtxICE-Net"), build_network("ASMICE-Net")
    combined = {**{f"retinex_model.{k}": v for k, v in rtx.state_dict().items()},
                **{f"asm_model.{k}": v for k, v in asm.state_dict().items()}}
    torch.save(combined, tmp_path / COMBINED_CHECKPOINT)
    found = find_dehazing_checkpoints(tmp_path)
    assert found == {"RtxICE-Net": tmp_path / COMBINED_CHECKPOINT, "ASMICE-Net": tmp_path / COMBINED_CHECKPOINT}
    for name, ref in (("RtxICE-Net", rtx), ("ASMICE-Net", asm)):
        net, _ = load_network(name, found[name])
        for k, v in ref.state_dict().items():
            assert torch.equal(net.state_dict()[k], v)


def test_framework_iceml_checkpoint_is_scored_as_both_networks(tmp_path):
    torch.manual_seed(1)
    rtx, asm = build_network("RtxICE-Net"), build_network("ASMICE-Net")
    torch.save({"format": "ssir-train-v1", "network": "RtxICE-Net", "network_args": {},
                "networks": {"rtx": rtx.state_dict(), "asm": asm.state_dict()}, "iter": 1},
               tmp_path / COMBINED_CHECKPOINT)
    found = find_dehazing_checkpoints(tmp_path)
    for name, ref in (("RtxICE-Net", rtx), ("ASMICE-Net", asm)):
        net, _ = load_network(name, found[name])
        assert all(torch.equal(net.state_dict()[k], v) for k, v in ref.state_dict().items())


def _table_rows(report: str, backbone: str) -> list[list[str]]:
    section = report.split(f"### {backbone}\n", 1)[1].strip().split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]


def test_reproduce_tables_end_to_end(tmp_path, capsys):
    data = make_lowlight_root(tmp_path / "data")
    shutil.rmtree(data / "SMID")
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for seed, name in ((0, "UNet_baseline.pth"), (1, "unet_SSLL.pth")):
        torch.manual_seed(seed)
        torch.save(build_network("UNet", width=4).state_dict(), ckpts / name)
    out = tmp_path / "out"
    plot = importlib.util.find_spec("matplotlib") is not None
    argv = ["--checkpoints", str(ckpts), "--data-root", str(data), "--out", str(out), "--network-args",
            '{"UNet": {"width": 4}}', "--device", "cpu", "--workers", "0", "--no-lpips"] + (["--plot"] if plot else [])
    assert _script().main(argv) == 0, capsys.readouterr().err

    report = (out / "report.md").read_text()
    assert "paper: **98 of 105**" in report
    assert "No dehazing checkpoints" in report
    paper = load_paper_tables()["ssll"]["results"]["UNet"]
    metrics = ["PSNR", "SSIM", "LPIPS"]
    rows = _table_rows(report, "UNet")
    assert len(rows) == 15
    for ds, metric, b_ours, b_paper, _, s_ours, s_paper, *_ in rows:
        i = metrics.index(metric)
        assert float(b_paper) == paper["baseline"][ds][i]
        assert float(s_paper) == paper["ssll"][ds][i]
        if ds == "SMID":
            assert b_ours == s_ours == "missing"
        elif metric == "LPIPS":
            assert b_ours == "n/a"
        else:
            assert float(b_ours) > 0

    result = json.loads((out / "report.json").read_text())
    assert result["lowlight"]["improved"]["paper"] == [98, 105]
    assert "SMID" in result["lowlight"]["missing"]
    ours = result["lowlight"]["ours"]
    run = json.loads((out / "runs/UNet_baseline/summary.json").read_text())
    assert ours["UNet"]["baseline"]["LOLv2"]["psnr"] == pytest.approx(run["LOLv2"]["psnr"])
    imp, tot = count_improved(ours)
    assert tot == 8  # 4 datasets x (PSNR, SSIM); SMID missing, LPIPS off
    assert f"ours: **{imp} of {tot}**" in report
    if plot:
        assert all((out / f"radar_{ds}.png").is_file() for ds in ALL_LOWLIGHT)
        assert (out / "bars_dehazing.png").is_file()


def test_plots_mark_missing_cells_plainly(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from common_utils.evaluation import reproduce as rep

    texts: list[str] = []
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    tables = load_paper_tables()
    rep.plot_radar({"UNet": {"baseline": {"LOLv2": {"psnr": 20.0, "ssim": 0.8, "lpips": None}}}},
                   paper_lowlight(tables), tmp_path)
    assert any("UNet\n(ours ssll: missing)" == t for t in texts)
    assert any(t.startswith("not measured") and "baseline/ssll PSNR" in t and "UNet ssll PSNR" in t for t in texts)
    texts.clear()
    rep.plot_dehazing({"RtxICE-Net": {"RICE-I": {"psnr": 22.0, "ssim": 0.9}}}, rep.paper_dehazing(tables), tmp_path)
    assert texts.count("missing") == 6  # 3 unmeasured cells x (PSNR, SSIM)
