#!/usr/bin/env python
"""Time every registered network in eager PyTorch and in onnxruntime, on this machine (batch 1, fp32).

    python scripts/benchmark_onnx.py [--networks all] [--sizes 600x400,1024x1024] [--threads 1]
        [--onnx-dir DIR] [--warmup 1] [--repeats 3] [--max-forward-s 60] [--budget-s 900] [--out F.json]

Random weights (seed 0, the papers' configurations): speed does not depend on the values. The
ONNX file of a network is taken from ``--onnx-dir/<Network>.onnx`` when there (written by
``scripts/export_onnx.py``), else exported first with the legacy exporter (export time not counted).

Honest timing (``common_utils/benchmarking.py``): ``--warmup`` untimed calls per backend, then
the two backends' timed calls interleaved (eager, onnxruntime, eager, ...), each call timed on its
own, median reported with every sample kept. Both use ``--threads`` threads (torch intra-op and
onnxruntime intra-op). A pair (network, size) whose warm-up forward took more than ``--max-forward-s``
gets one timed call per backend instead of ``--repeats``. The pairs run cheapest first, by a
forward's expected time (a probe forward at 128x128, scaled by the pixel count; then the network's
measured time); a pair whose expected cost no longer fits what is left of ``--budget-s`` is skipped
and listed with its estimate. The table is printed as Markdown; ``--out`` keeps the
JSON with the machine (CPU, load average, threads).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common_utils.benchmarking import Timing, command_string, fmt, machine_info, markdown_table, time_fn, write_json
from common_utils.cli import run_cli
from common_utils.inference import pad_to_multiple, size_multiple_of
from common_utils.onnx_export import OnnxNetwork, export_onnx, trace_size
from foundation.errors import UserError
from models import build_network, list_networks, network_name


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``600x400,1024x1024`` (W x H) -> [(H, W), ...]."""
    out = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise UserError(f"--sizes takes WxH[,WxH...], e.g. 600x400,1024x1024; got '{part}'") from None
        out.append((h, w))
    return out


PROBE = 128  # side of the probe forward that estimates each network's cost


def probe_seconds_per_pixel(name: str) -> float:
    """One eager forward at PROBE x PROBE (after one untimed): seconds per pixel, to order and budget."""
    torch.manual_seed(0)
    net = build_network(name).eval()
    x = torch.rand(1, 3, PROBE, PROBE)
    with torch.inference_mode():
        return time_fn(lambda: net(x), None, 1, 1).median / PROBE ** 2


def forwards(warmup: int, repeats: int, guess: float, max_forward_s: float) -> int:
    """Forwards one (network, size) pair costs: both backends' warm-up and timed calls."""
    return 2 * (max(1, warmup) + (repeats if guess <= max_forward_s else 1))


