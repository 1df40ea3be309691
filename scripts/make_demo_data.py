"""Create the demo datasets.

    python scripts/make_demo_data.py [--root demo_data] [--seed 0] [--kind all|lowlight|haze]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common_utils.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="demo_data", help="output folder (relative to the repository root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", default="all", choices=("all", "lowlight", "haze"))
    parser.add_argument("--force", action="store_true", help="rebuild even if a copy with this seed exists")
    args = parser.parse_args(argv)

    def job() -> None:
        from data.demo import make_demo_data
        from data.paths import resolve_path

        root = make_demo_data(resolve_path(args.root), seed=args.seed, kind=args.kind, force=args.force)
        print(f"demo data in {root}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
