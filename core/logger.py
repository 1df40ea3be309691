"""Run logging: a text log, the console (through tqdm), TensorBoard scalars and images if installed."""
from __future__ import annotations

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
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(log_dir / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None
        self.t0 = time.time()

    def info(self, msg: str) -> None:
        self.log.info(msg)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}{k}", v, step)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        if self.tb is not None:
            self.tb.add_images(tag, images.clamp(0, 1).float().cpu(), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)
