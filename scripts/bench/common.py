"""What several benchmark sections share: progress and table output, synthetic pairs, the demo data, LPIPS."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common_utils.benchmarking import fmt

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY = REPO_ROOT / "scripts" / "benchmark.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


def ratio_text(x: float | None) -> str:
    return fmt(x, 2) + ("x" if x else "")



def write_pairs(root: Path, n: int, h: int = 400, w: int = 600, unpaired: bool = False) -> tuple[Path, Path]:
    """``n`` synthetic low/GT PNG pairs (default 600x400, the LOLv2-Real size) under ``root/low``, ``root/high``
    (and ``n`` unpaired low images under ``root/unpaired``); kept when already there."""
    from data.image_io import write_image

    if not (root / "low").is_dir():
        rng = np.random.default_rng(1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(n):
            base = 0.5 + 0.25 * np.sin(xx[..., None] / (23 + i) + np.arange(3)) * np.cos(yy[..., None] / (17 + i))
            gt = np.clip(base + 0.04 * rng.standard_normal((h, w, 3), dtype=np.float32), 0, 1)
            write_image(root / "high" / f"{i:04d}.png", gt)
            write_image(root / "low" / f"{i:04d}.png",
                        np.clip(0.12 * gt + 0.01 * rng.random((h, w, 3), dtype=np.float32), 0, 1))
            if unpaired:
                write_image(root / "unpaired" / f"{i:04d}.png", 0.12 * np.roll(gt, i * 7, axis=1))
    return root / "low", root / "high"


def demo_lowlight() -> Path:
    """The demo low-light folder (``make_demo_data`` creates it when missing; a complete copy is kept)."""
    from data.demo import make_demo_data
    from data.paths import resolve_path

    return make_demo_data(resolve_path("demo_data"), kind="lowlight") / "lowlight"


@functools.cache
def lpips() -> tuple[Any, str | None]:
    """The LPIPS metric (None without its AlexNet weights) and the reason it is missing."""
    from models.lpips import try_build_lpips

    return try_build_lpips()


