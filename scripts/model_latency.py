#!/usr/bin/env python
"""Latency and FPS of ASMICE-Net and RtxICE-Net, as the official ICEML ``src/model_latency.py``, timed correctly.

    python scripts/model_latency.py [--sizes 128 256 512 1024] [--warmup 50] [--repeats 200]
        [--device auto] [--output output] [--json FILE]
        [--half] [--channels-last] [--compile] [--cuda-graph] [--cudnn-benchmark]

What is measured (as the original, paper Table 7): untrained networks at the paper configuration
(weights do not change the speed), batch 1, input ``torch.randn(1, 3, H, W)``, eval mode, no
autograd, fp32 unless ``--half``. **ASMICE-Net** is the full ``forward_maps`` (both backbones and
the ASM inversion); **RtxICE-Net** is the backbone alone (``inverse_illumination``; the final
``I * lr_inv`` multiply is excluded, as in the original).

How it is timed (the original timed 200 forwards with ``time.time()`` and no synchronisation, so
it partly measured kernel launches): ``--warmup`` untimed forwards, then ``--repeats`` forwards
each timed on its own with ``time.perf_counter`` and ``torch.cuda.synchronize`` before and after it
on CUDA. The reported latency is the **median** of those times and FPS = 1 / median. The output
file keeps the original wording ("Average Latency") so that it reads like the original, but the
number is the median.

Output: ``<output>/latency_results.txt`` in the original format, per size::

    Image size: (512, 512)
    ASMICE-Net Average Latency:  0.017 seconds
    ASMICE-Net FPS:  59.3
    RtxICE-Net Average Latency:  0.008 seconds
    RtxICE-Net FPS:  122.1
    <blank line>

(the ``' .3f'`` / ``' .1f'`` formats put a space before a positive number, hence two spaces after
the colon). The same text is printed. ``--json FILE`` also writes every measurement (median, mean,
min, max in seconds, FPS), the device name, torch/CUDA versions and the options in effect.

Options for speed (each is reported in the JSON; where it cannot apply it is skipped with a
message and the run goes on without it):

* ``--half``: fp16 weights and input on CUDA; bf16 on CPU (CPU fp16 convolutions are slow or
  missing). For timing only; fp16 numerics of these networks are not checked.
* ``--channels-last``: NHWC memory format for weights and input (often faster convolutions on
  tensor-core GPUs and on CPU).
* ``--compile``: ``torch.compile`` each network (default mode, static shapes); compilation happens
  in the first, untimed call. If compiling fails (no compiler/Triton here) the network runs eagerly.
* ``--cuda-graph``: after the warm-up (run on a side stream), capture one forward in a CUDA graph
  and time graph replays; removes the CPU launch overhead, which dominates small inputs. CUDA only.
* ``--cudnn-benchmark``: ``torch.backends.cudnn.benchmark = True`` (cuDNN picks the fastest
  convolution algorithm per shape during the warm-up). CUDA only.

A size that runs out of memory is reported as ``n/a (out of memory)`` and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from common_utils.benchmarking import cpu_model, is_oom, sync  # noqa: E402
from common_utils.cli import run_cli  # noqa: E402
from foundation.errors import UserError  # noqa: E402

DEFAULT_SIZES = ((128, 128), (256, 256), (512, 512), (1024, 1024))
NETWORKS = ("ASMICE-Net", "RtxICE-Net")  # order of the original file
WHAT = {"ASMICE-Net": "forward_maps: transmission + airlight backbones and the ASM inversion",
        "RtxICE-Net": "inverse_illumination: the backbone only (I * lr_inv excluded)"}


# ------------------------------------------------------------------------------------ helpers

def parse_sizes(items: list[str] | None) -> list[tuple[int, int]]:
    """``["128", "256x384", "512,1024"]`` -> [(128, 128), (256, 384), (512, 512), (1024, 1024)]."""
    if not items:
        return list(DEFAULT_SIZES)
    sizes = []
    for tok in (t for item in items for t in re.split(r"[,\s]+", item) if t):
        m = re.fullmatch(r"(\d+)(?:[xX*](\d+))?", tok)
        if not m:
            raise UserError(f"--sizes takes S or HxW values (e.g. 512 or 512x768), got '{tok}'")
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
        if h <= 0 or w <= 0 or h % 4 or w % 4:
            raise UserError(f"--sizes: {h}x{w} must be positive multiples of 4 (the ICEML networks work at "
                            f"1/4 resolution)")
        sizes.append((h, w))
    if not sizes:
        raise UserError("--sizes is empty")
    return sizes


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model name."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def _raise_compile_limits(n: int) -> None:
    """Let one compiled function keep a specialisation per size (dynamo's limit is 8 by default)."""
    try:
        import torch._dynamo.config as dcfg
    except ImportError:
        return
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, attr):
            setattr(dcfg, attr, max(int(getattr(dcfg, attr)), n + 2))


