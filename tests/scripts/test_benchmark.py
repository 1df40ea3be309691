"""scripts/benchmark.py and its sections (scripts/bench/; quick run, in-process) and the timing helpers of
common_utils/benchmarking.py."""
from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch
import torch.utils.benchmark

from common_utils.benchmarking import (
    BenchRow,
    Timing,
    autorange,
    backend_flags,
    markdown_table,
    measure,
    parse_sizes,
    time_fn,
)
from foundation.errors import UserError
from scripts.bench import inference
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("ssir_benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_fn_times_each_call_with_the_synchronising_clock(monkeypatch):
    """Warm-up calls are untimed; each later call is one sample, read from torch.utils.benchmark.timer."""
    clock = [0.0]
    calls = []

    def fn():  # call k advances the (fake) clock by k seconds
        calls.append(1)
        clock[0] += len(calls)

    monkeypatch.setattr(torch.utils.benchmark, "timer", lambda: clock[0])
    timing = time_fn(fn, "cpu", warmup=2, repeats=4)
    assert len(calls) == 6
    assert timing.samples == [3.0, 4.0, 5.0, 6.0]  # calls 3..6, one by one: no averaging, no warm-up inside
    assert (timing.median, timing.min, timing.max, timing.mean) == (4.5, 3.0, 6.0, 4.5)
    assert Timing([3.0, 1.0, 2.0]).median == 2.0 and Timing().to_dict()["n"] == 0
    with pytest.raises(ValueError):
        time_fn(fn, "cpu", warmup=0, repeats=0)


def test_autorange_keeps_the_thread_count_and_warms_up_first():
    """torch.utils.benchmark.Timer defaults to 1 thread: autorange must time with the process's setting."""
    threads = torch.get_num_threads()
    seen, calls = set(), []

    def fn():
        calls.append(1)
        seen.add(torch.get_num_threads())

    t = autorange(fn, "cpu", warmup=3, min_run_time=0.001)
    assert seen == {threads} and torch.get_num_threads() == threads
    assert len(calls) > 3 and t.samples and all(x > 0 for x in t.samples)


def test_measure_reports_oom_and_errors_as_rows():
    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    row = measure("inference", "Net", "fp32", oom, "cpu", warmup=0, repeats=1)
    assert row.status == "oom" and row.median_s is None and row.to_dict()["per_second"] is None
    row = measure("inference", "Net", "fp32", lambda: 1 / 0, "cpu", warmup=0, repeats=1, size=8)
    assert row.status == "error" and "ZeroDivisionError" in row.note and row.to_dict()["size"] == 8
    ok = BenchRow("x", "n", "v", timing=Timing([0.5, 0.5]), items=3)
    assert ok.per_second == pytest.approx(6.0) and ok.to_dict()["median_ms"] == pytest.approx(500.0)
    assert markdown_table(["a", "b"], [[1, "x|y"]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]


def test_backend_flags_restore_what_the_block_changed():
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.deterministic)
    with backend_flags(tf32=not before[1], cudnn_benchmark=not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[1])
        torch.backends.cudnn.benchmark = before[0]  # e.g. a trainer's constructor
        torch.backends.cudnn.deterministic = not before[2]
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.deterministic) == before


def test_parse_sizes_one_parser_for_both_timing_scripts():
    """scripts/benchmark.py and scripts/model_latency.py read --sizes with this one function."""
    assert parse_sizes(["128", "16x24", "8,12 20"]) == [(128, 128), (16, 24), (8, 8), (12, 12), (20, 20)]
    assert parse_sizes(["64X32"], multiple=4) == [(64, 32)]
    for bad, message in ((["30"], "multiples of 4 (why)"), (["0"], "positive"), (["64,x"], "S or HxW"),
                         ([" , "], "empty")):
        with pytest.raises(UserError, match=re.escape(message)):
            parse_sizes(bad, multiple=4, why="why")


