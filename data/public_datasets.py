"""Public test sets whose pairing needs special rules.

Each item is a dict ``lq`` (3, H, W) float32 in [0, 1], ``gt`` (same shape) and ``name``.

- :class:`SMIDNpyDataset`: SMID in the ``.npy`` layout the low-light paper evaluates on, one fixed
  low frame per scene, with the official green-channel input quirk.
- :class:`FlatPairedDataset`: degraded and ground-truth files side by side in one folder, told
  apart by a name token (O-HAZE ``01_outdoor_hazy.jpg`` / ``01_outdoor_GT.jpg``).
- :class:`ListedPairedFolderDataset`: a paired folder restricted to a fixed list of file names
  (the official 52-image SDSD list).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch.utils.data import Dataset

from data import DATASETS
from data.datasets import DatasetMissing, PairedFolderDataset
from data.image_io import list_images, read_image
from data.transforms import to_tensor_chw
from foundation.errors import UserError

OFFICIAL_LISTS = Path(__file__).resolve().parent / "official_lists.yaml"

# The official SMID loaders divide the low input's green channel by 1.5 ("produce green channel").
SMID_GREEN_DIVISOR = 1.5


@lru_cache(maxsize=1)
def official_lists() -> dict[str, Any]:
    """The fixed lists of data/official_lists.yaml (SMID frames, SID subset, SDSD list)."""
    return yaml.safe_load(OFFICIAL_LISTS.read_text()) or {}


def _shown(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def load_pair(lq_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a degraded image and its ground truth; different sizes are a UserError naming both."""
    lq, gt = read_image(lq_path), read_image(gt_path)
    if lq.shape != gt.shape:
        raise UserError(f"size mismatch: {lq_path} is {lq.shape[1]}x{lq.shape[0]} but {gt_path} is "
                        f"{gt.shape[1]}x{gt.shape[0]}")
    return lq, gt


class _PairList(Dataset):
    """Common ``__len__``/``__getitem__`` over a list of (lq, gt, name)."""

    pairs: list[tuple[Path, Path]]
    names: list[str]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lq_path, gt_path = self.pairs[int(index)]
        lq, gt = load_pair(lq_path, gt_path)
        return {"lq": to_tensor_chw(lq), "gt": to_tensor_chw(gt), "name": self.names[int(index)]}


