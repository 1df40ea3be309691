"""Checkpoint I/O: atomic writes, clear errors for damaged files, unwrapping released formats."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from common_utils.checkpoint import (
    CheckpointError,
    atomic_save,
    extract_state_dict,
    load_network_weights,
    network_state,
    safe_load,
)
from models import build_network


def _sd(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g)}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tmp_files(folder: Path) -> list[Path]:
    return [f for f in folder.iterdir() if f.name.endswith(".tmp")]


# --------------------------------------------------------------------------- atomic save / safe load
def test_atomic_save_safe_load_round_trip(tmp_path):
    obj = {"networks": {"student": _sd(0)}, "iter": 7, "best": {"student": {"psnr": 21.5}},
           "rng": torch.get_rng_state(), "names": ["a", "b"]}
    path = tmp_path / "deep" / "ck.pth"
    atomic_save(obj, path)
    back = safe_load(path)
    assert _equal(back["networks"]["student"], obj["networks"]["student"])
    assert back["iter"] == 7 and back["best"] == {"student": {"psnr": 21.5}} and back["names"] == ["a", "b"]
    assert torch.equal(back["rng"], obj["rng"])
    assert _tmp_files(path.parent) == []
    # overwrite in place
    atomic_save({"v": torch.ones(2)}, path)
    assert torch.equal(safe_load(path)["v"], torch.ones(2))
    assert _tmp_files(path.parent) == []


class Opaque:
    """An arbitrary class: unpickling it would run module code, so weights_only refuses it."""


def test_safe_load_refuses_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"obj": Opaque()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        safe_load(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        safe_load(tmp_path / "none.pth")


def test_truncated_checkpoint_names_file_and_previous(tmp_path):
    tmp_path = tmp_path / "checkpoints"  # a run's checkpoint folder
    tmp_path.mkdir()
    atomic_save(_sd(0), tmp_path / "iter_00000002.pth")
    atomic_save(_sd(1), tmp_path / "iter_00000004.pth")
    old = time.time() - 100
    os.utime(tmp_path / "iter_00000002.pth", (old, old))
    last = tmp_path / "last.pth"
    atomic_save(_sd(2), last)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        safe_load(last)
    msg = str(info.value)
    assert str(last) in msg and "truncated or corrupt" in msg
    # the newest other checkpoint in the folder is offered
    assert f"the previous checkpoint of this run is {tmp_path / 'iter_00000004.pth'}" in msg


def test_truncated_checkpoint_outside_a_run_folder_names_no_other_file(tmp_path):
    atomic_save(_sd(0), tmp_path / "unrelated.pth")
    damaged = tmp_path / "weights.pth"
    atomic_save(_sd(1), damaged)
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        safe_load(damaged)
    msg = str(info.value)
    assert "unrelated.pth" not in msg and "previous" not in msg
    assert "\x1b[" not in msg and msg.count("\n") == 0


def test_truncated_checkpoint_alone_in_folder(tmp_path):
    path = tmp_path / "only.pth"
    atomic_save(_sd(0), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        safe_load(path)
    assert str(path) in str(info.value) and "previous" not in str(info.value)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    atomic_save(_sd(0), path)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial data")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as info:
        atomic_save(_sd(1), path)
    monkeypatch.undo()
    msg = str(info.value)
    assert str(path) in msg and "No space left on device" in msg and "unchanged" in msg
    assert path.read_bytes() == before
    assert _equal(safe_load(path), _sd(0))
    assert _tmp_files(tmp_path) == []


def test_non_oserror_during_write_propagates_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "x.pth"

    def boom(obj, f, *args, **kwargs):
        f.write(b"junk")
        raise RuntimeError("serialisation bug")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="serialisation bug"):
        atomic_save({"a": 1}, path)
    assert not path.exists() and _tmp_files(tmp_path) == []


# --------------------------------------------------------------------------- unwrapping
def test_extract_plain_and_wrapped_state_dicts():
    sd = _sd(0)
    assert _equal(extract_state_dict(sd), sd)
    for key in ("params", "params_ema", "state_dict", "model", "net"):
        assert _equal(extract_state_dict({key: sd, "iter": 5, "meta": "x"}), sd), key
    # nested wrappers and DDP / torch.compile prefixes
    assert _equal(extract_state_dict({"state_dict": {f"module.{k}": v for k, v in sd.items()}}), sd)
    assert _equal(extract_state_dict({"model": {"params": {f"_orig_mod.{k}": v for k, v in sd.items()}}}), sd)
    assert _equal(extract_state_dict({f"module._orig_mod.{k}": v for k, v in sd.items()}), sd)
    # a prefix on only some keys is left alone
    mixed = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert set(extract_state_dict(mixed)) == {"module.a", "b"}


def test_extract_prefers_ema_when_asked():
    plain, ema = _sd(0), _sd(1)
    ck = {"params": plain, "params_ema": ema}
    assert _equal(extract_state_dict(ck, prefer_ema=True), ema)
    only_params = {"params": plain}
    assert _equal(extract_state_dict(only_params, prefer_ema=True), plain)
    # this framework's run checkpoints: the reader picks the entry (teacher by default, as run.py reports)
    framework = {"format": "ssir-train-v1", "networks": {"student": plain, "teacher": ema}, "iter": 3}
    assert _equal(network_state(framework, "UNet").state, ema)
    assert _equal(network_state(framework, "UNet", "student").state, plain)
    assert _equal(network_state({**framework, "best_network": "student"}, "UNet").state, plain)


@pytest.mark.parametrize("obj", [{"iter": 3}, {"params": {"a": 1}}, [1, 2], {}])
def test_extract_without_state_dict_is_checkpoint_error(obj):
    with pytest.raises(CheckpointError, match="no network state dict"):
        extract_state_dict(obj)


# --------------------------------------------------------------------------- loading into a network
def test_load_network_weights_round_trip_and_wrapped():
    src = build_network("UNet", width=4)
    dst = build_network("UNet", width=4)
    wrapped = {"params": {f"module.{k}": v for k, v in src.state_dict().items()}}
    load_network_weights(dst, network_state(wrapped, "UNet").state, "UNet")
    assert _equal(dst.state_dict(), src.state_dict())


def test_checkpoint_of_another_network_names_it():
    unet_sd = build_network("UNet", width=4).state_dict()
    torch.manual_seed(0)
    target = build_network("RetinexFormer")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_network_weights(target, unet_sd, "RetinexFormer", source="weights.pth")
    msg = str(info.value)
    assert "weights.pth" in msg and "does not fit RetinexFormer" in msg and "UNet" in msg
    assert _equal(target.state_dict(), before)  # nothing half-loaded


def test_same_network_other_arguments_reports_shapes():
    small = build_network("UNet", width=4).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_network_weights(build_network("UNet", width=8), small, "UNet", source="w4.pth")
    msg = str(info.value)
    assert "w4.pth does not fit UNet as configured" in msg and "other shapes" in msg
    assert "looks like" not in msg


def test_checkpoints_get_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_save(_sd(0), tmp_path / "w.pth")
    finally:
        os.umask(mask)
    assert (tmp_path / "w.pth").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
