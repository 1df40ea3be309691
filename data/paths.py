"""Path rules: relative paths in configs and dataset specs are relative to the repository root."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(p: str | os.PathLike | None) -> str | None:
    """Expand ``~`` and variables; anchor relative paths at the repository root (not the working directory)."""
    if p is None:
        return None
    path = Path(os.path.expanduser(os.path.expandvars(str(p))))
    return str(path if path.is_absolute() else REPO_ROOT / path)


def resolve_dataset_args(args: dict[str, Any]) -> dict[str, Any]:
    """Resolve the path-like dataset arguments (``lq_dir``, ``gt_dir``, ``root``, ``*_dir``, and the
    folders and split files of ``extra_roots``, whose entries may be mappings of such arguments)."""
    out = dict(args)
    for k, v in args.items():
        if k in ("root", "split_file", "extra_roots") or k.endswith("_dir"):
            out[k] = [_resolve_entry(x) for x in v] if isinstance(v, (list, tuple)) else resolve_path(v)
    return out


def _resolve_entry(v: Any) -> Any:
    return resolve_dataset_args(v) if isinstance(v, dict) else resolve_path(v)
