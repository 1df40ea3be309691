"""Turn evaluation dataset specs (a named layout, or a type with arguments) into datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from data import build_dataset
from data.paths import resolve_dataset_args
from data.layouts import LAYOUTS, DatasetMissing, open_layout
from models.registry import UserError


def open_eval_datasets(specs: Iterable[Mapping[str, Any]], data_root: str | None = None,
                       options: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Build every dataset; missing ones are reported (name -> message) instead of raised.

    ``options`` are dataset options for named layouts (e.g. ``smid_green_quirk``); a spec's own
    ``options`` mapping overrides them.
    """
    found: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for spec in specs:
        name = spec["name"]
        try:
            if spec.get("type"):
                args = spec.get("args") or {}
                args = args.to_dict() if hasattr(args, "to_dict") else dict(args)
                found[name] = build_dataset(spec["type"], **resolve_dataset_args(args))
            else:
                opts = {**(options or {}), **dict(spec.get("options") or {})}
                found[name] = open_layout(name, data_root, **opts)
        except DatasetMissing as exc:
            missing[name] = str(exc)
        except UserError as exc:
            if name in LAYOUTS or spec.get("type") or Path(name).is_dir():
                missing[name] = str(exc)
            else:
                raise
    return found, missing
