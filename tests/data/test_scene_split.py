"""Scene grouping (data/scene_match.py), role assignment (data/splits.py) and the SICE held-out split."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import yaml

from data.datasets import UnpairedFolderDataset
from data.layouts import SICE_SPLIT, open_layout
from data.scene_match import group_scenes, same_scene, thumbnail
from data.splits import assign_roles
from foundation.errors import UserError


def _scene_images(folder, seed: int = 0) -> list:
    """Three scenes: scene A at three exposures (a dark sequence), B at two, C alone (random textures)."""
    rng = np.random.default_rng(seed)
    bases = [cv2.GaussianBlur(rng.uniform(0, 255, (60, 90)), (0, 0), 3) for _ in range(3)]
    paths = []
    for k, (scene, gain) in enumerate([(0, 0.2), (1, 0.5), (0, 0.35), (2, 0.3), (1, 0.25), (0, 0.1)]):
        img = np.clip(bases[scene] * gain, 0, 255).astype(np.uint8)
        path = folder / f"{k}.png"
        cv2.imwrite(str(path), np.repeat(img[..., None], 3, axis=2))
        paths.append(path)
    return paths


def test_group_scenes_equals_linking_every_pair_with_the_rule(tmp_path):
    paths = _scene_images(tmp_path)
    thumbs = [thumbnail(p) for p in paths]
    pairwise = {(i, j) for i, j in itertools.combinations(range(len(paths)), 2) if same_scene(thumbs[i], thumbs[j])}
    groups = group_scenes(paths)
    same_group = {(i, j) for g in groups for i, j in itertools.combinations(g, 2)}
    assert groups == [[0, 2, 5], [1, 4], [3]]  # exposures of one scene together, the scenes apart
    assert pairwise <= same_group  # every linked pair is in one scene (components may join more)


def test_assign_roles_is_seeded_disjoint_and_complete():
    roles = assign_roles(10, {"heldout": 3, "val": 2}, seed=7, rest="pool")
    assert roles == assign_roles(10, {"heldout": 3, "val": 2}, seed=7, rest="pool")
    assert [len(roles[k]) for k in ("heldout", "val", "pool")] == [3, 2, 5]
    assert sorted(i for v in roles.values() for i in v) == list(range(10))
    assert roles != assign_roles(10, {"heldout": 3, "val": 2}, seed=8, rest="pool")
    with pytest.raises(UserError, match="ask for 11 scenes but there are 10"):
        assign_roles(10, {"heldout": 11}, seed=7, rest="pool")


def test_committed_sice_split_keeps_scenes_whole_and_its_subsets_apart():
    doc = yaml.safe_load(SICE_SPLIT.read_text())
    held, pool = (set(doc["subsets"][k]) for k in ("heldout", "pool"))
    assert not held & pool and len(held) + len(pool) == 687
    for scene in doc["scenes"].values():  # a scene lies wholly on one side
        assert set(scene) <= held or set(scene) <= pool


def _sice_folder(tmp_path):
    doc = yaml.safe_load(SICE_SPLIT.read_text())
    folder = tmp_path / "SICE_dark"
    folder.mkdir()
    tiny = np.full((4, 4, 3), 20, np.uint8)
    for stem in doc["subsets"]["heldout"] + doc["subsets"]["pool"]:
        cv2.imwrite(str(folder / f"{stem}.jpg"), tiny)
    return folder, doc


def test_sice_heldout_layout_reads_only_the_heldout_frames_and_the_pool_arm_only_the_pool(tmp_path):
    folder, doc = _sice_folder(tmp_path)
    held = open_layout("SICE-dark-heldout", str(tmp_path))
    assert sorted(f.stem for f in held.files) == sorted(doc["subsets"]["heldout"])
    pool = UnpairedFolderDataset(str(tmp_path / "SICE_dark"), split_file=str(SICE_SPLIT), split_subset="heldout",
                                 extra_roots=[{"root": str(folder), "split_file": str(SICE_SPLIT),
                                               "split_subset": "pool"}])
    assert sorted(f.stem for f in pool.files) == sorted(doc["subsets"]["heldout"] + doc["subsets"]["pool"])
    only_pool = UnpairedFolderDataset(extra_roots=[{"root": str(folder), "split_file": str(SICE_SPLIT),
                                                    "split_subset": "pool"}])
    assert {f.stem for f in only_pool.files} == set(doc["subsets"]["pool"])
    whole = UnpairedFolderDataset(extra_roots=[str(folder)])
    assert len(whole.files) == 687


def test_extra_roots_entry_with_an_unknown_key_is_one_clear_error(tmp_path):
    folder, _ = _sice_folder(tmp_path)
    with pytest.raises(UserError, match="extra_roots entry .*split_subset"):
        UnpairedFolderDataset(extra_roots=[{"root": str(folder), "split_subst": "pool"}])
