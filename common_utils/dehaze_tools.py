"""Shared code of the ICEML dehazing scripts (``scripts/test_rtxice_only.py``, ``scripts/test_asmice_only.py``).

The official repository (Altaza29/ICEML) ships two argument-free test scripts that load the
released ``CombinedModel`` checkpoint, keep one of its two networks, and dehaze every file of
``test_input/``; the scripts here are the same with command-line options and the original
defaults (see ``/work/shared/spec/iceml.md`` §6):

* files are taken in natural order ("img2" before "img10", as ``natsort``), converted to RGB;
* each image is resized to ``--size`` x ``--size`` (1024, aspect not kept, bilinear with
  antialiasing and rounded to 8 bits like the original's PIL ``Resize``); ``--size 0`` keeps the
  original size instead, reflect-padding to a multiple of 4 and cropping the outputs back;
* outputs are clamped to [0, 1] and written under ``<output>/<folder>/`` with the input's file
  name and extension (JPEG at quality 75, the PIL default the original's ``save_image`` used);
  the transmission map is repeated to 3 channels;
* ``Image Processed:<fname>`` is printed per image, as the original does, and a final line counts them.

Unlike the original, every image of the folder gets its turn: files are decoded by content (a BMP
named ``.png`` is read), photos upright (EXIF orientation); an unreadable file, or an image that
runs out of memory, is named in a warning and counted in the final line. At full resolution
(``--size 0``) images above 2048x2048 pixels run in overlapping 1024-pixel tiles (``--tile``
chooses; the networks' channel attention then sees each tile's own statistics, so a tiled result
differs slightly from one untiled pass).

``--weights`` accepts whatever :func:`common_utils.checkpoint.read_network_state` reads: the
official checkpoint (keys ``asm_model.*`` / ``retinex_model.*``), a plain RtxICE-Net or
ASMICE-Net state dict (any usual wrapper), or this framework's ICEML run checkpoint; or an
``.onnx`` file written by ``scripts/export_onnx.py``, run with onnxruntime (optional dependency).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common_utils.checkpoint import CheckpointError, load_network_weights, read_network_state
from common_utils.onnx_export import OnnxNetwork, is_onnx_file
from foundation.errors import UserError

DEFAULT_WEIGHTS = "models/final_dehazing_model.pth"
DEFAULT_SIZE = 1024
SIZE_MULTIPLE = 4
JPEG_QUALITY = 75  # PIL's default, i.e. what torchvision.utils.save_image wrote in the original


@dataclass(frozen=True)
class DehazeJob:
    """One of the two official test scripts.

    Attributes:
        network: registered network name.
        folders: output sub-folders, one per output of ``run``.
        script: the script that handles this network (named in error messages).
        run: ``(net, x) -> tuple of (B, 3, H, W) tensors`` written to ``folders`` in order.
    """

    network: str
    folders: tuple[str, ...]
    script: str
    run: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]]


def _run_rtx(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    j_ret, _ = net.forward_maps(x)  # J_ret = I * lr_inv
    return (j_ret,)


def _run_asm(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    j_asm, t, _ = net.forward_maps(x)
    return j_asm, t.repeat(1, 3, 1, 1)


JOBS: dict[str, DehazeJob] = {
    "rtx": DehazeJob("RtxICE-Net", ("J_RtxICE-Net",), "scripts/test_rtxice_only.py", _run_rtx),
    "asm": DehazeJob("ASMICE-Net", ("J_ASMICE-Net", "trm_ASMICE-Net"),
                     "scripts/test_asmice_only.py", _run_asm),
}


# ----------------------------------------------------------------------------------------- files

def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value (``natsort.natsorted`` for file names)."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts]


def list_inputs(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` in natural order (a missing or empty folder is a UserError)."""
    from data.image_io import list_images

    return sorted(list_images(folder), key=lambda p: natural_key(p.name))


def save_output(path: Path, img: torch.Tensor) -> None:
    """Write a (3, H, W) tensor in [0, 1] to ``path``, encoded as its extension says.

    ``.npy`` keeps float32; JPEG uses the original's quality (``JPEG_QUALITY``).
    """
    from data.image_io import write_image

    arr = img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if path.suffix.lower() == ".npy":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr.astype(np.float32))
        return
    write_image(path, arr, jpeg_quality=JPEG_QUALITY)


