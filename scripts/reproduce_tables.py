#!/usr/bin/env python
"""Reproduce the papers' tables from the checkpoints given, and name every cell it could not measure.

    python scripts/reproduce_tables.py --checkpoints pretrained/ [--data-root DIR] [--plot] [--html]
    python scripts/reproduce_tables.py --weight CIDNet_baseline=pretrained/cidnet_lol_real.pth \\
        --weight ICEML=pretrained/iceml_sots_stage1.pth --datasets LOL-v1,SOTS-indoor
    python scripts/reproduce_tables.py --checkpoints DIR --network-args '{"UNet": {"width": 4}}'

Checkpoints (any form eval.py loads):

- ``--checkpoints DIR``: ``<Backbone>_baseline.pth`` / ``<Backbone>_ssll.pth`` (case-insensitive,
  backbones as in the models registry: UNet, LLFormer, RetinexFormer, MIRNet (MIRNetv2 also
  accepted), CIDNet, NAFNet, Restormer), ``RtxICE-Net.pth`` / ``ASMICE-Net.pth``, the official
  ICEML ``final_dehazing_model.pth``; any other file is identified by its content (the committed
  ``pretrained/`` weights record their network);
- ``--weight NAME=PATH`` (repeatable): NAME is ``<Backbone>_baseline``, ``<Backbone>_ssll``,
  ``<Backbone>`` (variant not known: its own table), ``RtxICE-Net``, ``ASMICE-Net`` or ``ICEML``
  (both networks of one ICEML file).

Sets (``--datasets``, names as eval.py takes them): by default LOL-v1 and the SSLL paper's LOLv2,
SID, SDSD, SMID, LSRW-Huawei (paper protocol), and RICE-I, SOTS-outdoor, SOTS-indoor (ICEML
protocol). The report (``<out>/report.md``, ``report.json``, per-run results under ``<out>/runs/``)
puts the measured numbers beside the paper's, with the differences and the count of improved
cells, and ends with every cell not measured and why (no checkpoint, dataset not on disk, metric
unavailable). ``--plot`` adds radar charts per low-light set and bars for dehazing (matplotlib).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common_utils.cli import (  # noqa: E402
    HelpFormatter,
    add_threads_argument,
    configure_threads,
    default_workers,
    help_text,
    run_cli,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=help_text(__doc__, "scripts/reproduce_tables.py"),
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoints", default=None, help="folder of checkpoints (named or identified as above)")
    p.add_argument("--weight", action="append", default=None, metavar="NAME=PATH",
                   help="one checkpoint and what it is (repeatable; see above)")
    p.add_argument("--datasets", default=None, help="comma-separated sets (None: LOL-v1, LOLv2, SID, SDSD, SMID, "
                   "LSRW-Huawei, RICE-I, SOTS-outdoor, SOTS-indoor)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (None: $SSIR_DATA_ROOT, "
                   "config/datasets.yaml, then ./datasets)")
    p.add_argument("--out", default="results/reproduce", help="output folder")
    p.add_argument("--plot", action="store_true", help="draw radar charts per dataset (matplotlib)")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA, as the "
                   "official evaluation)")
    p.add_argument("--network-args", default=None, help="JSON: {\"Backbone\": {constructor args}} or one object "
                   "for every network")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=None, help="data-loading workers (None: the usable cores minus "
                   "one, at most 4)")
    add_threads_argument(p)
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
        from common_utils.evaluation.reproduce import (
            ReproduceConfig,
            parse_weight_spec,
            reproduce,
            split_network_args,
        )
        from common_utils.evaluation.runner import parse_network_args
        from foundation.errors import UserError

        workers = default_workers() if args.workers is None else args.workers
        if workers < 0:
            raise UserError("--workers must be >= 0")
        if not args.checkpoints and not args.weight:
            raise UserError("give --checkpoints DIR and/or --weight NAME=PATH")
        configure_threads(args.threads, workers)
        weights = [e for spec in args.weight or [] for e in parse_weight_spec(spec)]
        cli_path = lambda p: Path(p).expanduser().resolve()  # command-line paths: from the current directory
        cfg = ReproduceConfig(checkpoints=cli_path(args.checkpoints) if args.checkpoints else None, weights=weights,
                              datasets=[d for d in args.datasets.split(",") if d.strip()] if args.datasets else None,
                              data_root=str(cli_path(args.data_root)) if args.data_root else None,
                              out=cli_path(args.out), fast=args.fast_eval,
                              network_args=split_network_args(parse_network_args(args.network_args)),
                              device=args.device, plot=args.plot, workers=workers, lpips=not args.no_lpips,
                              smid_green_quirk=not args.no_smid_green_quirk, max_images=args.max_images,
                              html=args.html)
        reproduce(cfg)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
