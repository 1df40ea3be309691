#!/usr/bin/env python
"""Time every registered network in eager PyTorch and in onnxruntime, on this machine (batch 1, fp32).

    python scripts/benchmark_onnx.py [--networks all] [--sizes 600x400,1024x1024] [--threads 1[,2]]
        [--onnx-dir DIR] [--warmup 1] [--repeats 3] [--max-forward-s 60] [--budget-s 900] [--out F.json]
        [--skip NETWORK@WxH[/THREADS]=REASON ...]

Random weights (seed 0, the papers' configurations): speed does not depend on the values. The
ONNX file of a network is taken from ``--onnx-dir/<Network>.onnx`` when there (written by
``scripts/export_onnx.py``), else exported first with the legacy exporter (export time not counted).

Honest timing (``common_utils/benchmarking.py``): ``--warmup`` untimed calls per backend, then
the two backends' timed calls interleaved (eager, onnxruntime, eager, ...), each call timed on its
own, median reported with every sample kept. Both use the same number of threads (torch intra-op and
onnxruntime intra-op); ``--threads 1,2`` measures every pair at 1 thread first, then at 2. A pair
(network, size) whose warm-up forward took more than ``--max-forward-s`` gets one timed call per
backend instead of ``--repeats``. When a network is loaded (per thread count) both backends make
one untimed call at 128x128 (library set-up, onnxruntime's first run of the session), and every
pair still gets its warm-up calls at its own size: on this VM an eager call at a new, larger size
without one took 1.4x a warmed-up call (RetinexFormer at 1024x1024: 28.5 s against 20.2 s, the
cost of touching fresh memory, BENCHMARKS.md), so a pair is never timed without one. The warm-up
times are kept.
Networks run cheapest first, by a forward's expected time (a probe forward at 128x128, scaled by
the pixel count; then the network's measured time); a pair whose expected cost no longer fits
what is left of ``--budget-s`` is skipped and listed with its estimate. The table is printed as
Markdown; ``--out`` keeps the JSON (machine, load average before and after every pair, the
process's peak RSS so far), rewritten after every pair so that an interrupted run keeps its rows.
"""
from __future__ import annotations

import argparse
import os
import resource
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


def parse_skips(items: list[str]) -> dict[tuple[str, str, int | None], str]:
    """``NETWORK@WxH[/THREADS]=REASON`` items -> {(registered name, "WxH", threads or None: all): reason}."""
    out = {}
    for item in items:
        pair, sep, reason = item.partition("=")
        name, at, size = pair.partition("@")
        size, slash, threads = size.partition("/")
        if not (sep and at and reason.strip()) or (slash and not threads.strip().isdigit()):
            raise UserError(f"--skip takes NETWORK@WxH[/THREADS]=REASON, e.g. Restormer@1024x1024=out of memory; "
                            f"got '{item}'")
        out[network_name(name.strip()), size.strip().lower(), int(threads) if slash else None] = reason.strip()
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


