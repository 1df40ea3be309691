"""Lay a folder of real images out as the datasets' public layouts, with symbolic links (no copies).

The project's shared data folder (``../shared/data`` beside the checkout) holds the real images in
its own layout; users download the same sets in their public layouts. This script links one onto
the other, so the same configs (``datasets/LOL/our485/low`` ...) run here and on a user's machine:

    datasets/LOL/our485/{low,high}   <- lowlight_paired/LOL-v1_train/{low,high}
    datasets/LOL/eval15/{low,high}   <- lowlight_paired/LOL-v1_eval15/{low,high}
    datasets/SICE_dark               <- lowlight_unpaired/SICE_dark  (loose folder of dark frames)
    datasets/{DICM,LIME,NPE}         <- lowlight_unpaired/{DICM,LIME,NPE}
    datasets/SOTS/indoor/{hazy,gt}   <- haze_paired/SOTS-indoor_train/{hazy,clear}
    datasets/DAWN/Fog                <- haze_unpaired/DAWN
    datasets/RTTS/JPEGImages         <- haze_unpaired/RTTS
    datasets/Fattal                  <- haze_unpaired/Fattal_classic

python scripts/link_datasets.py [--source ../shared/data] [--dest datasets] [--force]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common_utils.cli import run_cli  # noqa: E402
from foundation.errors import UserError  # noqa: E402

#: public layout path (under --dest) -> folder of the shared data (under --source)
LINKS = {
    "LOL/our485/low": "lowlight_paired/LOL-v1_train/low",
    "LOL/our485/high": "lowlight_paired/LOL-v1_train/high",
    "LOL/eval15/low": "lowlight_paired/LOL-v1_eval15/low",
    "LOL/eval15/high": "lowlight_paired/LOL-v1_eval15/high",
    "SICE_dark": "lowlight_unpaired/SICE_dark",
    "DICM": "lowlight_unpaired/DICM",
    "LIME": "lowlight_unpaired/LIME",
    "NPE": "lowlight_unpaired/NPE",
    "SOTS/indoor/hazy": "haze_paired/SOTS-indoor_train/hazy",
    "SOTS/indoor/gt": "haze_paired/SOTS-indoor_train/clear",
    "DAWN/Fog": "haze_unpaired/DAWN",
    "RTTS/JPEGImages": "haze_unpaired/RTTS",
    "Fattal": "haze_unpaired/Fattal_classic",
}


def link_datasets(source: Path, dest: Path, force: bool = False) -> list[tuple[Path, Path]]:
    """Create every link of :data:`LINKS` whose source exists; return (link, target) pairs made."""
    if not source.is_dir():
        raise UserError(f"source folder not found: {source} (give --source)")
    made = []
    for rel, src_rel in LINKS.items():
        target = (source / src_rel).resolve()
        if not target.is_dir():
            print(f"skipped {rel}: {target} is not there")
            continue
        link = dest / rel
        if link.is_symlink() and link.resolve() == target:
            made.append((link, target))
            continue
        if link.exists() or link.is_symlink():
            if not (force and link.is_symlink()):
                raise UserError(f"{link} already exists and is not a link to {target}; move it away "
                                f"(or pass --force to replace an existing link)")
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link, target_is_directory=True)
        made.append((link, target))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--dest", default=str(REPO / "datasets"), help="data root to create (default: the "
                        "repository's datasets/, where configs look first)")
    parser.add_argument("--force", action="store_true", help="replace existing links that point elsewhere")
    args = parser.parse_args(argv)

    def job() -> None:
        for link, target in link_datasets(Path(args.source).expanduser(), Path(args.dest).expanduser(), args.force):
            print(f"{link} -> {target}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
