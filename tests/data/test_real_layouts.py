"""Real-data layouts and training folders (issue: real photographs), on generated images only.

LOL-v1 by name (evaluation and training), unpaired folders of mixed formats and sizes, label
budgets with the withheld inputs joining the unpaired pool, prefix pairing with held-out
scenes, the link script, and start-up errors for pools smaller than a batch.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.logger import ExperimentLogger, read_scalars
from data import build_dataset
from data.datasets import PairedFolderDataset, UnpairedFolderDataset, label_split
from data.image_io import write_image
from data.layouts import open_layout
from foundation.errors import UserError
from tests.helpers import REPO_ROOT, load_tiny_config, make_image, make_paired_folders

ROOT = REPO_ROOT


def _lol_tree(root: Path) -> Path:
    """``root/LOL/our485/{low,high}`` (6 pairs) and ``root/LOL/eval15/{low,high}`` (2 pairs), as downloaded."""
    make_paired_folders(root / "LOL" / "our485", n=6, size=(40, 48), seed=1)
    make_paired_folders(root / "LOL" / "eval15", n=2, size=(40, 48), seed=2)
    return root


def test_lol_v1_eval15_and_training_pairs_are_read_by_name(tmp_path):
    root = _lol_tree(tmp_path / "datasets")
    test = open_layout("LOL-v1", str(root))
    assert len(test) == 2 and test[0]["gt"].shape == (3, 40, 48)
    assert open_layout("eval15", str(root)).pairs == test.pairs  # alias
    train = build_dataset("layout", name="LOL-v1-train", data_root=str(root), crop_size=32, flip=True)
    assert isinstance(train, PairedFolderDataset) and len(train) == 6
    item = train[(1, 123)]
    assert item["lq"].shape == (3, 32, 32) and item["gt"].shape == (3, 32, 32)
    # LOL pairs match by name: a renamed ground truth is an error naming the file, not a silent shift
    (root / "LOL" / "our485" / "high" / "img_005.png").rename(root / "LOL" / "our485" / "high" / "img_099.png")
    with pytest.raises(UserError, match="img_005"):
        build_dataset("layout", name="LOL-v1-train", data_root=str(root))


def test_lol_v1_is_found_under_its_other_common_folder_names(tmp_path):
    make_paired_folders(tmp_path / "LOLdataset" / "eval15", n=2, size=32, seed=3)
    assert len(open_layout("LOL-v1", str(tmp_path))) == 2


def test_unpaired_folder_of_mixed_formats_and_sizes(tmp_path):
    folder = tmp_path / "pool"
    write_image(folder / "big.jpg", make_image((300, 500), 1))       # larger than max_side
    write_image(folder / "small.png", make_image((20, 30), 2))       # smaller than the crop
    write_image(folder / "mid.bmp", make_image((64, 80), 3))
    write_image(folder / "x.webp", make_image((70, 70), 4))
    (folder / "notes.txt").write_text("not an image")
    ds = UnpairedFolderDataset(str(folder), crop_size=48, flip=True, max_side=128)
    assert len(ds) == 4
    for i in range(4):
        item = ds[(i, 7)]
        assert item["lq"].shape == (3, 48, 48) and 0 <= float(item["lq"].min()) <= float(item["lq"].max()) <= 1
    # the small image is scaled up to cover the crop (aspect kept), not padded
    big, small = ds._fit_size([np.zeros((300, 500, 3), np.uint8)]), ds._fit_size([np.zeros((20, 30, 3), np.uint8)])
    assert big[0].shape[:2] == (77, 128) and small[0].shape[:2] == (48, 72)
    padded = UnpairedFolderDataset(str(folder), crop_size=48, small="pad")
    assert padded._fit_size([np.zeros((20, 30, 3), np.uint8)])[0].shape[:2] == (20, 30)
    assert padded[(1, 3)]["lq"].shape == (3, 48, 48)  # reflect-padded at crop time
    with pytest.raises(UserError, match="small"):
        UnpairedFolderDataset(str(folder), small="stretch")


def test_unreadable_unpaired_image_is_skipped_with_its_name_or_stops(tmp_path, capfd):
    folder = tmp_path / "pool"
    for i in range(3):
        write_image(folder / f"im{i}.jpg", make_image(40, i))
    bad = folder / "im1.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    ds = UnpairedFolderDataset(str(folder), crop_size=32)
    item = ds[(1, 5)]  # the next readable image instead
    assert item["name"] == "im2"
    assert str(bad) in capfd.readouterr().err
    with pytest.raises(UserError, match="im1.jpg"):
        UnpairedFolderDataset(str(folder), crop_size=32, on_bad_image="stop")[(1, 5)]


def test_label_split_is_seeded_disjoint_and_complete():
    lab, rest = label_split(120, 20, seed=3)
    assert len(lab) == 20 and len(rest) == 100 and not set(lab) & set(rest)
    assert sorted(lab + rest) == list(range(120))
    assert label_split(120, 20, seed=3) == (lab, rest) and label_split(120, 20, seed=4)[0] != lab
    with pytest.raises(UserError, match="labelled_pairs"):
        label_split(10, 11, 0)


def test_label_budget_keeps_n_pairs_and_adds_the_withheld_inputs_to_the_pool(tmp_path):
    from core.mean_teacher import MeanTeacherTrainer

    pool = tmp_path / "pool"
    for i in range(5):
        write_image(pool / f"u{i}.png", make_image(48, 50 + i))
    unpaired = f"data.unpaired={{type: unpaired_folder, args: {{root: {pool}, crop_size: 32}}}}"
    cfg = load_tiny_config(tmp_path, ["trainer=mean_teacher", "data.labelled_pairs=3", "train.iters_per_epoch=2",
                                      "ssll.semi_start_epoch=2", "train.iters=4", unpaired])
    tr = MeanTeacherTrainer(cfg)
    try:
        assert len(tr.paired_set) == 3 and tr.iters_per_epoch == 2 and tr.semi_start_iter == 2
        labelled = {lq.name for lq, _ in tr.paired_set.pairs}
        withheld = {Path(f).name for f in tr.withheld_inputs}
        assert len(withheld) == 5 and not labelled & withheld
        assert len(tr.unpaired_set) == 5 + 5
        assert {Path(f).name for f in tr.unpaired_set.files} >= withheld
        tr.train()
        assert tr.iter == 4
    finally:
        tr.close()


def test_pool_smaller_than_the_batch_is_an_error_at_start_up(tmp_path):
    from core.mean_teacher import MeanTeacherTrainer

    pool = tmp_path / "pool"
    write_image(pool / "only.png", make_image(48, 1))
    cfg = load_tiny_config(tmp_path, ["trainer=mean_teacher", "ssll.semi_start_epoch=2",
                                      f"data.unpaired={{type: unpaired_folder, args: {{root: {pool}}}}}"])
    with pytest.raises(UserError, match=r"data\.unpaired .* 1 image\(s\), fewer than one batch of 2"):
        MeanTeacherTrainer(cfg)


def test_prefix_pairing_with_held_out_scenes(tmp_path):
    hazy, clear = tmp_path / "hazy", tmp_path / "gt"
    for scene in (1400, 1401, 1430):
        write_image(clear / f"{scene}.png", make_image(40, scene))
        for level in (1, 4):
            write_image(hazy / f"{scene}_{level}.png", make_image(40, scene + level))
    train = PairedFolderDataset(str(hazy), str(clear), pairing="prefix", exclude=[1430], crop_size=32)
    test = PairedFolderDataset(str(hazy), str(clear), pairing="prefix", include=["1430"])
    assert len(train) == 4 and len(test) == 2
    assert all(gt.name == "1430.png" for _, gt in test.pairs)
    assert not {lq for lq, _ in train.pairs} & {lq for lq, _ in test.pairs}
    with pytest.raises(UserError, match="1499"):
        PairedFolderDataset(str(hazy), str(clear), pairing="prefix", include=[1499])


def test_link_script_lays_out_the_public_layouts(tmp_path):
    src = tmp_path / "shared"
    make_paired_folders(src / "lowlight_paired" / "LOL-v1_train", n=2, size=32)
    make_paired_folders(src / "lowlight_paired" / "LOL-v1_eval15", n=2, size=32)
    write_image(src / "lowlight_unpaired" / "SICE_dark" / "a.jpg", make_image(32, 1))
    dest = tmp_path / "datasets"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "link_datasets.py"), "--source", str(src),
                          "--dest", str(dest)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (dest / "LOL" / "our485" / "low").is_symlink() and (dest / "SICE_dark").is_symlink()
    assert len(open_layout("LOL-v1", str(dest))) == 2
    assert "skipped DAWN/Fog" in run.stdout  # absent sources are reported, not faked
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "link_datasets.py"), "--source", str(src),
                            "--dest", str(dest)], capture_output=True, text=True)
    assert again.returncode == 0  # idempotent


def test_scalar_record_keeps_the_last_value_of_a_step(tmp_path):
    log = ExperimentLogger()
    log.attach(tmp_path / "logs", tensorboard=False)
    log.scalars({"l1": 1.0}, 10, prefix="train/")
    log.scalars({"l1": 0.5}, 20, prefix="train/")
    log.scalars({"l1": 0.7}, 20, prefix="train/")  # re-logged after a resume
    log.close()
    assert read_scalars(tmp_path / "logs" / "scalars.jsonl") == {"train/l1": [(10, 1.0), (20, 0.7)]}
