"""Run logging: the console (through tqdm), ``logs/train.log``, a scalar record, TensorBoard if installed,
and the trackers enabled in ``logging:`` (MLflow, Weights & Biases; :mod:`core.tracking`).

A logger starts on the console only; :meth:`ExperimentLogger.attach` adds the run folder's files
once the run is known to start (the lines logged before are written there too), so a failed
start writes nothing. ``logs/scalars.jsonl`` holds one JSON object per logged step
(``{"step": 100, "train/l1": ...}``) whether or not TensorBoard is installed: plots and
studies read their curves from it. A resumed run appends to it; :func:`read_scalars` keeps the
last value of each (tag, step). Every scalar, sample image and the final summary also go to each
tracker; a tracker that fails while the run goes on (a server gone) is dropped with a ``WARNING:``
line, and the run continues with the others.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


class _Buffer(logging.Handler):
    """Keeps the records logged before the run folder exists."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ExperimentLogger:
    """Console logging at once; files (text, scalars, TensorBoard) after :meth:`attach`; rank 0 only."""

    def __init__(self, enabled: bool = True, name: str = "train") -> None:
        self.enabled, self.name = enabled, name
        self.log = logging.getLogger(f"framework.{name}.{id(self)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.tb = None
        self.scalar_file = None
        self.sinks: list[Any] = []  # core.tracking.TrackingSink
        self._buffer: _Buffer | None = None
        if not enabled:
            self.log.addHandler(logging.NullHandler())
            return
        console = _TqdmHandler()
        console.setFormatter(_FORMAT)
        self.log.addHandler(console)
        self._buffer = _Buffer()
        self.log.addHandler(self._buffer)

    def attach(self, log_dir: Path, tensorboard: bool = True, tracking: Mapping[str, Any] | None = None,
               config_text: str = "") -> None:
        """Write to ``log_dir`` from now on (and what was logged so far); start the trackers that the
        ``logging`` section ``tracking`` enables, handing them the resolved config (its YAML text)."""
        if not self.enabled:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_dir / f"{self.name}.log")
        fh.setFormatter(_FORMAT)
        if self._buffer is not None:
            for record in self._buffer.records:
                fh.handle(record)
            self.log.removeHandler(self._buffer)
            self._buffer = None
        self.log.addHandler(fh)
        self.scalar_file = open(log_dir / "scalars.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(log_dir / "tb"))
            except ImportError:  # tensorboard is optional
                self.tb = None
        if tracking is not None:
            from core.tracking import open_sinks

            self.sinks = open_sinks(tracking, log_dir, log_dir.parent.name, config_text, self.info)

    def info(self, msg: str) -> None:
        self.log.info(msg)

    def warning(self, msg: str) -> None:
        """A line that starts with ``WARNING:`` in the console and the log."""
        self.log.info(f"WARNING: {msg}")

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Record named values at ``step`` (scalars.jsonl, and TensorBoard when installed)."""
        if self.scalar_file is not None:
            row = {"step": int(step), **{f"{prefix}{k}": float(v) for k, v in values.items()}}
            self.scalar_file.write(json.dumps(row) + "\n")
            self.scalar_file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}{k}", v, step)
        if self.sinks:
            named = {f"{prefix}{k}": float(v) for k, v in values.items()}
            self._to_sinks(lambda s: s.log_scalars(named, int(step)))

    def image(self, tag: str, rgb: np.ndarray, step: int) -> bool:
        """Add an (H, W, 3) uint8 image to TensorBoard and the trackers; False when none of them is in use."""
        if self.tb is not None:
            self.tb.add_image(tag, rgb, step, dataformats="HWC")
        self._to_sinks(lambda s: s.log_image(tag, rgb, int(step)))
        return self.tb is not None or bool(self.sinks)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """Hand the final ``results/summary.json`` to the trackers (the file itself is already written)."""
        self._to_sinks(lambda s: s.log_summary(summary))

    def _to_sinks(self, call: Callable[[Any], None]) -> None:
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # a tracker must not end a training run; said once, then dropped
                self.sinks.remove(sink)
                self.warning(f"{sink.name} tracking failed ({type(exc).__name__}: {exc}); it logs nothing more "
                             f"in this run (the files in logs/ are complete)")

    def close(self, finished: bool = False) -> None:
        """Close the files and end the tracked runs (``finished``: training reached its last iteration)."""
        if self.sinks:
            from core.tracking import run_status

            status = run_status(finished)
            for sink in self.sinks:
                try:
                    sink.close(status)
                except Exception as exc:  # closing must go on for the files below
                    self.warning(f"{sink.name} tracking did not close ({type(exc).__name__}: {exc})")
            self.sinks = []
        if self.tb is not None:
            self.tb.close()
            self.tb = None
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
