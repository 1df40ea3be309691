#!/usr/bin/env python
"""Peak RSS above the loaded state for one forward (eager or onnxruntime), in a fresh process, 1 thread.

    python docs/benchmarks/onnx_cpu/memory_probe.py NETWORK eager|onnx SIDE [ONNX_DIR]

Builds the paper configuration (random weights, seed 0), makes one 32x32 call, resets the
high-water mark (``/proc/self/clear_refs``), runs one SIDE x SIDE forward and prints the RSS before
and the high-water mark after (``VmHWM``). Run at 128 and 256, the two points give the per-pixel
slope from which memory_probe.txt extrapolates to 600x400 and 1024x1024. Linux only.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch

from common_utils.onnx_export import OnnxNetwork
from models import build_network


def vm(key: str) -> float:
    """A ``/proc/self/status`` memory line in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def main() -> None:
    name, backend, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
    onnx_dir = Path(sys.argv[4] if len(sys.argv) > 4 else "/tmp/measure/onnx")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_network(name).eval()
    run = net if backend == "eager" else OnnxNetwork(onnx_dir / f"{name}.onnx", threads=1)
    with torch.inference_mode():
        run(torch.rand(1, 3, 32, 32))
        Path("/proc/self/clear_refs").write_text("5")
        base = vm("VmRSS:")
        run(torch.rand(1, 3, side, side))
        peak = vm("VmHWM:")
    print(name, backend, side, f"base {base:.0f} MiB, peak {peak:.0f} MiB, above {peak - base:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
