"""pyproject.toml: every file a package reads at run time (templates, tables, lists) ships with it."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_of_a_package_is_package_data():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = tool["packages"]
    patterns = tool.get("package-data", {})
    missing = []
    for pkg in packages:
        folder = ROOT / pkg.replace(".", "/")
        for f in folder.rglob("*"):
            rel = f.relative_to(folder)
            sub = ".".join((pkg, *rel.parts[:-1]))
            if (not f.is_file() or f.suffix in (".py", ".pyc") or "__pycache__" in rel.parts
                    or any(sub == p or sub.startswith(p + ".") for p in packages if p != pkg and p.startswith(pkg))):
                continue  # code, caches, and files of a sub-package listed on its own
            if not any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in patterns.get(pkg, [])):
                missing.append(f"{pkg}: {rel.as_posix()}")
    assert not missing, f"files read at run time but not in [tool.setuptools.package-data]: {missing}"
