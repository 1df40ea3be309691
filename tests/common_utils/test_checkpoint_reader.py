"""The one checkpoint reader: every supported form, saved exactly as its producer saves it.

Official forms are rebuilt here with the official key layouts (models/manifests): the SSLL
training folder (``<prefix>_<Net>.pth``, ``_ema.pth``, ``_train_info.pth`` with numpy/python RNG
objects), the ICEML ``CombinedModel`` (``retinex_model.*`` / ``asm_model.*``), wrappers, and this
framework's own low-light and ICEML run checkpoints. Each CLI takes the same path.
"""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import torch

from common_utils.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    copy_checkpoint,
    load_network,
    load_networks,
    prune_checkpoints,
    read_checkpoint,
    read_network_state,
    read_training_checkpoint,
    resolve_weight,
    run_checkpoint,
    safe_load,
    save_best,
    save_training_state,
    training_checkpoint,
    weights_checkpoint,
)
from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import eval_with_any_backbone
from models import build_network
from tests.helpers import make_paired_folders


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def iceml_pair():
    torch.manual_seed(0)
    return {"rtx": build_network("RtxICE-Net", dim=16), "asm": build_network("ASMICE-Net", dim=16)}


@pytest.fixture(scope="module")
def combined_file(tmp_path_factory, iceml_pair):
    """``final_dehazing_model.pth`` as the official ICEML code saves it: CombinedModel.state_dict()."""
    sd = {**{f"retinex_model.{k}": v for k, v in iceml_pair["rtx"].state_dict().items()},
          **{f"asm_model.{k}": v for k, v in iceml_pair["asm"].state_dict().items()}}
    path = tmp_path_factory.mktemp("iceml") / "final_dehazing_model.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def framework_iceml_file(tmp_path_factory, iceml_pair):
    """A framework ICEML run checkpoint of format version 1: both networks in ``networks`` (rtx, asm),
    one ``network_args`` for both, ASMICE-Net's ``t_min`` only in the config."""
    path = tmp_path_factory.mktemp("run") / "last.pth"
    torch.save({"format": "ssir-train-v1", "network": "RtxICE-Net", "network_args": {"dim": 16},
                "networks": {k: v.state_dict() for k, v in iceml_pair.items()}, "iter": 4,
                "config": {"iceml": {"t_min": 0.25}}}, path)
    return path


@pytest.mark.parametrize("network,key", [("RtxICE-Net", "rtx"), ("ASMICE-Net", "asm")])
def test_combined_model_gives_either_network(combined_file, iceml_pair, network, key):
    found = read_network_state(combined_file, network)
    assert _equal(found.state, iceml_pair[key].state_dict())
    net, info = load_network(network, combined_file, {"dim": 16})
    assert _equal(net.state_dict(), iceml_pair[key].state_dict())


@pytest.mark.parametrize("network,key", [("RtxICE-Net", "rtx"), ("ASMICE-Net", "asm")])
def test_framework_iceml_checkpoint_gives_either_network(framework_iceml_file, iceml_pair, network, key):
    net, info = load_network(network, framework_iceml_file)  # dim 16 comes from the checkpoint
    assert _equal(net.state_dict(), iceml_pair[key].state_dict())
    assert info["weights"] == key
    assert getattr(net, "t_min", None) == (0.25 if network == "ASMICE-Net" else None)  # read from version 1's config


def test_combined_model_with_a_low_light_network_names_the_right_networks(combined_file):
    with pytest.raises(CheckpointError) as info:
        read_network_state(combined_file, "UNet")
    msg = str(info.value)
    assert "RtxICE-Net or ASMICE-Net" in msg and "ICEML-CombinedModel" not in msg


def test_iceml_clis_take_the_official_checkpoint(combined_file, tmp_path):
    hazy = tmp_path / "hazy"
    make_paired_folders(tmp_path, n=2, size=32, lq_name="hazy", gt_name="GT")
    for net in ("RtxICE-Net", "ASMICE-Net"):
        args = ["-n", net, "-w", str(combined_file), "--network-args", '{"dim": 16}', "--device", "cpu",
                "--workers", "0"]
        assert eval_with_any_backbone.main([*args, "--set", str(hazy), "--output", str(tmp_path / net)]) == 0
        assert eval_cli.main([*args, "-d", str(tmp_path), "--no-lpips", "-o", str(tmp_path / f"e_{net}")]) == 0


