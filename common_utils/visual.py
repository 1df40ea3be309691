"""Pictures of results: labelled image grids (input | outputs | ground truth) written small enough to commit."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from data.image_io import to_uint8, write_image


def _wrap_label(text: str, width: int, scale: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels in cv2's simplex font."""
    def fits(t: str) -> bool:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while not fits(word) and len(word) > 1:  # a word wider than the column: cut it
            cut = max(k for k in range(1, len(word) + 1) if fits(word[:k]) or k == 1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def image_grid(rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str], tile_width: int = 300,
               row_labels: Sequence[str] | None = None) -> np.ndarray:
    """A labelled grid (uint8 RGB) of float RGB images: one row per sample, one column per method.

    A column title wider than its column is wrapped onto more lines (the header grows), so titles
    never run into their neighbours."""
    tiles = []
    scale, line_height = 0.55, 20
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
            cv2.putText(line, row_labels[r], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(line)
    width = max(t.shape[1] for t in tiles)
    titles = [_wrap_label(name, tile_width - 10, scale) for name in columns]
    header = np.full((6 + line_height * max((len(t) for t in titles), default=1), width, 3), 255, np.uint8)
    for i, lines in enumerate(titles):
        for k, text in enumerate(lines):
            cv2.putText(header, text, (i * (tile_width + 4) + 6, 19 + k * line_height), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, *tiles], axis=0)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 88) -> None:
    """Write a uint8 RGB array as a JPEG file (``path`` ends in .jpg) small enough to commit."""
    write_image(path, rgb, jpeg_quality=quality)


def plot_curves(curves: dict[str, list[tuple[int, float]]], out: Path, title: str = "") -> Path | None:
    """Loss terms (``train/*``) and validation metrics (``val/<network>/<metric>``) over iterations, as one PNG.

    Returns None when matplotlib is not installed (the curves stay in ``logs/scalars.jsonl``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = {k[len("train/"):]: v for k, v in curves.items() if k.startswith("train/") and k != "train/lr"}
    val: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for k, v in curves.items():
        parts = k.split("/")
        if parts[0] == "val" and len(parts) == 3:
            val.setdefault(parts[2], {})[parts[1]] = v
    panels = (1 if train else 0) + len(val)
    if panels == 0:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax_iter = iter(axes[0])
    if train:
        ax = next(ax_iter)
        for name, points in sorted(train.items()):
            ax.plot(*zip(*points), lw=1, label=name)
        total = _sum_curves(train.values())
        if len(train) > 1 and total:
            ax.plot(*zip(*total), lw=1.6, color="black", label="total")
        ax.set_title("training loss terms")
        ax.set_yscale("log" if all(v > 0 for _, v in total or [(0, 1.0)]) else "linear")
    for metric, nets in sorted(val.items()):
        ax = next(ax_iter)
        for net, points in sorted(nets.items()):
            ax.plot(*zip(*points), marker="o", ms=3, lw=1, label=net)
        ax.set_title(f"validation {metric}")
    for ax in axes[0]:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _sum_curves(series: Sequence[list[tuple[int, float]]] | object) -> list[tuple[int, float]]:
    """Point-wise sum over the steps every series has (the total loss of a logging interval)."""
    maps = [dict(s) for s in series]  # type: ignore[union-attr]
    if not maps:
        return []
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    return [(s, sum(m[s] for m in maps)) for s in steps]
