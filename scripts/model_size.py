#!/usr/bin/env python
"""Parameter count and fp32 size of RtxICE-Net and ASMICE-Net, as the official ICEML ``src/model_size.py``.

    python scripts/model_size.py [--output output]

Builds the untrained networks at the paper configuration, writes ``<output>/model_info.txt`` with
exactly the two lines of the original, then prints ``Model info saved to <path>`` and the text::

    ASMICE-Net: 1.068 Million params, 4.074 MB
    RtxICE-Net: 0.534 Million params, 2.037 MB

params = sum(numel) / 1e6 and size = sum(numel * element_size) / 1024**2 (MiB, written "MB" as
the paper does), 3 decimals. The counts include the blocks the official code declares but never
runs (``acm4``/``fa4``), which is what the published 0.534M / 1.068M count. Every registered
network's parameters and GMACs: ``python scripts/benchmark.py --sections stats``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common_utils.benchmarking import write_text  # noqa: E402
from common_utils.cli import run_cli  # noqa: E402

NETWORKS = ("ASMICE-Net", "RtxICE-Net")  # order of the original file


def model_info() -> str:
    """The text of ``model_info.txt``: ``<name>: <params/1e6 .3f> Million params, <bytes/1024**2 .3f> MB``."""
    from models import build_network

    lines = []
    for name in NETWORKS:
        params = list(build_network(name).parameters())
        mib = sum(p.numel() * p.element_size() for p in params) / 1024 ** 2
        lines.append(f"{name}: {sum(p.numel() for p in params) / 1e6:.3f} Million params, {mib:.3f} MB")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output", help="folder of model_info.txt (default: output)")
    args = p.parse_args(argv)

    def job() -> None:
        text = model_info()
        path = write_text(Path(args.output) / "model_info.txt", text)
        print(f"Model info saved to {path}")
        print(text, end="")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
