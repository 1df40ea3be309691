#!/usr/bin/env python
"""The one performance benchmark: inference, training step, data pipeline, evaluation, model statistics.

    python scripts/benchmark.py [--networks UNet,Restormer] [--network-args '{"UNet": {"width": 32}}']
        [--sizes 256,512] [--warmup N] [--repeats N] [--variants 'fp32 eager,torch.compile'] [--no-compile]
        [--train-size 192] [--train-warmup N] [--train-repeats N] [--workers 2] [--eval-network NET]
        [--eval-passes N] [--device auto] [--threads N] [--sections inference,training,data,eval[,stats]]
        [--json FILE] [--quick]

Networks run at the paper configuration unless ``--network-args`` overrides it. Printed: the machine
and the exact command, then Markdown tables (progress on stderr); ``--json FILE`` keeps every sample.
Timed calls: ``--warmup`` untimed, then the median of ``--repeats`` calls each timed on its own and
synchronised (``common_utils.benchmarking.time_fn``). Out of memory is a row status, not a crash.

(a) ``inference``: batch 1 through ``forward_padded``. The reference ``fp32 eager`` (inference_mode,
    TF32 and cudnn.benchmark off) first; each other row changes one switch; ``fp32 eager (again,
    last)`` re-measures the reference (its drift bounds the noise). cuDNN keeps its first algorithm
    choice per convolution for the whole process, so ``cudnn.benchmark (fresh process)`` is the
    reference timed by a child process run with ``--cudnn-benchmark``.
(b) ``training``: the real trainer of ``config/sup_<net>.yaml`` and ``config/ssll_<net>.yaml``
    (semi-supervised from the first iteration; fused and two-pass student forward) on synthetic
    pairs, the config's batch, ``--train-size`` crops. Timed: one ``BaseTrainer.train`` iteration
    from its batch on the device to the next fetch (the data fetch is excluded; 0 loader workers).
(c) ``data``: pairs/s of ``paired_folder`` through ``train_loader`` (0 and ``--workers`` workers) on
    the demo pairs and on synthetic 600x400 PNGs (LOLv2-Real size), against the pairs/s the fastest
    supervised step of (b) consumes (goal >= 3x); one pair's decode / crop + conversion cost.
(d) ``eval``: ``evaluate`` (PSNR, SSIM on Y, LPIPS when its weights are here) on the demo test set
    and on synthetic 600x400 pairs; wall time split into metrics, forward and the rest.
(e) ``stats`` (only when named): parameters, GMACs (``torch.utils.flop_counter``, FLOPs / 2) and the
    latency by ``torch.utils.benchmark.Timer.blocked_autorange`` for every network and size.

``--quick``: a smoke run (the first 2 networks, size 64, 1 warm-up, 3 repeats, training crop 64).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sections: the package bench/ beside this file

import torch  # noqa: E402

from bench.common import log, lpips, out  # noqa: E402
from bench.evaluation import bench_eval, print_eval  # noqa: E402
from bench.inference import bench_inference, print_inference  # noqa: E402
from bench.pipeline import bench_data, print_data  # noqa: E402
from bench.stats import bench_stats, print_stats  # noqa: E402
from bench.training import bench_training, print_training  # noqa: E402
from common_utils.benchmarking import (  # noqa: E402
    command_string,
    machine_info,
    machine_notes,
    markdown_table,
    parse_sizes,
    write_json,
)
from common_utils.cli import run_cli  # noqa: E402
from foundation.errors import UserError  # noqa: E402
from models import list_networks  # noqa: E402

NETWORKS = tuple(list_networks())  # every registered network
SECTIONS = ("inference", "training", "data", "eval")  # the default; "stats" on request


def split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# ---------------------------------------------------------------------------- settings
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--networks", help="comma-separated networks (default: " + ",".join(NETWORKS) + "; training uses those "
                           "with a config/sup_<net>.yaml)")
    add("--network-args", help="JSON object {network: {constructor arg: value}} (or a .json file) overriding the "
                               "paper configuration, e.g. '{\"UNet\": {\"width\": 4}}'")
    add("--sizes", help="inference input sizes, comma-separated (default 256,512)")
    add("--warmup", type=int, help="untimed inference calls (default 20 CUDA, 2 CPU)")
    add("--repeats", type=int, help="timed inference calls (default 50 CUDA, 10 CPU)")
    add("--variants", help="only these inference rows (comma-separated names as in the table)")
    add("--no-compile", action="store_true", help="skip the torch.compile inference row")
    add("--cudnn-benchmark", action="store_true", help="cudnn.benchmark on for every inference row (used by the "
                                                       "'cudnn.benchmark (fresh process)' row's child process)")
    add("--train-size", type=int, help="training crop (default 192 CUDA, 64 CPU)")
    add("--train-warmup", type=int, help="untimed training steps (default 5 CUDA, 2 CPU)")
    add("--train-repeats", type=int, help="timed training steps (default 20 CUDA, 5 CPU)")
    add("--workers", type=int, default=2, help="loader workers of the data and eval sections (default 2)")
    add("--eval-network", help="network of the evaluation section (default: the first)")
    add("--eval-passes", type=int, help="passes over each evaluation set (default 3)")
    add("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    add("--threads", type=int, help="torch.set_num_threads(N) (default: leave as is)")
    add("--sections", default=",".join(SECTIONS), help="subset of " + ",".join(SECTIONS) + ",stats")
    add("--json", help="also write every result to this JSON file")
    add("--quick", action="store_true", help="smoke run: 2 networks, size 64, 1 warm-up, 3 repeats")
    return p


def resolve_settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every setting in effect (defaults filled in by device and --quick)."""
    from common_utils.evaluation.runner import parse_network_args
    from models import network_name

    cuda, q = device.type == "cuda", args.quick
    names = list(dict.fromkeys(network_name(n) for n in split(args.networks))) or list(NETWORKS)
    raw = parse_network_args(args.network_args)
    if not all(isinstance(v, dict) for v in raw.values()):
        raise UserError("--network-args must map network names to argument objects, e.g. '{\"UNet\": {\"width\": 4}}'")
    sections = split(args.sections)
    for sec in sections:
        if sec not in (*SECTIONS, "stats"):
            raise UserError(f"unknown section '{sec}' in --sections (valid: {', '.join(SECTIONS)}, stats)")
    sizes = [64] if q else [256, 512]
    if args.sizes:
        pairs = parse_sizes([args.sizes])
        if any(h != w for h, w in pairs):
            raise UserError(f"--sizes: the benchmark times square inputs (S, not HxW), got '{args.sizes}'")
        sizes = [h for h, _ in pairs]
    for key, least in (("warmup", 0), ("train_warmup", 0), ("workers", 0), ("repeats", 1), ("train_repeats", 1),
                       ("eval_passes", 1), ("train_size", 1), ("threads", 1)):
        if getattr(args, key) is not None and getattr(args, key) < least:
            raise UserError(f"--{key.replace('_', '-')} must be at least {least}, got {getattr(args, key)}")

    def pick(value: int | None, quick: int, on_cuda: int, on_cpu: int) -> int:
        return value if value is not None else quick if q else on_cuda if cuda else on_cpu

    names = names[:2] if q else names
    return {"networks": names, "network_args": {network_name(k): dict(v) for k, v in raw.items()}, "sizes": sizes,
            "warmup": pick(args.warmup, 1, 20, 2), "repeats": pick(args.repeats, 3, 50, 10),
            "train_size": pick(args.train_size, 64, 192, 64), "train_warmup": pick(args.train_warmup, 1, 5, 2),
            "train_repeats": pick(args.train_repeats, 3, 20, 5), "workers": args.workers,
            "data_batches": 5 if q else 30, "eval_network": network_name(args.eval_network or names[0]),
            "eval_passes": pick(args.eval_passes, 1, 3, 3), "device": str(device), "threads": args.threads,
            "sections": sections, "compile": not args.no_compile, "cudnn_benchmark": args.cudnn_benchmark,
            "variants": split(args.variants) or None, "quick": q}