# ------------------------------------------------------------------------------------ tensors

def prepare(img: np.ndarray, size: int, device: torch.device) -> tuple[torch.Tensor, tuple[int, int]]:
    """HWC float RGB -> (1, 3, H', W') network input and the (H, W) to crop outputs back to.

    ``size > 0``: resize to size x size (bilinear, antialiased, rounded to 8 bits as the original's
    PIL resize); the outputs keep that size. ``size == 0``: reflect-pad to a multiple of 4.
    """
    from common_utils.inference import pad_to_multiple

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float().to(device)
    if size > 0:
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = torch.round(x.clamp(0, 1) * 255.0) / 255.0
        return x, (size, size)
    return pad_to_multiple(x, SIZE_MULTIPLE)


def check_size(size: int) -> None:
    """``--size`` must be 0 or a positive multiple of 4."""
    if size < 0 or (size > 0 and size % SIZE_MULTIPLE):
        raise UserError(f"--size must be 0 (keep the image size) or a positive multiple of {SIZE_MULTIPLE} "
                        f"(the ICEML networks work at 1/4 resolution), got {size}")


# ---------------------------------------------------------------------------------- weights

def _missing_weights_message(path: Path) -> str:
    return (f"weights file not found: {path}. Put the official ICEML checkpoint final_dehazing_model.pth "
            f"(github.com/Altaza29/ICEML, folder models/) at {DEFAULT_WEIGHTS} under the directory you run "
            f"from, or pass --weights FILE (a CombinedModel, RtxICE-Net / ASMICE-Net or training checkpoint)")


def _dim_of(sd: Mapping[str, torch.Tensor], job: DehazeJob) -> int:
    """Backbone width stored in a state dict (64 for the paper; smaller in test builds)."""
    key = "convv.weight" if job.network == "RtxICE-Net" else "transmission.transmission.convv.weight"
    w = sd.get(key)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 4 else 64


def load_network(job: DehazeJob, weights: str | os.PathLike, device: torch.device) -> nn.Module:
    """Build ``job.network``, load ``weights`` (any form the checkpoint reader knows) strictly, eval mode."""
    from models import build_network

    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(_missing_weights_message(path))
    if is_onnx_file(path):  # exported by scripts/export_onnx.py: onnxruntime runs it, maps included
        net = OnnxNetwork(path, device=device)
        if net.network != job.network:
            other = next((j for j in JOBS.values() if j.network == net.network), None)
            raise UserError(f"{path} was exported from {net.network or 'an unknown network'}, not {job.network}"
                            + (f"; run {other.script} for it" if other else ""))
        return net
    found = read_network_state(path, job.network)
    net = build_network(job.network, **{**found.network_args, "dim": _dim_of(found.state, job)})
    try:
        load_network_weights(net, found.state, job.network, source=found.source)
    except CheckpointError as exc:
        other = next((j for j in JOBS.values() if j.network != job.network and j.network in str(exc)), None)
        if other is None:
            raise
        raise CheckpointError(f"{found.source} holds {other.network} weights, not {job.network}; run "
                              f"{other.script} for it") from None
    return net.eval().to(device)


# -------------------------------------------------------------------------------------- CLI

def build_parser(job: DehazeJob, description: str | None = None) -> argparse.ArgumentParser:
    """The options both test scripts share."""
    outs = ", ".join(f"<output>/{f}/" for f in job.folders)
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default="test_input", help="folder of hazy images (default: test_input)")
    p.add_argument("--output", default="output", help=f"output root; results go to {outs} (default: output)")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help=f"official CombinedModel checkpoint, a {job.network} state dict or a training "
                        f"checkpoint (default: {DEFAULT_WEIGHTS})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"resize every image to SIZE x SIZE, aspect not kept, as the original "
                        f"(default {DEFAULT_SIZE}); 0 keeps the image size (padded to a multiple of 4)")
    p.add_argument("--tile", type=int, default=None,
                   help="with --size 0: run in tiles of this many pixels (default: 1024 for images above "
                        "2048x2048 pixels; 0: never tile)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, default), cpu, cuda, cuda:N; a "
                   "device that is not there is an error")
    from common_utils.cli import add_threads_argument

    add_threads_argument(p)
    return p


