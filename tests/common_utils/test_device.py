"""The one device rule (common_utils/device.py) of training and evaluation.

``auto`` is the only fallback; a device asked for and not there is a one-line error (exit 2) in
run.py and in eval.py alike, never a silent CPU run.
"""
from __future__ import annotations

import pytest
import torch

import run
from common_utils.device import select_device
from common_utils.evaluation import eval as eval_cli
from foundation.errors import UserError
from tests.helpers import make_paired_folders, tiny_config, write_yaml
from tests.test_hardening import one_line_error

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_auto_and_cpu():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected and select_device(None).type == expected


@no_cuda
@pytest.mark.parametrize("word", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_an_error_not_a_cpu_run(word):
    with pytest.raises(UserError, match="CUDA is not available here.*use cpu, or auto"):
        select_device(word)


@no_cuda
@pytest.mark.parametrize("override", ["device=cuda", "device=cuda:0"])
def test_training_on_a_missing_gpu_is_one_line_and_writes_nothing(tmp_path, capsys, override):
    path = write_yaml(tmp_path / "t.yaml", tiny_config(tmp_path, name="dev", iters=2))
    one_line_error(capsys, run.main(["-c", str(path), override]), "config key 'device'", "CUDA is not available")
    assert not (tmp_path / "experiments").exists()


@no_cuda
def test_evaluation_follows_the_same_rule(tmp_path, capsys):
    from models import build_network

    make_paired_folders(tmp_path / "set", n=2, size=24)
    torch.save(build_network("UNet", width=4).state_dict(), tmp_path / "w.pth")
    code = eval_cli.main(["-n", "UNet", "-w", str(tmp_path / "w.pth"), "--network-args", '{"width": 4}', "-d",
                          str(tmp_path / "set"), "--device", "cuda:0", "--no-lpips", "-o", str(tmp_path / "o")])
    one_line_error(capsys, code, "--device", "CUDA is not available")
    one_line_error(capsys, eval_cli.main(["-n", "UNet", "-w", str(tmp_path / "w.pth"), "-d", str(tmp_path / "set"),
                                          "--device", "gpu"]), "--device must be one of", "did you mean 'cuda'")


def test_a_gpu_index_beyond_the_machine_is_an_error():
    with pytest.raises(UserError, match="cuda:99"):
        select_device("cuda:99")
