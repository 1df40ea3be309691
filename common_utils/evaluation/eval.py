#!/usr/bin/env python
"""Evaluate a network on the public test sets with the papers' protocols.

Run from anywhere (no PYTHONPATH needed); -n and -w are required:

    python common_utils/evaluation/eval.py -n CIDNet -w pretrained/cidnet_lol_real.pth -d LOL-v1
    python common_utils/evaluation/eval.py -n Restormer -w weights.pth -d all [--data-root DIR] [--save] [--html]

``--dataset`` takes ``all`` (LOL-v1, then the SSLL paper's LOLv2, SID, SDSD, SMID, LSRW-Huawei),
``all_haze`` (RICE-I, SOTS-outdoor), names separated by commas (every set and the folder layouts
looked for: docs/datasets.md, data/layouts.py), ``demo_lowlight``, or a folder holding e.g.
``Hazy/`` + ``GT/``. With ``all``/``all_haze`` a set that is not on disk is listed once, with the
paths looked for, and the others are still evaluated; a set named on its own that is missing, or
no set at all, stops with exit code 2 before anything is written.

Protocols (``--protocol``; default ``auto``: each set with its paper's, named in data/layouts.py):
- ``paper`` (the SSLL evaluation; every set but RICE-I and SOTS-outdoor, and folders): full
  resolution (padded to the network's size multiple and cropped back), output clamped to [0, 1],
  PSNR on RGB, SSIM on Y (pyiqa style), LPIPS AlexNet v0.1 on [-1, 1] when torchvision's AlexNet
  weights are on this machine (otherwise reported as unavailable, with the reason). The official
  script ran under fp16 autocast: add ``--fast-eval`` to do the same.
- ``iceml`` (the dehazing paper; RICE-I and SOTS-outdoor): images resized to 1024x1024, SSIM with
  piq's defaults.
``--ssim`` and ``--resize`` override the protocol of every set.

Weights (``--weight``): anything :func:`common_utils.checkpoint.read_network_state` reads: a
plain state dict or a released wrapper (``params``, ``params_ema``, ``state_dict``, ``model``, DDP
``module.``), this framework's checkpoints of any format version up to this code's (a run's
weights files ``net_<entry>_iter_<k>.pth``, ``best*.pth``, ``last.pth``, or the run folder or its
``checkpoints/``: its ``best.pth``, else ``last.pth``; by default the network the run recorded as
best, else the teacher; ``--student`` / ``--ema`` choose), the official ICEML
CombinedModel (with ``-n RtxICE-Net`` or ``-n ASMICE-Net``), or the official SSLL training prefix:
``--weight ckpt/LOLv2_psnr`` loads ``ckpt/LOLv2_psnr_<Net>.pth`` (``_<Net>_ema.pth`` with ``--ema``).
A checkpoint of another network is refused with the network it seems to belong to.
``--compare NETWORK=WEIGHT`` (repeatable) scores more networks on the same images: one row each
in the summary, one column each on the ``--html`` page, which sorts by the difference of two.

Outputs under ``--out`` (default ``results/eval_<network>``; locked while an evaluation writes there,
and a folder holding an earlier evaluation is first moved aside to ``<out>_archived_<time>``):
``<dataset>/per_image.csv``,
``summary.json`` ({dataset: {psnr, ssim, lpips, images, latency_ms, fps, input: {...}, ...},
"_protocol": ...}; ``input`` is the input's own scores), ``summary.md``, and with ``--save`` the
enhanced images in ``<dataset>/images/<name>.png``. ``--html`` adds ``<dataset>/index.html``, a
comparison page (input | output(s) | ground truth per image, sortable by metric, with a slider to
compare two pictures) that opens offline from the folder.
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
from common_utils.cli import add_threads_argument, default_workers, help_text, loader_workers, run_cli
from common_utils.device import select_device
from common_utils.evaluation.protocols import AUTO, PROTOCOLS
from common_utils.evaluation.report import markdown_table
from common_utils.evaluation.runner import (
    SEED,
    check_output_dir,
    dataset_key,
    dataset_protocols,
    evaluate_datasets,
    open_datasets,
    parse_network_args,
)
from common_utils.folders import OutputFolder
from data.datasets import DatasetMissing, UnpairedFolderDataset
from data.layouts import expand_dataset_names
from foundation.errors import UserError
from models import list_networks, network_name


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """``--network``, ``--weight``, ``--network-args`` and the student/teacher choice (shared by the CLIs)."""
    p.add_argument("-n", "--network", required=True, help=f"network name ({', '.join(list_networks())})")
    p.add_argument("-w", "--weight", "--weights", dest="weight", required=True,
                   help="checkpoint file, a run folder (its best.pth, else last.pth), or the official training "
                        "prefix (see above)")
    p.add_argument("--network-args", default=None, help="JSON object of network constructor arguments")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--ema", "--teacher", dest="which", action="store_const", const="teacher",
                     help="the EMA/teacher weights of the checkpoint")
    who.add_argument("--student", dest="which", action="store_const", const="student",
                     help="the student weights of a framework checkpoint (default: the recorded best, else the "
                          "teacher)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=help_text(__doc__, "common_utils/evaluation/eval.py"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_arguments(p)
    p.add_argument("-d", "--dataset", default="all", help="all | all_haze | NAME[,NAME] | folder (default: all)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: $SSIR_DATA_ROOT, "
                   "config/datasets.yaml, then ./datasets)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: results/eval_<network>)")
    p.add_argument("--save", action="store_true", help="also write the enhanced images (<out>/<dataset>/images/)")
    p.add_argument("--html", action="store_true", help="also write a comparison page <dataset>/index.html "
                   "(thumbnails and full-size pictures under <dataset>/page/)")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA, as the "
                   "official evaluation runs; bf16 on CPU)")
    p.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (bounded memory; "
                   "default: 1024 for images above 2048x2048 pixels, 0: never tile)")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    p.add_argument("--self-ensemble", action="store_true", help="test-time self-ensemble: each output is the mean "
                   "over the 8 flips/rotations of the input (8x the time; not the papers' protocol)")
    p.add_argument("--gt-mean", action="store_true", help="also report PSNR/SSIM after GT-mean brightness "
                   "correction (extra columns; not the paper's protocol)")
    p.add_argument("--ssim", choices=("y", "rgb", "piq"), default=None, help="SSIM variant (default: the protocol's)")
    p.add_argument("--resize", type=int, default=None, help="resize inputs and GT to NxN before inference")
    p.add_argument("--protocol", choices=(AUTO, *PROTOCOLS), default=AUTO,
                   help="auto (each set with its paper's protocol, default), paper (SSLL) or iceml")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one, default), cpu, cuda, "
                   "cuda:N; a device that is not there is an error")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default: the usable "
                   f"cores minus one, at most 4; {default_workers()} here)")
    add_threads_argument(p)
    p.add_argument("--compare", action="append", metavar="NETWORK=WEIGHT", default=None,
                   help="also score this network on the same images (repeatable): the summary gets a row per "
                        "network and --html a column per network, sortable by the difference of two")
    p.add_argument("--no-input", action="store_true", help="do not score the input itself (by default each set's "
                   "summary also holds the input's own PSNR/SSIM, as a run's summary does)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-ms-ssim", action="store_true", help="skip MS-SSIM (on Y, images of 161 px or more)")
    p.add_argument("--niqe", action="store_true", help="also score NIQE (no reference; about 1-5 s per image on a "
                   "CPU; needs scripts/setup_metric_weights.py once). Sets without ground truth get NIQE only")
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


def _labels(entries: list[tuple[str, str]]) -> list[str]:
    """Column labels of the networks: the network's name, with the weight file's stem when two share it."""
    names = [n for n, _ in entries]
    return [n if names.count(n) == 1 else f"{n} [{Path(w).stem}]" for n, w in entries]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the parsed command line says; return the summary.

    Exit status (through :func:`common_utils.cli.run_cli`): 0 when every set was scored, or when
    ``all``/``all_haze`` found only some of its sets (the others are listed as missing); 2, with
    nothing written, when no set could be scored or a set named on its own is missing; 2 after
    the scored sets were written when a set that is on disk failed.
    """
    torch.manual_seed(SEED)
    device = select_device(args.device)
    names = expand_dataset_names(args.dataset)
    groups = {s.strip().lower() for s in str(args.dataset).split(",")} & {"all", "all_haze"}
    in_group = set(expand_dataset_names(",".join(sorted(groups)))) if groups else set()
    workers = loader_workers(args.workers, args.threads)
    out_dir = check_output_dir(args.out or f"results/eval_{network_name(args.network)}")
    entries = [(args.network, args.weight)] + [_compare_entry(c) for c in args.compare or []]
    labels = _labels([(network_name(n), w) for n, w in entries])
    nets: dict[str, Any] = {}
    infos: list[dict[str, Any]] = []
    for label, (name, weight) in zip(labels, entries):
        net, info = load_network(name, weight, parse_network_args(args.network_args), args.which, device)
        nets[label] = net
        infos.append(info)
    info = infos[0]
    options = {"smid_green_quirk": args.smid_green_quirk, "sdsd_official_list": args.sdsd_official_list,
               "pairing": args.pairing}
    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None  # CLI paths: from the cwd
    datasets, missing = open_datasets(names, data_root, options)
    order = [dataset_key(n) for n in names]
    alone = [k for n, k in zip(names, order) if k in missing and n not in in_group]
    if not datasets or alone:
        keys = alone or list(missing)
        on_error_line = {k for k in keys if "error" in missing[k] or len(keys) == 1}
        for key in order:  # each missing set once, with the paths looked for (unless the error line has them)
            if key in missing and key not in on_error_line:
                kind, why = next(iter(missing[key].items()))
                print(f"{key}: {'missing' if kind == 'missing' else 'failed'} - {why}", file=sys.stderr, flush=True)
        # a set that is on disk but unusable, or a single set, is named with its reason on the error line
        what = "; ".join(f"{k}: {next(iter(missing[k].values()))}" if "error" in missing[k] or len(keys) == 1 else k
                         for k in keys)
        raise DatasetMissing(f"{'no dataset could be evaluated' if not datasets else 'missing'}: {what} (the "
                             f"paths looked for are listed above; give --data-root, or link the sets with "
                             f"scripts/link_datasets.py); nothing was written")
    # a set without ground truth (DICM, LIME, ... or a folder of inputs) can only be scored without a
    # reference: NIQE is switched on for it rather than printing a table of nothing
    no_reference = sorted(k for k, ds in datasets.items() if isinstance(ds, UnpairedFolderDataset))
    if no_reference and not args.niqe:
        print(f"note: {', '.join(no_reference)} has no ground truth: scored with NIQE (no reference)", flush=True)
    protocols = dataset_protocols(names, args.protocol, args.ssim, args.resize, fast=args.fast_eval, tile=args.tile,
                                  tile_overlap=args.tile_overlap, gt_mean=args.gt_mean, lpips=not args.no_lpips,
                                  device=device, ms_ssim=not args.no_ms_ssim, niqe=args.niqe or bool(no_reference),
                                  self_ensemble=args.self_ensemble)
    protocol = next(iter(protocols.values()))  # every set's shares its LPIPS and NIQE
    if protocol.lpips is None and protocol.lpips_reason and not args.no_lpips:
        print(f"note: {protocol.lpips_reason}", flush=True)
    if (args.niqe or no_reference) and protocol.niqe is None:
        print(f"note: {protocol.niqe_reason}", flush=True)
    extra = {**info, "data_root": data_root, "seed": SEED, **options}
    with OutputFolder(out_dir):  # locked, an earlier result moved aside: nothing stale, one writer
        if len(infos) > 1:
            extra["compared"] = {label: i["weight"] for label, i in zip(labels, infos)}
        summary = evaluate_datasets(nets, datasets, missing, protocols, device, out_dir, main=labels[0],
                                    order=order, save=args.save, workers=workers, with_input=not args.no_input,
                                    extra=extra, title=f"Evaluation of {info['network']}", max_images=args.max_images,
                                    on_bad_image=args.on_bad_image, page=args.html,
                                    report_failures=False)  # the error line below names them, once
    print()
    print(markdown_table(summary, None, f"{info['network']} ({Path(info['weight']).name})", notes=False), flush=True)
    scored = [k for k, v in summary.items() if isinstance(v, dict) and ("psnr" in v or "niqe" in v)]
    failed = {k: v["error"] for k, v in summary.items() if isinstance(v, dict) and "error" in v}
    not_found = [k for k, v in summary.items() if isinstance(v, dict) and "missing" in v]
    if not_found:
        print(f"not evaluated (not on disk, paths above): {', '.join(not_found)}", flush=True)
    if failed:
        print(f"results of {', '.join(scored)} written to {out_dir}", flush=True)
        raise UserError("evaluation failed on " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    print(f"results written to {out_dir}", flush=True)
    return summary


def _compare_entry(text: str) -> tuple[str, str]:
    """``--compare NETWORK=WEIGHT`` -> (network, weight)."""
    name, sep, weight = text.partition("=")
    if not sep or not name or not weight:
        raise UserError(f"--compare expects NETWORK=WEIGHT (e.g. CIDNet=runs/ssll/last.pth), got '{text}'")
    return name, weight


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
