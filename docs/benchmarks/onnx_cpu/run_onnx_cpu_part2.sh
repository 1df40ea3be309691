#!/bin/bash
# Second timed run (the first, run_onnx_cpu.sh, was stopped after UNet: it timed a slow pair without a
# warm-up at its own size, which inflated RetinexFormer's eager 1024x1024 call 2x; every pair now
# gets one). Pairs measured in the first run with their own warm-up are left out at 1 thread.
#   bash docs/benchmarks/onnx_cpu/run_paused.sh LOG -- bash docs/benchmarks/onnx_cpu/run_onnx_cpu_part2.sh BUDGET_S
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
unset OMP_NUM_THREADS
mem="not run: estimated peak RSS above the ~3 GB per process allowed on this shared machine"
done1="measured in the first run (onnx_cpu.json)"
python scripts/benchmark_onnx.py --networks all --sizes 600x400,1024x1024 --threads 1,2 \
    --onnx-dir /tmp/measure/onnx --warmup 1 --repeats 3 --max-forward-s 10 --budget-s "${1:-1100}" \
    --skip "Restormer@1024x1024=$mem (eager 12.0 GiB, onnxruntime 6.5 GiB)" \
    --skip "NAFNet@1024x1024=$mem (eager 5.9 GiB, onnxruntime 4.9 GiB)" \
    --skip "LLFormer@1024x1024=$mem (eager 5.8 GiB, onnxruntime 3.8 GiB)" \
    --skip "MIRNet@1024x1024=$mem (eager 5.2 GiB, onnxruntime 4.3 GiB)" \
    --skip "RtxICE-Net@600x400/1=$done1" --skip "RtxICE-Net@1024x1024/1=$done1" \
    --skip "ASMICE-Net@600x400/1=$done1" --skip "ASMICE-Net@1024x1024/1=$done1" \
    --skip "CIDNet@600x400/1=$done1" --skip "CIDNet@1024x1024/1=$done1" \
    --skip "RetinexFormer@600x400/1=$done1" --skip "UNet@600x400/1=$done1" \
    --out docs/benchmarks/onnx_cpu/onnx_cpu_part2.json
