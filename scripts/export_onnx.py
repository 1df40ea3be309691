#!/usr/bin/env python
"""Export a registered network to ONNX (dynamic height and width), and to TorchScript, with a parity check.

    python scripts/export_onnx.py --network CIDNet --weight pretrained/cidnet_lol_real.pth --out cidnet.onnx
    python scripts/export_onnx.py --network ASMICE-Net --weight W.pth --out asm.onnx --torchscript
    python scripts/export_onnx.py --network Restormer --out restormer.onnx   # random weights: exportability only

The exported file runs with onnxruntime in ``ssir-enhance`` / ``eval_with_any_backbone.py`` and
in the dehazing scripts (``--weight F.onnx``). ``onnx``, ``onnxscript`` and ``onnxruntime`` are
optional dependencies: ``pip install onnx onnxscript onnxruntime``.

Parity: the network runs in eager PyTorch (fp32) and from the exported file on a real photograph,
``--image`` (default: scikit-image's ``coffee`` photograph, 600x400), resized to ``--size`` (default
300x200), at two sizes: the tracing size, and a centred portrait crop of a size the tracing never
saw (the check that H and W really are dynamic). The largest absolute difference of the outputs
(every output, maps included) is printed, and written with ``--json``. A parity above
``--tolerance`` (default 1e-3) is an error (exit 2), as is a failed export.

``--torchscript [FILE]`` also writes a traced TorchScript module (default: ``--out`` with ``.pt``),
checked the same way; tracing freezes Python arithmetic on the input's shape to the tracing size,
so a network that pads internally traces for one size only, which the second size shows.
The status of every network (exports, parity, what fails and why) is in docs/export.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from common_utils.checkpoint import load_network
from common_utils.cli import run_cli
from common_utils.inference import size_multiple_of
from common_utils.onnx_export import (
    EXPORTERS,
    ExportedForward,
    OnnxNetwork,
    compare,
    export_onnx,
    export_torchscript,
    parity_sizes,
)
from foundation.errors import UserError
from models import build_network, list_networks, network_name

DEFAULT_SIZE = "300x200"


def parse_size(text: str) -> tuple[int, int] | None:
    """``WxH`` -> (H, W); ``0`` -> None (the image's own size)."""
    if text.strip() == "0":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must be WxH (e.g. {DEFAULT_SIZE}) or 0, got '{text}'") from None
    if w < 16 or h < 16:
        raise UserError(f"--size {text}: both sides must be at least 16 pixels")
    return h, w


def parity_image(path: str | None, size: tuple[int, int] | None) -> torch.Tensor:
    """The parity photograph as (1, 3, H, W) in [0, 1]: ``path``, else scikit-image's ``coffee``."""
    if path:
        from data.image_io import read_image

        img = read_image(Path(path).expanduser())
    else:
        import skimage.data

        img = skimage.data.coffee().astype(np.float32) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    if size is not None and tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x


def export_network(network: str, out: Path, weight: str | None = None, network_args: dict[str, Any] | None = None,
                   exporter: str = "legacy", torchscript: Path | None = None, image: str | None = None,
                   size: tuple[int, int] | None = (200, 300)) -> dict[str, Any]:
    """Export one network and check parity; return its status record (nothing raised for a failed export)."""
    name = network_name(network)
    if weight:
        net, info = load_network(name, weight, network_args or {}, None, "cpu")
    else:
        torch.manual_seed(0)
        net, info = build_network(name, **(network_args or {})).eval(), {"network": name, "weight": None}
    m = size_multiple_of(net)
    inputs = parity_sizes(parity_image(image, size), m)
    reference = ExportedForward(net).eval()
    record: dict[str, Any] = {"network": name, "weight": info.get("weight"), "size_multiple": m,
                              "torch": torch.__version__}
    t0 = time.perf_counter()
    try:
        export_onnx(net, out, inputs[0], name, exporter=exporter, weight=str(info.get("weight") or ""))
    except UserError:
        raise
    except Exception as exc:  # the exporter's own failure is this network's result
        record["onnx"] = {"status": "failed", "exporter": exporter, "error": _first_line(exc),
                          "seconds": time.perf_counter() - t0}
    else:
        runner = OnnxNetwork(out)
        candidate = runner.forward_maps if len(runner.output_names) > 1 else runner
        record["onnx"] = {"status": "exported", "exporter": exporter, "file": str(out),
                          "mb": out.stat().st_size / 2 ** 20, "seconds": time.perf_counter() - t0,
                          "outputs": runner.output_names, "parity": compare(reference, candidate, inputs)}
    if torchscript is not None:
        t0 = time.perf_counter()
        try:
            export_torchscript(net, torchscript, inputs[0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                traced = torch.jit.load(str(torchscript))
        except Exception as exc:
            record["torchscript"] = {"status": "failed", "error": _first_line(exc),
                                     "seconds": time.perf_counter() - t0}
        else:
            record["torchscript"] = {"status": "exported", "file": str(torchscript),
                                     "seconds": time.perf_counter() - t0,
                                     "parity": compare(reference, traced, inputs)}
    return record


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def report(record: dict[str, Any], tolerance: float) -> list[str]:
    """Print one line per export; return the problems (a failed export, a parity over ``tolerance``)."""
    problems = []
    for kind in ("onnx", "torchscript"):
        r = record.get(kind)
        if r is None:
            continue
        if r["status"] == "failed":
            print(f"{record['network']} {kind}: export failed - {r['error']}", flush=True)
            problems.append(f"{kind} export failed")
            continue
        cells = []
        for row in r["parity"]:
            if "error" in row:
                cells.append(f"{row['size']}: does not run ({row['error']})")
                problems.append(f"{kind} does not run at {row['size']}")
            else:
                cells.append(f"{row['size']}: max |diff| {row['max_abs_diff']:.2e}")
                if row["max_abs_diff"] > tolerance:
                    problems.append(f"{kind} differs by {row['max_abs_diff']:.2e} at {row['size']}")
        print(f"{record['network']} {kind}: {r['file']} ({r['seconds']:.1f} s); parity vs eager fp32: "
              + "; ".join(cells), flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--network", required=True, help=f"network name ({', '.join(list_networks())})")
    p.add_argument("-w", "--weight", default=None, help="checkpoint (anything eval.py reads); default: the paper's "
                   "network with random weights, to check exportability")
    p.add_argument("--network-args", default=None, help="JSON object of network constructor arguments")
    p.add_argument("-o", "--out", required=True, help="the ONNX file to write")
    p.add_argument("--torchscript", nargs="?", const="", default=None, metavar="FILE",
                   help="also write a traced TorchScript module (default file: --out with .pt)")
    p.add_argument("--exporter", choices=EXPORTERS, default="legacy",
                   help="legacy: torch.onnx's tracing exporter (default; exports all nine networks, ~10x faster "
                        "here); dynamo: torch.export + onnxscript")
    p.add_argument("--image", default=None, help="parity photograph (default: scikit-image's coffee, 600x400)")
    p.add_argument("--size", default=DEFAULT_SIZE, help=f"resize the photograph to WxH before the check (default "
                   f"{DEFAULT_SIZE}; 0 keeps its size); it is also the tracing size")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted max abs difference (default 1e-3)")
    p.add_argument("--json", default=None, help="also write the status record (parity, times) to this file")
    args = p.parse_args(argv)

    def job() -> dict[str, Any]:
        from common_utils.evaluation.runner import parse_network_args

        out = Path(args.out)
        if out.suffix.lower() != ".onnx":
            raise UserError(f"--out must end in .onnx, got {out}")
        ts = None if args.torchscript is None else Path(args.torchscript or out.with_suffix(".pt"))
        record = export_network(args.network, out, args.weight, parse_network_args(args.network_args),
                                args.exporter, ts, args.image, parse_size(args.size))
        problems = report(record, args.tolerance)
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        if problems:
            raise UserError(f"{record['network']}: " + "; ".join(problems))
        return record

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
