"""Make the committed scene split of the SICE dark frames (run once, before any run that uses it).

    python scripts/make_sice_scene_split.py [--frames DIR] [--out data/splits/sice_dark_scenes.yaml]

The 687 frames of ``lowlight_unpaired/SICE_dark`` are under-exposed frames of SICE Part 1
multi-exposure sequences, so one scene appears in several frames (``../shared/data/README.md``: do
not split them frame by frame). Frames are grouped into scenes by the same rule as the LOL-v1 scenes
(:mod:`data.scene_match`; all pairs compared, connected components), which keeps every sequence whole
and may merge look-alike sequences (the safe direction for a held-out set). Whole scenes are then
assigned by a seeded permutation to:

- ``heldout``: 40 scenes, never trained on, scored with no-reference metrics (NIQE) as the
  ``SICE-dark-heldout`` evaluation set;
- ``pool``: the other scenes, the SICE part of the unlabelled pool of the SSLL study's ``ssll_sice`` arm.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.image_io import list_images  # noqa: E402
from data.scene_match import group_scenes, scene_rule  # noqa: E402
from data.splits import assign_roles  # noqa: E402

HELDOUT_SCENES = 40
SEED = 2026


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=Path, default=ROOT / "datasets/SICE_dark",
                   help="the SICE dark frames (scripts/link_datasets.py links them here)")
    p.add_argument("--out", type=Path, default=ROOT / "data/splits/sice_dark_scenes.yaml")
    args = p.parse_args()
    files = sorted(list_images(args.frames), key=lambda f: (len(f.stem), f.stem))
    scenes = [[files[i].stem for i in group] for group in group_scenes(files)]
    roles = assign_roles(len(scenes), {"heldout": HELDOUT_SCENES}, SEED, rest="pool")
    subsets = {role: [i for s in sorted(idx) for i in scenes[s]] for role, idx in roles.items()}
    doc = {
        "description": "SICE Part 1 dark frames (../shared/data lowlight_unpaired/SICE_dark) split by scene: "
                       "held-out scenes for no-reference scores, the rest for the unlabelled pool; made by "
                       "scripts/make_sice_scene_split.py before any run that uses it",
        "scene_rule": scene_rule(),
        "seed": SEED,
        "scene_count": len(scenes),
        "scenes_per_role": {k: len(v) for k, v in roles.items()},
        "images_per_subset": {k: len(v) for k, v in subsets.items()},
        "largest_scene": max(len(s) for s in scenes),
        "roles": {k: [f"s{i:03d}" for i in sorted(v)] for k, v in roles.items()},
        "scenes": {f"s{n:03d}": s for n, s in enumerate(scenes)},
        "subsets": subsets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110))
    print(f"{len(files)} frames, {len(scenes)} scenes -> {args.out}: "
          + ", ".join(f"{k} {len(v)} frames" for k, v in subsets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