# ---------------------------------------------------------------------------- main
def print_header(command: str, m: dict[str, Any], s: dict[str, Any]) -> None:
    gpu = f"{m['gpu']} ({m.get('gpu_memory_gib')} GiB, capability {m.get('gpu_capability')})" if m["gpu"] else "none"
    out(f"# Benchmark\n\nCommand: `{command}`\n")
    out(markdown_table(["field", "value"], [
        ["CPU", m["cpu_model"]],
        ["CPU cores (logical / usable)", f"{m['cpu_cores_logical']} / {m['cpu_cores_usable']}"],
        ["torch threads (intra / inter-op)", f"{m['torch_num_threads']} / {m['torch_num_interop_threads']}"],
        ["load average (1/5/15 min)", m["load_average_1_5_15"]], ["GPU", gpu], ["device", m["device"]],
        ["torch / CUDA / cuDNN", f"{m['torch']} / {m['cuda']} / {m['cudnn']}"],
        ["Python / platform", f"{m['python']} / {m['platform']}"], ["networks", ", ".join(s["networks"])],
        ["network args", json.dumps(s["network_args"]) if s["network_args"] else "paper defaults"]]))
    out()
    for n in machine_notes(m):
        out(f"- note: {n}\n")



SECTION_RUNNERS = {  # section: (report key, measure, print), in the order they run
    "inference": ("inference", bench_inference, print_inference),
    "training": ("training", bench_training, print_training),
    "data": ("data_pipeline", bench_data, print_data),
    "eval": ("evaluation", bench_eval, print_eval),
    "stats": ("stats", bench_stats, print_stats),
}


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from common_utils.evaluation.runner import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    s = resolve_settings(args, device)
    command, machine = command_string(argv, "scripts/benchmark.py"), machine_info(device)
    print_header(command, machine, s)
    report: dict[str, Any] = {"format": "ssir-benchmark-v1", "command": command, "machine": machine, "settings": s,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if {"training", "eval"} & set(s["sections"]):
        report["lpips_available"] = lpips()[0] is not None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssir_bench_") as tmp:
        for section, (key, measure_section, show) in SECTION_RUNNERS.items():
            if section in s["sections"]:
                report[key] = measure_section(s, device, Path(tmp), report)
                show(report[key], s)
    report["wall_s"] = time.perf_counter() - t_start
    report["load_average_end"] = machine_info()["load_average_1_5_15"]
    report["machine_notes"] = machine_notes(machine)
    out(f"Total benchmark time {report['wall_s']:.1f} s.")
    if args.json:
        log(f"results written to {write_json(args.json, report)}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
