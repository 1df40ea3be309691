"""Entry-point helper: user errors become one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from foundation.errors import UserError

_REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")


#: set to 1 to keep glibc's default allocator behaviour (see :func:`keep_freed_memory`)
ALLOCATOR_OPT_OUT = "SSIR_DEFAULT_MALLOC"


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory instead of mapping and returning it on every call.

    Feature maps above glibc's mmap threshold (32 MiB: a 600x400 image through most backbones, a
    CIDNet SSLL batch at crop 128) are otherwise mapped fresh and returned on every step or image,
    and the page faults cost more than the arithmetic (docs/official_comparison.md: evaluation
    1.11x -> 2.10x the official speed, CIDNet's SSLL step 1.1x -> 0.85x the official time). The
    price: memory freed by a peak stays reserved by the process. Linux/glibc only; a no-op
    elsewhere and with ``SSIR_DEFAULT_MALLOC=1``. Returns whether the setting was applied.
    """
    if os.environ.get(ALLOCATOR_OPT_OUT) == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; cgroup-limited containers included)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(threads: int | str | None, loader_workers: int) -> int:
    """Set torch's intra-op threads so compute threads and loader workers do not fight over the cores.

    ``auto`` (the default of ``train.threads``): the usable cores minus the loader workers, at least
    one; an explicit ``OMP_NUM_THREADS`` in the environment wins. On a busy 2-core machine a second
    compute thread made every step ~3x slower instead of ~1.5x faster (BENCHMARKS.md, threads).
    Every entry point applies it: ``run.py`` with ``train.threads``, the evaluation and enhance
    CLIs with ``--threads`` (default ``auto``). Returns the number set.
    """
    import torch  # here, so that importing this module stays cheap
    if threads in (None, "auto"):
        env = os.environ.get("OMP_NUM_THREADS")
        n = int(env) if env and env.isdigit() and int(env) > 0 else max(1, usable_cores() - max(0, loader_workers))
    else:
        n = max(1, int(threads))
    torch.set_num_threads(n)
    return n


def capped_workers(requested: int) -> int:
    """Loader workers actually started for ``requested``: at most the usable cores (torch warns above
    that, and more workers than cores only compete with the compute threads)."""
    return max(0, min(int(requested), usable_cores()))


def default_workers(cap: int = 4) -> int:
    """Default data-loading workers of the evaluation CLIs: one per spare core (usable cores minus one
    compute thread), at most ``cap``; 1 on a 2-core machine, where 4 would only make torch warn."""
    return max(0, min(cap, usable_cores() - 1))


def loader_workers(workers: int | None, threads: int | str | None) -> int:
    """The evaluation CLIs' ``--workers`` (default :func:`default_workers`; negative is a UserError), with
    torch's compute threads configured around them (:func:`configure_threads`)."""
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    configure_threads(threads, workers)
    return workers


def add_threads_argument(parser: Any) -> None:
    """``--threads auto|N`` with the rule of :func:`configure_threads` (the same as ``train.threads``)."""
    parser.add_argument("--threads", default="auto", type=_threads_value,
                        help="torch compute threads: auto = usable cores minus the loader workers, at least 1; an "
                             "explicit OMP_NUM_THREADS wins (default: %(default)s; the rule of train.threads)")


def _threads_value(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got '{text}'")
    return int(text)


def help_text(doc: str | None, script: str | None = None) -> str:
    """A module docstring as ``--help`` text: reStructuredText markup (````x````, ``:func:`x```) removed,
    and the ``python <script>`` of its usage lines replaced by the program's name (``ssir-eval`` when
    installed, the script's file name otherwise). Use with ``RawDescriptionHelpFormatter``."""
    import re

    text = (doc or "").replace("%", "%%")
    text = re.sub(r":(?:func|class|data|meth|mod|attr):`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = text.replace("::\n", ":\n")
    if script:
        text = text.replace(f"python {script}", "%(prog)s")
    return text.strip() + "\n"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with the description as written and every option's default shown (the study scripts)."""


def run_cli(job: Callable[[], Any]) -> int:
    """Run ``job`` and return its exit code (an int it returns, else 0); print a UserError as one
    ``error: ...`` line and return 2 (set SSIR_DEBUG=1 for tracebacks). Every entry point goes
    through here, which also applies :func:`keep_freed_memory`."""
    keep_freed_memory()
    try:
        code = job()
    except UserError as exc:
        if os.environ.get("SSIR_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if os.environ.get("SSIR_DEBUG") or not exc.name:
            raise
        top = exc.name.split(".")[0]
        print(f"error: the Python package '{top}' is not installed; install the requirements with "
              f"'pip install -r {_REQUIREMENTS}' (SSIR_DEBUG=1 shows where it was needed)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
