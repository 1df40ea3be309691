"""Named evaluation datasets: where each test set lives under a data root and how it pairs.

``open_layout("LOLv2", data_root)`` finds the set under the data root, trying each known folder
layout in turn, and returns a paired dataset. The root comes from, in order: the argument
(``--data-root``), the ``SSIR_DATA_ROOT`` environment variable, ``config/datasets.yaml``
(``data_root:`` or a per-dataset path), and the repository's ``datasets/`` folder. A set that is
absent or incomplete raises :class:`DatasetMissing` listing the exact paths expected.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from data.paths import REPO_ROOT, resolve_path
from models.registry import Registry, UserError

ENV_VAR = "SSIR_DATA_ROOT"
DATASETS_YAML = REPO_ROOT / "config" / "datasets.yaml"


class DatasetMissing(UserError):
    """A named dataset that is not (completely) on disk."""


@dataclass(frozen=True)
class Layout:
    """One way a dataset can be stored: low and GT folders relative to the dataset folder."""

    lq: str
    gt: str
    pairing: str = "sorted"
    recursive: bool = True


@dataclass
class NamedDataset:
    """A named test set: its folder under the root, its known layouts, or a custom opener."""

    name: str
    folder: str
    layouts: tuple[Layout, ...] = ()
    opener: Callable[..., Any] | None = None
    task: str = "lowlight"
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)


LAYOUTS = Registry("dataset layout")


def register_layout(ds: NamedDataset, aliases: tuple[str, ...] = ()) -> NamedDataset:
    """Add a named dataset to the registry."""
    LAYOUTS.register(ds.name, aliases=aliases)(ds)
    return ds


def _yaml_settings() -> dict[str, Any]:
    if DATASETS_YAML.is_file():
        try:
            return yaml.safe_load(DATASETS_YAML.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{DATASETS_YAML}: invalid YAML ({exc})") from None
    return {}


def data_root(explicit: str | None = None) -> Path:
    """The data root by precedence: argument, environment, config/datasets.yaml, ./datasets."""
    if explicit:
        return Path(resolve_path(explicit))
    if os.environ.get(ENV_VAR):
        return Path(resolve_path(os.environ[ENV_VAR]))
    settings = _yaml_settings()
    if settings.get("data_root"):
        return Path(resolve_path(settings["data_root"]))
    return REPO_ROOT / "datasets"


def dataset_folder(ds: NamedDataset, root: str | None) -> Path:
    """Folder of a named dataset: a per-dataset path in config/datasets.yaml wins over root/folder."""
    paths = (_yaml_settings().get("paths") or {})
    if not root and ds.name in paths:
        return Path(resolve_path(paths[ds.name]))
    return data_root(root) / ds.folder


def open_layout(name: str, root: str | None = None, **options: Any) -> Any:
    """Open the named dataset (see module docstring)."""
    from data.datasets import PairedFolderDataset

    ds: NamedDataset = LAYOUTS.get(name)
    folder = dataset_folder(ds, root)
    if ds.opener is not None:
        return ds.opener(folder, **{**ds.options, **options})
    tried = []
    for lay in ds.layouts:
        lq, gt = folder / lay.lq, folder / lay.gt
        if lq.is_dir() and gt.is_dir():
            return PairedFolderDataset(str(lq), str(gt), pairing=lay.pairing, recursive=lay.recursive)
        tried.append(f"{lq} + {gt}")
    raise DatasetMissing(f"{ds.name} not found; expected one of: {' | '.join(tried)}"
                         + (f" ({ds.note})" if ds.note else ""))


register_layout(NamedDataset("demo_lowlight", str(REPO_ROOT / "demo_data" / "lowlight"),
                             (Layout("test/low", "test/high", pairing="name", recursive=False),),
                             note="run scripts/make_demo_data.py to create it"), aliases=("demo",))
register_layout(NamedDataset("demo_haze", str(REPO_ROOT / "demo_data" / "haze"),
                             (Layout("test/hazy", "test/clear", pairing="name", recursive=False),),
                             task="haze", note="run scripts/make_demo_data.py --kind haze to create it"))
