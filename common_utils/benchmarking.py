"""Timing helpers for honest speed measurements (``scripts/benchmark.py``, ``scripts/model_latency.py``).

- **Warm-up first**: ``warmup`` untimed calls (cuDNN autotuning, lazy initialisation, allocator
  growth, ``torch.compile``) before any timed one.
- **Each call timed on its own, synchronised**: :func:`time_fn` reads ``torch.utils.benchmark.timer``
  (it synchronises the accelerator, then reads ``perf_counter``) through ``timeit.Timer``, the engine
  ``torch.utils.benchmark.Timer`` wraps (garbage collection off while timing). A sample is the
  latency a batch-1 caller sees. ``Timer`` itself does not fit there: ``timeit`` runs two untimed
  calls before every measurement and averages, ``blocked_autorange`` picks its own count; it is
  used by :func:`autorange`, where no fixed count is quoted.
- **The median** is reported (robust to a stray slow call on a shared machine); every sample is kept.
- **Out of memory is a result**: :func:`measure` returns a row with status ``oom`` (or ``error``).
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
import timeit
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from foundation.errors import UserError


# ---------------------------------------------------------------------------- device helpers
def sync(device: torch.device | str | None) -> None:
    """Wait for every queued kernel on ``device`` (no-op off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA or host)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in msg for s in ("out of memory", "can't allocate memory",
                                                                    "not enough memory"))


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


def failure(exc: BaseException) -> dict[str, str]:
    """The ``status`` (``oom`` or ``error``) and ``note`` of a measurement that raised ``exc``."""
    oom = is_oom(exc)
    return {"status": "oom" if oom else "error", "note": "out of memory" if oom else error_text(exc)}


@contextlib.contextmanager
def backend_flags(tf32: bool | None = None, cudnn_benchmark: bool | None = None) -> Iterator[None]:
    """Set TF32 (matmul and cuDNN) and ``cudnn.benchmark`` inside the block (``None``: as it is); restore
    these flags and the determinism settings after, whatever the block changed (e.g. a trainer)."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if tf32 is not None:
                b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = tf32
            if cudnn_benchmark is not None:
                b.cudnn.benchmark = cudnn_benchmark
            yield
        finally:
            b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic = saved[:4]
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

    def _stat(self, f: Callable[[list[float]], float]) -> float:
        return f(self.samples) if self.samples else math.nan

    median = property(lambda self: self._stat(statistics.median))
    mean = property(lambda self: self._stat(statistics.fmean))
    min = property(lambda self: self._stat(min))
    max = property(lambda self: self._stat(max))
    stdev = property(lambda self: statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"n": len(self.samples), "median_s": self.median, "mean_s": self.mean, "min_s": self.min,
                "max_s": self.max, "stdev_s": self.stdev, "samples_s": list(self.samples)}


def _on(device: torch.device | str | None) -> contextlib.AbstractContextManager:
    """``torch.utils.benchmark.timer`` synchronises the *current* accelerator: make it ``device``."""
    dev = torch.device(device if device is not None else "cpu")
    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def compile_for_timing(fn: Callable[..., Any], first_call: Callable[[Callable[..., Any]], Any],
                       device: torch.device | str | None) -> tuple[Callable[..., Any], float]:
    """``torch.compile(fn)`` (static shapes) compiled by ``first_call(compiled)``, which is not timed;
    returns the compiled callable and the seconds compilation took. Errors (a graph break that cannot
    be compiled, out of memory) propagate: each benchmark says how it records them."""
    compiled = torch.compile(fn, dynamic=False)
    t0 = time.perf_counter()
    first_call(compiled)
    sync(device)
    return compiled, time.perf_counter() - t0


def time_fn(fn: Callable[[], Any], device: torch.device | str | None, warmup: int, repeats: int) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then time ``repeats`` calls one by one (each synchronised)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    with _on(device):
        for _ in range(max(0, warmup)):
            fn()
        return Timing(timeit.Timer(fn, timer=_benchmark().timer).repeat(repeats, number=1))


def autorange(fn: Callable[[], Any], device: torch.device | str | None, warmup: int,
              min_run_time: float = 0.2) -> Timing:
    """``warmup`` untimed calls, then ``torch.utils.benchmark.Timer.blocked_autorange``: blocks of calls long
    enough to make the timer's overhead negligible, for at least ``min_run_time`` seconds (its block-size
    search adds untimed calls). Samples = the per-call time of each block."""
    with _on(device):
        for _ in range(max(0, warmup)):
            fn()
        timer = _benchmark().Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return Timing(list(timer.blocked_autorange(min_run_time=min_run_time).times))


@dataclass
class BenchRow:
    """One measured configuration: what ran, how it went, its timing; ``items`` per timed call (for rates)."""

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
        return self.items / self.median_s if self.median_s else None

    def fail(self, exc: BaseException) -> BenchRow:
        """Record ``exc`` as this row's outcome (``oom`` or ``error``)."""
        self.status, self.note, self.timing = *failure(exc).values(), None
        return self

    def to_dict(self) -> dict[str, Any]:
        m = self.median_s
        d = {"section": self.section, "name": self.name, "variant": self.variant, "status": self.status,
             "items_per_call": self.items, "median_s": m, "median_ms": None if m is None else 1000.0 * m,
             "per_second": self.per_second, "note": self.note}
        if self.timing is not None:
            d["timing"] = self.timing.to_dict()
        return d | self.extra


