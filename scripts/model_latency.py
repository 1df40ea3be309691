#!/usr/bin/env python
"""Latency and FPS of ASMICE-Net and RtxICE-Net, as the official ICEML ``src/model_latency.py``, timed correctly.

    python scripts/model_latency.py [--sizes 128 256 512 1024] [--warmup 50] [--repeats 200]
        [--device auto] [--output output] [--json FILE]
        [--half] [--channels-last] [--compile] [--cuda-graph] [--cudnn-benchmark]

As the original (paper Table 7): untrained networks at the paper configuration, batch 1, input
``torch.randn(1, 3, H, W)``, eval mode, no autograd, fp32 unless ``--half``. **ASMICE-Net** is the
full ``forward_maps`` (both backbones and the ASM inversion); **RtxICE-Net** the backbone alone
(``inverse_illumination``; the final ``I * lr_inv`` multiply is excluded, as in the original).

Timed correctly (the original timed 200 forwards with ``time.time()`` and no synchronisation):
``--warmup`` untimed forwards, then ``--repeats`` forwards each timed on its own and synchronised
(``common_utils.benchmarking.time_fn``); latency = the **median**, FPS = 1 / median. The file keeps
the original wording ("Average Latency"), but the number is the median. ``<output>/latency_results.txt``
(also printed; ``' .3f'`` / ``' .1f'`` put a space before a positive number), per size::

    Image size: (512, 512)
    ASMICE-Net Average Latency:  0.017 seconds
    ASMICE-Net FPS:  59.3
    RtxICE-Net Average Latency:  0.008 seconds
    RtxICE-Net FPS:  122.1
    <blank line>

``--json FILE`` also writes every measurement, the machine and the options in effect. Speed options
(one that cannot apply is dropped with a note on stderr): ``--half`` fp16 on CUDA, bf16 on CPU;
``--channels-last``; ``--compile`` (compiled in an untimed call; eager if compiling fails);
``--cuda-graph`` time replays of a graph captured after the warm-up (no launch overhead; CUDA only);
``--cudnn-benchmark`` (CUDA only). A size that runs out of memory reads ``n/a (out of memory)``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from common_utils.benchmarking import (  # noqa: E402
    backend_flags,
    compile_for_timing,
    error_text,
    free_memory,
    is_oom,
    machine_info,
    machine_notes,
    parse_sizes,
    time_fn,
    write_json,
    write_text,
)
from common_utils.cli import run_cli  # noqa: E402
from foundation.errors import UserError  # noqa: E402

DEFAULT_SIZES = ("128", "256", "512", "1024")
NETWORKS = ("ASMICE-Net", "RtxICE-Net")  # order of the original file
WHAT = {"ASMICE-Net": "forward_maps: transmission + airlight backbones and the ASM inversion",
        "RtxICE-Net": "inverse_illumination: the backbone only (I * lr_inv excluded)"}


def options(args: argparse.Namespace, device: torch.device, notes: list[str]) -> dict[str, Any]:
    """The speed options in effect; the CUDA-only ones are dropped with a note elsewhere."""
    cuda = device.type == "cuda"
    for flag in ("cuda_graph", "cudnn_benchmark"):
        if getattr(args, flag) and not cuda:
            drop(notes, "--" + flag.replace("_", "-"), f"it needs a CUDA device, timing on {device.type}")
    return {"dtype": (torch.float16 if cuda else torch.bfloat16) if args.half else torch.float32, "half": args.half,
            "channels_last": args.channels_last, "compile": args.compile, "cuda_graph": args.cuda_graph and cuda,
            "cudnn_benchmark": args.cudnn_benchmark and cuda}


def note(notes: list[str], text: str) -> None:
    """Keep ``text`` for the JSON file and say it now (stderr)."""
    notes.append(text)
    print(f"note: {text}", file=sys.stderr, flush=True)


def drop(notes: list[str], flag: str, why: str) -> None:
    note(notes, f"{flag} ignored: {why}")


def timed_step(fn: Any, x: torch.Tensor, device: torch.device, warmup: int, graph: bool) -> Any:
    """The callable to time: ``fn(x)``, or the replay of a CUDA graph captured after the warm-up."""
    if not graph:
        return lambda: fn(x)
    side = torch.cuda.Stream(device)  # capture needs its warm-up on a side stream
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            fn(x)
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(x)  # outputs live in the graph's pool; x is the static input
    return g.replay


def measure_network(name: str, sizes: list[tuple[int, int]], device: torch.device, opts: dict[str, Any],
                    warmup: int, repeats: int, notes: list[str]) -> list[dict[str, Any]]:
    """Median latency of ``name`` at every size; out-of-memory sizes are recorded, not raised."""
    from models import build_network

    dtype, layout = opts["dtype"], torch.channels_last if opts["channels_last"] else torch.contiguous_format
    net = build_network(name).eval().to(device=device, dtype=dtype, memory_format=layout)
    eager = net.forward_maps if name == "ASMICE-Net" else net.inverse_illumination
    want_compile = opts["compile"]
    results = []
    for h, w in sizes:
        entry: dict[str, Any] = {"size": [h, w], "network": name, "what": WHAT[name]}
        fn = eager
        try:
            with torch.no_grad():
                x = torch.randn(1, 3, h, w, device=device, dtype=dtype).contiguous(memory_format=layout)
                if want_compile:  # compiled per size, untimed (as benchmark.py); eager when it cannot
                    torch.compiler.reset()
                    try:
                        fn, entry["compile_s"] = compile_for_timing(eager, lambda f, x=x: f(x), device)
                    except Exception as exc:
                        if is_oom(exc):
                            raise
                        drop(notes, "--compile", f"{name} could not be compiled here ({error_text(exc)}); eager")
                        want_compile = False
                try:
                    step = timed_step(fn, x, device, warmup, opts["cuda_graph"])
                except Exception as exc:
                    if not opts["cuda_graph"] or is_oom(exc):
                        raise
                    drop(notes, "--cuda-graph", f"{name} could not be captured ({error_text(exc)})")
                    opts["cuda_graph"] = False
                    step = timed_step(fn, x, device, warmup, False)
                t = time_fn(step, device, 1 if opts["cuda_graph"] else warmup, repeats)
            entry.update(median_s=t.median, mean_s=t.mean, min_s=t.min, max_s=t.max, fps=1.0 / t.median,
                         repeats=len(t.samples), cuda_graph=opts["cuda_graph"], compiled=fn is not eager)
        except Exception as exc:
            if not is_oom(exc):
                raise
            entry["error"] = "out of memory"
            print(f"note: {name} at {h}x{w}: out of memory, skipped", file=sys.stderr, flush=True)
        x = step = None
        free_memory(device)
        results.append(entry)
    return results


def format_results(sizes: list[tuple[int, int]], results: dict[str, list[dict[str, Any]]]) -> str:
    """The text of ``latency_results.txt`` in the original format (the 'Average' number is the median)."""
    lines = []
    for i, (h, w) in enumerate(sizes):
        lines.append(f"Image size: {(h, w)}")
        for name in NETWORKS:
            r = results[name][i]
            lines += ([f"{name} Average Latency: n/a ({r['error']})", f"{name} FPS: n/a"] if "error" in r else
                      [f"{name} Average Latency: {r['median_s']: .3f} seconds", f"{name} FPS: {r['fps']: .1f}"])
        lines.append("")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="S|HxW",
                   help="input sizes, S or HxW, space- or comma-separated (default: 128 256 512 1024)")
    p.add_argument("--warmup", type=int, default=50, help="untimed forwards per size first (default 50)")
    p.add_argument("--repeats", type=int, default=200, help="timed forwards per size (default 200)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, default), cpu, cuda, cuda:N")
    p.add_argument("--output", default="output", help="folder of latency_results.txt (default: output)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write machine-readable results here")
    p.add_argument("--half", action="store_true", help="fp16 on CUDA, bf16 on CPU (default fp32, as the paper)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for weights and input")
    p.add_argument("--compile", action="store_true", help="torch.compile each network (compiled untimed)")
    p.add_argument("--cuda-graph", action="store_true", help="time replays of a captured CUDA graph (CUDA only)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning (CUDA only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from common_utils.evaluation.runner import select_device

        if args.warmup < 0 or args.repeats < 1:
            raise UserError(f"--warmup must be 0 or more and --repeats at least 1, got {args.warmup}, {args.repeats}")
        sizes = parse_sizes(args.sizes, 4, "the ICEML networks work at 1/4 resolution")
        device = select_device(args.device)
        machine = machine_info(device)
        if device.type != "cuda":
            print(f"note: timing on {device.type} ({machine['cpu_model']}); the paper's numbers are GPU timings",
                  file=sys.stderr, flush=True)
        notes: list[str] = []
        for text in machine_notes(machine):  # a busy or oversubscribed machine: timings unreliable
            note(notes, text)
        opts = options(args, device, notes)
        with backend_flags(cudnn_benchmark=opts["cudnn_benchmark"]):
            torch.manual_seed(args.seed)
            results = {n: measure_network(n, sizes, device, opts, args.warmup, args.repeats, notes) for n in NETWORKS}
        text = format_results(sizes, results)
        path = write_text(Path(args.output) / "latency_results.txt", text)
        print(text, end="")
        print(f"Latency results saved to {path}")
        if args.json:
            write_json(args.json, {
                "device": {"type": device.type, "index": device.index,
                           "name": machine["gpu"] if device.type == "cuda" else machine["cpu_model"]},
                "machine": machine, "torch": torch.__version__, "cuda": torch.version.cuda,
                "options": opts | {"dtype": str(opts["dtype"]).replace("torch.", "")}, "notes": notes,
                "warmup": args.warmup, "repeats": args.repeats, "seed": args.seed, "batch": 1,
                "timing": "each forward timed on its own, synchronised (common_utils.benchmarking.time_fn); "
                          "latency = median, fps = 1 / median",
                "sizes": [list(s) for s in sizes], "results": [r for n in NETWORKS for r in results[n]]})

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
