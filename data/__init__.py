"""Datasets, transforms, samplers, loaders and demo-data synthesis.

Datasets are built by name from the registry: ``build_dataset("paired_folder", lq_dir=..., gt_dir=...)``.
"""
from __future__ import annotations

from typing import Any

from foundation.registry import Registry

DATASETS = Registry("dataset", package=__name__, variable="DATASETS")  # finds the @DATASETS.register decorators


def build_dataset(name: str, /, **kwargs: Any):
    """Build the dataset registered as ``name``."""
    return DATASETS.build(name, **kwargs)


def list_datasets() -> list[str]:
    """Names of every registered dataset type."""
    return DATASETS.names()
