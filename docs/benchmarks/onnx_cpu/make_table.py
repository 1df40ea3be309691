#!/usr/bin/env python
"""The Markdown table of BENCHMARKS.md "ONNX Runtime vs eager PyTorch (CPU)" from the two runs' JSON.

    python docs/benchmarks/onnx_cpu/make_table.py

Rows of ``onnx_cpu.json`` (first run) count only where the pair had a warm-up at its own size;
``onnx_cpu_part2.json`` gives the rest. Per thread count, networks in the registry's order.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["RtxICE-Net", "ASMICE-Net", "CIDNet", "RetinexFormer", "UNet", "NAFNet", "LLFormer", "MIRNet", "Restormer"]
SIZES = ["600x400", "1024x1024"]


def rows() -> dict[tuple[int, str, str], dict]:
    """(threads, network, size) -> the row that counts."""
    out: dict[tuple[int, str, str], dict] = {}
    first = json.loads((HERE / "onnx_cpu.json").read_text())["rows"]
    for r in first:  # the first run: only pairs timed after a warm-up at their own size
        if r.get("status") == "ok" and r.get("warmup_s"):
            out[r["threads"], r["network"], r["size"]] = r
    second = HERE / "onnx_cpu_part2.json"
    for r in json.loads(second.read_text())["rows"] if second.is_file() else []:
        key = (r["threads"], r["network"], r["size"])
        if key not in out:  # the pairs left out of the second run because the first measured them stay
            out[key] = r
    return out


def cell(t: dict) -> str:
    return f"{t['median_s']:.3f} (n={t['n']})" if t["n"] > 1 else f"{t['median_s']:.3f} (n=1)"


def main() -> None:
    table = rows()
    lines = ["| network | W x H | threads | eager (s) | onnxruntime (s) | onnxruntime speed-up | "
             "first call at the size, eager / onnxruntime (s) | note |", "|---|---|---|---|---|---|---|---|"]
    for threads in (1, 2):
        for net in ORDER:
            for size in SIZES:
                r = table.get((threads, net, size))
                if r is None:
                    continue
                if r.get("status") != "ok":
                    note = r["note"].replace("not run: not run: ", "not run: ")  # the run scripts' reason repeated it
                    lines.append(f"| {net} | {size} | {threads} | – | – | – | – | {note} |")
                    continue
                e, o, w = r["eager"], r["onnxruntime"], r["warmup_s"]
                note = r["note"].strip().replace("1 timed call per backend", "1 timed call").rstrip(";")
                lines.append(f"| {net} | {size} | {threads} | {cell(e)} | {cell(o)} | "
                             f"{e['median_s'] / o['median_s']:.2f}x | {w['eager']:.2f} / {w['onnxruntime']:.2f} | "
                             f"{note} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
