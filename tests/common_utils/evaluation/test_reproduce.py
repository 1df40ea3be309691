"""The reproduction report (scripts/reproduce_tables.py) end to end on tiny checkpoints and data."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
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
    parse_weight_spec,
    split_network_args,
)
from data.layouts import ALL_LOWLIGHT
from foundation.errors import UserError
from models import build_network
from tests.common_utils.evaluation.test_layouts_eval import make_lowlight_root
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


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
    blocks = report.split(f"### {backbone}\n", 1)[1].strip().split("\n\n")
    section = next(b for b in blocks if b.startswith("|"))
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
    assert len(rows) == 18  # LOL-v1 and the paper's five sets x 3 metrics
    for ds, metric, b_ours, b_paper, _, s_ours, s_paper, *_ in rows:
        i = metrics.index(metric)
        if ds == "LOL-v1":  # not in the paper's table, not in this data root
            assert b_paper == s_paper == "–" and b_ours == s_ours == "missing"
            continue
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
    rep.plot_dehazing({"RtxICE-Net": {"network": "RtxICE-Net", "scores": {"RICE-I": {"psnr": 22.0, "ssim": 0.9}}}},
                      rep.paper_dehazing(tables), tmp_path)
    assert texts.count("missing") == 6  # 3 unmeasured cells x (PSNR, SSIM)


def _weights_file(path: Path, network: str, seed: int, **args) -> None:
    """A framework weights file like the committed pretrained/ ones (its network recorded, no variant in its name)."""
    torch.manual_seed(seed)
    if network == "ICEML":
        nets = {"rtx": build_network("RtxICE-Net", **args).state_dict(),
                "asm": build_network("ASMICE-Net", **args).state_dict()}
        network = "RtxICE-Net"
    else:
        nets = {"teacher": build_network(network, **args).state_dict()}
    torch.save({"format": "ssir-weights-v1", "network": network, "network_args": args, "networks": nets,
                "best_network": "teacher" if "teacher" in nets else None, "iter": 1}, path)


def _lol_and_sots(root: Path) -> Path:
    from tests.common_utils.evaluation.test_layouts_eval import _pair

    rng = np.random.default_rng(7)
    for n in ("1", "22"):
        _pair(root / f"LOL/eval15/low/{n}.png", root / f"LOL/eval15/high/{n}.png", rng)
    _pair(root / "SOTS/indoor/hazy/1400_1.png", root / "SOTS/indoor/gt/1400.png", rng)
    return root


def test_committed_style_weights_in_a_folder_are_identified_and_every_missing_cell_named(tmp_path, capsys):
    data = _lol_and_sots(tmp_path / "data")
    ckpts = tmp_path / "pretrained"
    ckpts.mkdir()
    _weights_file(ckpts / "unet_lol_real.pth", "UNet", 0, width=4)
    _weights_file(ckpts / "iceml_sots_stage1.pth", "ICEML", 1, dim=16)
    (ckpts / "notes.pth").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    argv = ["--checkpoints", str(ckpts), "--data-root", str(data), "--out", str(out), "--device", "cpu",
            "--workers", "0", "--no-lpips", "--max-images", "1", "--datasets", "LOL-v1,LOLv2,SOTS-indoor,RICE-I"]
    assert _script().main(argv) == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    rows = _table_rows(report, "UNet [unet_lol_real]")
    assert [r[:2] for r in rows[:3]] == [["LOL-v1", "PSNR"], ["LOL-v1", "SSIM"], ["LOL-v1", "LPIPS"]]
    assert float(rows[0][2]) > 0 and rows[3][2] == "missing"  # LOL-v1 scored, LOLv2 not on disk
    assert rows[3][3] == "20.01"  # the paper's UNet baseline on LOLv2 beside it
    assert "| RtxICE-Net [iceml_sots_stage1] | SOTS-indoor |" in report
    assert "| ASMICE-Net [iceml_sots_stage1] | RICE-I | missing |" in report
    cells = report.split("## Cells not measured", 1)[1]
    assert "- UNet baseline: every cell (no checkpoint given)" in cells
    assert "- CIDNet w/ SSLL: every cell (no checkpoint given)" in cells
    assert "- LOLv2, every metric, of UNet [unet_lol_real]: not on disk" in cells
    assert "- RICE-I, every metric, of RtxICE-Net [iceml_sots_stage1], ASMICE-Net [iceml_sots_stage1]" in cells
    assert "notes.pth (not a checkpoint of a known network)" in report
    result = json.loads((out / "report.json").read_text())
    assert result["lowlight"]["other"]["UNet [unet_lol_real]"]["scores"]["LOL-v1"]["psnr"] > 0
    assert result["cells_not_measured"] == [line[2:] for line in cells.strip().splitlines()]


def test_weight_mapping_places_a_file_in_the_table(tmp_path, capsys):
    data = _lol_and_sots(tmp_path / "data")
    _weights_file(tmp_path / "anything.pth", "UNet", 0, width=4)
    out = tmp_path / "out"
    argv = ["--weight", f"UNet_baseline={tmp_path / 'anything.pth'}", "--data-root", str(data), "--out", str(out),
            "--device", "cpu", "--workers", "0", "--no-lpips", "--datasets", "LOL-v1"]
    assert _script().main(argv) == 0, capsys.readouterr().err
    rows = _table_rows((out / "report.md").read_text(), "UNet")
    assert rows[0][:2] == ["LOL-v1", "PSNR"] and float(rows[0][2]) > 0 and rows[0][5] == "–"
    with pytest.raises(UserError, match="no network named 'Foo'"):
        parse_weight_spec(f"Foo_ssll={tmp_path / 'anything.pth'}")
    assert _script().main(["--weight", "UNet_baseline", "--out", str(out)]) == 2


def test_radar_footnote_lists_every_missing_cell_inside_the_figure(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    from common_utils.evaluation import reproduce as rep

    seen: list[tuple[str, bool]] = []
    original = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for t in fig.texts:
            ext = t.get_window_extent(renderer)
            seen.append((t.get_text(), ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1 and ext.x0 >= box.x0 - 1
                         and ext.x1 <= box.x1 + 1))
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    rep.plot_radar({}, rep.paper_lowlight(), tmp_path, datasets=["LOLv2"])
    note = next((text, inside) for text, inside in seen if text.startswith("not measured"))
    flat = note[0].replace("\n", " ")
    for b in rep.paper_lowlight():
        for m in ("PSNR", "SSIM", "LPIPS"):
            assert f"{b} baseline/ssll {m}" in flat  # 7 backbones x 3 metrics, none cut off
    assert "..." not in flat and note[1]
