"""Helpers shared by the test files (imported explicitly, not conftest fixtures).

- :func:`make_image` / :func:`make_paired_folders`: tiny deterministic images written with
  :func:`data.image_io.write_image`.
- :func:`tiny_config` / :func:`write_yaml` / :func:`load_tiny_config`: a supervised config that
  trains a width-4 UNet for a few iterations on CPU, with every output under ``tmp_path``.
- :data:`REPO_ROOT` / :data:`FIXTURES`: the repository and the committed test fixtures, wherever in
  the tests tree (which mirrors the source tree) a test file sits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from data.image_io import write_image
from data.paths import REPO_ROOT as REPO_ROOT  # re-exported: the tests take both from here

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_image(size: int | tuple[int, int], seed: int) -> np.ndarray:
    """A smooth-ish random float32 RGB image in [0, 1], quantised to 8 bits (exact PNG round trip)."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(xx[..., None] / (3 + seed % 5) + np.arange(3) + seed) * np.cos(yy[..., None] / 4.0)
    img = np.clip(base + 0.2 * rng.random((h, w, 3), dtype=np.float32), 0, 1)
    return (np.round(img * 255) / 255).astype(np.float32)


def make_paired_folders(root: Path, n: int = 8, size: int | tuple[int, int] = 48, seed: int = 0,
                        lq_name: str = "low", gt_name: str = "high", lq_ext: str = ".png",
                        gt_ext: str = ".png", darken: float = 0.3) -> tuple[Path, Path]:
    """``n`` low/GT pairs ``img_000`` ... in ``root/lq_name`` and ``root/gt_name``; lq = darkened gt."""
    lq_dir, gt_dir = Path(root) / lq_name, Path(root) / gt_name
    for i in range(n):
        gt = make_image(size, seed * 1000 + i)
        write_image(gt_dir / f"img_{i:03d}{gt_ext}", gt)
        write_image(lq_dir / f"img_{i:03d}{lq_ext}", gt * darken)
    return lq_dir, gt_dir


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Dump ``data`` as YAML to ``path`` (folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_config(tmp_path: Path, name: str = "tiny", iters: int = 8, num_workers: int = 0,
                n_train: int = 8, n_val: int = 2, eval_datasets: bool = False) -> dict[str, Any]:
    """A supervised config dict on generated data under ``tmp_path/data`` (created once)."""
    data_root = Path(tmp_path) / "data"
    train_lq, train_gt = data_root / "train" / "low", data_root / "train" / "high"
    val_lq, val_gt = data_root / "val" / "low", data_root / "val" / "high"
    if not train_lq.is_dir():
        make_paired_folders(data_root / "train", n=n_train, size=48, seed=1)
        make_paired_folders(data_root / "val", n=n_val, size=(40, 36), seed=2)
    cfg: dict[str, Any] = {
        "name": name,
        "seed": 3,
        "trainer": "supervised",
        "output_root": str(Path(tmp_path) / "experiments"),
        "device": "cpu",
        "network": {"name": "UNet", "args": {"width": 4}},
        "data": {
            "num_workers": num_workers,
            "pin_memory": False,
            "batch_size": 2,
            "paired": {"type": "paired_folder",
                       "args": {"lq_dir": str(train_lq), "gt_dir": str(train_gt), "crop_size": 32, "flip": True}},
            "val": {"type": "paired_folder", "args": {"lq_dir": str(val_lq), "gt_dir": str(val_gt)}},
        },
        "optim": {"type": "adamw", "lr": 1.0e-3},
        "scheduler": {"type": "cosine", "by_epoch": False, "eta_min": 1.0e-5},
        "losses": [{"name": "l1", "weight": 1.0}, {"name": "ssim", "weight": 1.0}],
        "train": {"iters": iters, "log_every": 2, "val_every": 4, "save_every": 2, "keep_last": 10,
                  "ema_decay": 0.99, "sample_images": 0},
        "validation": {"ssim": "y", "lpips": False},
        "eval": {"after_train": eval_datasets, "lpips": True, "checkpoint": "last", "datasets": []},
    }
    if eval_datasets:
        cfg["eval"]["datasets"] = [{"name": "tiny_test", "type": "paired_folder",
                                    "args": {"lq_dir": str(val_lq), "gt_dir": str(val_gt)}}]
    return cfg


def load_tiny_config(tmp_path: Path, overrides: list[str] | None = None, **kwargs: Any):
    """Write :func:`tiny_config` to ``tmp_path/<name>.yaml`` and load it through ``load_config``."""
    from core.config import load_config

    cfg = tiny_config(tmp_path, **kwargs)
    path = write_yaml(Path(tmp_path) / f"{cfg['name']}.yaml", cfg)
    return load_config(path, overrides or [])
