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
        recursive: also look in sub-folders.
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


def smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [0, 1] of ``shape`` (H, W): uniform noise on a ``cells`` x ``cells``
    grid, scaled up bicubically, plus a random linear ramp (scenes get deeper in one direction)."""
    import cv2

    h, w = shape
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
    field = 0.5 * field + 0.5 * ramp
    lo, hi = float(field.min()), float(field.max())
    return ((field - lo) / (hi - lo + 1e-6)).astype(np.float32)


@DATASETS.register("haze_field")
class FieldHazeDataset(TrainingImages, Dataset):
    """Hazy training pairs with KNOWN transmission and airlight, made from clear images.

    Each clear image gives ``synthetic_per_clear`` items per epoch: a random crop/flip of it, a
    smooth random depth field d in [d_min, d_max] (:func:`smooth_field`), a scattering
    coefficient beta in ``beta`` and a grey airlight A in ``airlight``, t = exp(-beta d), and the
    hazy image I = J t + A (1 - t) (``models.physics.haze_image``). Every draw of an item is new
    (the sampler's seed drives it; evaluation with no seed uses the index), and a resumed run
    draws the same ones. With ``lq_dir`` the real pairs of those scenes come too, with unknown t
    and A (NaN: the trainer supervises only the clean image there). This is what stage 1 of ICEML
    needs to learn t and A when the paired set (SOTS) has no transmission maps (spec iceml.md §4.2).

    Items: ``lq``, ``gt``, ``trans`` (1, H, W), ``A`` (3,), ``name``.

    Args:
        gt_dir: folder of clear images.
        lq_dir: folder of real hazy images paired with them (optional).
        pairing: how ``lq_dir`` pairs with ``gt_dir``, as for :class:`data.datasets.PairedFolderDataset`.
        include, exclude: ids (before the first ``_``) of the scenes to use.
        synthetic_per_clear: synthetic items per clear image and epoch (0: real pairs only).
        beta, depth, airlight: ranges of the scattering coefficient, the depth field and A.
        cells: coarseness of the depth field.
        crop_size, flip, max_side, small, on_bad_image, repeat, resize: as for the folder datasets.
    """

    def __init__(self, gt_dir: str, lq_dir: str | None = None, pairing: str = "prefix",
                 include: list | None = None, exclude: list | None = None, synthetic_per_clear: int = 4,
                 beta: tuple[float, float] = (0.6, 1.8), depth: tuple[float, float] = (0.1, 1.2),
                 airlight: tuple[float, float] = (0.7, 1.0), cells: int = 4, crop_size: int | None = None,
                 flip: bool = False, repeat: int = 1, max_side: int | None = None, small: str = "upscale",
                 on_bad_image: str = "skip", resize: int | None = None) -> None:
        from data.datasets import PairedFolderDataset, _select_files

        clear = _select_files(list_images(Path(gt_dir)), include, exclude)
        if not clear:
            raise UserError(f"haze_field: no clear image in {gt_dir}")
        self.items: list[tuple[str, Path, Path | None]] = []
        if lq_dir is not None:
            real = PairedFolderDataset(lq_dir, gt_dir, pairing=pairing, include=include, exclude=exclude)
            self.items += [("real", gt, lq) for lq, gt in real.pairs]
        self.items += [("synthetic", f, None) for f in clear for _ in range(int(synthetic_per_clear))]
        if not self.items:
            raise UserError("haze_field: no items (give lq_dir or synthetic_per_clear > 0)")
        self.beta, self.depth, self.airlight, self.cells = tuple(beta), tuple(depth), tuple(airlight), int(cells)
        self.gt_dir = Path(gt_dir)
        self._set_policies(crop_size, flip, max_side, small, on_bad_image, repeat, resize)

    def __repr__(self) -> str:
        return f"synthetic haze on {self.gt_dir}"

    def _count(self) -> int:
        return len(self.items)

    def _load(self, index: int, seed: int | None) -> dict[str, Any]:
        kind, gt_p, lq_p = self.items[index]
        if kind == "real":
            lq, gt = read_image_raw(lq_p), read_image_raw(gt_p)
            if lq.shape != gt.shape:
                raise UserError(f"size mismatch: {lq_p} vs {gt_p}")
            lq, gt = (image_to_float(im) for im in self._augment([lq, gt], seed))
            h, w = gt.shape[:2]
            return {"lq": to_tensor_chw(lq), "gt": to_tensor_chw(gt),
                    "trans": torch.full((1, h, w), float("nan")), "A": torch.full((3,), float("nan")),
                    "name": lq_p.stem}
        (gt,) = self._augment([read_image_raw(gt_p)], seed)
        gt = image_to_float(gt)
        rng = np.random.default_rng([index, 0 if seed is None else int(seed) + 1])
        d = self.depth[0] + (self.depth[1] - self.depth[0]) * smooth_field(gt.shape[:2], self.cells, rng)
        beta = rng.uniform(*self.beta)
        a = float(rng.uniform(*self.airlight))
        t = np.exp(-beta * d)[:, :, None].astype(np.float32)
        hazy = (gt * t + a * (1 - t)).astype(np.float32)
        return {"lq": to_tensor_chw(hazy), "gt": to_tensor_chw(gt), "trans": to_tensor_chw(t),
                "A": torch.full((3,), a, dtype=torch.float32), "name": f"{gt_p.stem}_field{index}"}
