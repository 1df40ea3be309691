#!/usr/bin/env python
"""Evaluate a network on the public test sets with the papers' protocols.

Run from anywhere (no PYTHONPATH needed)::

    python common_utils/evaluation/eval.py -n Restormer -w weights.pth -d all [--data-root DIR] [-s]

``--dataset`` takes ``all`` (LOLv2, SID, SDSD, SMID, LSRW-Huawei, in that order), ``all_haze``
(RICE-I, SOTS-outdoor), names separated by commas (see ``data/layouts.py`` for every set and the
folder layouts looked for), ``demo_lowlight``, or a folder holding e.g. ``Hazy/`` + ``GT/``. A set
that is not on disk is reported as missing and the others are still evaluated.

Protocols:
- ``paper`` (default, the SSLL evaluation): full resolution (padded to the network's size
  multiple and cropped back), output clamped to [0, 1], PSNR on RGB, SSIM on Y (pyiqa style),
  LPIPS AlexNet v0.1 on [-1, 1] when torchvision's AlexNet weights are on this machine
  (otherwise reported as unavailable, with the reason). The official script ran under fp16
  autocast: add ``--fast-eval`` to do the same.
- ``iceml`` (the dehazing paper): images resized to 1024x1024, SSIM with piq's defaults.
``--ssim`` and ``--resize`` override either protocol.

Weights (``--weight``): anything :func:`common_utils.checkpoint.read_network_state` reads: a
plain state dict or a released wrapper (``params``, ``params_ema``, ``state_dict``, ``model``, DDP
``module.``), this framework's run checkpoints (by default the network the run recorded as best,
else the teacher; ``--student`` / ``--ema`` choose), the official ICEML CombinedModel (with
``-n RtxICE-Net`` or ``-n ASMICE-Net``), or the official SSLL training prefix: ``--weight
ckpt/LOLv2_psnr`` loads ``ckpt/LOLv2_psnr_<Net>.pth`` (``_<Net>_ema.pth`` with ``--ema``). A
checkpoint of another network is refused with the network it seems to belong to.

Outputs under ``--out`` (default ``results/eval_<network>``): ``<dataset>/per_image.csv``,
``summary.json`` ({dataset: {psnr, ssim, lpips, images, latency_ms, fps, ...}, "_protocol": ...}),
``summary.md``, and with ``--save`` the enhanced images in ``<dataset>/images/<name>.png``.
``--html`` adds ``<dataset>/index.html``, a comparison page (input | output | ground truth per image,
sortable by metric, with a slider to compare two pictures) that opens offline from the folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root replaces this folder on sys.path
    _HERE = Path(__file__).resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE.parent]
    sys.path.insert(0, str(_HERE.parents[2]))

import torch

from common_utils.checkpoint import load_network
from common_utils.cli import run_cli
from common_utils.evaluation.report import markdown_table
from common_utils.evaluation.runner import (
    PROTOCOLS,
    SEED,
    build_protocol,
    check_output_dir,
    dataset_key,
    evaluate_datasets,
    open_datasets,
    parse_network_args,
    select_device,
)
from data.datasets import DatasetMissing
from data.layouts import expand_dataset_names
from foundation.errors import UserError
from models import list_networks, network_name


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """``--network``, ``--weight``, ``--network-args`` and the student/teacher choice (shared by the CLIs)."""
    p.add_argument("-n", "--network", required=True, help=f"network name ({', '.join(list_networks())})")
    p.add_argument("-w", "--weight", "--weights", dest="weight", required=True,
                   help="checkpoint file, or the official training prefix (see above)")
    p.add_argument("--network-args", default=None, help="JSON object of network constructor arguments")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--ema", "--teacher", dest="which", action="store_const", const="teacher",
                     help="the EMA/teacher weights of the checkpoint")
    who.add_argument("--student", dest="which", action="store_const", const="student",
                     help="the student weights of a framework checkpoint (default: the recorded best, else the "
                          "teacher)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_arguments(p)
    p.add_argument("-d", "--dataset", default="all", help="all | all_haze | NAME[,NAME] | folder (default: all)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: $SSIR_DATA_ROOT, "
                   "config/datasets.yaml, then ./datasets)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: results/eval_<network>)")
    p.add_argument("-s", "--save", action="store_true", help="also write the enhanced images")
    p.add_argument("--html", action="store_true", help="also write a comparison page <dataset>/index.html "
                   "(thumbnails and full-size pictures under <dataset>/page/)")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA, as the "
                   "official evaluation runs; bf16 on CPU)")
    p.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (bounded memory)")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    p.add_argument("--gt-mean", action="store_true", help="also report PSNR/SSIM after GT-mean brightness "
                   "correction (extra columns; not the paper's protocol)")
    p.add_argument("--ssim", choices=("y", "rgb", "piq"), default=None, help="SSIM variant (default: the protocol's)")
    p.add_argument("--resize", type=int, default=None, help="resize inputs and GT to NxN before inference")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="paper", help="paper (SSLL, default) or iceml")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=4, help="data-loading worker processes (default 4)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--smid-green-quirk", action=argparse.BooleanOptionalAction, default=True,
                   help="divide SMID low inputs' green channel by 1.5 as the official evaluation does (default on)")
    p.add_argument("--sdsd-official-list", action="store_true", help="evaluate SDSD on the official 52 images only")
    p.add_argument("--max-images", type=int, default=None, help="evaluate at most this many images per dataset")
    p.add_argument("--pairing", choices=("auto", "sorted"), default="auto",
                   help="how inputs meet their ground truths: auto (by name, default) or sorted (by sorted position, "
                        "for a set that is known to pair that way)")
    p.add_argument("--on-bad-image", choices=("skip", "stop"), default="skip",
                   help="an unreadable image is reported and left out (skip, default) or stops the evaluation")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the parsed command line says; return the summary."""
    torch.manual_seed(SEED)
    device = select_device(args.device)
    names = expand_dataset_names(args.dataset)
    if args.workers < 0:
        raise UserError("--workers must be >= 0")
    out_dir = check_output_dir(args.out or f"results/eval_{network_name(args.network)}")
    net, info = load_network(args.network, args.weight, parse_network_args(args.network_args), args.which, device)
    protocol = build_protocol(args.protocol, args.ssim, args.resize, args.fast_eval, args.tile, args.tile_overlap,
                              args.gt_mean, not args.no_lpips, device)
    if protocol.lpips is None and protocol.lpips_reason and not args.no_lpips:
        print(f"note: {protocol.lpips_reason}", flush=True)
    options = {"smid_green_quirk": args.smid_green_quirk, "sdsd_official_list": args.sdsd_official_list,
               "pairing": args.pairing}
    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None  # CLI paths: from the cwd
    datasets, missing = open_datasets(names, data_root, options)
    extra = {"protocol": f"{args.protocol} ({PROTOCOLS[args.protocol]['description']})", **info,
             "data_root": data_root, "seed": SEED, **options}
    summary = evaluate_datasets({info["network"]: net}, datasets, missing, protocol, device, out_dir,
                                order=[dataset_key(n) for n in names], save=args.save, workers=args.workers,
                                extra=extra, title=f"Evaluation of {info['network']}", max_images=args.max_images,
                                on_bad_image=args.on_bad_image, page=args.html)
    print()
    print(markdown_table(summary, None, f"{info['network']} ({Path(info['weight']).name})"), flush=True)
    print(f"results written to {out_dir}", flush=True)
    failed = {k: v["error"] for k, v in summary.items() if isinstance(v, dict) and "error" in v}
    if failed:
        raise UserError("evaluation failed on " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    if not any(isinstance(v, dict) and "psnr" in v for v in summary.values()):
        raise DatasetMissing("no dataset could be evaluated: " + "; ".join(m.get("missing", "") for m in
                                                                           missing.values()))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
