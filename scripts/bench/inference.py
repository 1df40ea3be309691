"""(a) Inference latency: the reference row, one switch changed per row, a fresh-process cuDNN row."""
from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common_utils.benchmarking import (
    BenchRow,
    Timing,
    backend_flags,
    backend_state,
    compile_for_timing,
    fmt,
    free_memory,
    markdown_table,
    measure,
)
from foundation.errors import UserError

from .common import ENTRY, REPO_ROOT, log, out, ratio_text

REFERENCE = "fp32 eager"
AGAIN = f"{REFERENCE} (again, last)"
FRESH = "cudnn.benchmark (fresh process)"



VARIANTS = [  # row name, switches, CUDA only, description (each row changes one switch from the reference)
    (REFERENCE, {}, False, "inference_mode, fp32, TF32 off, cudnn.benchmark as set"),
    ("fp32 no_grad (straightforward)", {"no_grad": True}, False, "plain forward under torch.no_grad"),
    ("tf32", {"tf32": True}, True, "TF32 matmul and cuDNN"),
    (FRESH, {"fresh": True}, True, "the reference with cudnn.benchmark on, in a child process"),
    ("fp16 autocast", {"dtype": torch.float16}, True, "torch.autocast float16"),
    ("bf16 autocast", {"dtype": torch.bfloat16}, False, "torch.autocast bfloat16"),
    ("channels-last", {"channels_last": True}, False, "NHWC weights and input, fp32"),
    ("torch.compile", {"compile": True}, True, "torch.compile (default mode, static shapes)"),
]


def inference_variants(device: torch.device, s: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool, str]]:
    """The inference rows that apply here (``--variants`` picks some), the reference first."""
    v = [x for x in VARIANTS if (device.type == "cuda" or not x[2]) and not (x[1].get("fresh") and s["cudnn_benchmark"])
         and not (x[1].get("compile") and not s["compile"])]
    unknown = [x for x in s["variants"] or [] if x not in [name for name, *_ in v]]
    if unknown:
        raise UserError(f"unknown --variants {', '.join(unknown)} on {device.type} (valid: "
                        f"{', '.join(name for name, *_ in v)})")
    v = [x for x in v if x[0] in (s["variants"] or [x[0]])]
    return v + [(AGAIN, {}, False, "the reference measured again after every other row")] * (
        len(v) > 1 and v[0][0] == REFERENCE)


def forward_fn(net: torch.nn.Module, x: torch.Tensor, device: torch.device, spec: dict[str, Any]) -> Callable[[], Any]:
    from common_utils.inference import forward_padded

    grad = torch.no_grad if spec.get("no_grad") else torch.inference_mode
    dtype = spec.get("dtype")

    def run() -> Any:
        with grad(), torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            return forward_padded(net, x)

    return run


def inference_row(net: torch.nn.Module, x: torch.Tensor, device: torch.device, variant: str, spec: dict[str, Any],
                  s: dict[str, Any], extra: dict[str, Any]) -> BenchRow:
    model, inp = net, x
    try:
        with backend_flags(tf32=spec.get("tf32", False), cudnn_benchmark=s["cudnn_benchmark"]):
            extra["backend"] = backend_state()
            if spec.get("channels_last"):
                model = copy.deepcopy(net).to(memory_format=torch.channels_last)
                inp = x.contiguous(memory_format=torch.channels_last)
            if spec.get("compile"):
                torch.compiler.reset()
                model, extra["compile_s"] = compile_for_timing(
                    model, lambda m: forward_fn(m, inp, device, spec)(), device)
            row = measure("inference", extra["network"], variant, forward_fn(model, inp, device, spec), device,
                          s["warmup"], s["repeats"], **extra)
    except Exception as exc:  # set-up failure of this row (compile, OOM in the copy)
        row = BenchRow("inference", extra["network"], variant, extra=extra).fail(exc)
    finally:
        if spec.get("compile"):
            torch.compiler.reset()
        del model
        free_memory(device)
    if "compile_s" in extra and row.ok:
        row.note = f"compile {extra['compile_s']:.1f} s (untimed)"
    return row


def fresh_process_rows(name: str, s: dict[str, Any], tmp: Path) -> dict[int, dict[str, Any]]:
    """The reference of ``name`` at every size with cudnn.benchmark on, measured by a child process."""
    out_json = tmp / f"fresh_{name}.json"
    cmd = [sys.executable, str(ENTRY), "--sections", "inference", "--networks", name,
           "--sizes", ",".join(map(str, s["sizes"])), "--warmup", str(s["warmup"]), "--repeats", str(s["repeats"]),
           "--device", s["device"], "--cudnn-benchmark", "--variants", REFERENCE, "--json", str(out_json)]
    cmd += ["--network-args", json.dumps({name: s["network_args"][name]})] if s["network_args"].get(name) else []
    cmd += ["--threads", str(s["threads"])] if s["threads"] else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO_ROOT))
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {size: {"status": "error", "note": f"child process failed (exit {proc.returncode}): {tail}"[:200]}
                for size in s["sizes"]}
    return {r["size"]: r for r in json.loads(out_json.read_text())["inference"]["rows"] if r.get("size")}


