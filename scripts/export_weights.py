"""Export one network of a run checkpoint as a small weights file to share (no optimizer, no RNG).

    python scripts/export_weights.py --checkpoint experiments/RUN/checkpoints/last.pth --network CIDNet \\
        [--which teacher|student] --out pretrained/cidnet_lol.pth [--note "what it is"] [--scores results/summary.json]

The file is a framework weights file (:func:`common_utils.checkpoint.weights_checkpoint`): the chosen
network's state dict under its entry name with the arguments that build it, so ``eval.py``,
``eval_with_any_backbone.py`` and ``pretrained.path`` load it like any checkpoint. ICEML
checkpoints keep both networks (``--network RtxICE-Net`` exports the pair, ASMICE-Net's ``t_min``
with it). A run writes such files itself (``checkpoints/net_<entry>_iter_<k>.pth``); this script
adds a note and scores, and takes any checkpoint form the reader knows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common_utils.checkpoint import (
    ICEML_ENTRIES,
    atomic_save,
    check_format,
    network_state,
    read_checkpoint,
    run_checkpoint,
    weights_checkpoint,
)
from common_utils.cli import run_cli
from foundation.errors import UserError
from models import network_name


def export(checkpoint: Path, network: str, which: str | None, out: Path, note: str = "",
           scores: dict | None = None) -> Path:
    """Write the weights file (see the module docstring); return its path."""
    name = network_name(network)
    checkpoint = run_checkpoint(checkpoint, "best")
    src = read_checkpoint(checkpoint)
    wanted = [(n, None) for n in ICEML_ENTRIES] if name in ICEML_ENTRIES else [(name, which)]
    found = {n: network_state(src, n, w, str(checkpoint)) for n, w in wanted}
    entries = {n: ICEML_ENTRIES.get(n) or f.entry or "weights" for n, f in found.items()}
    meta = check_format(src, str(checkpoint)) or {}
    state = weights_checkpoint({entries[n]: f.state for n, f in found.items()},
                               {entries[n]: (n, f.network_args) for n, f in found.items()}, name, meta.get("iter"),
                               note=note, scores=scores or {})
    if len(found) == 1:
        state["best_network"] = entries[name]  # the entry the reader picks by default
    atomic_save(state, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run checkpoint (last.pth, best.pth, ...), or a run folder "
                   "or its checkpoints/ folder (its best.pth, else its last.pth)")
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
