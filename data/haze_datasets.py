"""Synthetic hazy training pairs with transmission maps and atmospheric light (RESIDE ITS style).

Layout: ``root/hazy``, ``root/clear``, ``root/trans``. A hazy file is named
``<id>_<...>_<A>.<ext>`` (e.g. ITS ``1_1_0.90179.png``): its clear image is ``<id>.*`` and its
transmission map is ``<all fields but the last>.*`` (ITS ``1_1.png``); A is the last field.
Pairing is by these names, not by sorted position (raw ITS has 10 hazy images per clear one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data import DATASETS
from data.datasets import TrainingImages
from data.image_io import image_to_float, list_images, read_image_raw
from data.transforms import to_tensor_chw
from foundation.errors import UserError


@DATASETS.register("haze_synthetic")
class SyntheticHazeDataset(TrainingImages, Dataset):
    """Items: ``lq`` hazy, ``gt`` clear, ``trans`` (1, H, W), ``A`` (3,), ``name``.

    Args:
        root: folder holding ``hazy/``, ``clear/`` and (optionally) ``trans/``.
        crop_size, flip: identical random crop/flips on hazy, clear and transmission.
        require_trans: fail when a transmission map is missing (else t is not supervised: NaN map).
        max_side, small, on_bad_image, repeat: as for :class:`data.datasets.PairedFolderDataset`.
    """

    def __init__(self, root: str, crop_size: int | None = None, flip: bool = False, recursive: bool = True,
                 require_trans: bool = False, repeat: int = 1, max_side: int | None = None, small: str = "upscale",
                 on_bad_image: str = "skip") -> None:
        base = Path(root)
        hazy = list_images(base / "hazy", recursive)
        clear = {f.stem: f for f in list_images(base / "clear", recursive)}
        trans_dir = base / "trans"
        trans = {f.stem: f for f in list_images(trans_dir, recursive)} if trans_dir.is_dir() else {}
        self.items: list[tuple[Path, Path, Path | None, float]] = []
        for f in hazy:
            fields = f.stem.split("_")
            try:
                a = float(fields[-1])
            except ValueError:
                raise UserError(f"{f}: the hazy file name must end with _<A> (e.g. 1_1_0.90179.png)") from None
            gt = clear.get(fields[0])
            if gt is None:
                raise UserError(f"{f}: no clear image '{fields[0]}.*' in {base / 'clear'}")
            tr = trans.get("_".join(fields[:-1]))
            if tr is None and require_trans:
                raise UserError(f"{f}: no transmission map '{'_'.join(fields[:-1])}.*' in {trans_dir}")
            self.items.append((f, gt, tr, a))
        self.root = base
        self._set_policies(crop_size, flip, max_side, small, on_bad_image, repeat)

    def __repr__(self) -> str:
        return str(self.root)

    def _count(self) -> int:
        return len(self.items)

    def _load(self, index: int, seed: int | None) -> dict[str, Any]:
        hazy_p, gt_p, tr_p, a = self.items[index]
        hazy, gt = read_image_raw(hazy_p), read_image_raw(gt_p)
        if hazy.shape != gt.shape:
            raise UserError(f"size mismatch: {hazy_p} vs {gt_p}")
        tr = read_image_raw(tr_p)[:, :, :1] if tr_p is not None else np.full(hazy.shape[:2] + (1,), np.nan, np.float32)
        if tr.shape[:2] != hazy.shape[:2]:
            raise UserError(f"size mismatch: {hazy_p} vs {tr_p}")
        # crop the decoded arrays first, convert only the crops (NaN transmissions stay NaN)
        hazy, gt, tr = (image_to_float(im) for im in self._augment([hazy, gt, tr], seed))
        return {"lq": to_tensor_chw(hazy), "gt": to_tensor_chw(gt), "trans": to_tensor_chw(tr),
                "A": torch.full((3,), a, dtype=torch.float32), "name": hazy_p.stem}
