"""Pictures of results: labelled image grids (input | outputs | ground truth) written small enough to commit."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


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
