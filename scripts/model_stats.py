#!/usr/bin/env python
"""Parameters, FLOPs and speed of the registered networks, as a Markdown table.

    python scripts/model_stats.py [--networks UNet,Restormer] [--sizes 256,512,1024] [--repeats N]
        [--device auto|cpu|cuda] [--json stats.json]

- Parameters: trainable and total, in millions (paper default configurations).
- FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a
  ``1x3xSxS`` input (convolutions and matrix products); reported as GMACs = FLOPs / 2 / 1e9.
- Latency: batch 1, fp32, ``inference_mode``, after warm-up runs; ``torch.cuda.synchronize`` around
  every timed forward on CUDA; the median of ``--repeats`` runs (default 20 on CUDA, 3 on CPU).
  FPS = 1000 / latency.
A size that runs out of memory is skipped with a note; a network that cannot be built (e.g. its
module needs a GPU or is absent) is listed with the reason.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from common_utils.cli import run_cli  # noqa: E402


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or "can't allocate memory" in msg or isinstance(exc, MemoryError))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(net: torch.nn.Module, size: int, device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """GMACs and the median latency of ``net`` on a 1x3xSxS input."""
    from torch.utils.flop_counter import FlopCounterMode

    from common_utils.inference import forward_padded

    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            forward_padded(net, x)
        flops = counter.get_total_flops()
        for _ in range(max(0, warmup - 1)):
            forward_padded(net, x)
        times = []
        for _ in range(max(1, repeats)):
            _sync(device)
            t0 = time.perf_counter()
            forward_padded(net, x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    latency = 1000.0 * statistics.median(times)
    return {"size": size, "gmacs": flops / 2 / 1e9, "latency_ms": latency, "fps": 1000.0 / latency if latency else None}


def network_stats(name: str, sizes: list[int], device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Parameters and per-size measurements of one network (notes instead of errors)."""
    from foundation.errors import UserError
    from models import build_network as make_network

    entry: dict[str, Any] = {"network": name, "sizes": [], "notes": []}
    try:
        net = make_network(name).eval().to(device)
    except (UserError, RuntimeError, AssertionError) as exc:
        entry["notes"].append(f"cannot be built here: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return entry
    entry["params_m"] = sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e6
    entry["params_total_m"] = sum(p.numel() for p in net.parameters()) / 1e6
    for size in sizes:
        try:
            entry["sizes"].append(measure(net, size, device, repeats, warmup))
        except Exception as exc:  # a report tool: one failing size must not stop the table
            _free(device)
            if _is_oom(exc):
                entry["notes"].append(f"{size}x{size}: skipped, out of memory")
            else:
                entry["notes"].append(f"{size}x{size}: failed ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''})")
        print(f"{name} {size}: done", file=sys.stderr, flush=True)
    del net
    _free(device)
    return entry


def markdown(results: list[dict[str, Any]], device: torch.device, repeats: int) -> str:
    """The results as a Markdown table plus notes."""
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# Model statistics ({dev}, fp32, batch 1, median of {repeats} runs)", "",
             "| network | params (M) | input | GMACs | latency (ms) | FPS |", "|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        params = f"{r['params_m']:.3f}" if "params_m" in r else "–"
        if not r["sizes"]:
            lines.append(f"| {r['network']} | {params} | – | – | – | – |")
        for s in r["sizes"]:
            lines.append(f"| {r['network']} | {params} | {s['size']}x{s['size']} | {s['gmacs']:.2f} | "
                         f"{s['latency_ms']:.2f} | {s['fps']:.2f} |")
        notes += [f"- {r['network']}: {n}" for n in r["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += ["", "GMACs = FlopCounterMode FLOPs / 2 (convolutions and matrix products)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default=None, help="comma-separated networks (default: every registered one)")
    p.add_argument("--sizes", default="256,512,1024", help="square input sizes (default 256,512,1024)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per size (default 20 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from common_utils.evaluation.runner import select_device
        from foundation.errors import UserError
        from models import list_networks
        from models import network_name as canonical_network

        device = select_device(args.device)
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--sizes must be comma-separated integers, got '{args.sizes}'") from None
        if not sizes or any(s <= 0 for s in sizes):
            raise UserError(f"--sizes must be positive integers, got '{args.sizes}'")
        names = ([canonical_network(n.strip()) for n in args.networks.split(",") if n.strip()]
                 if args.networks else list_networks())
        repeats = args.repeats if args.repeats is not None else (20 if device.type == "cuda" else 3)
        if repeats < 1:
            raise UserError("--repeats must be at least 1")
        torch.manual_seed(0)
        results = [network_stats(n, sizes, device, repeats, args.warmup) for n in names]
        print(markdown(results, device, repeats))
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"device": str(device), "repeats": repeats, "results": results}, indent=2) + "\n")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