@DATASETS.register("smid_npy")
class SMIDNpyDataset(_PairList):
    """SMID test set stored as ``.npy`` arrays (HWC uint8), as the official evaluation reads it.

    Layout under ``root``: ``test_list.txt`` (one scene id a line), ``high_np/<scene>/`` holding
    exactly one ground-truth array, and ``low_np/<scene>/<frame>.npy``. Only one low frame per
    scene is evaluated, the one fixed by ``smid_test_frames`` in data/official_lists.yaml.

    Args:
        root: the SMID folder.
        green_quirk: divide the low input's green channel by 1.5 after reading, as the official
            SMID loaders do (on by default for faithful reproduction of the paper's numbers).
        frames: scene -> frame map (default: the official one).
    """

    def __init__(self, root: str, green_quirk: bool = True, frames: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.green_quirk = bool(green_quirk)
        frames = {str(k): str(v) for k, v in (frames or official_lists()["smid_test_frames"]).items()}
        listing = self.root / "test_list.txt"
        expected = [str(listing), str(self.root / "high_np" / "<scene>" / "<one GT>.npy"),
                    str(self.root / "low_np" / "<scene>" / "<frame>.npy")]
        if not listing.is_file():
            raise DatasetMissing(f"SMID not found; expected {', '.join(expected)}")
        scenes = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
        if not scenes:
            raise DatasetMissing(f"SMID: {listing} lists no scenes")
        unknown = [s for s in scenes if s not in frames]
        if unknown:
            raise UserError(f"SMID: scenes {_shown(unknown)} in {listing} have no fixed test frame in "
                            f"{OFFICIAL_LISTS} (smid_test_frames); the official evaluation covers only its "
                            f"{len(frames)} listed scenes")
        self.pairs, self.names, missing = [], [], []
        for scene in scenes:
            gt_dir = self.root / "high_np" / scene
            gts = sorted(f for f in gt_dir.glob("*.npy")) if gt_dir.is_dir() else []
            if len(gts) != 1:
                missing.append(f"{gt_dir}/<one GT>.npy (found {len(gts)})")
                continue
            low = self.root / "low_np" / scene / f"{frames[scene]}.npy"
            if not low.is_file():
                missing.append(str(low))
                continue
            self.pairs.append((low, gts[0]))
            self.names.append(f"{scene}_{frames[scene]}")
        if missing:
            raise DatasetMissing(f"SMID incomplete: {len(missing)} of {len(scenes)} scenes lack files: "
                                 f"{_shown(missing, 4)}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        if self.green_quirk:
            item["lq"][1] /= SMID_GREEN_DIVISOR
        return item


def _token_key(stem: str, token: str) -> str | None:
    """``stem`` without ``token`` (a whole ``_``/``-``/space-separated word, case-insensitive), or None."""
    parts = re.split(r"([_\- ])", stem)
    hit = [i for i, p in enumerate(parts) if p.lower() == token.lower()]
    if not hit:
        return None
    i = hit[-1]
    keep = parts[:max(i - 1, 0)] + parts[i + 1:] if i > 0 else parts[i + 2:]
    return "".join(keep).lower()


@DATASETS.register("flat_paired")
class FlatPairedDataset(_PairList):
    """Degraded and ground-truth images in one folder, told apart by a word in the name.

    ``01_outdoor_hazy.jpg`` pairs with ``01_outdoor_GT.jpg``: the key is the name with the token
    word removed. Counts must match and every degraded image must have its ground truth.

    Args:
        folder: the folder holding both kinds of file.
        lq_token: word marking degraded images (default ``hazy``).
        gt_token: word marking ground truths (default ``GT``).
    """

    def __init__(self, folder: str, lq_token: str = "hazy", gt_token: str = "GT") -> None:
        self.folder = Path(folder)
        lq, gt = {}, {}
        for f in list_images(self.folder):
            k_lq, k_gt = _token_key(f.stem, lq_token), _token_key(f.stem, gt_token)
            if k_lq is not None:
                lq[k_lq] = f
            elif k_gt is not None:
                gt[k_gt] = f
        if len(lq) != len(gt):
            raise UserError(f"pair count mismatch in {self.folder}: {len(lq)} '*{lq_token}*' images but "
                            f"{len(gt)} '*{gt_token}*' images")
        unmatched = sorted(lq[k].name for k in lq if k not in gt)
        if unmatched:
            raise UserError(f"{self.folder}: no '{gt_token}' image for {_shown(unmatched)}")
        keys = sorted(lq)
        self.pairs = [(lq[k], gt[k]) for k in keys]
        self.names = [lq[k].stem for k in keys]


@DATASETS.register("paired_folder_listed")
class ListedPairedFolderDataset(PairedFolderDataset):
    """A paired folder restricted to the low images whose file names are listed.

    Args:
        lq_dir, gt_dir, pairing, recursive: as for :class:`data.datasets.PairedFolderDataset`.
        names: file names (with extension) of the low images to keep; all must be present.
    """

    def __init__(self, lq_dir: str, gt_dir: str, names: Iterable[str], pairing: str = "auto",
                 recursive: bool = True) -> None:
        super().__init__(lq_dir, gt_dir, pairing=pairing, recursive=recursive)
        wanted = list(dict.fromkeys(str(n) for n in names))
        by_name = {lq.name: (lq, gt) for lq, gt in self.pairs}
        absent = [n for n in wanted if n not in by_name]
        if absent:
            raise UserError(f"{len(absent)} of the {len(wanted)} listed images are not in {self.lq_dir}: "
                            f"{_shown(absent)}")
        self.pairs = [by_name[n] for n in sorted(wanted, key=lambda n: str(by_name[n][0]))]
