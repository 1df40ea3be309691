"""Manifests of small paired test sets from other sources (cross-domain), committed without images.

A manifest ``data/cross_domain_<set>.yaml`` names a test set and lists, for every pair, where
each image comes from in a public repository (``repo``, ``commit``, ``path``) and the sha256 of
its bytes, so anyone can rebuild the same set (``scripts/prepare_cross_domain.py``). Every
manifest is a named evaluation set (:mod:`data.layouts` registers it): the set lives under the
data root as ``<folder>/low/<id><ext>`` and ``<folder>/high/<id><ext>``, the files copied
unchanged from their sources (``<ext>`` is the source's extension, lower-cased), and only the
listed pairs are read.

Format (keys marked * are required)::

    name*: CrossDomain-samples          # the set's name for eval.py --dataset and configs
    folder: CrossDomain-samples         # under the data root; default: the name
    description: ...
    overlap_check: {...}                # how the set was checked against LOL-v1 (free-form record)
    pairs*:
      - id*: uhdll_674                  # file stem in the layout: letters, digits, '_', '-', '.'
        dataset: UHD-LL (Li et al. 2023)
        license: MIT (repository LICENSE)
        low*:  {repo*: owner/name, commit*: <40 hex>, path*: dir/file.JPG, sha256*: <64 hex>}
        high*: {repo*: ..., commit*: ..., path*: ..., sha256*: ...}
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data.image_io import IMAGE_EXTENSIONS
from foundation.errors import UserError

DATA_DIR = Path(__file__).resolve().parent
MANIFEST_GLOB = "cross_domain_*.yaml"
SIDES = ("low", "high")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEX = {"commit": re.compile(r"^[0-9a-f]{40}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}


@dataclass(frozen=True)
class SourceFile:
    """One image of a pair: its public source and the sha256 of its bytes."""

    repo: str
    commit: str
    path: str
    sha256: str

    @property
    def extension(self) -> str:
        """The source's extension, lower-cased (the laid-out file keeps it)."""
        return Path(self.path).suffix.lower()


@dataclass(frozen=True)
class Pair:
    """A low-light image and its ground truth."""

    id: str
    low: SourceFile
    high: SourceFile
    info: dict[str, Any]

    def file_name(self, side: str) -> str:
        """The file name of ``side`` (``low`` or ``high``) in the layout: ``<id><ext>``."""
        return self.id + getattr(self, side).extension


@dataclass(frozen=True)
class Manifest:
    """A cross-domain test set as the manifest file ``path`` describes it."""

    path: Path
    name: str
    folder: str
    pairs: tuple[Pair, ...]
    raw: dict[str, Any]


def _source(value: Any, where: str) -> SourceFile:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping with repo, commit, path, sha256")
    missing = [k for k in ("repo", "commit", "path", "sha256") if not value.get(k)]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    src = SourceFile(*(str(value[k]) for k in ("repo", "commit", "path", "sha256")))
    for key, pattern in _HEX.items():
        if not pattern.match(getattr(src, key)):
            raise UserError(f"{where}.{key} is not {'40' if key == 'commit' else '64'} lower-case hex digits")
    if src.repo.count("/") != 1:
        raise UserError(f"{where}.repo must be owner/name, not '{src.repo}'")
    if src.extension not in IMAGE_EXTENSIONS:
        raise UserError(f"{where}.path '{src.path}' is not an image the datasets read ({', '.join(IMAGE_EXTENSIONS)})")
    return src


def read_manifest(path: str | Path) -> Manifest:
    """Read and check the manifest ``path``; a bad key is a UserError naming the file and the key."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"manifest {path} not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict) or not doc.get("name") or not doc.get("pairs"):
        raise UserError(f"{path} needs 'name' and a non-empty 'pairs' list")
    pairs, seen = [], set()
    for i, entry in enumerate(doc["pairs"]):
        where = f"{path}: pairs[{i}]"
        if not isinstance(entry, dict) or not _ID.match(str(entry.get("id", ""))):
            raise UserError(f"{where}.id is missing or not a plain file stem (letters, digits, '_', '-', '.')")
        pid = str(entry["id"])
        if pid in seen:
            raise UserError(f"{where}.id '{pid}' appears twice")
        seen.add(pid)
        info = {k: v for k, v in entry.items() if k not in ("id", *SIDES)}
        pairs.append(Pair(pid, _source(entry.get("low"), f"{where}.low"), _source(entry.get("high"), f"{where}.high"),
                          info))
    return Manifest(path, str(doc["name"]), str(doc.get("folder") or doc["name"]), tuple(pairs), doc)


def manifest_paths(folder: Path = DATA_DIR) -> list[Path]:
    """The committed manifests, ``data/cross_domain_*.yaml``, sorted."""
    return sorted(folder.glob(MANIFEST_GLOB))
