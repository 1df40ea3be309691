"""Helpers of the real-photograph studies (``scripts/ssll_study.py``, ``scripts/iceml_study.py``).

A study is a grid of ordinary ``run.py`` trainings. Each run is a subprocess with its own run
folder, so a study stopped at any point continues where it stopped: finished runs (with a
``results/summary.json``) are kept, an interrupted run resumes from its ``last.pth``. The
report is rebuilt from the run folders alone, so it can be regenerated at any time.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from data.paths import REPO_ROOT


@dataclass
class StudyRun:
    """One training of a study: its config, run name and overrides."""

    config: str
    name: str
    overrides: tuple[str, ...] = ()

    def folder(self, root: Path) -> Path:
        return root / self.name

    def summary(self, root: Path) -> dict[str, Any] | None:
        path = self.folder(root) / "results" / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def wall_seconds(self, root: Path) -> float | None:
        path = self.folder(root) / "wall.json"
        return json.loads(path.read_text())["seconds"] if path.is_file() else None


def run_training(run: StudyRun, root: Path, log_to: Path | None = None) -> float:
    """Train ``run`` (resuming an interrupted one); return the wall time spent in this call.

    The wall time of every call adds up in ``<run folder>/wall.json``.
    """
    folder = run.folder(root)
    last = folder / "checkpoints" / "last.pth"
    cmd = [sys.executable, str(REPO_ROOT / "run.py"), "-c", run.config, f"name={run.name}",
           f"output_root={root}", *run.overrides]
    if last.is_file():
        cmd += ["--resume", str(last)]
    t0 = time.time()
    with open(log_to or folder.with_suffix(".out"), "a") as out:
        code = subprocess.call(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    spent = time.time() - t0
    if code != 0:
        raise RuntimeError(f"run {run.name} failed with exit code {code}: {' '.join(cmd)}")
    wall = folder / "wall.json"
    before = json.loads(wall.read_text())["seconds"] if wall.is_file() else 0.0
    wall.write_text(json.dumps({"seconds": before + spent, "command": " ".join(cmd[1:])}))
    return spent


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def pm(values: Sequence[float | None], digits: int = 2) -> str:
    """``mean ± std`` of ``values`` for a table."""
    m, s = mean_std(values)
    if m is None:
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float RGB image in [0, 1] as uint8."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def image_grid(rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str], tile_width: int = 300,
               row_labels: Sequence[str] | None = None) -> np.ndarray:
    """A labelled grid (uint8 RGB) of float RGB images: one row per sample, one column per method."""
    tiles = []
    head = 26
    for r, row in enumerate(rows):
        cells = []
        for img in row:
            h, w = img.shape[:2]
            th = max(1, round(h * tile_width / w))
            cells.append(cv2.resize(to_uint8(img), (tile_width, th), interpolation=cv2.INTER_AREA))
        height = max(c.shape[0] for c in cells)
        cells = [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0)), constant_values=255) for c in cells]
        line = np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1)
        if row_labels:
            cv2.putText(line, row_labels[r], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(line)
    width = max(t.shape[1] for t in tiles)
    header = np.full((head, width, 3), 255, np.uint8)
    for i, name in enumerate(columns):
        cv2.putText(header, name, (i * (tile_width + 4) + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([header, *tiles], axis=0)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 88) -> None:
    """Write a uint8 RGB array as JPEG (small enough to commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())