class _Joined(nn.Module):
    """A job's outputs concatenated on the channel axis: one tensor, so that it can run in tiles."""

    size_multiple = SIZE_MULTIPLE

    def __init__(self, job: DehazeJob, net: nn.Module) -> None:
        super().__init__()
        self.job, self.net = job, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.job.run(self.net, x), dim=1)


def run_job(job: DehazeJob, net: nn.Module, x: torch.Tensor, tile: int | None,
            overlap: int = 32) -> tuple[torch.Tensor, ...]:
    """``job.run(net, x)``, in overlapping tiles of ``tile`` pixels when ``tile`` is set."""
    if not tile:
        return job.run(net, x)
    from common_utils.inference import forward_tiled

    joined = forward_tiled(_Joined(job, net), x, tile, min(overlap, tile // 2 - 1))
    return tuple(joined.split(3, dim=1))


def dehaze_folder(job: DehazeJob, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                  weights: str | os.PathLike, size: int = DEFAULT_SIZE, device: str = "auto",
                  tile: int | None = None) -> list[Path]:
    """Dehaze every image of ``input_dir`` with ``job.network``; return the files written.

    With ``size == 0`` (full resolution) a large image runs in tiles by the rule of
    :func:`common_utils.memory_budget.tile_for` unless ``tile`` says otherwise (``tile=0``: never).
    A file that cannot be read, and an image that runs out of memory, are named in a warning and
    counted in the final line; the other images are always processed (none processed at all is an error).
    """
    from common_utils import memory_budget
    from common_utils.device import select_device
    from data.image_io import ImageReadError, read_image

    check_size(size)
    if tile is not None and (tile < 0 or 0 < tile < 16 or tile % SIZE_MULTIPLE):
        raise UserError(f"--tile must be 0 (never tile) or a multiple of {SIZE_MULTIPLE} of at least 16, got {tile}")
    dev = select_device(device)
    files = list_inputs(input_dir)
    net = load_network(job, weights, dev)
    out_root = Path(output_dir)
    for folder in job.folders:
        (out_root / folder).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    tiled = 0
    with torch.inference_mode():
        for f in files:
            try:
                img = read_image(f)
            except ImageReadError as exc:
                skipped.append(str(exc))
                print(f"warning: skipped {exc}", file=sys.stderr, flush=True)
                continue
            x, (h, w) = prepare(img, size, dev)
            use = memory_budget.tile_for(h, w, tile)
            try:
                outputs = run_job(job, net, x, use)
            except RuntimeError as exc:
                if not memory_budget.is_out_of_memory(exc):
                    raise
                del exc, x
                memory_budget.free_memory(dev)
                why = memory_budget.out_of_memory_line(str(f), h, w, dev, use)
                skipped.append(why)
                print(f"warning: skipped {why}", file=sys.stderr, flush=True)
                continue
            tiled += bool(use)
            for folder, y in zip(job.folders, outputs):
                target = out_root / folder / f.name
                save_output(target, y[0, :, :h, :w].clamp(0, 1))
                written.append(target)
            print(f"Image Processed:{f.name}", flush=True)
    done = len(files) - len(skipped)
    if not done:
        raise UserError(f"no image of {input_dir} could be dehazed ({len(skipped)} skipped, see the warnings above)")
    note = f"; {tiled} ran in tiles" if tiled else ""
    print(f"{job.network}: processed {done} of {len(files)} image(s) into {out_root}{note}"
          + (f"; skipped {len(skipped)} (named above)" if skipped else ""), flush=True)
    return written


def dehaze_main(job_key: str, argv: list[str] | None = None, description: str | None = None) -> int:
    """Entry point of a test script: parse ``argv``, run, report user errors as one line (exit 2)."""
    from common_utils.cli import configure_threads, run_cli

    job = JOBS[job_key]
    args = build_parser(job, description).parse_args(argv)
    configure_threads(args.threads, 0)  # the images are read in this process: every usable core computes
    return run_cli(lambda: dehaze_folder(job, args.input, args.output, args.weights, args.size, args.device,
                                         args.tile))
