#!/usr/bin/env python
"""Reproduce the papers' tables from a folder of checkpoints.

    python scripts/reproduce_tables.py --checkpoints DIR [--data-root DIR] [--out DIR] [--plot] [--fast-eval]
        [--network-args '{"UNet": {"width": 4}}'] [--html]

Checkpoint naming in DIR (case-insensitive; backbone names as in the models registry: UNet,
LLFormer, RetinexFormer, MIRNet (MIRNet-v2; MIRNetv2 also accepted), CIDNet, NAFNet, Restormer):

- ``<Backbone>_baseline.pth``: the supervised baseline of that backbone;
- ``<Backbone>_ssll.pth``: the same backbone trained with SSLL;
- ``RtxICE-Net.pth`` / ``ASMICE-Net.pth``, or the official ICEML CombinedModel checkpoint
  ``final_dehazing_model.pth`` (both dehazing networks in one file).

Each file may be any form ``common_utils/evaluation/eval.py`` loads. Low-light checkpoints are
evaluated on LOLv2, SID, SDSD, SMID and LSRW-Huawei with the SSLL protocol; dehazing ones on
RICE-I and SOTS-outdoor with the ICEML protocol. The report (``<out>/report.md``, plus
``report.json`` and the per-run results under ``<out>/runs/``) puts our numbers beside the
paper's, with the differences and the count of improved cells; datasets that are not on disk
are marked missing. ``--plot`` adds radar charts per dataset (needs matplotlib).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common_utils.cli import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="folder of checkpoints named as above")
    p.add_argument("--data-root", default=None, help="folder holding the datasets")
    p.add_argument("--out", default="results/reproduce", help="output folder (default results/reproduce)")
    p.add_argument("--plot", action="store_true", help="draw radar charts per dataset (matplotlib)")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA, as the "
                   "official evaluation)")
    p.add_argument("--network-args", default=None, help="JSON: {\"Backbone\": {constructor args}} or one object "
                   "for every network")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=4, help="data-loading workers (default 4)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-smid-green-quirk", action="store_true", help="do not apply the official SMID green-channel "
                   "input quirk")
    p.add_argument("--max-images", type=int, default=None, help="at most this many images per dataset (smoke tests)")
    p.add_argument("--html", action="store_true", help="also write a comparison page per run and dataset "
                   "(<out>/runs/<run>/<dataset>/index.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from common_utils.evaluation.reproduce import ReproduceConfig, reproduce, split_network_args
        from common_utils.evaluation.runner import parse_network_args
        from data.paths import resolve_path
        from foundation.errors import UserError

        if args.workers < 0:
            raise UserError("--workers must be >= 0")
        cfg = ReproduceConfig(checkpoints=Path(resolve_path(args.checkpoints)), data_root=args.data_root,
                              out=Path(resolve_path(args.out)), fast=args.fast_eval,
                              network_args=split_network_args(parse_network_args(args.network_args)),
                              device=args.device, plot=args.plot, workers=args.workers, lpips=not args.no_lpips,
                              smid_green_quirk=not args.no_smid_green_quirk, max_images=args.max_images,
                              html=args.html)
        reproduce(cfg)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
