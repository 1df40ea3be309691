#!/usr/bin/env python
"""Training and evaluation side by side with the official SSLL code (eezkni/CMT), on the CPU.

    python scripts/compare_official.py --official /work/official/CMT [--backbones RetinexFormer CIDNet UNet] [--out DIR]

The harness is the package ``scripts/official_compare/`` (sections, sides and the method in its
docstring; results: docs/official_comparison.md). This file is its command, and the program
every worker process runs (``--worker ours|official|ours-eval|official-eval``).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside this file, nothing of the framework

from official_compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
