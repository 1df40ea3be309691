"""What the parent and both workers share: the backbones compared, the JSON-line worker protocol,
threads and timing helpers."""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY = REPO_ROOT / "scripts" / "compare_official.py"  # every worker runs this script
MODES = ("sup", "ssll")
FEEDS = ("premade", "loader")


@dataclass(frozen=True)
class Backbone:
    """One backbone on both sides: our config stem and network name, the official config prefix."""

    name: str
    config_stem: str  # config/sup_<stem>.yaml, config/ssll_<stem>.yaml
    official_prefix: str  # <official>/config/<prefix>_{Baseline,Contra}.json
    batch: int  # the paper's per-step batch (paired; the unpaired batch is the same)


BACKBONES: dict[str, Backbone] = {
    "RetinexFormer": Backbone("RetinexFormer", "retinexformer", "Retinol_RetinexFormer", 3),
    "CIDNet": Backbone("CIDNet", "cidnet", "Retinol_CIDNet", 8),
    "UNet": Backbone("UNet", "unet", "Retinol_Unet", 3),
}


# ====================================================================== shared helpers
def set_single_thread() -> None:
    """One intra-op and one inter-op thread (call before any torch work)."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)


def worker_env(torch_home: Path) -> dict[str, str]:
    """Environment of every worker: one thread everywhere, local TORCH_HOME, no foreign PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LPIPS_ALEXNET_WEIGHTS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TORCHINDUCTOR_COMPILE_THREADS="1", TORCH_HOME=str(torch_home), PYTHONUNBUFFERED="1",
               OPENCV_LOG_LEVEL="ERROR", PYTHONWARNINGS="ignore")
    return env


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Stamped:
    """An iterable of ``n`` items that records ``time.perf_counter()`` before fetching each one.

    ``source`` is called once per ``iter()`` and returns the underlying iterator.
    """

    def __init__(self, source: Callable[[], Iterator[Any]], n: int, stamps: list[float] | None) -> None:
        self.source, self.n, self.stamps = source, n, stamps

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        it = self.source()
        for _ in range(self.n):
            if self.stamps is not None:
                self.stamps.append(time.perf_counter())
            yield next(it)


def intervals(stamps: list[float], warmup: int) -> list[float]:
    """Per-iteration seconds from start stamps (the last stamp closes the last iteration)."""
    d = [b - a for a, b in zip(stamps, stamps[1:])]
    return d[warmup:]


# ====================================================================== worker plumbing
def serve(make_side: Callable[[], Any]) -> int:
    """Build the side, then answer JSON-line commands on stdin with JSON lines (prints go to stderr)."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    side = make_side()
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            result = getattr(side, req["cmd"])(**req.get("args", {}))
            reply.write(json.dumps({"ok": result}) + "\n")
        except Exception:  # reported to the parent, which raises it with the worker's traceback
            reply.write(json.dumps({"error": traceback.format_exc()}) + "\n")
    return 0


class WorkerError(RuntimeError):
    """A command failed inside a worker (the message holds its traceback)."""


class Worker:
    """A persistent worker process (``--worker ours|official``) driven by JSON lines."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log_file = open(log, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file,
                                     env=env, cwd=str(cwd), text=True, bufsize=1)

    def call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.name} worker exited (code {self.proc.wait()}); see {self.log_file.name}")
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.name} worker, command {cmd}:\n{msg['error']}")
        return msg["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
        self.log_file.close()


def profile_steps(run: Callable[[int], None], iters: int) -> dict[str, Any]:
    """Wall, user and system seconds and minor page faults per step of ``run(iters)``; then the
    20 ops with the most self CPU time under torch.profiler (a second ``run(iters)``)."""
    import resource

    import torch

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(iters)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(iters)
    return {"wall_s": (t1 - t0) / iters, "user_s": (r1.ru_utime - r0.ru_utime) / iters,
            "sys_s": (r1.ru_stime - r0.ru_stime) / iters, "minor_faults": (r1.ru_minflt - r0.ru_minflt) / iters,
            "table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)}