def test_quick_benchmark_writes_every_section(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    argv = ["--quick", "--device", "cpu", "--networks", "UNet", "--network-args", '{"UNet": {"width": 4}}',
            "--sections", "inference,training,data,eval,stats", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())

    m = report["machine"]
    assert m["cpu_model"] and m["cpu_cores_logical"] >= 1 and m["torch_num_threads"] >= 1
    assert {"torch", "cuda", "gpu", "python", "load_average_1_5_15"} <= set(m)
    assert "--quick" in report["command"] and "scripts/benchmark.py" in report["command"]

    inf = report["inference"]["rows"]  # CPU rows, in order, every ok row timed exactly --repeats (3) times
    assert [r["variant"] for r in inf] == ["fp32 eager", "fp32 no_grad (straightforward)", "bf16 autocast",
                                           "channels-last", "fp32 eager (again, last)"]
    for r in inf:
        assert r["size"] == 64 and r["status"] in ("ok", "oom", "error")
        if r["status"] == "ok":
            assert r["timing"]["n"] == 3 and r["timing"]["min_s"] <= r["median_s"] <= r["timing"]["max_s"]
            assert r["per_second"] == pytest.approx(1 / r["median_s"])
    ref, again = inf[0], inf[-1]
    assert ref["status"] == "ok" and ref["speedup_vs_fp32"] == 1.0 and ref["params_m"] > 0
    assert again["drift"] == pytest.approx(again["median_s"] / ref["median_s"] - 1) and "drift" in again["note"]

    train = report["training"]
    assert [r["variant"] for r in train["rows"]] == ["supervised", "semi fused", "semi two-pass"]
    for r in train["rows"]:
        assert r["status"] == "ok", r
        assert r["batch"] == 3 and r["crop"] == 64 and r["timing"]["n"] == 3
        assert r["per_second"] == pytest.approx(3 / r["median_s"])
    ratio = train["ratios"][0]
    assert ratio["semi_fused_over_sup"] == pytest.approx(ratio["semi_fused_s"] / ratio["sup_s"])
    assert isinstance(train["lpips_in_loss"], bool) and train["lpips_in_loss"] == report["lpips_available"]

    data = report["data_pipeline"]
    sup = train["rows"][0]
    assert data["consumer"]["step_median_s"] == sup["median_s"] and data["consumer"]["pairs_per_s"] > 0
    assert [(r["source"][:5], r["workers"]) for r in data["rows"]] == [("demo ", 0), ("demo ", 2), ("synth", 0),
                                                                       ("synth", 2)]
    for r in data["rows"]:
        assert r["status"] == "ok" and r["ratio_vs_training"] == pytest.approx(r["pairs_per_s"] /
                                                                               data["consumer"]["pairs_per_s"])
    for c in data["costs"]:
        assert c["status"] == "ok" and c["total_ms"] >= c["decode_ms"] > 0
        assert c["ceiling_pairs_per_s"] == pytest.approx(2000 / c["total_ms"]) and c["workers_for_goal"] >= 1

    ev = report["evaluation"]
    assert ev["status"] == "ok" and len(ev["rows"]) == 2 and ev["lpips_included"] == report["lpips_available"]
    # the protocol eval.py scores a folder with (the layout's rule), not one the benchmark builds itself
    from common_utils.evaluation.runner import dataset_protocol
    assert ev["protocol"] == dataset_protocol({"type": "paired_folder", "args": {}}).describe("cpu")
    for r in ev["rows"]:
        assert r["status"] == "ok" and r["images"] > 0 and 0 < r["metric_fraction"] < 1
        assert r["total_s"] == pytest.approx(r["metric_s"] + r["forward_s"] + r["other_s"])

    (stats,) = report["stats"]["rows"]
    assert stats["status"] == "ok" and stats["size"] == 64 and stats["blocks"] >= 1
    assert stats["params_m"] == pytest.approx(ref["params_m"]) and stats["gmacs"] > 0
    assert stats["fps"] == pytest.approx(1000 / stats["latency_ms"])

    text = capsys.readouterr().out
    for heading in ("## (a) Inference", "## (b) Training", "## (c) Data", "## (d) Evaluation", "## (e) Model"):
        assert heading in text


def test_variants_pick_rows_and_the_fresh_process_child_reports_the_reference(tmp_path):
    """--variants runs only the named rows (no drift row without others); the child run of the
    'cudnn.benchmark (fresh process)' row hands back the reference row with its samples."""
    bench = _load_benchmark()
    out = tmp_path / "b.json"
    argv = ["--quick", "--device", "cpu", "--networks", "UNet", "--network-args", '{"UNet": {"width": 4}}',
            "--sections", "inference", "--variants", "fp32 eager", "--json", str(out)]
    assert bench.main(argv) == 0
    assert [r["variant"] for r in json.loads(out.read_text())["inference"]["rows"]] == ["fp32 eager"]

    s = {"sizes": [32], "warmup": 0, "repeats": 2, "device": "cpu", "network_args": {"UNet": {"width": 4}},
         "threads": 1}
    rows = inference.fresh_process_rows("UNet", s, tmp_path)
    assert list(rows) == [32] and rows[32]["status"] == "ok" and rows[32]["timing"]["n"] == 2
    assert rows[32]["backend"]["cudnn_benchmark"] is True
    row = inference.child_row(inference.FRESH, rows[32], {"network": "UNet"})
    assert row.ok and row.timing.samples == rows[32]["timing"]["samples_s"]


@pytest.mark.parametrize("argv, message", [
    (["--network-args", '{"width": 4}'], "--network-args"),
    (["--sections", "inference,speed"], "unknown section"),
    (["--variants", "tf32"], "unknown --variants"),  # a CUDA-only row on the CPU
    (["--sizes", "64,x"], "--sizes"),
    (["--sizes", "64x32"], "square inputs"),
])
def test_bad_arguments_are_user_errors(argv, message, capsys):
    bench = _load_benchmark()
    assert bench.main(["--quick", "--device", "cpu", "--sections", "inference", *argv]) == 2
    assert message in capsys.readouterr().err


def test_compile_for_timing_compiles_static_shapes_and_times_only_the_first_call(monkeypatch):
    """benchmark.py and model_latency.py compile through this one helper: static shapes, the first
    (compiling) call made once and timed apart from the measured calls."""
    from common_utils.benchmarking import compile_for_timing

    seen: dict = {}

    def fake_compile(fn, dynamic):
        seen["dynamic"] = dynamic
        return lambda *a: ("compiled", fn(*a))

    monkeypatch.setattr(torch, "compile", fake_compile)
    first: list = []
    compiled, seconds = compile_for_timing(lambda x: x + 1, lambda f: first.append(f(1)), "cpu")
    assert seen == {"dynamic": False} and first == [("compiled", 2)] and seconds >= 0
    assert compiled(3) == ("compiled", 4)
