"""Reusable timing helpers for honest speed measurements (``scripts/benchmark.py``, ``scripts/model_stats.py``).

Rules every helper here follows:

- **Warm-up first.** ``warmup`` untimed calls run before any timed one (cuDNN autotuning, lazy
  initialisation, allocator growth and ``torch.compile`` happen there).
- **Synchronise around every timed call on CUDA.** Kernels are asynchronous: without
  ``torch.cuda.synchronize`` a timer only measures the kernel launches. :func:`time_fn` syncs the
  device before and after each call and reads ``time.perf_counter`` (the wall-clock latency a
  batch-1 caller sees, host overhead included), or, with ``timer="events"``, records CUDA events
  around the call (GPU time between the events).
- **Report the median** of the individual timed calls (robust to a stray slow call on a shared
  machine); min / mean / max / standard deviation and every sample are kept as well.
- **Out-of-memory is a result, not a crash.** :func:`measure` returns a row with status ``oom``
  (or ``error`` with the message) and frees the cached memory, so a sweep goes on.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch


# ---------------------------------------------------------------------------- device helpers
def sync(device: torch.device | str | None) -> None:
    """Wait for every queued kernel on ``device`` (no-op off CUDA)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA or host)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "not enough memory" in msg)


def free_memory(device: torch.device | str | None = None) -> None:
    """Collect garbage and return cached CUDA blocks (call after an OOM or between networks)."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()


def error_text(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (shortened), for tables."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def backend_flags(tf32: bool | None = None, cudnn_benchmark: bool | None = None) -> Iterator[None]:
    """Set TF32 (matmul and cuDNN) and ``cudnn.benchmark`` inside the block; restore them after.

    ``None`` leaves a flag as it is. Everything else the block changes among these flags
    (e.g. a trainer's constructor) is restored as well.
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
            if cudnn_benchmark is not None:
                torch.backends.cudnn.benchmark = cudnn_benchmark
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
            torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def backend_state() -> dict[str, Any]:
    """The current TF32 / cuDNN flags (recorded next to results)."""
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled())}


# ---------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds of each timed call."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else math.nan

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n": len(self.samples), "median_s": self.median, "mean_s": self.mean, "min_s": self.min,
                "max_s": self.max, "stdev_s": self.stdev, "samples_s": list(self.samples)}


def time_fn(fn: Callable[[], Any], device: torch.device | str | None, warmup: int, repeats: int,
            timer: str = "wall") -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then time ``repeats`` calls one by one.

    ``timer="wall"``: ``perf_counter`` with a device sync before and after each call (on CUDA).
    ``timer="events"``: CUDA events recorded around each call, read after a sync (CUDA only;
    falls back to ``wall`` elsewhere).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    for _ in range(max(0, warmup)):
        fn()
    sync(dev)
    out = Timing()
    use_events = timer == "events" and dev.type == "cuda"
    for _ in range(repeats):
        if use_events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync(dev)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.samples.append(start.elapsed_time(end) / 1000.0)
        else:
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            out.samples.append(time.perf_counter() - t0)
    return out


@dataclass
class BenchRow:
    """One measured configuration: what ran, how it went, and its timing.

    ``items`` is how many images / pairs one timed call processes (for per-second rates).
    """

    section: str
    name: str
    variant: str
    status: str = "ok"  # ok | oom | error | skipped
    timing: Timing | None = None
    items: float = 1.0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.timing is not None and bool(self.timing.samples)

    @property
    def median_s(self) -> float | None:
        return self.timing.median if self.ok else None

    @property
    def per_second(self) -> float | None:
        m = self.median_s
        return self.items / m if m else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"section": self.section, "name": self.name, "variant": self.variant,
                             "status": self.status, "items_per_call": self.items,
                             "median_s": self.median_s, "median_ms": None if self.median_s is None else
                             1000.0 * self.median_s, "per_second": self.per_second, "note": self.note}
        if self.timing is not None:
            d["timing"] = self.timing.to_dict()
        d.update(self.extra)
        return d


def measure(section: str, name: str, variant: str, fn: Callable[[], Any], device: torch.device | str | None,
            warmup: int, repeats: int, items: float = 1.0, timer: str = "wall", **extra: Any) -> BenchRow:
    """:func:`time_fn` as a :class:`BenchRow`; an OOM gives status ``oom``, another error ``error``."""
    row = BenchRow(section, name, variant, items=items, extra=dict(extra))
    try:
        row.timing = time_fn(fn, device, warmup, repeats, timer)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a benchmark row, not a crash: the sweep goes on
        row.status = "oom" if is_oom(exc) else "error"
        row.note = "out of memory" if row.status == "oom" else error_text(exc)
        row.timing = None
        free_memory(device)
    return row


# ---------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Hardware and software facts that a timing depends on."""
    dev = torch.device(device) if device is not None else None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": usable,
        "load_average_1_5_15": load,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "device": str(dev) if dev is not None else None,
        "gpu": None,
    }
    if torch.cuda.is_available():
        idx = dev.index if dev is not None and dev.type == "cuda" and dev.index is not None else \
            torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
    return info


def command_string(argv: Sequence[str] | None = None, script: str | None = None) -> str:
    """The command line as it would be typed (``python <script> <args>``)."""
    if argv is None:
        return "python " + shlex.join(sys.argv)
    return "python " + shlex.join([script or sys.argv[0], *argv])


# ---------------------------------------------------------------------------- formatting
def fmt(x: Any, digits: int = 2) -> str:
    """A number for a table (``–`` for missing), other values as text."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["BenchRow", "Timing", "backend_flags", "backend_state", "command_string", "cpu_model", "error_text",
           "fmt", "free_memory", "is_oom", "machine_info", "markdown_table", "measure", "sync", "time_fn"]
