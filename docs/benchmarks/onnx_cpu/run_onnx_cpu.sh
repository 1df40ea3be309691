#!/bin/bash
# The timed run of BENCHMARKS.md "ONNX Runtime vs eager PyTorch (CPU)", started through run_paused.sh:
#   bash docs/benchmarks/onnx_cpu/run_paused.sh LOG -- bash docs/benchmarks/onnx_cpu/run_onnx_cpu.sh BUDGET_S
# ONNX files: scripts/export_onnx.py -n NAME --out /tmp/measure/onnx/NAME.onnx (random weights, seed 0).
# The --skip pairs are over the ~3 GB per process allowed on this shared machine, estimated from
# peak-RSS probes at 128x128 and 256x256 (memory_probe.txt beside this file).
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
unset OMP_NUM_THREADS
mem="not run: estimated peak RSS above the ~3 GB per process allowed on this shared machine"
python scripts/benchmark_onnx.py --networks all --sizes 600x400,1024x1024 --threads 1,2 \
    --onnx-dir /tmp/measure/onnx --warmup 1 --repeats 3 --max-forward-s 10 --budget-s "${1:-1400}" \
    --skip "Restormer@1024x1024=$mem (eager 12.0 GiB, onnxruntime 6.5 GiB)" \
    --skip "NAFNet@1024x1024=$mem (eager 5.9 GiB, onnxruntime 4.9 GiB)" \
    --skip "LLFormer@1024x1024=$mem (eager 5.8 GiB, onnxruntime 3.8 GiB)" \
    --skip "MIRNet@1024x1024=$mem (eager 5.2 GiB, onnxruntime 4.3 GiB)" \
    --out docs/benchmarks/onnx_cpu/onnx_cpu.json
