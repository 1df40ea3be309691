"""Folder datasets: paired (low/GT) and unpaired (low only).

A dataset item is a dict: ``lq`` (3, H, W) float32 in [0, 1], ``gt`` for paired sets, ``name``.
Indices may be plain ints (evaluation) or ``(index, seed)`` keys from
:class:`data.samplers.ResumableSampler`, whose seed drives the crop and flips of that item.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from data import DATASETS
from data.image_io import image_to_float, list_images, read_image_raw
from data.transforms import paired_random_crop, paired_random_flip, to_tensor_chw
from models.registry import UserError


def _split_key(key: Any) -> tuple[int, int | None]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


def pair_files(lq_files: Sequence[Path], gt_files: Sequence[Path], lq_dir: Path, gt_dir: Path,
               pairing: str) -> list[tuple[Path, Path]]:
    """Pair low and GT files by file stem (``name``) or by sorted position (``sorted``)."""
    if pairing == "sorted":
        if len(lq_files) != len(gt_files):
            raise UserError(f"pair count mismatch: {len(lq_files)} images in {lq_dir} but "
                            f"{len(gt_files)} in {gt_dir}")
        return list(zip(lq_files, gt_files))
    if pairing != "name":
        raise UserError(f"unknown pairing '{pairing}' (use 'name' or 'sorted')")
    gt_by_stem = {f.relative_to(gt_dir).with_suffix("").as_posix(): f for f in gt_files}
    pairs, missing = [], []
    for f in lq_files:
        stem = f.relative_to(lq_dir).with_suffix("").as_posix()
        if stem in gt_by_stem:
            pairs.append((f, gt_by_stem[stem]))
        else:
            missing.append(f.name)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(f"{len(missing)} of {len(lq_files)} images in {lq_dir} have no file of the same name "
                        f"in {gt_dir} (e.g. {shown}); rename them or set pairing: sorted")
    return pairs


class _AugmentMixin:
    crop_size: int | None
    flip: bool

    def _augment(self, images: list[np.ndarray], seed: int | None) -> list[np.ndarray]:
        if seed is None or (not self.crop_size and not self.flip):
            return images
        rng = np.random.default_rng(seed)
        if self.crop_size:
            images = paired_random_crop(images, self.crop_size, rng)
        if self.flip:
            images = paired_random_flip(images, rng)
        return images


@DATASETS.register("paired_folder")
class PairedFolderDataset(_AugmentMixin, Dataset):
    """Low-light (or hazy) inputs and their ground truths in two folders.

    Args:
        lq_dir: folder of degraded inputs.
        gt_dir: folder of targets.
        pairing: ``name`` matches files by name without extension (default); ``sorted`` pairs by
            sorted position, as the official SSLL evaluation does.
        crop_size: random square crop for training (None: whole images).
        flip: random horizontal and vertical flips (training).
        recursive: also look in sub-folders.
        repeat: virtual length multiplier (an epoch visits every pair ``repeat`` times).
    """

    def __init__(self, lq_dir: str, gt_dir: str, pairing: str = "name", crop_size: int | None = None,
                 flip: bool = False, recursive: bool = False, repeat: int = 1) -> None:
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)
        lq = list_images(self.lq_dir, recursive)
        gt = list_images(self.gt_dir, recursive)
        self.pairs = pair_files(lq, gt, self.lq_dir, self.gt_dir, pairing)
        self.crop_size, self.flip, self.repeat = crop_size, flip, max(1, int(repeat))

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = _split_key(key)
        lq_path, gt_path = self.pairs[index % len(self.pairs)]
        lq, gt = read_image_raw(lq_path), read_image_raw(gt_path)
        if lq.shape != gt.shape:
            raise UserError(f"size mismatch: {lq_path} is {lq.shape[1]}x{lq.shape[0]} but {gt_path} is "
                            f"{gt.shape[1]}x{gt.shape[0]}")
        lq, gt = (image_to_float(im) for im in self._augment([lq, gt], seed))  # crop first, convert the crop
        return {"lq": to_tensor_chw(lq), "gt": to_tensor_chw(gt), "name": lq_path.stem}


@DATASETS.register("unpaired_folder")
class UnpairedFolderDataset(_AugmentMixin, Dataset):
    """Degraded images without ground truth (the unpaired pool of semi-supervised training).

    Args:
        root: folder of images (or several folders).
        crop_size, flip, recursive, repeat: as for :class:`PairedFolderDataset`.
    """

    def __init__(self, root: str | list[str], crop_size: int | None = None, flip: bool = False,
                 recursive: bool = False, repeat: int = 1) -> None:
        roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
        self.files = [f for r in roots for f in list_images(r, recursive)]
        self.crop_size, self.flip, self.repeat = crop_size, flip, max(1, int(repeat))

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = _split_key(key)
        path = self.files[index % len(self.files)]
        (img,) = self._augment([read_image_raw(path)], seed)
        return {"lq": to_tensor_chw(image_to_float(img)), "name": path.stem}
