"""Public-dataset layouts and the evaluation entry points on tiny fake dataset trees.

Every fake pair has GT = 2 * low (8-bit, no clipping needed), so the pairing can be checked pixel
by pixel, and an identity network (a UNet whose output convolution is zero) gives a known PSNR
per image.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from common_utils.checkpoint import load_network, resolve_weight
from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import eval_with_any_backbone
from common_utils.inference import forward_tiled
from common_utils.metrics import psnr
from data.datasets import DatasetMissing
from data.image_io import read_image, write_image
from data.layouts import ALL_LOWLIGHT, EVAL_ALL, open_layout
from foundation.errors import UserError
from models import build_network
from models.manifest import load_manifest
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
SMID_SCENES = {"0007": "0001", "0009": "0066"}  # two scenes of the official frame map


def _low(rng: np.random.Generator, h: int = 24, w: int = 32, const: int | None = None) -> np.ndarray:
    if const is not None:
        return np.full((h, w, 3), const, np.uint8)
    return rng.integers(0, 128, size=(h, w, 3), dtype=np.uint8)


def _write(path: Path, arr: np.ndarray) -> None:
    if path.suffix == ".npy":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)
    else:
        write_image(path, arr.astype(np.float32) / 255.0)


def _pair(lq_path: Path, gt_path: Path, rng: np.random.Generator, const: int | None = None) -> None:
    low = _low(rng, const=const)
    _write(lq_path, low)
    _write(gt_path, np.clip(low.astype(np.int32) * 2, 0, 255).astype(np.uint8))


def make_lowlight_root(root: Path, seed: int = 0) -> Path:
    """The five low-light test sets in the layouts the official evaluation uses (2 pairs each)."""
    rng = np.random.default_rng(seed)
    for i in (1, 2):  # LOLv2, original release layout
        _pair(root / f"LOLv2/Real_captured/Test/Low/low{i:05d}.png",
              root / f"LOLv2/Real_captured/Test/Normal/normal{i:05d}.png", rng)
    for n in ("00001", "10002"):  # SID, official evaluation layout (low/teacher)
        _pair(root / f"SID/low/teacher/{n}.png", root / f"SID/normal/{n}.png", rng)
    for n in ("MVI_0932_0", "pair22_0"):
        _pair(root / f"SDSD/low/{n}.png", root / f"SDSD/normal/{n}.png", rng)
    (root / "SMID").mkdir(parents=True, exist_ok=True)
    (root / "SMID/test_list.txt").write_text("".join(f"{s}\n" for s in SMID_SCENES))
    for scene, frame in SMID_SCENES.items():
        _pair(root / f"SMID/low_np/{scene}/{frame}.npy", root / f"SMID/high_np/{scene}/{scene}.npy", rng)
        _write(root / f"SMID/low_np/{scene}/9999.npy", _low(rng))  # another frame: must not be used
    for n in ("1", "2"):
        _pair(root / f"LSRW/Huawei/test/low/{n}.png", root / f"LSRW/Huawei/test/high/{n}.png", rng)
    return root


def _check_pairs(ds, tol: float = 1e-6, green_quirk: bool = False) -> None:
    assert len(ds) > 0
    for i in range(len(ds)):
        item = ds[i]
        lq = item["lq"].clone()
        if green_quirk:
            lq[1] *= 1.5
        assert torch.allclose((lq * 2).clamp(0, 1), item["gt"], atol=tol), item["name"]


@pytest.fixture(scope="module")
def lowlight_root(tmp_path_factory) -> Path:
    return make_lowlight_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def identity_ckpt(tmp_path_factory) -> Path:
    """A width-4 UNet whose output is its input (zero output convolution)."""
    torch.manual_seed(0)
    net = build_network("UNet", width=4)
    with torch.no_grad():
        net.outc.conv.weight.zero_()
        net.outc.conv.bias.zero_()
    path = tmp_path_factory.mktemp("ckpt") / "unet_identity.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


def _expected_psnr(root: Path, name: str, dataset: str, green_quirk: bool = True) -> float:
    ds = open_layout(dataset, str(root), smid_green_quirk=green_quirk)
    item = next(ds[i] for i in range(len(ds)) if ds[i]["name"] == name)
    return float(psnr(item["lq"][None].clamp(0, 1), item["gt"][None])[0])


# ------------------------------------------------------------------------------------------------ layouts
def test_lowlight_layouts_pair_right(lowlight_root):
    for name in ALL_LOWLIGHT:
        ds = open_layout(name, str(lowlight_root))
        assert len(ds) == 2, name
        _check_pairs(ds, green_quirk=name == "SMID")


def test_smid_fixed_frames_and_green_quirk(lowlight_root):
    ds = open_layout("SMID", str(lowlight_root))
    assert [ds[i]["name"] for i in range(len(ds))] == ["0007_0001", "0009_0066"]
    raw = open_layout("SMID", str(lowlight_root), smid_green_quirk=False)
    a, b = ds[0]["lq"], raw[0]["lq"]
    assert torch.allclose(a[1] * 1.5, b[1], atol=1e-6) and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    _check_pairs(raw)


def test_smid_errors(tmp_path):
    root = make_lowlight_root(tmp_path)
    (root / "SMID/test_list.txt").write_text("0007\n0008\n")  # 0008 has no official frame
    with pytest.raises(UserError, match="0008.*smid_test_frames"):
        open_layout("SMID", str(root))
    (root / "SMID/test_list.txt").write_text("0007\n0009\n")
    (root / "SMID/low_np/0009/0066.npy").unlink()
    with pytest.raises(DatasetMissing, match="0066.npy"):
        open_layout("SMID", str(root))
    shutil.rmtree(root / "SMID")
    with pytest.raises(DatasetMissing, match="test_list.txt"):
        open_layout("SMID", str(root))


def test_lolv2_official_eval_layout_and_aliases(tmp_path):
    rng = np.random.default_rng(1)
    for i in (1, 2, 3):
        _pair(tmp_path / f"LOLv2/low/teacher/{i}.png", tmp_path / f"LOLv2/normal/{i}.png", rng)
        _write(tmp_path / f"LOLv2/low/student/{i}.png", _low(rng))  # the unpaired copy; not evaluated
    ds = open_layout("LOLv2-Real", str(tmp_path))
    assert len(ds) == 3 and "teacher" in str(ds.lq_dir)
    _check_pairs(ds)
    shutil.rmtree(tmp_path / "LOLv2/low/student")
    (tmp_path / "LOLv2/low/teacher").rename(tmp_path / "LOLv2/low/x")  # recursive low/ without teacher/
    _check_pairs(open_layout("LOLv2", str(tmp_path)))
    for i in (1, 2):
        _pair(tmp_path / f"LOLv2/Synthetic/Test/Low/r{i}.png", tmp_path / f"LOLv2/Synthetic/Test/Normal/r{i}.png", rng)
    _check_pairs(open_layout("LOLv2-Synthetic", str(tmp_path)))


def test_lsrw_alternative_folder_and_count_mismatch(tmp_path):
    rng = np.random.default_rng(2)
    for n in ("1", "2"):
        _pair(tmp_path / f"LSRW-Huawei/test/low/{n}.png", tmp_path / f"LSRW-Huawei/test/high/{n}.png", rng)
    _check_pairs(open_layout("LSRW-Huawei", str(tmp_path)))
    _write(tmp_path / "LSRW-Huawei/test/low/3.png", _low(rng))
    with pytest.raises(UserError) as err:
        open_layout("LSRW-Huawei", str(tmp_path))
    msg = str(err.value)
    assert "LSRW-Huawei/test/low" in msg and "LSRW-Huawei/test/high" in msg and "3" in msg and "2" in msg


def test_missing_dataset_lists_expected_paths(tmp_path):
    with pytest.raises(DatasetMissing) as err:
        open_layout("LSRW-Huawei", str(tmp_path))
    assert str(tmp_path / "LSRW/Huawei/test/low") in str(err.value)
    assert str(tmp_path / "LSRW-Huawei/test/high") in str(err.value)
    (tmp_path / "SID/low/teacher").mkdir(parents=True)
    _write(tmp_path / "SID/low/teacher/1.png", _low(np.random.default_rng(0)))
    with pytest.raises(DatasetMissing, match="incomplete"):
        open_layout("SID", str(tmp_path))


def test_sdsd_official_list(tmp_path):
    from data.public_datasets import official_lists

    names = official_lists()["sdsd_test_list"]
    assert len(names) == 52
    tiny = np.zeros((4, 4, 3), np.uint8)
    for n in names + ["extra_0.png"]:
        _write(tmp_path / "SDSD/low" / n, tiny)
        _write(tmp_path / "SDSD/normal" / n, tiny)
    assert len(open_layout("SDSD", str(tmp_path))) == 53
    listed = open_layout("SDSD", str(tmp_path), sdsd_official_list=True)
    assert len(listed) == 52 and {p[0].name for p in listed.pairs} == set(names)


def test_dehazing_layouts(tmp_path):
    rng = np.random.default_rng(3)
    # SOTS indoor: several hazy images per GT, paired by the id prefix
    for gid, v in (("1400", 40), ("1401", 90)):
        _pair(tmp_path / f"SOTS/indoor/hazy/{gid}_1.png", tmp_path / f"SOTS/indoor/gt/{gid}.png", rng, const=v)
        _write(tmp_path / f"SOTS/indoor/hazy/{gid}_2.png", _low(rng, const=v))
    ds = open_layout("SOTS-indoor", str(tmp_path))
    assert len(ds) == 4
    _check_pairs(ds)
    # SOTS outdoor: {id}_{A}_{beta}.jpg with gt/{id}.png (constant colours survive JPEG)
    for gid, v in (("0001", 30), ("0066", 100)):
        _write(tmp_path / f"SOTS/outdoor/hazy/{gid}_0.8_0.2.jpg", _low(rng, const=v))
        _write(tmp_path / f"SOTS/outdoor/hazy/{gid}_1_0.08.jpg", _low(rng, const=v))
        _write(tmp_path / f"SOTS/outdoor/gt/{gid}.png", _low(rng, const=2 * v))
    ds = open_layout("SOTS-outdoor", str(tmp_path))
    assert len(ds) == 4
    _check_pairs(ds, tol=3 / 255)
    # RICE-I (RICE1/cloud + label), O-HAZE / I-HAZE / Dense-Haze flat, NH-HAZE hazy/ + GT/
    for n in ("0", "1"):
        _pair(tmp_path / f"RICE1/cloud/{n}.png", tmp_path / f"RICE1/label/{n}.png", rng)
    _check_pairs(open_layout("RICE-I", str(tmp_path)))
    for i, v in ((1, 20), (2, 60), (10, 110)):
        _pair(tmp_path / f"O-HAZE/{i:02d}_outdoor_hazy.jpg", tmp_path / f"O-HAZE/{i:02d}_outdoor_GT.jpg", rng, const=v)
        _pair(tmp_path / f"I-HAZE/{i:02d}_indoor_hazy.jpg", tmp_path / f"I-HAZE/{i:02d}_indoor_GT.jpg", rng, const=v)
        _pair(tmp_path / f"Dense-Haze/{i:02d}_hazy.png", tmp_path / f"Dense-Haze/{i:02d}_GT.png", rng)
        _pair(tmp_path / f"NH-HAZE/hazy/{i:02d}_hazy.png", tmp_path / f"NH-HAZE/GT/{i:02d}_GT.png", rng)
    for name, tol in (("O-HAZE", 3 / 255), ("I-HAZE", 3 / 255), ("Dense-Haze", 1e-6), ("NH-HAZE", 1e-6)):
        ds = open_layout(name, str(tmp_path))
        assert len(ds) == 3, name
        _check_pairs(ds, tol=tol)
    # the ICEML paired-test layout: <set>/Hazy + <set>/GT, and any folder given by path
    for n in ("a", "b"):
        _pair(tmp_path / f"RICE-I/Hazy/{n}.png", tmp_path / f"RICE-I/GT/{n}.png", rng)
        _pair(tmp_path / f"mine/Hazy/{n}.png", tmp_path / f"mine/GT/{n}.png", rng)
    shutil.rmtree(tmp_path / "RICE1")
    _check_pairs(open_layout("RICE-I", str(tmp_path)))
    _check_pairs(open_layout(str(tmp_path / "mine")))


def test_nyuhaze_layout(tmp_path):
    rng = np.random.default_rng(4)
    _pair(tmp_path / "nyuhaze500/hazy/1400_3.png", tmp_path / "nyuhaze500/gt/1400.png", rng, const=50)
    _check_pairs(open_layout("SOTS-indoor", str(tmp_path)))


# ------------------------------------------------------------------------------------------------ eval.py
def _eval_args(root: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["-n", "UNet", "-w", str(ckpt), "-d", "all", "--data-root", str(root), "--out", str(out),
            "--network-args", '{"width": 4}', "--device", "cpu", "--workers", "0", "--no-lpips", *extra]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def test_eval_all_in_process(lowlight_root, identity_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert eval_cli.main(_eval_args(lowlight_root, identity_ckpt, out, "--save")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [k for k in summary if not k.startswith("_")] == list(EVAL_ALL)  # LOL-v1 first, missing here
    assert "LOL/eval15/low" in summary["LOL-v1"]["missing"]
    assert summary["_protocol"]["smid_green_quirk"] is True
    for name in ALL_LOWLIGHT:
        assert summary[name]["images"] == 2
        rows = _rows(out / name / "per_image.csv")
        assert "Average" in rows
        for img, row in rows.items():
            if img == "Average":
                continue
            assert float(row["psnr"]) == pytest.approx(_expected_psnr(lowlight_root, img, name), abs=1e-4)
            assert (out / name / "images" / f"{img}.png").is_file()
    assert sorted(p.name for p in (out / "SMID/images").iterdir()) == ["0007_0001.png", "0009_0066.png"]
    assert "| LOLv2 | UNet | 2 |" in (out / "summary.md").read_text()
    assert "| SMID |" in capsys.readouterr().out


def test_eval_missing_dataset_and_no_quirk(lowlight_root, identity_ckpt, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(lowlight_root, root)
    shutil.rmtree(root / "SDSD")
    out = tmp_path / "out"
    assert eval_cli.main(_eval_args(root, identity_ckpt, out, "--no-smid-green-quirk")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "SDSD/low" in summary["SDSD"]["missing"] and not (out / "SDSD").exists()
    assert all(summary[n]["images"] == 2 for n in ALL_LOWLIGHT if n != "SDSD")
    assert "missing" in (out / "summary.md").read_text()
    rows = _rows(out / "SMID/per_image.csv")
    want = _expected_psnr(root, "0007_0001", "SMID", green_quirk=False)
    assert float(rows["0007_0001"]["psnr"]) == pytest.approx(want, abs=1e-4)
    assert want != pytest.approx(_expected_psnr(root, "0007_0001", "SMID", green_quirk=True), abs=1e-2)


def test_eval_subprocess_without_pythonpath(lowlight_root, identity_ckpt, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(ROOT / "common_utils/evaluation/eval.py"),
                           *_eval_args(lowlight_root, identity_ckpt, out, "-d", "SMID,LOLv2")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [k for k in summary if not k.startswith("_")] == ["SMID", "LOLv2"]


def test_eval_wrong_network_checkpoint(lowlight_root, tmp_path, capsys):
    fake = {k: torch.zeros(1) for k in load_manifest("Restormer").shapes}
    ckpt = tmp_path / "restormer.pth"
    torch.save(fake, ckpt)
    assert eval_cli.main(_eval_args(lowlight_root, ckpt, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Restormer" in err and "Traceback" not in err


def test_official_prefix_checkpoint_form(identity_ckpt, tmp_path):
    sd = torch.load(identity_ckpt, weights_only=True)["params"]
    torch.save(sd, tmp_path / "LOLv2_psnr_UNet.pth")
    torch.save(sd, tmp_path / "LOLv2_psnr_UNet_ema.pth")
    assert resolve_weight(str(tmp_path / "LOLv2_psnr"), "UNet").name == "LOLv2_psnr_UNet.pth"
    assert resolve_weight(str(tmp_path / "LOLv2_psnr"), "UNet", "teacher").name == "LOLv2_psnr_UNet_ema.pth"
    net, info = load_network("UNet", str(tmp_path / "LOLv2_psnr"), {"width": 4})
    assert info["weight"].endswith("LOLv2_psnr_UNet.pth")
    with pytest.raises(UserError, match="not found"):
        resolve_weight(str(tmp_path / "nothing"), "UNet")


def test_eval_with_any_backbone(identity_ckpt, tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "in"
    _write(src / "a.png", _low(rng, 19, 23))
    _write(src / "b.npy", _low(rng, 17, 30))
    args = ["-n", "UNet", "-w", str(identity_ckpt), "--network-args", '{"width": 4}', "--device", "cpu"]
    assert eval_with_any_backbone.main([*args, "--set", str(src), "--output", str(tmp_path / "o1")]) == 0
    # the hidden .lock marker of the one-writer rule (common_utils/folders.py) stays beside the images
    assert sorted(p.name for p in (tmp_path / "o1").iterdir() if not p.name.startswith(".")) == ["a.png", "b.png"]
    assert read_image(tmp_path / "o1/b.png").shape == (17, 30, 3)
    assert eval_with_any_backbone.main([*args, "--image", str(src / "a.png"), "--output", str(tmp_path / "o2"),
                                        "--tile", "16", "--tile-overlap", "4"]) == 0
    assert np.allclose(read_image(tmp_path / "o2/a.png"), read_image(src / "a.png"), atol=1 / 255)


# ------------------------------------------------------------------------------------------------ tiling
def test_tiled_equals_untiled_within_receptive_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        full = net(x)
        tiled = forward_tiled(net, x, tile=32, overlap=8)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 1e-5


def test_eval_missing_sets_are_named_once_and_nothing_is_written(tmp_path, identity_ckpt, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert eval_cli.main(_eval_args(empty, identity_ckpt, out)) == 2
    text = capsys.readouterr()
    both = text.out + text.err
    for name in EVAL_ALL:  # every missing set named, its looked-for paths printed once
        assert both.count(f"{name}: missing - ") == 1, name
    assert both.count(str(empty / "LOL" / "eval15" / "low")) == 1
    assert "results written" not in both and "no dataset could be evaluated" in text.err
    assert not out.exists()


def test_eval_named_set_missing_fails_but_all_tolerates_it(lowlight_root, identity_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    args = _eval_args(lowlight_root, identity_ckpt, out)
    args[args.index("all")] = "LOLv2,LOL-v1"  # LOL-v1 is not on disk, and was asked for by name
    assert eval_cli.main(args) == 2
    assert "missing: LOL-v1: LOL-v1 not found" in capsys.readouterr().err and not out.exists()
    args[args.index("LOLv2,LOL-v1")] = "LOLv2"
    assert eval_cli.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the input's own scores beside the network's (an identity network scores exactly as its input)
    assert summary["LOLv2"]["input"]["psnr"] == pytest.approx(summary["LOLv2"]["psnr"], abs=1e-6)


def test_eval_compares_two_networks_on_one_page(lowlight_root, identity_ckpt, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "unet_random.pth"
    torch.save(build_network("UNet", width=4).state_dict(), other)
    out = tmp_path / "out"
    args = _eval_args(lowlight_root, identity_ckpt, out, "--compare", f"UNet={other}", "--html")
    args[args.index("all")] = "LOLv2"
    assert eval_cli.main(args) == 0
    entry = json.loads((out / "summary.json").read_text())["LOLv2"]
    a, b = "UNet [unet_identity]", "UNet [unet_random]"
    assert entry["network"] == a and entry[a]["psnr"] == entry["psnr"]
    assert entry[b]["psnr"] != pytest.approx(entry[a]["psnr"], abs=1e-3)
    page = (out / "LOLv2" / "index.html").read_text()
    assert a in page and b in page


def test_no_reference_sets_open_as_inputs_and_are_scored_with_niqe(identity_ckpt, tmp_path):
    from common_utils.no_reference import NIQEMetric, NIQEUnavailable, find_niqe_params
    from data.datasets import UnpairedFolderDataset
    from data.layouts import NO_REFERENCE_LOWLIGHT, expand_dataset_names

    try:
        find_niqe_params()
    except NIQEUnavailable as exc:
        pytest.skip(f"NIQE model not set up ({exc})")
    assert expand_dataset_names("no_reference") == list(NO_REFERENCE_LOWLIGHT)
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name in ("a", "b"):  # 192 px: whole 96-px NIQE blocks at both scales
        smooth = np.kron(rng.integers(10, 120, (12, 12, 3)), np.ones((16, 16, 1))).astype(np.uint8)
        _write(root / "DICM" / f"{name}.png", smooth)
    ds = open_layout("DICM", str(root))
    assert isinstance(ds, UnpairedFolderDataset) and len(ds) == 2 and "gt" not in ds[0]
    out = tmp_path / "out"
    args = ["-n", "UNet", "-w", str(identity_ckpt), "-d", "DICM", "--data-root", str(root), "--out", str(out),
            "--network-args", '{"width": 4}', "--device", "cpu", "--workers", "0", "--no-lpips"]
    assert eval_cli.main(args) == 0
    entry = json.loads((out / "summary.json").read_text())["DICM"]
    assert entry.get("psnr") is None and entry["images"] == 2
    metric = NIQEMetric()
    direct = [float(metric(torch.from_numpy(read_image(root / "DICM" / f"{n}.png")).permute(2, 0, 1)[None])[0])
              for n in ("a", "b")]
    # the identity network returns its input: its NIQE is the input's and equals NIQE computed directly
    assert entry["niqe"] == pytest.approx(sum(direct) / 2, abs=1e-4)
    assert entry["input"]["niqe"] == pytest.approx(entry["niqe"], abs=1e-4)
    assert "| NIQE |" in (out / "summary.md").read_text()


def test_sots_outdoor_with_shared_names_pairs_in_the_named_layout(tmp_path):
    # a SOTS-outdoor copy whose clear files carry the hazy files' names (0001_0.8_0.2.png in both)
    rng = np.random.default_rng(5)
    for gid, v in (("0001", 30), ("0066", 100)):
        _pair(tmp_path / f"SOTS/outdoor/hazy/{gid}_0.8_0.2.png", tmp_path / f"SOTS/outdoor/gt/{gid}_0.8_0.2.png", rng,
              const=v)
    ds = open_layout("SOTS-outdoor", str(tmp_path))
    assert [(lq.name, gt.name) for lq, gt in ds.pairs] == [("0001_0.8_0.2.png", "0001_0.8_0.2.png"),
                                                           ("0066_0.8_0.2.png", "0066_0.8_0.2.png")]
    _check_pairs(ds)


# ------------------------------------------------------------------------------------------------ protocols
def test_every_named_set_names_a_protocol_and_the_papers_sets_theirs():
    from common_utils.evaluation.protocols import PROTOCOLS
    from common_utils.evaluation.runner import protocol_name_of
    from data.layouts import LAYOUTS, PAPER_DEHAZING

    assert all(LAYOUTS.get(n).protocol in PROTOCOLS for n in LAYOUTS.names())
    # the papers' protocols (spec ssll.md §5, iceml.md §5.2): SSIM on Y at full size; piq at 1024x1024
    assert (PROTOCOLS["paper"]["ssim"], PROTOCOLS["paper"]["resize"]) == ("y", None)
    assert (PROTOCOLS["iceml"]["ssim"], PROTOCOLS["iceml"]["resize"]) == ("piq", 1024)
    assert {n: protocol_name_of(n) for n in (*EVAL_ALL, *PAPER_DEHAZING)} == {
        **{n: "paper" for n in EVAL_ALL}, **{n: "iceml" for n in PAPER_DEHAZING}}
    assert protocol_name_of({"name": "x", "type": "layout", "args": {"name": "RICE-I"}}) == "iceml"
    assert protocol_name_of({"name": "RICE-I", "type": "paired_folder", "args": {}}) == "paper"


def test_eval_py_and_a_runs_final_evaluation_score_each_set_with_its_papers_protocol(tmp_path, capsys):
    """LOLv2 (SSIM on Y, full size) and RICE-I (resized to 1024, piq SSIM) in one evaluation: eval.py's
    per-image SSIM is each protocol's own, recomputed here, and the run's summary equals eval.py's."""
    import run
    from common_utils.metrics import ssim_piq, ssim_y
    from tests.helpers import tiny_config, write_yaml

    rng = np.random.default_rng(5)
    root = tmp_path / "sets"
    for i in (1, 2):
        _pair(root / f"LOLv2/Real_captured/Test/Low/low{i:05d}.png",
              root / f"LOLv2/Real_captured/Test/Normal/normal{i:05d}.png", rng)
        _pair(root / f"RICE1/cloud/{i}.png", root / f"RICE1/label/{i}.png", rng)
    cfg = tiny_config(tmp_path, name="proto", iters=2)
    cfg["eval"].update({"after_train": True, "lpips": False, "datasets": ["LOLv2", "RICE-I"],
                        "data_root": str(root)})
    assert run.main(["-c", str(write_yaml(tmp_path / "proto.yaml", cfg))]) == 0
    ran = json.loads((tmp_path / "experiments" / "proto" / "results" / "summary.json").read_text())
    ckpt = tmp_path / "experiments" / "proto" / "checkpoints" / "last.pth"
    out = tmp_path / "ev"
    assert eval_cli.main(["-n", "UNet", "-w", str(ckpt), "-d", "LOLv2,RICE-I", "--data-root", str(root), "-o",
                          str(out), "--device", "cpu", "--workers", "0", "--no-lpips", "--no-input"]) == 0
    ev = json.loads((out / "summary.json").read_text())
    net, _ = load_network("UNet", ckpt)
    for name, ssim, size in (("LOLv2", ssim_y, None), ("RICE-I", ssim_piq, 1024)):
        ds = open_layout(name, str(root))
        rows = _rows(out / name / "per_image.csv")
        for i in range(len(ds)):
            item = ds[i]
            lq, gt = item["lq"][None], item["gt"][None]
            if size:
                lq, gt = (torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                                          antialias=True)
                          for t in (lq, gt))
            with torch.no_grad():
                y = net(lq).clamp(0, 1)
            assert float(rows[item["name"]]["ssim"]) == pytest.approx(float(ssim(y, gt)[0]), abs=2e-4), name
        assert ran[name]["ssim"] == pytest.approx(ev[name]["ssim"], abs=1e-9), name
        assert ran[name]["psnr"] == pytest.approx(ev[name]["psnr"], abs=1e-9), name
    assert ev["_protocol"]["ssim"].startswith("LOLv2: SSIM on Y") and "RICE-I: SSIM on RGB (piq" in ev["_protocol"][
        "ssim"]
