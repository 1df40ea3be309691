"""Run logging: a text log, the console (through tqdm), a scalar record, TensorBoard if installed.

``logs/scalars.jsonl`` holds one JSON object per logged step (``{"step": 100, "train/l1": ...}``)
whether or not TensorBoard is installed: plots and studies read their curves from it. A resumed
run appends to it; a reader keeps the last value of each (tag, step).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Mapping

import torch
from tqdm import tqdm


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


class ExperimentLogger:
    """Writes ``logs/train.log`` and, when tensorboard is installed, ``logs/tb``; rank 0 only."""

    def __init__(self, log_dir: Path | None, enabled: bool = True, name: str = "train") -> None:
        self.enabled = enabled
        self.log = logging.getLogger(f"framework.{name}.{id(self)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.tb = None
        self.scalar_file = None
        if not enabled:
            self.log.addHandler(logging.NullHandler())
            return
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        console = _TqdmHandler()
        console.setFormatter(fmt)
        self.log.addHandler(console)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_dir / f"{name}.log")
            fh.setFormatter(fmt)
            self.log.addHandler(fh)
            self.scalar_file = open(log_dir / "scalars.jsonl", "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(log_dir / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None
        self.t0 = time.time()

    def info(self, msg: str) -> None:
        self.log.info(msg)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Record named values at ``step`` (scalars.jsonl, and TensorBoard when installed)."""
        if self.scalar_file is not None:
            row = {"step": int(step), **{f"{prefix}{k}": float(v) for k, v in values.items()}}
            self.scalar_file.write(json.dumps(row) + "\n")
            self.scalar_file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}{k}", v, step)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        if self.tb is not None:
            self.tb.add_images(tag, images.clamp(0, 1).float().cpu(), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.scalar_file is not None:
            self.scalar_file.close()
            self.scalar_file = None
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Curves from a ``scalars.jsonl``: tag -> [(step, value)] sorted by step, the last record of a
    step winning (a resumed run re-logs the steps after its checkpoint)."""
    series: dict[str, dict[int, float]] = {}
    p = Path(path)
    if not p.is_file():
        return {}
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        step = int(row.pop("step", 0))
        for tag, value in row.items():
            series.setdefault(tag, {})[step] = float(value)
    return {tag: sorted(points.items()) for tag, points in series.items()}
