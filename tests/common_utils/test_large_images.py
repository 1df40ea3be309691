"""Large images: tiled automatically, or refused one by one with the ``--tile`` hint; the rest always go on.

A network that runs out of memory above a pixel budget stands for a GPU (or the CPU allocator) of
that size: torch raises the same ``OutOfMemoryError``. The folder's other images must still be
scored or enhanced, the large one either tiled or named with the hint, and the timing honest.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

from common_utils.evaluation import eval_with_any_backbone
from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from data.image_io import read_image, write_image
from tests.helpers import REPO_ROOT, make_image

ROOT = REPO_ROOT


class MemoryBound(nn.Module):
    """A pointwise network whose forward "runs out of memory" above ``limit`` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)
        self.limit = limit
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        self.calls.append((h, w))
        if h * w > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {h * w * 64 * 4 >> 20} MiB")
        return torch.sigmoid(self.conv(x))


def _batches(sizes):
    for name, (h, w) in sizes:
        img = torch.from_numpy(make_image((h, w), len(name))).permute(2, 0, 1)[None]
        yield {"lq": img * 0.5, "gt": img, "name": [name]}


SIZES = [("a", (24, 24)), ("big", (64, 96)), ("c", (24, 30))]


def test_a_large_image_is_tiled_automatically_and_scores_as_untiled():
    net = MemoryBound(limit=48 * 48)
    proto = EvalProtocol(auto_tile_pixels=40 * 40, auto_tile=32, tile_overlap=8)
    res = evaluate(net, _batches(SIZES), torch.device("cpu"), proto)
    assert [r["name"] for r in res.rows] == ["a", "big", "c"] and res.tiled == ["big"] and not res.skipped
    assert max(h * w for h, w in net.calls) <= 32 * 32 or (24, 30) in net.calls
    untiled = evaluate(MemoryBound(limit=10 ** 9), _batches(SIZES), torch.device("cpu"),
                       EvalProtocol(auto_tile_pixels=None))
    for r, u in zip(res.rows, untiled.rows):  # a pointwise network: tiling changes nothing
        assert r["psnr"] == pytest.approx(u["psnr"], abs=1e-4)
    summary = res.summary()
    assert summary["tiled_automatically"] == ["big"] and summary["images"] == 3


def test_an_image_that_runs_out_of_memory_is_named_with_the_hint_and_the_rest_go_on():
    net = MemoryBound(limit=48 * 48)
    res = evaluate(net, _batches(SIZES), torch.device("cpu"), EvalProtocol(auto_tile_pixels=None))
    assert [r["name"] for r in res.rows] == ["a", "c"]
    assert len(res.skipped) == 1 and "big: 96x64 pixels ran out of memory" in res.skipped[0]
    assert "use --tile" in res.skipped[0]


def test_ms_per_image_counts_the_first_image():
    res = evaluate(MemoryBound(10 ** 9), _batches(SIZES), torch.device("cpu"), EvalProtocol())
    res.latencies = [6.0, 0.1, 0.1]  # a slow first (large) image
    s = res.summary()
    assert s["ms_per_image"] == pytest.approx(2066.67, abs=0.01) and s["latency_ms"] == pytest.approx(100.0)


