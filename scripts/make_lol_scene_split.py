"""Make the committed scene split of the LOL-v1 training pairs for the SSLL study (run once).

    python scripts/make_lol_scene_split.py [--high DIR] [--out data/splits/lol_v1_train_scenes.yaml]

Scenes: the 120 pairs of ``LOL-v1_train`` are several shots of 61 scenes. Two pairs belong to one
scene when their *high* images are linked by the rule of :mod:`data.scene_match` (the rule
``../shared/data/README.md`` states); scenes are the connected components. Whole scenes are then assigned, by a
seeded permutation fixed before any run, to:

- ``test``: 30 scenes (every shot), scored with eval15 at the end, never seen in training or monitoring;
- ``val``: 5 scenes, the only images that monitoring and any choice of knob may see;
- ``labelled``: 8 scenes, one pair each (the scene's lowest id), in a fixed order: a label budget of
  N pairs is ``split_take: N``;
- ``pool``: the remaining 18 scenes (every shot): their inputs form the unlabelled pool; with their
  ground truth they are the oracle's extra pairs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.scene_match import group_scenes, scene_rule  # noqa: E402
from data.splits import assign_roles  # noqa: E402

SIZES = {"test": 30, "val": 5, "labelled": 8}  # the rest is the pool
SEED = 2026


def scenes_of(high_dir: Path) -> list[list[str]]:
    """The scenes of the training pairs, as lists of ids, by their *high* images."""
    files = sorted(high_dir.glob("*.png"), key=lambda p: int(p.stem))
    if not files:
        raise SystemExit(f"no .png images in {high_dir} (give --high: LOL-v1_train/high of ../shared/data)")
    return [[files[i].stem for i in group] for group in group_scenes(files)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--high", type=Path, default=ROOT.parent / "shared/data/lowlight_paired/LOL-v1_train/high")
    p.add_argument("--out", type=Path, default=ROOT / "data/splits/lol_v1_train_scenes.yaml")
    args = p.parse_args()
    scenes = scenes_of(args.high)
    roles = assign_roles(len(scenes), SIZES, SEED, rest="pool")
    subsets = {
        "test": [i for s in roles["test"] for i in scenes[s]],
        "val": [i for s in roles["val"] for i in scenes[s]],
        "labelled": [scenes[s][0] for s in roles["labelled"]],
        "pool": [i for s in roles["pool"] for i in scenes[s]],
    }
    doc = {
        "description": "LOL-v1 our485 training pairs (../shared/data LOL-v1_train, 120 pairs) split by scene for the "
                       "SSLL study; made by scripts/make_lol_scene_split.py before any run",
        "scene_rule": "high " + scene_rule(),
        "seed": SEED,
        "scene_count": len(scenes),
        "scenes_per_role": {k: len(v) for k, v in roles.items()},
        "images_per_subset": {k: len(v) for k, v in subsets.items()},
        "scenes": {f"s{n:02d}": s for n, s in enumerate(scenes)},
        "roles": {k: [f"s{i:02d}" for i in v] for k, v in roles.items()},
        "subsets": subsets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110))
    print(f"{len(scenes)} scenes -> {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in subsets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
