"""The final evaluation says when an evaluation set holds images the run was trained on."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.final_evaluation import seen_in_training
from data.datasets import PairedFolderDataset, UnpairedFolderDataset
from data.image_io import write_image


def _folder(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("hazy", "gt"):
        for n in names:
            write_image(root / sub / f"{n}.png", rng.random((32, 32, 3)).astype(np.float32))
    return root


def test_an_eval_set_linked_to_the_training_folder_is_named(tmp_path):
    train = _folder(tmp_path / "train", ["1400", "1401", "1402"])
    held = _folder(tmp_path / "held", ["1410"])
    linked = tmp_path / "linked"  # the same files under another name, as scripts/link_datasets.py lays them out
    for sub in ("hazy", "gt"):
        (linked / sub).mkdir(parents=True)
        for f in (train / sub).iterdir():
            os.symlink(f, linked / sub / f.name)
    training = {"data.paired": PairedFolderDataset(str(train / "hazy"), str(train / "gt")),
                "data.unpaired": UnpairedFolderDataset(str(held / "hazy")), "data.none": None}
    evals = {"SOTS-indoor": PairedFolderDataset(str(linked / "hazy"), str(linked / "gt"), include=["1400", "1401"]),
             "held-out": PairedFolderDataset(str(held / "hazy"), str(held / "gt"))}
    assert seen_in_training(evals, training) == {"SOTS-indoor": (2, 2, "data.paired"),
                                                 "held-out": (1, 1, "data.unpaired")}
    training.pop("data.unpaired")
    assert seen_in_training(evals, training) == {"SOTS-indoor": (2, 2, "data.paired")}