class Options:
    """The speed options actually in effect, with the messages about those that were dropped."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.notes: list[str] = []
        cuda = device.type == "cuda"
        self.half = bool(args.half)
        self.dtype = (torch.float16 if cuda else torch.bfloat16) if self.half else torch.float32
        self.channels_last = bool(args.channels_last)
        self.compile = bool(args.compile)
        if self.compile and not hasattr(torch, "compile"):
            self._drop("--compile", f"torch {torch.__version__} has no torch.compile")
            self.compile = False
        self.cuda_graph = bool(args.cuda_graph)
        if self.cuda_graph and not cuda:
            self._drop("--cuda-graph", f"CUDA graphs need a CUDA device, timing on {device.type}")
            self.cuda_graph = False
        self.cudnn_benchmark = bool(args.cudnn_benchmark)
        if self.cudnn_benchmark and not cuda:
            self._drop("--cudnn-benchmark", f"cuDNN is not used on {device.type}")
            self.cudnn_benchmark = False

    def _drop(self, flag: str, why: str) -> None:
        msg = f"{flag} ignored: {why}"
        self.notes.append(msg)
        print(f"note: {msg}", file=sys.stderr, flush=True)

    def as_dict(self) -> dict[str, Any]:
        return {"dtype": str(self.dtype).replace("torch.", ""), "half": self.half,
                "channels_last": self.channels_last, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "cudnn_benchmark": self.cudnn_benchmark}


# ----------------------------------------------------------------------------------- timing

def forward_fn(name: str, net: torch.nn.Module) -> Callable[[torch.Tensor], Any]:
    """What is timed for each network (see the module docstring)."""
    return net.forward_maps if name == "ASMICE-Net" else net.inverse_illumination


def time_forward(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, warmup: int,
                 repeats: int, cuda_graph: bool) -> tuple[list[float], bool]:
    """Per-forward times in seconds (synchronised on CUDA) and whether a CUDA graph was used."""
    use_graph = cuda_graph and device.type == "cuda"
    with torch.no_grad():
        if use_graph:  # warm up on a side stream, as graph capture requires
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(max(warmup, 1)):
                    fn(x)
            torch.cuda.current_stream(device).wait_stream(side)
            sync(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn(x)  # outputs live in the graph's private pool; x is the static input
            step: Callable[[], Any] = graph.replay
            step()  # first replay (uploads the graph), untimed
        else:
            for _ in range(warmup):
                fn(x)
            step = lambda: fn(x)  # noqa: E731
        sync(device)
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
    return times, use_graph


def measure_network(name: str, sizes: list[tuple[int, int]], device: torch.device, opts: Options, warmup: int,
                    repeats: int) -> list[dict[str, Any]]:
    """Median latency of ``name`` at every size; out-of-memory sizes are recorded, not raised."""
    from models import build_network

    net = build_network(name).eval().to(device=device, dtype=opts.dtype)
    if opts.channels_last:
        net = net.to(memory_format=torch.channels_last)
    eager = forward_fn(name, net)
    fn = eager
    if opts.compile:
        _raise_compile_limits(len(sizes))
        fn = torch.compile(eager, dynamic=False)
    results = []
    for h, w in sizes:
        entry: dict[str, Any] = {"size": [h, w], "network": name, "what": WHAT[name]}
        try:
            x = torch.randn(1, 3, h, w, device=device, dtype=opts.dtype)
            if opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if fn is not eager:  # compile now, untimed; fall back to eager when it cannot
                try:
                    with torch.no_grad():
                        fn(x)
                except Exception as exc:  # noqa: BLE001 - any backend failure means "no compile here"
                    if is_oom(exc):
                        raise
                    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    opts._drop("--compile", f"{name} could not be compiled here ({type(exc).__name__}: {reason}); "
                                            f"running eagerly")
                    fn = eager
            try:
                times, graphed = time_forward(fn, x, device, warmup, repeats, opts.cuda_graph)
            except Exception as exc:  # noqa: BLE001
                if not opts.cuda_graph or is_oom(exc):
                    raise
                opts._drop("--cuda-graph", f"{name} could not be captured ({type(exc).__name__}: "
                                           f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})")
                opts.cuda_graph = False
                times, graphed = time_forward(fn, x, device, warmup, repeats, False)
            med = statistics.median(times)
            entry.update(median_s=med, mean_s=statistics.fmean(times), min_s=min(times), max_s=max(times),
                         fps=(1.0 / med) if med > 0 else float("inf"), repeats=len(times), cuda_graph=graphed,
                         compiled=fn is not eager)
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            entry["error"] = "out of memory"
            print(f"note: {name} at {h}x{w}: out of memory, skipped", file=sys.stderr, flush=True)
        finally:
            x = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(entry)
    return results


def format_results(sizes: list[tuple[int, int]], results: dict[str, list[dict[str, Any]]]) -> str:
    """The text of ``latency_results.txt`` in the original format (the 'Average' number is the median)."""
    lines = []
    for i, (h, w) in enumerate(sizes):
        lines.append(f"Image size: {(h, w)}")
        for name in NETWORKS:
            r = results[name][i]
            if "error" in r:
                lines += [f"{name} Average Latency: n/a ({r['error']})", f"{name} FPS: n/a"]
            else:
                lines += [f"{name} Average Latency: {r['median_s']: .3f} seconds", f"{name} FPS: {r['fps']: .1f}"]
        lines.append("")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=None, metavar="S|HxW",
                   help="input sizes, S or HxW, space- or comma-separated (default: 128 256 512 1024)")
    p.add_argument("--warmup", type=int, default=50, help="untimed forwards per size first (default 50)")
    p.add_argument("--repeats", type=int, default=200, help="timed forwards per size; the median is reported "
                                                            "(default 200)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, default), cpu, cuda, cuda:N")
    p.add_argument("--output", default="output", help="folder of latency_results.txt (default: output)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write machine-readable results here")
    p.add_argument("--half", action="store_true", help="fp16 on CUDA, bf16 on CPU (default fp32, as the paper)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for weights and input")
    p.add_argument("--compile", action="store_true", help="torch.compile each network (compiled untimed)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture the forward in a CUDA graph after the warm-up and time replays (CUDA only)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN pick the fastest convolution algorithms (CUDA only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from common_utils.evaluation.runner import select_device

        if args.warmup < 0:
            raise UserError(f"--warmup must be 0 or more, got {args.warmup}")
        if args.repeats < 1:
            raise UserError(f"--repeats must be at least 1, got {args.repeats}")
        sizes = parse_sizes(args.sizes)
        device = select_device(args.device)
        if device.type != "cuda":
            print(f"note: timing on {device.type} ({device_name(device)}); the paper's numbers are GPU timings",
                  file=sys.stderr, flush=True)
        opts = Options(args, device)
        prev_bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = opts.cudnn_benchmark
        try:
            torch.manual_seed(args.seed)
            results = {name: measure_network(name, sizes, device, opts, args.warmup, args.repeats)
                       for name in NETWORKS}
        finally:
            torch.backends.cudnn.benchmark = prev_bench
        text = format_results(sizes, results)
        out_dir = Path(args.output)
        path = out_dir / "latency_results.txt"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(text, end="")
        print(f"Latency results saved to {path}")
        if args.json:
            report = {
                "device": {"type": device.type, "name": device_name(device), "index": device.index},
                "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
                "python": platform.python_version(),
                "options": opts.as_dict(), "notes": opts.notes,
                "warmup": args.warmup, "repeats": args.repeats, "seed": args.seed, "batch": 1,
                "timing": "per-forward time.perf_counter, torch.cuda.synchronize before and after on CUDA; "
                          "latency = median, fps = 1 / median",
                "sizes": [list(s) for s in sizes],
                "results": [r for name in NETWORKS for r in results[name]],
            }
            jpath = Path(args.json)
            try:
                jpath.parent.mkdir(parents=True, exist_ok=True)
                jpath.write_text(json.dumps(report, indent=2) + "\n")
            except OSError as exc:
                raise UserError(f"cannot write {jpath}: {exc.strerror or exc}") from None

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