def child_row(variant: str, child: dict[str, Any] | None, extra: dict[str, Any]) -> BenchRow:
    row = BenchRow("inference", extra["network"], variant, extra=extra)
    if child is None or child.get("status") != "ok" or not child.get("timing"):
        row.status = "error" if child is None else child.get("status", "error")
        row.note = "the child process reported no row for this size" if child is None else child.get("note", "")
    else:
        row.timing = Timing(list(child["timing"]["samples_s"]))
        row.extra["backend"] = child.get("backend")
    return row


def bench_inference(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    from models import build_network

    rows: list[BenchRow] = []
    variants = inference_variants(device, s)
    for name in s["networks"]:
        kwargs = s["network_args"].get(name, {})
        try:
            net = build_network(name, **kwargs).eval().to(device).requires_grad_(False)
        except Exception as exc:
            rows.append(BenchRow("inference", name, "build").fail(exc))
            log(f"[inference] {name}: cannot be built: {rows[-1].note}")
            continue
        params_m = sum(p.numel() for p in net.parameters()) / 1e6
        fresh = None
        for size in s["sizes"]:
            torch.manual_seed(0)
            x = torch.rand(1, 3, size, size, device=device)
            with contextlib.suppress(Exception), backend_flags(tf32=False, cudnn_benchmark=s["cudnn_benchmark"]):
                for _ in range(max(1, s["warmup"])):  # prime: clocks up, allocator and kernels warm
                    forward_fn(net, x, device, {})()
            ref_ms = None
            for variant, spec, _, what in variants:
                extra = {"network": name, "size": size, "params_m": params_m, "network_args": kwargs, "what": what}
                if spec.get("fresh"):
                    if fresh is None:
                        free_memory(device)
                        log(f"[inference] {name}: {FRESH} rows in a child process")
                        fresh = fresh_process_rows(name, s, tmp)
                    row = child_row(variant, fresh.get(size), extra)
                else:
                    row = inference_row(net, x, device, variant, spec, s, extra)
                if variant == REFERENCE and row.ok:
                    ref_ms = row.median_s
                row.extra["speedup_vs_fp32"] = (ref_ms / row.median_s) if (ref_ms and row.ok) else None
                if variant == AGAIN and row.ok and ref_ms:
                    row.extra["drift"] = drift = row.median_s / ref_ms - 1
                    row.note = (f"drift {100 * drift:+.1f}% vs the first {REFERENCE} row"
                                + (": speed-ups within this are noise" if abs(drift) > 0.05 else ""))
                rows.append(row)
                log(f"[inference] {name} {size}x{size} {variant}: {fmt(row.median_s and 1000 * row.median_s)} ms "
                    f"{row.status} {row.note}")
            del x
            free_memory(device)
        del net
        free_memory(device)
    return {"rows": [r.to_dict() for r in rows]}


def print_inference(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (a) Inference latency (batch 1, median of {s['repeats']} after {s['warmup']} warm-up, "
        "each call synchronised)")
    out()
    out(markdown_table(
        ["network", "input", "variant", "status", "median ms", "min ms", "images/s", f"speed-up vs {REFERENCE}",
         "note"],
        [[r["name"], f"{r['size']}x{r['size']}" if r.get("size") else "–", r["variant"], r["status"],
          fmt(r["median_ms"]), fmt(r["timing"]["min_s"] * 1000 if r.get("timing") else None),
          fmt(r["per_second"], 1), ratio_text(r.get("speedup_vs_fp32")), r["note"]] for r in res["rows"]]))
    out()
    text = (f"`{REFERENCE}`: torch.inference_mode, fp32 with TF32 off and cudnn.benchmark "
            f"{'on' if s['cudnn_benchmark'] else 'off'} (the reference). Each other row changes one thing; speed-up "
            "> 1 means that switch helps. `fp32 no_grad (straightforward)` is the plain forward without "
            "inference_mode: a speed-up <= 1.00x there means inference_mode is no slower. "
            f"`{AGAIN}` re-measures the reference after the other rows: its drift bounds the noise.")
    if any(r["variant"] == FRESH for r in res["rows"]):
        text += (f" `{FRESH}` is the reference run by a child process with cudnn.benchmark on (cuDNN keeps its "
                 "first algorithm choice per convolution for the whole process, whatever the flag says later).")
    out(text)
    out()


