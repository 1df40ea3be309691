#!/usr/bin/env python
"""Parameter count and fp32 size of RtxICE-Net and ASMICE-Net, as the official ICEML ``src/model_size.py``.

    python scripts/model_size.py [--output output] [--all]

Builds the untrained networks at the paper configuration and writes ``<output>/model_info.txt``
with exactly the two lines of the original::

    ASMICE-Net: 1.068 Million params, 4.074 MB
    RtxICE-Net: 0.534 Million params, 2.037 MB

params = sum(numel) / 1e6 and size = sum(numel * element_size) / 1024**2 (MiB, written "MB" as
the paper does), both with 3 decimals. The counts include the blocks the official code declares but
never runs (``acm4``/``fa4``), which is what the published 0.534M / 1.068M count. Then it prints
``Model info saved to <path>`` and the text.

``--all`` appends a second section (after a blank line) with every registered network at its
paper default configuration, in the same format; the first two lines stay as the original.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch.nn as nn  # noqa: E402

from common_utils.cli import run_cli  # noqa: E402

ORIGINAL_NETWORKS = ("ASMICE-Net", "RtxICE-Net")  # order of the original file


def size_line(name: str, net: nn.Module) -> str:
    """``<name>: <params/1e6 .3f> Million params, <bytes/1024**2 .3f> MB``."""
    params = sum(p.numel() for p in net.parameters())
    size_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / 1024 ** 2
    return f"{name}: {params / 1e6:.3f} Million params, {size_mb:.3f} MB"


def model_info(all_networks: bool = False) -> str:
    """The text of ``model_info.txt``."""
    from models import build_network, list_networks

    lines = [size_line(name, build_network(name)) for name in ORIGINAL_NETWORKS]
    if all_networks:
        from models import build_network as make_network
        from foundation.errors import UserError

        lines += ["", "All registered networks (paper default configurations):"]
        for name in list_networks():
            try:
                net = make_network(name)
            except (UserError, RuntimeError, AssertionError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                lines.append(f"{name}: cannot be built here ({reason})")
                continue
            lines.append(size_line(name, net))
            del net
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output", help="folder of model_info.txt (default: output)")
    p.add_argument("--all", action="store_true",
                   help="append a section with every registered network (the first two lines are unchanged)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from foundation.errors import UserError

        text = model_info(args.all)
        out_dir = Path(args.output)
        path = out_dir / "model_info.txt"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(f"Model info saved to {path}")
        print(text, end="")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
