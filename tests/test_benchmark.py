"""scripts/benchmark.py (quick smoke run, in-process) and the timing helpers of common_utils/benchmarking.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from common_utils.benchmarking import BenchRow, Timing, markdown_table, measure, time_fn

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("ssir_benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_fn_warms_up_then_times_each_call():
    calls = []
    timing = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=5)
    assert len(calls) == 7
    assert len(timing.samples) == 5 and all(t >= 0 for t in timing.samples)
    assert Timing([3.0, 1.0, 2.0]).median == 2.0
    with pytest.raises(ValueError):
        time_fn(lambda: None, "cpu", warmup=0, repeats=0)


def test_measure_reports_oom_and_errors_as_rows():
    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    row = measure("inference", "Net", "fp32", oom, "cpu", warmup=0, repeats=1)
    assert row.status == "oom" and row.median_s is None and row.to_dict()["per_second"] is None
    row = measure("inference", "Net", "fp32", lambda: 1 / 0, "cpu", warmup=0, repeats=1)
    assert row.status == "error" and "ZeroDivisionError" in row.note
    ok = BenchRow("x", "n", "v", timing=Timing([0.5, 0.5]), items=3)
    assert ok.per_second == pytest.approx(6.0)
    assert markdown_table(["a", "b"], [[1, "x|y"]]).splitlines()[2] == "| 1 | x\\|y |"


def test_quick_benchmark_writes_all_sections(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    argv = ["--quick", "--device", "cpu", "--networks", "UNet", "--network-args", '{"UNet": {"width": 4}}',
            "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())

    m = report["machine"]
    for key in ("cpu_model", "cpu_cores_logical", "torch_num_threads", "torch", "cuda", "gpu", "python"):
        assert key in m
    assert m["cpu_model"] and m["cpu_cores_logical"] >= 1 and m["torch_num_threads"] >= 1
    assert "--quick" in report["command"] and "scripts/benchmark.py" in report["command"]

    inf = report["inference"]["rows"]
    ref = [r for r in inf if r["variant"] == "fp32 eager"]
    assert ref and all(r["status"] == "ok" and r["median_ms"] > 0 and r["per_second"] > 0 for r in ref)
    assert {r["size"] for r in ref} == {64}
    variants = {r["variant"] for r in inf}
    assert {"fp32 no_grad (straightforward)", "bf16 autocast", "channels-last"} <= variants
    assert all(r["status"] in ("ok", "oom", "error") for r in inf)

    train = report["training"]
    assert {r["variant"] for r in train["rows"]} == {"supervised", "semi fused", "semi two-pass"}
    for r in train["rows"]:
        assert r["status"] == "ok", r
        assert r["median_s"] > 0 and r["batch"] == 3 and r["crop"] == 64
        assert r["timing"]["n"] == 3
    ratio = train["ratios"][0]
    assert ratio["semi_fused_over_sup"] > 0 and ratio["semi_two_pass_over_sup"] > 0
    assert isinstance(train["lpips_in_loss"], bool)

    data = report["data_pipeline"]
    assert data["rows"] and all(r["status"] == "ok" and r["pairs_per_s"] > 0 for r in data["rows"])
    assert data["consumer"]["pairs_per_s"] > 0 and data["ratio"] > 0
    for c in data["costs"]:
        assert c["status"] == "ok" and c["decode_ms"] > 0 and c["crop_convert_ms"] > 0
        assert c["total_ms"] >= c["decode_ms"] and c["ceiling_pairs_per_s"] > 0 and c["workers_for_goal"] >= 1

    ev = report["evaluation"]
    assert ev["status"] == "ok" and len(ev["rows"]) == 2
    for r in ev["rows"]:
        assert r["status"] == "ok" and r["images"] > 0
        assert r["total_s"] > 0 and r["metric_s"] > 0 and 0 < r["metric_fraction"] < 1
    assert isinstance(ev["lpips_included"], bool)

    text = capsys.readouterr().out
    assert "## (a) Inference" in text and "## (d) Evaluation" in text and "| network |" in text


def test_bad_network_args_are_a_user_error(capsys):
    bench = _load_benchmark()
    assert bench.main(["--quick", "--device", "cpu", "--network-args", '{"width": 4}']) == 2
    assert "--network-args" in capsys.readouterr().err
