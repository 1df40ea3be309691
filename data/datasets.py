"""Folder datasets: paired (low/GT) and unpaired (low only).

A dataset item is a dict: ``lq`` (3, H, W) float32 in [0, 1], ``gt`` for paired sets, ``name``.
Indices may be plain ints (evaluation) or ``(index, seed)`` keys from
:class:`data.samplers.ResumableSampler`, whose seed drives the crop and flips of that item.

Training folders hold whatever users download: any mix of formats (PNG, JPEG, BMP, TIFF, WebP)
and sizes. ``max_side`` scales images whose longer side exceeds it down (area filter) before
cropping, so a 4K photograph is not reduced to a patch of sky; an image smaller than the crop is
scaled up until it covers the crop (``small: upscale``, aspect kept) or reflect-padded
(``small: pad``). ``resize: N`` instead scales every image to N x N (aspect not kept), as the
official ICEML loaders do (torchvision ``Resize((512, 512))``). In training an unreadable or
truncated file is skipped with a warning naming it (``on_bad_image: skip``: the next readable
image takes its place) or stops the run with its name (``on_bad_image: stop``); in evaluation
(whole images) the evaluator reports it instead.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset, get_worker_info

from data import DATASETS
from data.image_io import ImageReadError, image_to_float, list_images, read_image_raw
from data.transforms import paired_random_crop, paired_random_flip, to_tensor_chw
from foundation.errors import UserError

PAIRINGS = ("auto", "name", "sorted", "prefix")

#: words that name a folder's role rather than the scene (``low00690.png`` / ``normal00690.png``)
ROLE_WORDS = ("low", "normal", "high", "hazy", "gt", "clear", "input", "target", "lq", "label", "cloud")
_ROLE_RE = re.compile(r"(?i)(?<![a-z])(" + "|".join(ROLE_WORDS) + r")(?![a-z])")


class DatasetMissing(UserError):
    """A named dataset that is not (completely) on disk."""

BAD_IMAGE_POLICIES = ("skip", "stop")
SMALL_IMAGE_POLICIES = ("upscale", "pad")


def _split_key(key: Any) -> tuple[int, int | None]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


def _shown(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def pairing_key(path: Path, root: Path, pairing: str, sep: str = "_") -> str:
    """The key a file pairs by: its relative name without extension (``name``), or the id before
    the first ``sep`` of its name (``prefix``: RESIDE ``1400_3.png`` -> ``1400``)."""
    stem = path.relative_to(root).with_suffix("").as_posix()
    if pairing == "prefix":
        parent, _, leaf = stem.rpartition("/")
        leaf = leaf.split(sep, 1)[0]
        return f"{parent}/{leaf}" if parent else leaf
    return stem


def role_free_key(stem: str) -> str:
    """A name without its role words and separators: ``low00690`` and ``normal00690`` -> ``00690``."""
    return re.sub(r"[_\-. ]+", "_", _ROLE_RE.sub("", stem)).strip("_").lower()


def pair_files(lq_files: Sequence[Path], gt_files: Sequence[Path], lq_dir: Path, gt_dir: Path,
               pairing: str) -> list[tuple[Path, Path]]:
    """Pair inputs and ground truths.

    ``name``: same relative name without extension. ``auto`` (evaluation sets): by name, else by
    the name without role words (LOLv2's ``low00690`` / ``normal00690``); never by position, so
    ``low/22.png`` is not scored against ``normal/99.png``. ``prefix``: the ground truth named by
    the input's id before the first ``_`` (several inputs may share it), else, when every input
    has one, the ground truth of the same name. ``sorted``: by sorted
    position, only for sets known to pair that way (an error names any count mismatch).
    """
    if pairing == "sorted":
        if len(lq_files) != len(gt_files):
            raise UserError(f"pair count mismatch: {len(lq_files)} images in {lq_dir} but "
                            f"{len(gt_files)} in {gt_dir}")
        return list(zip(lq_files, gt_files))
    if pairing not in PAIRINGS:
        raise UserError(f"unknown pairing '{pairing}' (use one of {', '.join(PAIRINGS)})")
    mode = "name" if pairing == "auto" else pairing
    pairs, missing = _pair_by_key(lq_files, gt_files, lq_dir, gt_dir, mode, lambda k: k)
    if missing and pairing == "prefix":  # hazy and clear files that share their names (a SOTS copy renamed so)
        found, left = _pair_by_key(lq_files, gt_files, lq_dir, gt_dir, "name", lambda k: k)
        if not left:
            return found
    if missing and pairing == "auto":  # sub-folders on one side only, then role words in the names
        for norm in (_base_name, lambda k: role_free_key(_base_name(k))):
            found, left = _pair_by_key(lq_files, gt_files, lq_dir, gt_dir, "name", norm)
            if not left:
                return found
    if missing:
        what = "no ground truth named by their id" if pairing == "prefix" else "no file of the same name"
        others = sorted({f.name for f in gt_files} - {gt.name for _, gt in pairs})
        extra = f"; unmatched in {gt_dir.name}/: {_shown(others, 3)}" if others else ""
        raise UserError(f"{len(missing)} of {len(lq_files)} images in {lq_dir} have {what} in {gt_dir} "
                        f"({len(gt_files)} images there) "
                        f"(e.g. {_shown(missing, 3)}{extra}): pairs are matched by name, never by position; rename "
                        f"them, or set pairing: sorted (eval.py --pairing sorted) for a set that pairs by sorted order")
    return pairs


def _base_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _pair_by_key(lq_files: Sequence[Path], gt_files: Sequence[Path], lq_dir: Path, gt_dir: Path, mode: str,
                 norm) -> tuple[list[tuple[Path, Path]], list[str]]:
    gt_by_key: dict[str, Path] = {}
    for f in gt_files:
        key = norm(pairing_key(f, gt_dir, "name"))
        gt_by_key[key] = f if key not in gt_by_key else None  # an ambiguous key matches nothing
    pairs, missing = [], []
    for f in lq_files:
        gt = gt_by_key.get(norm(pairing_key(f, lq_dir, mode)))
        if gt is not None:
            pairs.append((f, gt))
        else:
            missing.append(f.name)
    return pairs, missing


def select_by_key(pairs: list[tuple[Path, Path]], lq_dir: Path, pairing: str, include: Sequence[Any] | None,
                  exclude: Sequence[Any] | None) -> list[tuple[Path, Path]]:
    """Keep the pairs whose pairing key is in ``include`` and not in ``exclude`` (e.g. held-out scenes)."""
    if include is None and not exclude:
        return pairs
    mode = "prefix" if pairing == "prefix" else "name"
    keys = [pairing_key(lq, lq_dir, mode) for lq, _ in pairs]
    known = set(keys)
    asked = [str(k) for k in list(include or []) + list(exclude or [])]
    unknown = [k for k in asked if k not in known]
    if unknown:
        raise UserError(f"include/exclude name ids that are not in {lq_dir}: {_shown(unknown)}")
    inc = None if include is None else {str(k) for k in include}
    exc = {str(k) for k in exclude or []}
    kept = [p for p, k in zip(pairs, keys) if (inc is None or k in inc) and k not in exc]
    if not kept:
        raise UserError(f"include/exclude leave no image of {lq_dir}")
    return kept


_WARNED: set[str] = set()


def warn_skipped(reasons: list[str]) -> None:
    """``warning: skipped <file>: <why>`` on stderr, once per file and process (the main one)."""
    for why in reasons:
        if why not in _WARNED:
            _WARNED.add(why)
            print(f"warning: skipped {why}", file=sys.stderr, flush=True)


class TrainingImages:
    """Shared behaviour of the folder datasets: augmentation, size policies, bad-file policy.

    Subclasses set ``crop_size``, ``flip``, ``max_side``, ``small``, ``on_bad_image`` and
    implement ``_count()`` and ``_load(index, seed)``.
    """

    crop_size: int | None = None
    flip: bool = False
    max_side: int | None = None
    small: str = "upscale"
    on_bad_image: str = "skip"
    repeat: int = 1
    resize: int | None = None

    def _set_policies(self, crop_size: int | None, flip: bool, max_side: int | None, small: str,
                      on_bad_image: str, repeat: int, resize: int | None = None) -> None:
        if small not in SMALL_IMAGE_POLICIES:
            raise UserError(f"dataset argument 'small' must be one of {', '.join(SMALL_IMAGE_POLICIES)}, got '{small}'")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise UserError(f"dataset argument 'on_bad_image' must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                            f"got '{on_bad_image}'")
        if any(v is not None and v <= 0 for v in (crop_size, max_side, resize)):
            raise UserError("dataset arguments 'crop_size', 'max_side' and 'resize' must be positive")
        self.resize = resize
        self.crop_size, self.flip, self.max_side = crop_size, bool(flip), max_side
        self.small, self.on_bad_image, self.repeat = small, on_bad_image, max(1, int(repeat))

    def _count(self) -> int:
        raise NotImplementedError

    def _load(self, index: int, seed: int | None) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count() * self.repeat

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = _split_key(key)
        n = self._count()
        index %= n
        if seed is None:  # evaluation: an unreadable image is the evaluator's to report, never replaced
            return self._load(index, None)
        skipped: list[str] = []
        for attempt in range(n):
            try:
                item = self._load((index + attempt) % n, seed)
            except ImageReadError as exc:
                if self.on_bad_image == "stop":
                    raise UserError(f"{exc} (a training image; set the dataset's on_bad_image: skip to skip "
                                    f"such files)") from None
                skipped.append(str(exc))
                if get_worker_info() is None:  # in a loader worker the main process warns
                    warn_skipped(skipped)
                    skipped = []
                continue
            if skipped:  # carried to the main process, which warns once per file (not once per worker)
                item["_skipped"] = skipped
            return item
        raise UserError(f"no readable image in {self!r}: every file failed to decode")

    def _augment(self, images: list[np.ndarray], seed: int | None) -> list[np.ndarray]:
        """Resize (``max_side``, ``small``), then the seeded crop and flips, on decoded arrays."""
        images = self._fit_size(images)
        if seed is None or (not self.crop_size and not self.flip):
            return images
        rng = np.random.default_rng(seed)
        if self.crop_size:
            images = paired_random_crop(images, self.crop_size, rng)
        if self.flip:
            images = paired_random_flip(images, rng)
        return images

    def _fit_size(self, images: list[np.ndarray]) -> list[np.ndarray]:
        h, w = images[0].shape[:2]
        if self.resize:
            n = self.resize
            interp = cv2.INTER_AREA if n * n < h * w else cv2.INTER_CUBIC
            return [_resize(im, (n, n), interp) for im in images]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        if self.crop_size and self.small == "upscale" and min(h, w) * scale < self.crop_size:
            scale = self.crop_size / min(h, w)
        if scale == 1.0:
            return images
        floor = self.crop_size if self.crop_size and self.small == "upscale" else 1
        size = (max(floor, round(w * scale)), max(floor, round(h * scale)))  # cv2 order: (width, height)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return [_resize(im, size, interp) for im in images]


def _resize(im: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    """cv2.resize keeping the channel axis (cv2 drops a trailing axis of length 1)."""
    out = cv2.resize(np.ascontiguousarray(im), size, interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


@DATASETS.register("paired_folder")
class PairedFolderDataset(TrainingImages, Dataset):
    """Low-light (or hazy) inputs and their ground truths in two folders.

    Args:
        lq_dir: folder of degraded inputs.
        gt_dir: folder of targets.
        pairing: ``name`` matches files by name without extension (default); ``auto`` by name or
            by the name without role words (``low00690`` / ``normal00690``); ``prefix`` matches an
            input to the target named by its id before the first ``_`` (RESIDE SOTS/ITS:
            ``1400_3.png`` -> ``1400.png``); ``sorted`` pairs by sorted position (see
            :func:`pair_files`).
        crop_size: random square crop for training (None: whole images).
        flip: random horizontal and vertical flips (training).
        recursive: also look in sub-folders.
        repeat: virtual length multiplier (an epoch visits every pair ``repeat`` times).
        include, exclude: pairing keys (names, or ids with ``prefix``) to keep or leave out, e.g.
            held-out scenes.
        split_file, split_subset, split_take: keep the ids of a subset of a committed split file
            instead of ``include`` (see :mod:`data.splits`).
        max_side: scale an image whose longer side exceeds this down (area filter) before the crop.
        small: an image smaller than the crop is scaled up to cover it (``upscale``) or
            reflect-padded (``pad``).
        on_bad_image: in training, an unreadable file is skipped with a warning naming it (``skip``)
            or stops the run (``stop``).
        resize: scale every image to ``resize`` x ``resize`` instead (aspect not kept; the official
            ICEML loaders' whole-image resize).
    """

    def __init__(self, lq_dir: str, gt_dir: str, pairing: str = "name", crop_size: int | None = None,
                 flip: bool = False, recursive: bool = False, repeat: int = 1, include: list | None = None,
                 exclude: list | None = None, max_side: int | None = None, small: str = "upscale",
                 on_bad_image: str = "skip", split_file: str | None = None, split_subset: str | list | None = None,
                 split_take: int | None = None, resize: int | None = None) -> None:
        from data.splits import split_include

        include = split_include(split_file, split_subset, split_take, include)
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)
        lq = list_images(self.lq_dir, recursive)
        gt = list_images(self.gt_dir, recursive)
        self.pairing = pairing
        pairs = pair_files(lq, gt, self.lq_dir, self.gt_dir, pairing)
        self.pairs = select_by_key(pairs, self.lq_dir, pairing, include, exclude)
        self._set_policies(crop_size, flip, max_side, small, on_bad_image, repeat, resize)

    def __repr__(self) -> str:
        return f"{self.lq_dir} + {self.gt_dir}"

    def _count(self) -> int:
        return len(self.pairs)

    def keys(self) -> list[str]:
        """The pairing key of every pair (names, or ids with ``prefix`` pairing), in order."""
        mode = "prefix" if self.pairing == "prefix" else "name"
        return [pairing_key(lq, self.lq_dir, mode) for lq, _ in self.pairs]

    def _load(self, index: int, seed: int | None) -> dict[str, Any]:
        lq_path, gt_path = self.pairs[index]
        lq, gt = read_image_raw(lq_path), read_image_raw(gt_path)
        if lq.shape != gt.shape:
            raise UserError(f"size mismatch: {lq_path} is {lq.shape[1]}x{lq.shape[0]} but {gt_path} is "
                            f"{gt.shape[1]}x{gt.shape[0]}")
        lq, gt = (image_to_float(im) for im in self._augment([lq, gt], seed))  # crop first, convert the crop
        return {"lq": to_tensor_chw(lq), "gt": to_tensor_chw(gt), "name": lq_path.stem}


@DATASETS.register("unpaired_folder")
class UnpairedFolderDataset(TrainingImages, Dataset):
    """Degraded images without ground truth (the unpaired pool of semi-supervised training).

    Args:
        root: folder of images, or a list of folders (any mix of formats and sizes).
        crop_size, flip, recursive, repeat, max_side, small, on_bad_image: as for
            :class:`PairedFolderDataset`.
        include, exclude: ids (the file name before the first ``_``, e.g. SOTS rooms) of the files
            of ``root`` to keep or leave out.
        resize: scale every image to ``resize`` x ``resize`` (the official ICEML loaders' whole-image resize).
        extra_files: further image files (e.g. the inputs of labelled pairs whose ground truth is
            withheld; see ``data.labelled_pairs``).
        split_file, split_subset, split_take: keep only the files of ``root`` whose stem is in a
            subset of a committed split file (see :mod:`data.splits`).
        extra_roots: further folders, not filtered by ``root``'s split (e.g. SICE frames beside a
            split's LOL inputs): each a folder taken whole, or a mapping ``{root, split_file,
            split_subset[, split_take]}`` that keeps the files of a subset of its own split file (e.g.
            the SICE frames of ``data/splits/sice_dark_scenes.yaml``'s ``pool``, its held-out scenes left out).
    """

    def __init__(self, root: str | list[str] | None = None, crop_size: int | None = None, flip: bool = False,
                 recursive: bool = False, repeat: int = 1, max_side: int | None = None, small: str = "upscale",
                 on_bad_image: str = "skip", extra_files: list[str] | None = None, split_file: str | None = None,
                 split_subset: str | list | None = None, split_take: int | None = None,
                 extra_roots: list[str | dict[str, Any]] | None = None, resize: int | None = None,
                 include: list | None = None, exclude: list | None = None) -> None:
        roots = [] if root is None else [root] if isinstance(root, (str, os.PathLike)) else list(root)
        self.roots = [Path(r) for r in roots]
        self.files = _split_files(roots, recursive, split_file, split_subset, split_take)
        if include is not None or exclude:
            self.files = _select_files(self.files, include, exclude)
        for extra in extra_roots or []:
            spec = dict(extra) if isinstance(extra, dict) else {"root": extra}
            unknown = set(spec) - {"root", "split_file", "split_subset", "split_take"}
            if "root" not in spec or unknown:
                raise UserError(f"extra_roots entry {extra!r}: give a folder or a mapping with root and optionally "
                                "split_file, split_subset, split_take")
            self.roots.append(Path(spec["root"]))
            self.files += _split_files([spec["root"]], recursive, spec.get("split_file"), spec.get("split_subset"),
                                       spec.get("split_take"))
        self.files += [Path(f) for f in extra_files or []]
        if not self.files:
            raise UserError("the unpaired dataset has no images: give 'root' (a folder or a list of folders)")
        self._set_policies(crop_size, flip, max_side, small, on_bad_image, repeat, resize)

    def __repr__(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "the unpaired pool"

    def _count(self) -> int:
        return len(self.files)

    def _load(self, index: int, seed: int | None) -> dict[str, Any]:
        path = self.files[index]
        (img,) = self._augment([read_image_raw(path)], seed)
        return {"lq": to_tensor_chw(image_to_float(img)), "name": path.stem}


def _split_files(roots: Sequence[str | os.PathLike], recursive: bool, split_file: str | None,
                 split_subset: str | list | None, split_take: int | None) -> list[Path]:
    """The images of ``roots``, only those whose stem is in the split's subset when a split is given."""
    from data.splits import split_include

    files = [f for r in roots for f in list_images(r, recursive)]
    keep = split_include(split_file, split_subset, split_take, None)
    if keep is None:
        return files
    wanted = set(keep)
    files = [f for f in files if f.stem in wanted]
    absent = wanted - {f.stem for f in files}
    if absent:
        raise UserError(f"{split_file} subset '{split_subset}' names ids that are not in "
                        f"{', '.join(map(str, roots))}: {_shown(sorted(absent))}")
    return files


def _select_files(files: list[Path], include: Sequence[Any] | None, exclude: Sequence[Any] | None) -> list[Path]:
    """Files whose id (the name before the first ``_``, e.g. a SOTS room) is in ``include`` and not in ``exclude``."""
    ids = [f.stem.split("_")[0] for f in files]
    asked = [str(k) for k in list(include or []) + list(exclude or [])]
    unknown = [k for k in asked if k not in set(ids)]
    if unknown:
        raise UserError(f"include/exclude name ids that are not among the unpaired images: {_shown(unknown)}")
    inc = None if include is None else {str(k) for k in include}
    exc = {str(k) for k in exclude or []}
    return [f for f, k in zip(files, ids) if (inc is None or k in inc) and k not in exc]


class PairSubset(Dataset):
    """The pairs of a paired dataset at ``indices`` (a label budget), keeping its augmentation keys."""

    def __init__(self, base: PairedFolderDataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.pairs = [base.pairs[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices) * self.base.repeat

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed = _split_key(key)
        real = self.indices[index % len(self.indices)]
        return self.base[(real, seed) if seed is not None else real]

    def __repr__(self) -> str:
        return f"{len(self.indices)} labelled pairs of {self.base!r}"


def label_split(n: int, labelled: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of ``labelled`` of ``n`` pairs chosen by a seeded permutation, and the rest (sorted)."""
    if not 0 < labelled <= n:
        raise UserError(f"data.labelled_pairs must be between 1 and the {n} pairs of the paired set, got {labelled}")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[:labelled]), sorted(int(i) for i in perm[labelled:])

