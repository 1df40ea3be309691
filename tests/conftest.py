"""Shared test set-up: deterministic CPU runs, repository root importable."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One intra-op thread: the tests use tiny tensors, and with two OpenMP threads on a shared 2-core
# machine every op slows down ~100x (spinning barriers) as soon as another process is busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
