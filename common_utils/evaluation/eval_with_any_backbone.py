#!/usr/bin/env python
"""Enhance your own images with any registered network (no ground truth, no metrics).

Run from anywhere (no PYTHONPATH needed)::

    python common_utils/evaluation/eval_with_any_backbone.py -n CIDNet -w pretrained/cidnet_lol_real.pth \\
        --set my_photos/ --output enhanced/
    python common_utils/evaluation/eval_with_any_backbone.py -n NAFNet -w W.pth --image photo.jpg --output out/

``--set`` (alias ``--image-set``, as in the official script) enhances every image in a folder;
there is no short option for it (``-s`` would mean ``--save`` in ``eval.py``).
Any size works: inputs are padded to the network's size multiple and cropped back; images above
2048x2048 pixels run in overlapping 1024-pixel tiles automatically (``--tile N`` chooses the tile,
``--tile 0`` never tiles), so memory stays that of a 1024x1024 image. Files are read by content
(a BMP named ``.png`` is a BMP), photos upright (EXIF orientation); a file that cannot be read, or
an image that still runs out of memory, is named in a warning and counted in the final line, and
the rest of the folder is always processed. ``.npy`` arrays (HWC, uint8 or float) are read as RGB like
the official SMID loader reads them. Each output is a PNG named after its input
(``photo.jpg`` -> ``photo.png``). Weights load as in ``eval.py`` (plain or wrapped state dicts,
this framework's checkpoints, the official ``<prefix>_<Net>.pth`` form). A ``--weight`` ending in
``.onnx`` (written by ``scripts/export_onnx.py``) runs with onnxruntime instead of PyTorch (optional:
``pip install onnxruntime``), with the same padding, tiling and ``--self-ensemble``.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root replaces this folder on sys.path
    _HERE = Path(__file__).resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE.parent]
    sys.path.insert(0, str(_HERE.parents[2]))

from torch.utils.data import Dataset

from common_utils.checkpoint import load_network
from common_utils.cli import add_threads_argument, default_workers, help_text, loader_workers, run_cli
from common_utils.device import select_device
from common_utils.evaluation.eval import add_weights_arguments
from common_utils.evaluation.evaluator import evaluate
from common_utils.evaluation.runner import build_protocol, check_output_dir, parse_network_args, report_left_out
from common_utils.folders import OutputFolder
from common_utils.onnx_export import is_onnx_file, load_onnx_network
from data.image_io import is_image_file, list_images, read_image
from data.loaders import eval_loader
from data.transforms import to_tensor_chw
from foundation.errors import UserError


class ImageFiles(Dataset):
    """Input images given as a list of files: dicts ``lq`` and ``name`` (the file name without extension)."""

    def __init__(self, files: list[Path]) -> None:
        dup = [n for n, c in Counter(f.stem for f in files).items() if c > 1]
        if dup:
            raise UserError(f"several inputs would be written to the same PNG: {', '.join(sorted(dup)[:5])} "
                            f"(files that differ only in their extension)")
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        f = self.files[index]
        return {"lq": to_tensor_chw(read_image(f)), "name": f.stem, "path": str(f)}


def input_files(image: str | None, folder: str | None) -> list[Path]:
    """The files to enhance: one image or every image in a folder (sorted)."""
    if image:
        f = Path(image).expanduser().resolve()
        if not f.is_file():
            raise UserError(f"input image not found: {f}")
        if not is_image_file(f):
            raise UserError(f"{f} is not an image type this tool reads (png, jpg, bmp, tif, webp, npy)")
        return [f]
    return list_images(Path(folder).expanduser().resolve())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=help_text(__doc__, "common_utils/evaluation/eval_with_any_backbone.py"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-i", "--image", default=None, help="one input image (or .npy array)")
    src.add_argument("--set", "--image-set", dest="set", default=None, help="folder of input images")
    p.add_argument("-o", "--output", "--output-dir", dest="output", required=True, help="output folder")
    p.add_argument("-f", "--fast-eval", action="store_true", help="autocast inference (fp16 on CUDA)")
    p.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (default: 1024 "
                   "for images above 2048x2048 pixels; 0: never tile)")
    p.add_argument("--tile-overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--self-ensemble", action="store_true", help="test-time self-ensemble: each output is the mean "
                   "over the 8 flips/rotations of the input (8x the time)")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one, default), cpu, cuda, "
                   "cuda:N; a device that is not there is an error")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading worker processes, decoding overlaps the forward (default: the usable cores "
                        f"minus one, at most 4; {default_workers()} here)")
    add_threads_argument(p)
    return p


def run(args: argparse.Namespace) -> list[Path]:
    """Enhance the inputs; return the written files."""
    device = select_device(args.device)
    files = input_files(args.image, args.set)
    dataset = ImageFiles(files)
    out_dir = check_output_dir(args.output)
    protocol = build_protocol("paper", fast=args.fast_eval, tile=args.tile, tile_overlap=args.tile_overlap,
                              lpips=False, device=device, self_ensemble=args.self_ensemble)
    workers = loader_workers(args.workers, args.threads)
    if is_onnx_file(args.weight):  # an exported file: onnxruntime runs it (threads as configured above)
        net, info = load_onnx_network(args.weight, args.network, device)
    else:
        net, info = load_network(args.network, args.weight, parse_network_args(args.network_args), args.which,
                                 device)
    loader = eval_loader(dataset, num_workers=min(workers, len(dataset)), pin_memory=device.type == "cuda")
    with OutputFolder(out_dir):  # locked, earlier outputs moved aside: nothing stale, one writer
        res = evaluate(net, loader, device, protocol, save_dir=out_dir)
    written = [out_dir / f"{r['name']}.png" for r in res.rows]
    report_left_out(res.skipped, len(res.tiled), protocol)  # named once each; the other images went on
    if not written:
        raise UserError(f"no image could be enhanced ({len(res.skipped)} skipped, see the warnings above)")
    oom = sum("ran out of memory" in why for why in res.skipped)
    unreadable = len(res.skipped) - oom
    left = [f"{unreadable} unreadable"] * bool(unreadable) + [f"{oom} out of memory"] * bool(oom)
    timing = (f" in {res.seconds:.1f} s ({1000 * sum(res.latencies) / len(res.latencies):.0f} ms/image on "
              f"average, the first included)") if res.latencies else ""
    print(f"{info['network']}: enhanced {len(written)} of {len(files)} image(s) into {out_dir}{timing}"
          + (f"; skipped {', '.join(left)} (named above)" if left else ""), flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
