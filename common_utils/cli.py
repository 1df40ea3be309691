"""Entry-point helper: user errors become one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

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
