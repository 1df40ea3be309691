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

Weights (``--weight``): a plain state dict or a released wrapper (``params``, ``params_ema``,
``state_dict``, ``model``, DDP ``module.``), this framework's training checkpoints (student by
default, or the best one it recorded; ``--ema`` for the teacher), or the official SSLL training
prefix: ``--weight ckpt/LOLv2_psnr`` loads ``ckpt/LOLv2_psnr_<Net>.pth`` (``_<Net>_ema.pth`` with
``--ema``). A checkpoint of another network is refused with the network it seems to belong to.

Outputs under ``--out`` (default ``results/eval_<network>``): ``<dataset>/per_image.csv``,
``summary.json`` ({dataset: {psnr, ssim, lpips, images, latency_ms, fps, ...}, "_protocol": ...}),
``summary.md``, and with ``--save`` the enhanced images in ``<dataset>/images/<name>.png``.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
# run as a script, Python puts this folder first on sys.path, where datasets.py/report.py would
# shadow packages of those names; the repository root takes its place
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from common_utils.checkpoint import CheckpointError, load_network_weights, safe_load  # noqa: E402
from common_utils.cli import run_cli  # noqa: E402
from common_utils.evaluation.datasets import open_eval_datasets  # noqa: E402
from common_utils.evaluation.evaluator import EvalProtocol, evaluate  # noqa: E402
from common_utils.evaluation.report import markdown_table, write_rows_csv, write_summary  # noqa: E402
from common_utils.lpips_weights import try_build_lpips  # noqa: E402
from data.layouts import DatasetMissing, expand_dataset_names  # noqa: E402
from data.loaders import eval_loader  # noqa: E402
from data.paths import resolve_path  # noqa: E402
from models import NETWORKS, build_network, list_networks  # noqa: E402
from models.registry import UserError  # noqa: E402

SEED = 1951581  # the official evaluation's seed

# protocol name -> (SSIM variant, resize)
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"ssim": "y", "resize": None, "description": "SSLL paper: full resolution, PSNR RGB, SSIM on Y, "
                                                          "LPIPS AlexNet"},
    "iceml": {"ssim": "piq", "resize": 1024, "description": "ICEML paper: resize to 1024x1024, piq PSNR/SSIM"},
}

# Class names the official training code uses in checkpoint file names (<prefix>_<ClassName>.pth).
OFFICIAL_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "NAFNet": ("NAFNetLocal",),
    "MIRNet": ("MIRNet_v2", "MIRNetv2"),
    "Restormer": ("FullRestormer",),
    "UNet": ("Unet",),
}


