"""Memory and time of one training step with and without gradient checkpointing (``train.grad_checkpoint``).

    python scripts/grad_checkpoint_benchmark.py --networks Restormer LLFormer MIRNet --crop 128 --steps 1

Each (network, setting) runs in a fresh process at the paper configuration, batch 1, one thread.
The gradients are allocated first (zeros, no compute), so that the memory held before a step is
the network and its gradients. Then ``--steps`` steps (forward, L1 loss, backward) run while a
thread samples the process's anonymous resident memory (``RssAnon`` in ``/proc/self/status``,
every 2 ms). Anonymous memory is what tensors occupy; the whole RSS and its high-water mark also
count the pages of torch's libraries that the first backward reads in, a few hundred MiB that
hid the effect entirely for LLFormer. Reported: anonymous memory before the steps, its peak, the
difference (the step's activations and temporaries: what checkpointing reduces), and the median
step time as the CPU time of the computing thread (one thread: what the step costs, little affected by other
processes) and as wall time. The optimizer step is left out: it is the same either way.
Prints a Markdown table. Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("RssAnon not in /proc/self/status (Linux only)")


def child(network: str, crop: int, steps: int, checkpointed: bool) -> dict:
    """One setting, measured in this process (see the module docstring)."""
    import threading

    import torch

    from models import build_network
    from models.grad_checkpoint import set_grad_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_network(network)
    set_grad_checkpoint(net, checkpointed)
    net.train()
    for prm in net.parameters():
        prm.grad = torch.zeros_like(prm)
    x, y = torch.rand(1, 3, crop, crop), torch.rand(1, 3, crop, crop)
    held = _anon_mib()
    peak = [held]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_mib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, wall = [], []
    for _ in range(steps):
        c, t = time.thread_time(), time.perf_counter()
        torch.nn.functional.l1_loss(net(x), y).backward()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    done.set()
    sampler.join()
    return {"network": network, "crop": crop, "checkpointed": checkpointed, "held_mib": held, "peak_mib": peak[0],
            "step_mib": peak[0] - held, "cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall),
            "cpu_all": cpu, "wall_all": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", nargs="+", default=["Restormer", "LLFormer", "MIRNet"])
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=1, help="measured steps (forward and backward)")
    p.add_argument("--child", nargs=2, metavar=("NETWORK", "ON"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.crop, a.steps, a.child[1] == "1")))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for network in a.networks:
        for on in ("0", "1"):
            out = subprocess.run([sys.executable, __file__, "--crop", str(a.crop), "--steps", str(a.steps),
                                  "--child", network, on], env=env, stdout=subprocess.PIPE, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"# {rows[-1]}", file=sys.stderr, flush=True)
    print("| network | crop | grad_checkpoint | anon. memory before (MiB) | peak (MiB) | step above before (MiB) | "
          "step CPU (s) | step wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['network']} | {r['crop']} | {'on' if r['checkpointed'] else 'off'} | {r['held_mib']:.0f} | "
              f"{r['peak_mib']:.0f} | {r['step_mib']:.0f} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