def _official_ssll_folder(root, net_name="UNet", cls="Unet"):
    """What the official SSLL trainer writes for a prefix: student, EMA teacher and the train info."""
    torch.manual_seed(1)
    student = build_network(net_name, width=4).state_dict()
    teacher = build_network(net_name, width=4).state_dict()
    torch.save(student, root / f"LOLv2_psnr_{cls}.pth")
    torch.save(teacher, root / f"LOLv2_psnr_{cls}_ema.pth")
    torch.save({"epoch": 5, "global_step": 100, "optimizer": {"state": {}}, "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(), "torch_rng": torch.get_rng_state()},
               root / "LOLv2_psnr_train_info.pth")
    return student, teacher


def test_official_ssll_prefix_folder_never_takes_the_train_info(tmp_path):
    student, teacher = _official_ssll_folder(tmp_path)
    assert resolve_weight(tmp_path / "LOLv2_psnr", "UNet").name == "LOLv2_psnr_Unet.pth"
    assert resolve_weight(tmp_path / "LOLv2_psnr", "UNet", "teacher").name == "LOLv2_psnr_Unet_ema.pth"
    assert _equal(read_network_state(tmp_path / "LOLv2_psnr", "UNet").state, student)
    assert _equal(read_network_state(tmp_path / "LOLv2_psnr", "UNet", "teacher").state, teacher)


def test_train_info_given_as_weights_is_named_for_what_it_is(tmp_path):
    _official_ssll_folder(tmp_path)
    with pytest.raises(CheckpointError) as info:
        safe_load(tmp_path / "LOLv2_psnr_train_info.pth")
    msg = str(info.value)
    assert "training-state file" in msg and "truncated" not in msg and "\x1b[" not in msg


def test_framework_low_light_checkpoint_default_is_the_teacher_and_network_is_checked(tmp_path):
    torch.manual_seed(2)
    s, t = build_network("UNet", width=4).state_dict(), build_network("UNet", width=4).state_dict()
    path = tmp_path / "last.pth"
    torch.save({"format": "ssir-train-v1", "network": "UNet", "network_args": {"width": 4},
                "networks": {"student": s, "teacher": t}, "iter": 3}, path)
    assert _equal(load_network("UNet", path)[0].state_dict(), t)
    assert _equal(load_network("UNet", path, which="student")[0].state_dict(), s)
    with pytest.raises(CheckpointError, match="trained for UNet, not CIDNet"):
        read_network_state(path, "CIDNet")


def _unet_pair(seed: int = 3):
    torch.manual_seed(seed)
    return build_network("UNet", width=4).state_dict(), build_network("UNet", width=4).state_dict()


def test_weights_file_is_float32_and_loads_every_network_like_eval_py(tmp_path):
    s, t = _unet_pair()
    half = {k: v.half() if v.is_floating_point() else v for k, v in s.items()}
    path = tmp_path / "best.pth"
    atomic_save(weights_checkpoint({"student": half, "teacher": t}, {e: ("UNet", {"width": 4}) for e in ("student",
                                   "teacher")}, "UNet", 5), path)
    saved = safe_load(path)
    assert all(v.dtype == torch.float32 for v in saved["networks"]["student"].values() if v.is_floating_point())
    nets, main, infos = load_networks(path)  # the loader of a run's final evaluation
    assert main == "teacher" and set(nets) == {"student", "teacher"} and infos["student"]["network_args"] == {
        "width": 4}
    assert _equal(nets["teacher"].state_dict(), t)
    assert _equal(nets["teacher"].state_dict(), load_network("UNet", path)[0].state_dict())  # eval.py's default
    with pytest.raises(CheckpointError, match="holds network weights only"):
        read_training_checkpoint(path)


@pytest.mark.parametrize("kind", ["weights", "training"])
def test_a_checkpoint_of_a_newer_format_version_is_one_clear_error(tmp_path, kind):
    s, _ = _unet_pair()
    specs = {"student": ("UNet", {"width": 4})}
    if kind == "weights":
        state = weights_checkpoint({"student": s}, specs, "UNet", 1)
    else:
        state = training_checkpoint({"student": s}, specs, "UNet", 1, {}, optimizer={}, scheduler={}, scaler={},
                                    ema_steps_offset=0, best={}, nonfinite_total=0, nonfinite_streak=0, rng={},
                                    trainer={}, amp="off")
    path = tmp_path / "new.pth"
    torch.save({**state, "version": FORMAT_VERSION + 1}, path)
    for read in (lambda: load_network("UNet", path), lambda: read_training_checkpoint(path),
                 lambda: load_networks(path)):
        with pytest.raises(CheckpointError) as info:
            read()
        assert f"format version {FORMAT_VERSION + 1}" in str(info.value) and "newer version" in str(info.value)
    torch.save(state, path)  # the same file at the current version reads
    assert _equal(load_network("UNet", path)[0].state_dict(), s)


# ---------------------------------------------------------------- version 3 on disk: a run's checkpoint files
def _state(iteration: int, seed: int = 3) -> dict:
    """An in-memory training state (what the trainer hands the writer), a student and a teacher UNet."""
    s, t = _unet_pair(seed)
    specs = {e: ("UNet", {"width": 4}) for e in ("student", "teacher")}
    rest = {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": iteration}, "scaler": {},
            "ema_steps_offset": 2, "best": {}, "nonfinite_total": 0, "nonfinite_streak": 0,
            "rng": {"torch": torch.get_rng_state()}, "trainer": {}, "amp": "off"}
    return training_checkpoint({"student": s, "teacher": t}, specs, "UNet", iteration, {"seed": 1}, **rest)


def _tensors(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def test_a_state_names_its_weights_files_and_holds_no_network_tensor(tmp_path):
    state = _state(4)
    last = save_training_state(state, tmp_path, keep_iter=True)
    raw = torch.load(last, weights_only=True)
    assert raw["version"] == FORMAT_VERSION == 3 and "networks" not in raw
    assert raw["weight_files"] == {e: f"net_{e}_iter_00000004.pth" for e in ("student", "teacher")}
    assert [t for t in _tensors(raw) if t.numel() > 1000] == [t for t in _tensors(raw["rng"]) if t.numel() > 1000]
    weights = sum((tmp_path / n).stat().st_size for n in raw["weight_files"].values())
    assert last.stat().st_size < weights / 10  # no optimizer moments here: nothing but the state's own keys
    assert os.path.samefile(last, tmp_path / "iter_00000004.pth")
    back = read_training_checkpoint(last)  # the networks are put back, as versions 1 and 2 held them
    for entry in ("student", "teacher"):
        assert _equal(back["networks"][entry], state["networks"][entry])
        alone = safe_load(tmp_path / raw["weight_files"][entry])  # each weights file loads alone
        assert alone["kind"] == "weights" and set(alone["networks"]) == {entry}
    assert _equal(load_network("UNet", last, which="student")[0].state_dict(), state["networks"]["student"])
    assert back["ema_steps_offset"] == 2 and back["scheduler"] == {"last_epoch": 4}


def test_a_version_2_file_still_loads(tmp_path):
    """Format 2 held the networks in the training state itself (and in every weights file)."""
    state = {**_state(6), "version": 2}
    path = tmp_path / "last.pth"
    torch.save(state, path)
    back = read_training_checkpoint(path)
    assert back["version"] == 2 and _equal(back["networks"]["teacher"], state["networks"]["teacher"])
    assert _equal(load_network("UNet", path)[0].state_dict(), state["networks"]["teacher"])
    nets, main, _ = load_networks(path)
    assert main == "teacher" and _equal(nets["student"].state_dict(), state["networks"]["student"])


def test_a_missing_weights_file_is_one_line_naming_it(tmp_path):
    last = save_training_state(_state(4), tmp_path, keep_iter=False)
    gone = tmp_path / "net_teacher_iter_00000004.pth"
    gone.unlink()
    for read in (lambda: read_training_checkpoint(last), lambda: load_network("UNet", last),
                 lambda: load_networks(last)):
        with pytest.raises(CheckpointError) as info:
            read()
        msg = str(info.value)
        assert str(gone) in msg and "missing" in msg and "\n" not in msg
    assert eval_cli.main(["-n", "UNet", "-w", str(last), "-d", str(tmp_path), "--device", "cpu"]) == 2


def test_best_files_link_the_weights_and_best_pth_is_an_index(tmp_path):
    state = _state(4)
    written: dict = {}
    save_best(state, tmp_path, "student", written)
    save_best(state, tmp_path, None, written, best_network="student")
    save_training_state(state, tmp_path, keep_iter=False, written=written)  # reuses the files of the bests
    assert os.path.samefile(tmp_path / "best_student.pth", tmp_path / "net_student_iter_00000004.pth")
    assert (tmp_path / "best.pth").stat().st_size < 10_000
    assert _equal(load_network("UNet", tmp_path / "best.pth", which="student")[0].state_dict(),
                  state["networks"]["student"])
    nets, main, _ = load_networks(tmp_path / "best.pth")  # the final evaluation's loader
    assert main == "student" and set(nets) == {"student", "teacher"}


def test_pruning_keeps_the_newest_states_and_every_named_weights_file(tmp_path):
    for it in (1, 2, 3, 4, 5):
        if it == 1:
            save_best(_state(1, seed=1), tmp_path, None, best_network="teacher")
            save_best(_state(1, seed=1), tmp_path, "student")
        save_training_state(_state(it, seed=it), tmp_path, keep_iter=True)
        if it == 2:  # a state copied by hand in the same folder (a study's branch point)
            shutil.copyfile(tmp_path / "iter_00000002.pth", tmp_path / "at_iter_2.pth")
    (tmp_path / "net_student_iter_00000000.pth").write_bytes(b"stray")  # named by nothing
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_00000004.pth", "iter_00000005.pth"]
    kept = sorted(p.name for p in tmp_path.glob("net_*.pth"))
    assert kept == [f"net_{e}_iter_{i:08d}.pth" for e in ("student", "teacher") for i in (1, 2, 4, 5)]
    for f in ("last.pth", "iter_00000004.pth", "at_iter_2.pth", "best.pth"):  # each still reads
        assert read_checkpoint(tmp_path / f)["networks"].keys() == {"student", "teacher"}, f
    (tmp_path / "best.pth").unlink()
    prune_checkpoints(tmp_path, keep_last=2)
    assert not (tmp_path / "net_student_iter_00000001.pth").exists()
    # best_student.pth keeps its bytes through its own link
    first = _state(1, seed=1)["networks"]["student"]
    assert _equal(read_network_state(tmp_path / "best_student.pth", "UNet").state, first)


def test_copy_checkpoint_brings_the_weights_files(tmp_path):
    src_dir, dst_dir = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    state = _state(3)
    src = save_training_state(state, src_dir, keep_iter=True)
    dst = copy_checkpoint(src, dst_dir / "last.pth")
    assert sorted(p.name for p in dst_dir.iterdir()) == ["last.pth", "net_student_iter_00000003.pth",
                                                          "net_teacher_iter_00000003.pth"]
    for f in src_dir.glob("net_*.pth"):  # the copy no longer depends on the source folder
        f.unlink()
    assert _equal(read_training_checkpoint(dst)["networks"]["student"], state["networks"]["student"])
    old = tmp_path / "v2.pth"  # a version-2 file is one file
    torch.save({**state, "version": 2}, old)
    (tmp_path / "c").mkdir()
    copied = copy_checkpoint(old, tmp_path / "c")  # a folder: the name is kept
    assert copied == tmp_path / "c" / "v2.pth"
    assert _equal(read_training_checkpoint(copied)["networks"]["teacher"], state["networks"]["teacher"])
    with pytest.raises(CheckpointError, match="net_student_iter_00000003.pth, which is missing"):
        copy_checkpoint(src_dir / "iter_00000003.pth", tmp_path / "d" / "x.pth")
    assert not (tmp_path / "d" / "x.pth").exists()


def test_a_run_folder_or_its_checkpoints_folder_stands_for_its_checkpoint(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    state = _state(5)
    save_training_state(state, ck, keep_iter=False)
    for folder in (tmp_path / "run", ck):
        assert run_checkpoint(folder) == ck / "last.pth"
        assert run_checkpoint(folder, "best") == ck / "last.pth"  # no best.pth yet
        assert _equal(load_network("UNet", folder, which="student")[0].state_dict(), state["networks"]["student"])
    save_best(state, ck, None, best_network="student")
    assert run_checkpoint(tmp_path / "run", "best") == ck / "best.pth"
    assert run_checkpoint(tmp_path / "run") == ck / "last.pth"  # --resume: the training state
    assert read_training_checkpoint(run_checkpoint(tmp_path / "run"))["iter"] == 5
    assert run_checkpoint(ck / "last.pth") == ck / "last.pth"
    with pytest.raises(CheckpointError, match="folder without checkpoints/last.pth"):
        run_checkpoint(tmp_path)
