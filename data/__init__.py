"""Datasets, transforms, samplers, loaders and demo-data synthesis.

Datasets are built by name from the registry: ``build_dataset("paired_folder", lq_dir=..., gt_dir=...)``.
"""
from __future__ import annotations

from typing import Any

from foundation.registry import Registry

_DATASET_MODULES = {
    "haze_synthetic": "data.haze_datasets",
    "haze_field": "data.haze_datasets",
    "paired_folder": "data.datasets",
    "unpaired_folder": "data.datasets",
    "smid_npy": "data.public_datasets",
    "flat_paired": "data.public_datasets",
    "paired_folder_listed": "data.public_datasets",
    "layout": "data.layouts",
}

DATASETS = Registry("dataset", lazy=_DATASET_MODULES)


def build_dataset(name: str, /, **kwargs: Any):
    """Build the dataset registered as ``name``."""
    return DATASETS.build(name, **kwargs)


def list_datasets() -> list[str]:
    """Names of every registered dataset type."""
    return DATASETS.names()
