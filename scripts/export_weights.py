"""Export one network of a run checkpoint as a small weights file to share (no optimizer, no RNG).

    python scripts/export_weights.py --checkpoint experiments/RUN/checkpoints/last.pth --network CIDNet \\
        [--which teacher|student] --out pretrained/cidnet_lol.pth [--note "what it is"] [--scores results/summary.json]

The file is a framework weights checkpoint (``ssir-weights-v1``): ``networks`` holds the chosen
network's state dict under its entry name, with the network name and constructor arguments, so
``eval.py``, ``eval_with_any_backbone.py`` and ``pretrained.path`` load it like any checkpoint.
ICEML checkpoints keep both networks (``--network RtxICE-Net`` exports the pair).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common_utils.checkpoint import ICEML_ENTRIES, atomic_save, read_network_state, safe_load
from common_utils.cli import run_cli
from core.checkpointing import WEIGHTS_FORMAT
from foundation.errors import UserError
from models import network_name


def export(checkpoint: Path, network: str, which: str | None, out: Path, note: str = "",
           scores: dict | None = None) -> Path:
    """Write the weights file (see the module docstring); return its path."""
    name = network_name(network)
    if name in ICEML_ENTRIES:
        nets = {ICEML_ENTRIES[n]: read_network_state(checkpoint, n).state for n in ICEML_ENTRIES}
        entry = None
    else:
        found = read_network_state(checkpoint, name, which)
        entry = found.entry or "weights"
        nets = {entry: found.state}
    src = safe_load(checkpoint)
    meta = src if isinstance(src, dict) else {}
    state = {"format": WEIGHTS_FORMAT, "network": name, "network_args": dict(meta.get("network_args") or {}),
             "networks": {k: {p: t.to(torch.float32).contiguous() for p, t in sd.items()} for k, sd in nets.items()},
             "iter": meta.get("iter"), "note": note, "scores": scores or {}}
    if entry:
        state["best_network"] = entry  # the entry the reader picks by default
    if isinstance(meta.get("config"), dict) and "iceml" in meta["config"]:
        state["config"] = {"iceml": meta["config"]["iceml"]}
    atomic_save(state, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run checkpoint (last.pth, best.pth, ...)")
    p.add_argument("--network", required=True, help="the network to export (RtxICE-Net exports both ICEML nets)")
    p.add_argument("--which", choices=("student", "teacher"), default=None, help="default: the reader's default")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--note", default="", help="a sentence saying what the weights are")
    p.add_argument("--scores", default=None, help="a results/summary.json whose scores are stored alongside")
    args = p.parse_args(argv)

    def job() -> None:
        scores = None
        if args.scores:
            path = Path(args.scores)
            if not path.is_file():
                raise UserError(f"--scores file not found: {path}")
            scores = json.loads(path.read_text())
        out = export(Path(args.checkpoint), args.network, args.which, Path(args.out), args.note, scores)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
