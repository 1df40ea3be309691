#!/usr/bin/env python
"""Cost of ``--self-ensemble`` (x8) against the plain forward, measured interleaved on the same images.

    python docs/benchmarks/self_ensemble/se_timing.py --images 3 --threads 1,2 --out se_timing.json

The shipped CIDNet (``pretrained/cidnet_lol_real.pth``) on the first ``--images`` LOL-v1 eval15
inputs (600x400, sorted by name), through the evaluation's own code path: ``forward_padded`` for
the plain forward, ``forward_self_ensemble`` around it for x8. Per thread count: one untimed plain
forward, then for each image a timed plain forward and a timed x8 forward, one after the other, so
that the machine's noise hits both alike. Kept as the record of BENCHMARKS.md's self-ensemble cost.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch

from common_utils.checkpoint import load_network
from common_utils.inference import forward_padded, forward_self_ensemble
from data.image_io import read_image


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--data", default="datasets/LOL/eval15/low")
    p.add_argument("--out", default=None)
    p.add_argument("--crop", type=int, default=0, help="crop each image to its top-left NxN (a dry run); 0: whole")
    args = p.parse_args()
    net, _ = load_network("CIDNet", "pretrained/cidnet_lol_real.pth", {}, None, "cpu")
    files = sorted(Path(args.data).glob("*.png"))[: args.images]
    images = [torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].float().contiguous() for f in files]
    if args.crop:
        images = [x[..., : args.crop, : args.crop].contiguous() for x in images]
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            forward_padded(net, images[0])  # warm-up
            for f, x in zip(files, images):
                row = {"threads": threads, "image": f.name, "load_before": list(os.getloadavg())}
                t0 = time.perf_counter()
                forward_padded(net, x)
                row["plain_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                forward_self_ensemble(lambda t: forward_padded(net, t), x)
                row["x8_s"] = time.perf_counter() - t0
                row["ratio"] = row["x8_s"] / row["plain_s"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        mine = [r for r in rows if r["threads"] == threads]
        print(f"{threads} threads: plain median {statistics.median(r['plain_s'] for r in mine):.2f} s, x8 median "
              f"{statistics.median(r['x8_s'] for r in mine):.2f} s, ratio median "
              f"{statistics.median(r['ratio'] for r in mine):.2f}x", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
