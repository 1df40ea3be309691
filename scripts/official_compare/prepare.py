"""Preparation in the parent: the machine, the stand-in weights, the folders and batches both sides read."""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Any

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's file name, looked up by both sides
LPIPS_HEADS_FILE = "alex.pth"  # the official LPIPS loss fetches its linear heads under this name


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_at_start": load,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def ensure_alexnet(path: Path, seed: int = 0) -> str:
    """The ONE stand-in AlexNet state dict both sides use (torchvision.alexnet() with a fixed seed)."""
    if not path.is_file():
        import torch
        import torchvision

        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.alexnet().state_dict(), path)
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def prepare_torch_home(work: Path, alexnet: Path) -> Path:
    """TORCH_HOME whose hub cache holds the stand-in AlexNet and the lpips package's linear heads."""
    import lpips

    ckpt = work / "torch_home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for name, target in ((ALEXNET_FILE, alexnet.resolve()),
                         (LPIPS_HEADS_FILE, Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")):
        link = ckpt / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return work / "torch_home"


def _link_dir(dst: Path, files: list[Path], prefix: str = "") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f"{prefix}{f.name}").symlink_to(f.resolve())


def prepare_data(work: Path, train_root: Path, eval_root: Path, eval_copies: int, n_paired: int) -> dict[str, Any]:
    """Folder layouts both sides read: paired (low/normal), unpaired (low/student, low/teacher), eval."""
    for sub in ("paired", "unpaired", "eval"):
        shutil.rmtree(work / sub, ignore_errors=True)
    lows = sorted((train_root / "low").glob("*.png"))
    highs = sorted((train_root / "high").glob("*.png"))
    if len(lows) < 2 * n_paired or [p.name for p in lows] != [p.name for p in highs]:
        raise SystemExit(f"error: need at least {2 * n_paired} pairs with equal names in {train_root}/low and /high")
    paired, pool = lows[:n_paired], lows[n_paired:2 * n_paired]
    _link_dir(work / "paired" / "low", paired)
    _link_dir(work / "paired" / "normal", [train_root / "high" / p.name for p in paired])
    _link_dir(work / "unpaired" / "low" / "student", pool)
    _link_dir(work / "unpaired" / "low" / "teacher", pool)
    elows = sorted((eval_root / "low").glob("*.png"))
    for c in range(eval_copies):
        prefix = f"c{c}_" if eval_copies > 1 else ""
        _link_dir(work / "eval" / "LOLv2" / "low", elows, prefix)
        _link_dir(work / "eval" / "LOLv2" / "normal", [eval_root / "high" / p.name for p in elows], prefix)
    return {"paired": len(paired), "unpaired": len(pool), "eval_images": len(elows) * eval_copies,
            "train_source": str(train_root), "eval_source": str(eval_root)}


def make_batches(work: Path, backbone: str, batch: int, crop: int, count: int, seed: int) -> None:
    """``count`` batches of real crops (paired low, GT, unpaired low) and CutMix boxes, for both sides."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(seed)
    lows = sorted((work / "paired" / "low").glob("*.png"))
    pool = sorted((work / "unpaired" / "low" / "student").glob("*.png"))

    def crop_of(path: Path, top: int, left: int) -> torch.Tensor:
        im = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[top:top + crop, left:left + crop] / 255.0
        return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))

    def corner(path: Path) -> tuple[int, int]:
        w, h = Image.open(path).size
        return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))

    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("x_p", "gt", "x_u", "mask", "x_c")}
    for _ in range(count):
        xp, gt, xu, mk = [], [], [], []
        for _ in range(batch):
            p = lows[int(rng.integers(len(lows)))]
            t, l = corner(p)
            xp.append(crop_of(p, t, l))
            gt.append(crop_of(work / "paired" / "normal" / p.name, t, l))
            u = pool[int(rng.integers(len(pool)))]
            xu.append(crop_of(u, *corner(u)))
            r = float(np.clip(rng.normal(0.5, 0.3), 0.1, 0.9))
            side = int(crop * math.sqrt(r))
            cy, cx = int(rng.integers(crop)), int(rng.integers(crop))
            m = torch.zeros(3, crop, crop)
            m[:, max(cy - side // 2, 0):min(cy + side // 2, crop), max(cx - side // 2, 0):min(cx + side // 2, crop)] = 1
            mk.append(m)
        x_p, x_u, mask = torch.stack(xp), torch.stack(xu), torch.stack(mk)
        out["x_p"].append(x_p)
        out["gt"].append(torch.stack(gt))
        out["x_u"].append(x_u)
        out["mask"].append(mask)
        out["x_c"].append(torch.where(mask > 0, x_p, x_u))
    torch.save({k: torch.stack(v) for k, v in out.items()}, work / f"batches_{backbone}.pt")