def measure(section: str, name: str, variant: str, fn: Callable[[], Any], device: torch.device | str | None,
            warmup: int, repeats: int, items: float = 1.0, **extra: Any) -> BenchRow:
    """:func:`time_fn` as a :class:`BenchRow`; an OOM gives status ``oom``, another error ``error``."""
    row = BenchRow(section, name, variant, items=items, extra=dict(extra))
    try:
        row.timing = time_fn(fn, device, warmup, repeats)
    except Exception as exc:  # a benchmark row, not a crash: the sweep goes on
        row.fail(exc)
        free_memory(device)
    return row


# ---------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Hardware and software facts that a timing depends on."""
    dev = torch.device(device) if device is not None else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_cores_logical": os.cpu_count(), "cpu_cores_usable": usable,
        "load_average_1_5_15": load, "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(), "platform": platform.platform(),
        "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "device": None if dev is None else str(dev), "gpu": None}
    if torch.cuda.is_available():
        idx = dev.index if dev is not None and dev.type == "cuda" and dev.index is not None else \
            torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(gpu=torch.cuda.get_device_name(idx), gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_capability=f"{props.major}.{props.minor}")
    return info


def command_string(argv: Sequence[str] | None = None, script: str | None = None) -> str:
    """The command line as it would be typed (``python <script> <args>``)."""
    return "python " + shlex.join(sys.argv if argv is None else [script or sys.argv[0], *argv])


def parse_sizes(items: Sequence[str], multiple: int = 1, why: str = "") -> list[tuple[int, int]]:
    """``["128", "256x384", "512,1024"]`` -> [(128, 128), (256, 384), (512, 512), (1024, 1024)] (``--sizes``).

    Every side must be a positive multiple of ``multiple`` (``why`` says why, in the error).
    """
    sizes = []
    for tok in (t for item in items for t in re.split(r"[,\s]+", item) if t):
        m = re.fullmatch(r"(\d+)(?:[xX*](\d+))?", tok)
        if not m:
            raise UserError(f"--sizes takes S or HxW values (e.g. 512 or 512x768), got '{tok}'")
        h, w = int(m.group(1)), int(m.group(2) or m.group(1))
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise UserError(f"--sizes: {h}x{w} must be positive" + (f" multiples of {multiple}" if multiple > 1 else "")
                            + (f" ({why})" if why else ""))
        sizes.append((h, w))
    if not sizes:
        raise UserError("--sizes is empty")
    return sizes


def machine_notes(machine: dict[str, Any]) -> list[str]:
    """Warnings about conditions that make the timings unreliable."""
    notes = []
    load, cores = machine.get("load_average_1_5_15"), machine.get("cpu_cores_usable") or 1
    if load and load[0] > 0.5 * cores:
        notes.append(f"the machine is busy (1-minute load {load[0]} on {cores} usable cores): CPU timings and the "
                     "data-loader rates are unreliable; rerun on an idle machine")
    if machine["torch_num_threads"] > cores:
        notes.append(f"torch uses {machine['torch_num_threads']} threads on {cores} usable cores (oversubscribed)")
    return notes


# ---------------------------------------------------------------------------- output
def fmt(x: Any, digits: int = 2) -> str:
    """A number for a table (``–`` for missing), other values as text."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, rows)])


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created); an unwritable path is a UserError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`write_text` of ``obj`` as indented JSON (other objects as ``str``)."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


__all__ = ["BenchRow", "Timing", "autorange", "backend_flags", "backend_state", "command_string", "cpu_model",
           "error_text", "failure", "fmt", "free_memory", "is_oom", "machine_info", "machine_notes", "markdown_table",
           "measure", "parse_sizes",
           "sync", "time_fn", "write_json", "write_text"]


def _benchmark():
    """``torch.utils.benchmark``, imported when a timing is taken (its import pulls in the C++
    extension machinery, which prints a CUDA warning on CPU-only machines)."""
    import torch.utils.benchmark as tub

    return tub