def load_average() -> list[float] | None:
    """``/proc/loadavg``'s 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def bench_pair(name: str, size: tuple[int, int], net: torch.nn.Module, runner: OnnxNetwork, warmup: int,
               repeats: int, max_forward_s: float) -> dict[str, Any]:
    """One row ``{network, size, eager, onnxruntime, warmup_s, note}``: ``warmup`` (at least 1) calls per
    backend, the last one timed and kept as ``warmup_s``, then interleaved timed calls."""
    h, w = size
    row: dict[str, Any] = {"network": name, "size": f"{w}x{h}", "threads": torch.get_num_threads(),
                           "load_before": load_average(), "note": ""}
    x, _ = pad_to_multiple(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)), size_multiple_of(net))
    fns = {"eager": lambda: net(x), "onnxruntime": lambda: runner(x)}
    timings = {k: Timing() for k in fns}
    with torch.inference_mode():
        warm = {k: time_fn(fn, None, max(1, warmup) - 1, 1).max for k, fn in fns.items()}  # the last one, timed
        row["warmup_s"] = warm
        slowest = max(warm.values())
        n = repeats if slowest <= max_forward_s else 1
        if n < repeats:
            row["note"] = f"1 timed call per backend (warm-up forward {slowest:.0f} s > {max_forward_s:.0f} s)"
        for _ in range(n):
            for k, fn in fns.items():  # interleaved: machine noise hits both alike
                timings[k].samples += time_fn(fn, None, 0, 1).samples
    row.update(status="ok", **{k: t.to_dict() for k, t in timings.items()})
    row.update(load_after=load_average(), peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: network, size, threads, eager and onnxruntime medians (s) with their counts, speed-up."""
    body = []
    for r in rows:
        if r.get("status") != "ok":
            body.append([r["network"], r["size"], str(r.get("threads", "")), "–", "–", "–", r["note"]])
            continue
        e, o = r["eager"], r["onnxruntime"]
        body.append([r["network"], r["size"], str(r["threads"]), f"{fmt(e['median_s'], 3)} (n={e['n']})",
                     f"{fmt(o['median_s'], 3)} (n={o['n']})", f"{e['median_s'] / o['median_s']:.2f}x",
                     r["note"].strip().rstrip(";")])
    return markdown_table(["network", "W x H", "threads", "eager (s)", "onnxruntime (s)", "onnxruntime speed-up",
                           "note"], body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="all", help="comma-separated names, or all (default)")
    p.add_argument("--sizes", default="600x400,1024x1024", help="W x H sizes, comma-separated")
    p.add_argument("--threads", default="1", help="threads of both backends, comma-separated counts measured "
                   "one after the other (default 1)")
    p.add_argument("--onnx-dir", default=None, help="folder of <Network>.onnx files (default: export them first)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per backend and size (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per backend and size (default 3)")
    p.add_argument("--max-forward-s", type=float, default=60.0, help="above this warm-up time: 1 timed call")
    p.add_argument("--budget-s", type=float, default=900.0, help="time budget of the whole run (default 900 s)")
    p.add_argument("--out", default=None, help="write the rows and the machine as JSON")
    p.add_argument("--skip", action="append", default=[], metavar="NETWORK@WxH[/THREADS]=REASON",
                   help="leave this pair out (at every thread count, or at /THREADS only), listed with the reason; "
                   "repeatable")
    args = p.parse_args(argv)

    def job() -> list[dict[str, Any]]:
        try:
            thread_counts = [int(t) for t in str(args.threads).split(",")]
        except ValueError:
            raise UserError(f"--threads takes counts separated by commas, e.g. 1,2; got '{args.threads}'") from None
        names = list_networks() if args.networks == "all" else [network_name(n) for n in args.networks.split(",")]
        sizes = sorted(parse_sizes(args.sizes), key=lambda hw: hw[0] * hw[1])
        skips = parse_skips(args.skip)
        start = time.perf_counter()
        torch.set_num_threads(thread_counts[0])
        cost = {n: probe_seconds_per_pixel(n) for n in names}  # seconds per pixel, updated when measured
        print("estimated seconds per forward (probe at 128x128): " + ", ".join(
            f"{n} {cost[n] * h * w:.1f} s at {w}x{h}" for n in names for h, w in sizes), flush=True)
        rows: list[dict[str, Any]] = []

        def save(complete: bool) -> None:
            if args.out:
                write_json(args.out, {"command": command_string(argv, "scripts/benchmark_onnx.py"),
                                      "machine": machine_info("cpu"), "threads": thread_counts, "rows": rows,
                                      "complete": complete, "seconds": time.perf_counter() - start})

        with tempfile.TemporaryDirectory() as tmp:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                # cheapest networks first: the budget covers as many (network, size) pairs as it can
                for name in sorted(names, key=lambda n: cost[n]):
                    loaded: tuple[torch.nn.Module, OnnxNetwork] | None = None  # one network in memory at a time
                    for h, w in sizes:
                        reason = skips.get((name, f"{w}x{h}", threads), skips.get((name, f"{w}x{h}", None)))
                        if reason:
                            rows.append({"network": name, "size": f"{w}x{h}", "threads": threads, "status": "skipped",
                                         "note": f"not run: {reason}"})
                            save(False)
                            continue
                        left = args.budget_s - (time.perf_counter() - start)
                        guess = cost[name] * h * w
                        need = forwards(args.warmup, args.repeats, guess, args.max_forward_s) * guess
                        if need > left:
                            rows.append({"network": name, "size": f"{w}x{h}", "threads": threads, "status": "skipped",
                                         "note": f"skipped: about {guess:.0f} s per forward expected ({need:.0f} s "
                                                 f"for the pair), {left:.0f} s of the budget left"})
                            print(f"{name} {w}x{h} ({threads} threads): {rows[-1]['note']}", flush=True)
                            save(False)
                            continue
                        if loaded is None:
                            torch.manual_seed(0)
                            net = build_network(name).eval()
                            path = Path(args.onnx_dir or tmp) / f"{name}.onnx"
                            if not path.is_file():
                                path = export_onnx(net, Path(tmp) / f"{name}.onnx",
                                                   torch.rand(1, 3, *trace_size(size_multiple_of(net))), name)
                            loaded = (net, OnnxNetwork(path, threads=threads))
                            probe = torch.rand(1, 3, PROBE, PROBE)
                            with torch.inference_mode():  # first-call costs of both backends, untimed
                                loaded[0](probe), loaded[1](probe)
                        row = bench_pair(name, (h, w), *loaded, args.warmup, args.repeats, args.max_forward_s)
                        cost[name] = max(row[k]["median_s"] for k in ("eager", "onnxruntime")) / (h * w)
                        rows.append(row)
                        save(False)
                        print(f"{name} {w}x{h} ({threads} threads): eager {row['eager']['median_s']:.3f} s, "
                              f"onnxruntime {row['onnxruntime']['median_s']:.3f} s {row['note']}", flush=True)
                    del loaded
        order = {n: i for i, n in enumerate(names)}
        rows.sort(key=lambda r: (r["threads"], order[r["network"]], r["size"] != f"{sizes[0][1]}x{sizes[0][0]}"))
        print()
        print(table(rows))
        print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)
        save(True)
        return rows

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