def bench_pair(name: str, size: tuple[int, int], net: torch.nn.Module, runner: OnnxNetwork, warmup: int,
               repeats: int, max_forward_s: float) -> dict[str, Any]:
    """One row ``{network, size, eager, onnxruntime, note}``: warm-up per backend, then interleaved timed calls."""
    h, w = size
    row: dict[str, Any] = {"network": name, "size": f"{w}x{h}", "note": ""}
    x, _ = pad_to_multiple(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)), size_multiple_of(net))
    fns = {"eager": lambda: net(x), "onnxruntime": lambda: runner(x)}
    timings = {k: Timing() for k in fns}
    with torch.inference_mode():
        slowest = max(time_fn(fn, None, 0, max(1, warmup)).max for fn in fns.values())  # warm-up, timed
        n = repeats if slowest <= max_forward_s else 1
        if n < repeats:
            row["note"] = f"1 timed call per backend (warm-up forward {slowest:.0f} s > {max_forward_s:.0f} s)"
        for _ in range(n):
            for k, fn in fns.items():  # interleaved: machine noise hits both alike
                timings[k].samples += time_fn(fn, None, 0, 1).samples
    row.update(status="ok", **{k: t.to_dict() for k, t in timings.items()})
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: network, size, eager and onnxruntime medians (s) with their counts, speed-up."""
    body = []
    for r in rows:
        if r.get("status") != "ok":
            body.append([r["network"], r["size"], "–", "–", "–", r["note"]])
            continue
        e, o = r["eager"], r["onnxruntime"]
        body.append([r["network"], r["size"], f"{fmt(e['median_s'], 3)} (n={e['n']})",
                     f"{fmt(o['median_s'], 3)} (n={o['n']})", f"{e['median_s'] / o['median_s']:.2f}x", r["note"]])
    return markdown_table(["network", "W x H", "eager (s)", "onnxruntime (s)", "onnxruntime speed-up", "note"], body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="all", help="comma-separated names, or all (default)")
    p.add_argument("--sizes", default="600x400,1024x1024", help="W x H sizes, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="threads of both backends (default 1)")
    p.add_argument("--onnx-dir", default=None, help="folder of <Network>.onnx files (default: export them first)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per backend and size (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per backend and size (default 3)")
    p.add_argument("--max-forward-s", type=float, default=60.0, help="above this warm-up time: 1 timed call")
    p.add_argument("--budget-s", type=float, default=900.0, help="time budget of the whole run (default 900 s)")
    p.add_argument("--out", default=None, help="write the rows and the machine as JSON")
    args = p.parse_args(argv)

    def job() -> list[dict[str, Any]]:
        torch.set_num_threads(args.threads)
        names = list_networks() if args.networks == "all" else [network_name(n) for n in args.networks.split(",")]
        sizes = parse_sizes(args.sizes)
        start = time.perf_counter()
        cost = {n: probe_seconds_per_pixel(n) for n in names}  # seconds per pixel, updated when measured
        print("estimated seconds per forward (probe at 128x128): " + ", ".join(
            f"{n} {cost[n] * h * w:.1f} s at {w}x{h}" for n in names for h, w in sizes), flush=True)
        # cheapest pairs first: the budget covers as many (network, size) pairs as it can
        pairs = sorted(((n, hw) for n in names for hw in sizes), key=lambda p: cost[p[0]] * p[1][0] * p[1][1])
        rows: list[dict[str, Any]] = []
        loaded: tuple[str, torch.nn.Module, OnnxNetwork] | None = None
        with tempfile.TemporaryDirectory() as tmp:
            for name, (h, w) in pairs:
                left = args.budget_s - (time.perf_counter() - start)
                guess = cost[name] * h * w
                need = forwards(args.warmup, args.repeats, guess, args.max_forward_s) * guess
                if need > left:
                    rows.append({"network": name, "size": f"{w}x{h}", "status": "skipped",
                                 "note": f"skipped: about {guess:.0f} s per forward expected ({need:.0f} s for the "
                                         f"pair), {left:.0f} s of the budget left"})
                    print(f"{name} {w}x{h}: {rows[-1]['note']}", flush=True)
                    continue
                if loaded is None or loaded[0] != name:
                    loaded = None  # one network in memory at a time
                    torch.manual_seed(0)
                    net = build_network(name).eval()
                    path = Path(args.onnx_dir or tmp) / f"{name}.onnx"
                    if not path.is_file():
                        path = export_onnx(net, Path(tmp) / f"{name}.onnx",
                                           torch.rand(1, 3, *trace_size(size_multiple_of(net))), name)
                    loaded = (name, net, OnnxNetwork(path, threads=args.threads))
                row = bench_pair(name, (h, w), loaded[1], loaded[2], args.warmup, args.repeats, args.max_forward_s)
                cost[name] = max(row[k]["median_s"] for k in ("eager", "onnxruntime")) / (h * w)
                rows.append(row)
                print(f"{name} {w}x{h}: eager {row['eager']['median_s']:.3f} s, onnxruntime "
                      f"{row['onnxruntime']['median_s']:.3f} s {row['note']}", flush=True)
        order = {n: i for i, n in enumerate(names)}
        rows.sort(key=lambda r: (order[r["network"]], r["size"] != f"{sizes[0][1]}x{sizes[0][0]}"))
        print()
        print(table(rows))
        print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)
        if args.out:
            write_json(args.out, {"command": command_string(argv, "scripts/benchmark_onnx.py"),
                                  "machine": machine_info("cpu"), "threads": args.threads, "rows": rows,
                                  "seconds": time.perf_counter() - start})
        return rows

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
