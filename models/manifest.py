"""Official state-dict manifests: every key, its shape and the parameter count.

The files in ``models/manifests/`` list, for each official implementation at the configuration
the papers use, the state-dict keys and shapes. They back the fidelity tests and let the
checkpoint loader say which network a foreign checkpoint belongs to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"


@dataclass(frozen=True)
class Manifest:
    """Keys and shapes of one official state dict."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    num_parameters: int


@cache
def load_manifest(name: str) -> Manifest:
    """Read ``models/manifests/<name>.txt``."""
    path = MANIFEST_DIR / f"{name}.txt"
    shapes: dict[str, tuple[int, ...]] = {}
    count = -1
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            m = re.search(r"parameters:\s*(\d+)", line)
            if m:
                count = int(m.group(1))
            continue
        if not line.strip():
            continue
        key, shape = line.split(" ", 1)
        shape = shape.strip().strip("[]")
        shapes[key] = tuple(int(s) for s in shape.split(",")) if shape.strip() else ()
    return Manifest(name, shapes, count)


def manifest_names() -> list[str]:
    """Names of all manifests shipped."""
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.txt"))