def canonical_network(name: str) -> str:
    """Registry display name of ``name`` without importing its module (case and aliases resolved)."""
    by_lower = {n.lower(): n for n in list_networks()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    try:
        return NETWORKS.canonical_name(name)
    except ImportError as exc:
        raise UserError(f"network '{name}' is registered but cannot be imported: {exc}") from None


def make_network(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network; a network whose module cannot be imported is a UserError."""
    try:
        return build_network(name, **kwargs)
    except ImportError as exc:
        raise UserError(f"network '{name}' is not available in this installation: {exc}") from None


def parse_network_args(text: str | None) -> dict[str, Any]:
    """``--network-args``: a JSON object (or a path to a .json file) of constructor arguments."""
    if not text:
        return {}
    src = Path(resolve_path(text)) if not text.lstrip().startswith("{") else None
    raw = src.read_text() if src is not None and src.is_file() else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--network-args is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--network-args must be a JSON object such as '{{\"width\": 32}}', got: {text}")
    return value


def select_device(pref: str = "auto") -> torch.device:
    """``auto`` = the GPU when there is one; ``cuda``/``cuda:N``/``cpu``/``mps`` as given."""
    if pref in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError:
        raise UserError(f"unknown device '{pref}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{pref}' requested but CUDA is not available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device '{pref}' does not exist ({torch.cuda.device_count()} GPUs visible)")
    return dev


def _labels_for(network: str) -> list[str]:
    names = [network, *OFFICIAL_CLASS_NAMES.get(network, ())]
    return [n.lower() for n in names]


def resolve_weight(weight: str, network: str, ema: bool = False) -> Path:
    """The checkpoint file for ``--weight``: the file itself, or the official ``<prefix>_<Net>[_ema].pth``."""
    path = Path(resolve_path(weight))
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"--weight {weight} is a folder; give a checkpoint file (or the official prefix "
                              f"form <folder>/<prefix> for <prefix>_<Net>.pth)")
    plain: dict[str, Path] = {}
    emas: dict[str, Path] = {}
    if path.parent.is_dir():
        for f in sorted(path.parent.glob(glob.escape(path.name) + "_*.pth")):
            label = f.stem[len(path.name) + 1:]
            if label.endswith("_train_info"):
                continue
            (emas if label.endswith("_ema") else plain)[label[:-4].lower() if label.endswith("_ema")
                                                        else label.lower()] = f
    pool, other = (emas, plain) if ema else (plain, emas)
    if pool:
        for label in _labels_for(network):
            if label in pool:
                return pool[label]
        if len(pool) == 1:
            return next(iter(pool.values()))
        raise CheckpointError(f"several checkpoints start with {path}_ ({', '.join(p.name for p in pool.values())}) "
                              f"and none is named for {network}")
    if other:
        kind = "EMA (teacher)" if ema else "plain (student)"
        raise CheckpointError(f"no {kind} checkpoint {path}_<Net>{'_ema' if ema else ''}.pth; found "
                              f"{', '.join(p.name for p in other.values())} ({'drop' if ema else 'add'} --ema)")
    raise CheckpointError(f"checkpoint not found: {path} (nor the official training form "
                          f"{path}_<Net>.pth / {path}_<Net>_ema.pth)")


def network_from_checkpoint(network: str, ckpt: Any, source: str, network_args: Mapping[str, Any] | None = None,
                            ema: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``network`` and load ``ckpt`` (any supported form) into it, strictly."""
    name = canonical_network(network)
    args = dict(network_args or {})
    state, picked = ckpt, None
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("networks"), Mapping):
        trained = ckpt.get("network")
        if isinstance(trained, str) and trained.lower() != name.lower() \
                and canonical_network(trained).lower() != name.lower():
            raise CheckpointError(f"{source} was trained for {trained}, not {name} (use --network {trained})")
        if not network_args and isinstance(ckpt.get("network_args"), Mapping):
            args = dict(ckpt["network_args"])
        nets = ckpt["networks"]
        if ema:
            if "teacher" not in nets:
                raise CheckpointError(f"{source} holds no teacher (EMA) weights, only {', '.join(nets)}; drop --ema")
            picked = "teacher"
        else:
            picked = ckpt.get("best_network") if ckpt.get("best_network") in nets else (
                "student" if "student" in nets else next(iter(nets)))
        state = nets[picked]
    net = make_network(name, **args)
    load_network_weights(net, state, name, source=source, prefer_ema=ema)
    info = {"network": name, "weight": source, "network_args": args}
    if picked:
        info["weights"] = picked
    return net.eval(), info


def load_network(network: str, weight: str, network_args: Mapping[str, Any] | None = None, ema: bool = False,
                 device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build ``network``, load ``weight`` (see module docstring) and move it to ``device`` in eval mode."""
    name = canonical_network(network)
    path = resolve_weight(weight, name, ema)
    net, info = network_from_checkpoint(name, safe_load(path), str(path), network_args, ema)
    return net.to(device), info


def build_protocol(protocol: str = "paper", ssim: str | None = None, resize: int | None = None, fast: bool = False,
                   tile: int | None = None, tile_overlap: int = 32, gt_mean: bool = False, lpips: bool = True,
                   device: torch.device | str = "cpu", lpips_off_reason: str = "disabled (--no-lpips)"
                   ) -> EvalProtocol:
    """An :class:`EvalProtocol` from a protocol name and overrides; LPIPS only when its weights exist."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}' (use {' or '.join(PROTOCOLS)})")
    base = PROTOCOLS[protocol]
    if tile is not None and tile <= 0:
        tile = None
    if tile and tile_overlap * 2 >= tile:
        raise UserError(f"--tile-overlap {tile_overlap} must be less than half of --tile {tile}")
    if tile_overlap < 0:
        raise UserError("--tile-overlap must be >= 0")
    if resize is not None and resize <= 0:
        raise UserError(f"--resize must be a positive size, got {resize}")
    metric, reason = try_build_lpips() if lpips else (None, lpips_off_reason)
    return EvalProtocol(ssim=ssim or base["ssim"], lpips=metric.to(device) if metric is not None else None,
                        lpips_reason=reason, fast=fast, tile=tile, tile_overlap=tile_overlap,
                        resize=resize if resize is not None else base["resize"], gt_mean=gt_mean)


def dataset_key(name: str) -> str:
    """Result key (and output sub-folder) of a dataset name or folder path."""
    p = Path(name)
    return p.name if (len(p.parts) > 1 or p.is_dir()) and p.name else name


def open_datasets(names: Iterable[str], data_root: str | None = None, options: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """Open each dataset; missing ones come back as ``{key: message}`` instead of raising."""
    names = list(names)
    found, missing = open_eval_datasets([{"name": n} for n in names], data_root, options)
    return ({dataset_key(n): found[n] for n in names if n in found},
            {dataset_key(n): missing[n] for n in names if n in missing})


def evaluate_datasets(net: Any, datasets: Mapping[str, Any], missing: Mapping[str, str], protocol: EvalProtocol,
                      device: torch.device, out_dir: Path, order: Iterable[str] | None = None, save: bool = False,
                      workers: int = 0, label: str = "main", extra: Mapping[str, Any] | None = None,
                      title: str = "Evaluation", max_images: int | None = None,
                      verbose: bool = True) -> dict[str, Any]:
    """Evaluate ``net`` on every dataset; write per_image.csv, summary.json and summary.md; return the summary."""
    summary: dict[str, Any] = {}
    for key in (list(order) if order is not None else [*datasets, *missing]):
        if key in missing:
            summary[key] = {"missing": missing[key]}
            if verbose:
                print(f"{key}: missing - {missing[key]}", flush=True)
            continue
        ds_dir = out_dir / key
        loader = eval_loader(datasets[key], num_workers=workers, pin_memory=device.type == "cuda")
        try:
            res = evaluate(net, loader, device, protocol, save_dir=ds_dir / "images" if save else None,
                           max_images=max_images)
        except UserError as exc:
            summary[key] = {"error": str(exc)}
            if verbose:
                print(f"{key}: failed - {exc}", flush=True)
            continue
        write_rows_csv(ds_dir / "per_image.csv", res.rows)
        entry = {**res.summary(), "network": label}
        summary[key] = entry
        if verbose:
            lp = "n/a" if entry.get("lpips") is None else f"{entry['lpips']:.4f}"
            print(f"{key}: {entry['images']} images  PSNR {entry['psnr']:.2f}  SSIM {entry['ssim']:.4f}  "
                  f"LPIPS {lp}  {entry.get('latency_ms', float('nan')):.1f} ms/image", flush=True)
    write_summary(out_dir, summary, {**protocol.describe(device), **dict(extra or {})}, title=title)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--network", required=True, help=f"network name ({', '.join(list_networks())})")
    p.add_argument("-w", "--weight", "--weights", dest="weight", required=True,
                   help="checkpoint file, or the official training prefix (see above)")
    p.add_argument("-d", "--dataset", default="all", help="all | all_haze | NAME[,NAME] | folder (default: all)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: $SSIR_DATA_ROOT, "
                   "config/datasets.yaml, then ./datasets)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: results/eval_<network>)")
    p.add_argument("-s", "--save", action="store_true", help="also write the enhanced images")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA, as the "
                   "official evaluation runs; bf16 on CPU)")
    p.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (bounded memory)")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    p.add_argument("--gt-mean", action="store_true", help="also report PSNR/SSIM after GT-mean brightness "
                   "correction (extra columns; not the paper's protocol)")
    p.add_argument("--ssim", choices=("y", "rgb", "piq"), default=None, help="SSIM variant (default: the protocol's)")
    p.add_argument("--resize", type=int, default=None, help="resize inputs and GT to NxN before inference")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="paper", help="paper (SSLL, default) or iceml")
    p.add_argument("--network-args", default=None, help="JSON object of network constructor arguments")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA/teacher weights of the checkpoint")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=4, help="data-loading worker processes (default 4)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--smid-green-quirk", action=argparse.BooleanOptionalAction, default=True,
                   help="divide SMID low inputs' green channel by 1.5 as the official evaluation does (default on)")
    p.add_argument("--sdsd-official-list", action="store_true", help="evaluate SDSD on the official 52 images only")
    p.add_argument("--max-images", type=int, default=None, help="evaluate at most this many images per dataset")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the parsed command line says; return the summary."""
    torch.manual_seed(SEED)
    device = select_device(args.device)
    names = expand_dataset_names(args.dataset)
    if args.workers < 0:
        raise UserError("--workers must be >= 0")
    net, info = load_network(args.network, args.weight, parse_network_args(args.network_args), args.ema, device)
    protocol = build_protocol(args.protocol, args.ssim, args.resize, args.fast_eval, args.tile, args.tile_overlap,
                              args.gt_mean, not args.no_lpips, device)
    if protocol.lpips is None and protocol.lpips_reason and not args.no_lpips:
        print(f"note: {protocol.lpips_reason}", flush=True)
    options = {"smid_green_quirk": args.smid_green_quirk, "sdsd_official_list": args.sdsd_official_list}
    datasets, missing = open_datasets(names, args.data_root, options)
    out_dir = Path(resolve_path(args.out or f"results/eval_{info['network']}"))
    extra = {"protocol": f"{args.protocol} ({PROTOCOLS[args.protocol]['description']})", **info,
             "data_root": args.data_root, "seed": SEED, **options}
    summary = evaluate_datasets(net, datasets, missing, protocol, device, out_dir,
                                order=[dataset_key(n) for n in names], save=args.save, workers=args.workers,
                                label=info["network"], extra=extra, title=f"Evaluation of {info['network']}",
                                max_images=args.max_images)
    print()
    print(markdown_table(summary, None, f"{info['network']} ({Path(info['weight']).name})"), flush=True)
    print(f"results written to {out_dir}", flush=True)
    failed = {k: v["error"] for k, v in summary.items() if isinstance(v, dict) and "error" in v}
    if failed:
        raise UserError("evaluation failed on " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    if not any(isinstance(v, dict) and "psnr" in v for v in summary.values()):
        raise DatasetMissing("no dataset could be evaluated: " + "; ".join(missing.values()))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