def test_enhancing_a_folder_tiles_a_4k_class_photo_or_skips_it_and_goes_on(tmp_path, capsys, monkeypatch):
    src = tmp_path / "photos"
    write_image(src / "a_small.png", make_image(32, 1))
    write_image(src / "b_large.png", np.full((2000, 2100, 3), 0.4, np.float32))  # 4.2 MP, above 2048x2048
    write_image(src / "c_small.jpg", make_image((28, 36), 2))
    net = MemoryBound(limit=1200 * 1200)
    monkeypatch.setattr(eval_with_any_backbone, "load_network", lambda *a, **k: (net, {"network": "Bound"}))
    base = ["-n", "UNet", "-w", "unused.pth", "--device", "cpu", "--workers", "0", "--set", str(src)]
    assert eval_with_any_backbone.main([*base, "--output", str(tmp_path / "tiled")]) == 0
    out = capsys.readouterr().out
    assert "1 large image(s) ran in tiles of 1024" in out and "enhanced 3 of 3 image(s)" in out
    assert read_image(tmp_path / "tiled" / "b_large.png").shape == (2000, 2100, 3)
    assert max(h * w for h, w in net.calls) <= 1024 * 1024
    assert eval_with_any_backbone.main([*base, "--output", str(tmp_path / "untiled"), "--tile", "0"]) == 0
    cap = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "untiled").glob("*.png")) == ["a_small.png", "c_small.png"]
    assert "b_large.png" in cap.err and "2100x2000 pixels ran out of memory" in cap.err and "--tile 512" in cap.err
    assert "enhanced 2 of 3 image(s)" in cap.out and "skipped 1 out of memory" in cap.out
    assert "ms/image on average, the first included" in cap.out


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_large_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dehazing_at_full_size_tiles_large_images_and_skips_unreadable_ones(tmp_path, capsys, monkeypatch):
    import common_utils.memory_budget as budget
    from models.iceml_nets import ICEMLCombinedModel

    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(ICEMLCombinedModel().state_dict(), weights)
    src = tmp_path / "in"
    write_image(src / "img1.png", make_image((40, 52), 1))
    write_image(tmp_path / "b.bmp", make_image((36, 44), 2))
    (src / "img2.png").write_bytes((tmp_path / "b.bmp").read_bytes())  # a BMP named .png
    (src / "img3.png").write_text("not an image")
    monkeypatch.setattr(budget, "AUTO_TILE_PIXELS", 32 * 32)  # "large" for this test: above 32x32
    monkeypatch.setattr(budget, "AUTO_TILE", 32)
    rc = _script("test_asmice_only").main(["--input", str(src), "--output", str(tmp_path / "out"), "--weights",
                                           str(weights), "--size", "0", "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.count("Image Processed:") == 2
    assert "processed 2 of 3 image(s)" in cap.out and "2 ran in tiles" in cap.out and "skipped 1" in cap.out
    assert "img3.png" in cap.err and "content is not an image" in cap.err
    for folder in ("J_ASMICE-Net", "trm_ASMICE-Net"):
        assert read_image(tmp_path / "out" / folder / "img1.png").shape == (40, 52, 3)
        assert read_image(tmp_path / "out" / folder / "img2.png").shape == (36, 44, 3)


class CountingLPIPS(nn.Module):
    """A stand-in LPIPS (mean absolute difference) that records the sizes it was asked to score."""

    description = "test LPIPS"

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return (x - y).abs().flatten(1).mean(1)


def test_an_image_above_the_metric_budget_is_scored_in_strips_without_the_whole_image_metrics(capsys):
    """Above ``full_metric_pixels`` PSNR/SSIM come from strips and equal the whole-image values;
    LPIPS and MS-SSIM are left out for that image only, named in the summary and in the final note."""
    from common_utils.evaluation.runner import report_left_out

    sizes = [("a", (24, 24)), ("big", (120, 90)), ("c", (24, 30))]
    whole = evaluate(MemoryBound(10 ** 9), _batches(sizes), torch.device("cpu"),
                     EvalProtocol(lpips=CountingLPIPS(), ms_ssim=True, gt_mean=True, full_metric_pixels=None))
    lpips = CountingLPIPS()
    proto = EvalProtocol(lpips=lpips, ms_ssim=True, gt_mean=True, full_metric_pixels=60 * 60, strip_pixels=90 * 20)
    res = evaluate(MemoryBound(10 ** 9), _batches(sizes), torch.device("cpu"), proto)
    assert res.scored_in_strips == ["big"] and (120, 90) not in lpips.sizes and len(lpips.sizes) == 2
    big, big_whole = res.rows[1], whole.rows[1]
    assert big["psnr"] == pytest.approx(big_whole["psnr"], abs=1e-4)
    assert big["ssim"] == pytest.approx(big_whole["ssim"], abs=2e-6)
    assert big["psnr_gt_mean"] == pytest.approx(big_whole["psnr_gt_mean"], abs=1e-4)
    assert big["ssim_gt_mean"] == pytest.approx(big_whole["ssim_gt_mean"], abs=2e-6)
    assert big["lpips"] is None and big["ms_ssim"] is None and res.rows[0]["lpips"] is not None
    summary = res.summary()
    assert summary["scored_in_strips"] == ["big"]
    assert summary["lpips"] == pytest.approx((res.rows[0]["lpips"] + res.rows[2]["lpips"]) / 2)
    assert "LPIPS, MS-SSIM" in proto.describe(torch.device("cpu"))["large_images"]
    report_left_out([], 0, proto, in_strips=1)
    assert "1 image(s) above 3600 pixels were scored in strips" in capsys.readouterr().out
