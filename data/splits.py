"""Fixed data splits stored as committed YAML files (``data/splits/*.yaml``).

A split file names image ids (file stems) per subset, decided once, before any run, so that every
config of a study reads the same scenes for the same role::

    subsets:
      test: ["9", "10", ...]        # ids, in a fixed order
      val: [...]
      labelled: [...]               # ordered: ``split_take: N`` keeps the first N

The datasets take ``split_file``, ``split_subset`` and ``split_take`` arguments and keep only
those ids (see :class:`data.datasets.PairedFolderDataset` and ``UnpairedFolderDataset``).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from foundation.errors import UserError


@lru_cache(maxsize=16)
def _read(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"split file {p} not found (dataset argument split_file)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"split file {p} is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("subsets"), dict):
        raise UserError(f"split file {p} has no 'subsets' mapping")
    return data


def split_ids(split_file: str | Path, subset: str | list[str], take: int | None = None) -> list[str]:
    """The ids of ``subset`` (or of several subsets, concatenated) in ``split_file``; the first ``take`` if given."""
    data = _read(str(split_file))
    names = [subset] if isinstance(subset, str) else list(subset)
    ids: list[str] = []
    for name in names:
        if name not in data["subsets"]:
            raise UserError(f"split file {split_file} has no subset '{name}' (it has: {', '.join(data['subsets'])})")
        ids += [str(i) for i in data["subsets"][name]]
    if take is not None:
        if not 0 < take <= len(ids):
            raise UserError(f"split_take must be between 1 and the {len(ids)} ids of '{subset}' in {split_file}, "
                            f"got {take}")
        ids = ids[:take]
    return ids


def split_include(split_file: str | Path | None, subset: str | list[str] | None, take: int | None,
                  include: list | None) -> list | None:
    """``include`` for a dataset given split arguments (None when no split is asked for)."""
    if split_file is None:
        if subset is not None or take is not None:
            raise UserError("split_subset/split_take need split_file")
        return include
    if subset is None:
        raise UserError(f"split_file {split_file} needs split_subset (which subset to read)")
    if include is not None:
        raise UserError("give either include or split_file, not both")
    return split_ids(split_file, subset, take)


def assign_roles(scene_count: int, sizes: dict[str, int], seed: int, rest: str) -> dict[str, list[int]]:
    """Scene indices per role: a seeded permutation of the scenes cut into ``sizes`` in order; ``rest``
    takes the scenes left over. How the committed scene splits were made (``scripts/make_*_scene_split.py``)."""
    if sum(sizes.values()) > scene_count:
        raise UserError(f"the roles ask for {sum(sizes.values())} scenes but there are {scene_count}")
    order = np.random.default_rng(seed).permutation(scene_count)
    roles: dict[str, list[int]] = {}
    start = 0
    for role, n in sizes.items():
        roles[role] = [int(i) for i in order[start:start + n]]
        start += n
    roles[rest] = [int(i) for i in order[start:]]
    return roles
