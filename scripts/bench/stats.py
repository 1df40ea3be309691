"""(e) Model statistics: parameters, GMACs and a blocked-autorange latency per network and size."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from common_utils.benchmarking import autorange, failure, fmt, free_memory, markdown_table

from .common import log, out


def bench_stats(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Parameters, GMACs and a ``Timer.blocked_autorange`` latency of every network at every size."""
    from torch.utils.flop_counter import FlopCounterMode

    from common_utils.inference import forward_padded
    from models import build_network

    rows, min_run_time = [], 0.05 if s["quick"] else 1.0
    for name in s["networks"]:
        try:
            net = build_network(name, **s["network_args"].get(name, {})).eval().to(device)
        except Exception as exc:
            rows.append({"network": name, **failure(exc)})
            continue
        params = sum(p.numel() for p in net.parameters()) / 1e6
        for size in s["sizes"]:
            row = {"network": name, "params_m": params, "size": size}
            try:
                x = torch.rand(1, 3, size, size, device=device)
                with torch.inference_mode():
                    with FlopCounterMode(display=False) as counter:
                        forward_padded(net, x)  # also the first warm-up call
                    t = autorange(functools.partial(forward_padded, net, x), device, s["warmup"], min_run_time)
                row.update(status="ok", gmacs=counter.get_total_flops() / 2e9, latency_ms=1000 * t.median,
                           fps=1 / t.median, blocks=len(t.samples))
            except Exception as exc:  # a report: one failing size must not stop the table
                row.update(failure(exc))
            rows.append(row)
            x = None
            free_memory(device)
            log(f"[stats] {name} {size}x{size}: {fmt(row.get('latency_ms'))} ms {row['status']}")
        del net
        free_memory(device)
    return {"rows": rows, "min_run_time_s": min_run_time}


def print_stats(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (e) Model statistics (fp32, batch 1, inference_mode; latency: median of "
        f"torch.utils.benchmark.Timer.blocked_autorange, min_run_time {res['min_run_time_s']} s)")
    out()
    out(markdown_table(["network", "params (M)", "input", "GMACs", "latency (ms)", "FPS", "status", "note"],
                       [[r["network"], fmt(r.get("params_m"), 3), f"{r['size']}x{r['size']}" if "size" in r else "–",
                         fmt(r.get("gmacs")), fmt(r.get("latency_ms")), fmt(r.get("fps")), r["status"],
                         r.get("note", "")] for r in res["rows"]]))
    out()
    out("GMACs = torch.utils.flop_counter FLOPs / 2 (convolutions and matrix products); parameters include every "
        "declared block.")
    out()


