"""Entry-point helper: user errors become one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from foundation.errors import UserError

_REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")


def run_cli(job: Callable[[], Any]) -> int:
    """Run ``job`` and return its exit code (an int it returns, else 0); print a UserError as one
    ``error: ...`` line and return 2 (set SSIR_DEBUG=1 for tracebacks)."""
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
