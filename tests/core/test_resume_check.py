"""``--resume`` compares the config with the checkpoint's (core/resume_check.py), and a run too short
for its second phase says so (core/mean_teacher.py, core/iceml.py)."""
from __future__ import annotations

import pytest

import run
from core.resume_check import check_resume, config_changes
from foundation.errors import UserError
from tests.helpers import tiny_config, write_yaml
from tests.test_hardening import _tree, one_line_error


@pytest.fixture
def finished(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", tiny_config(tmp_path, name="res", iters=2))
    assert run.main(["-c", str(path), "--no-eval"]) == 0
    return path, tmp_path / "experiments" / "res" / "checkpoints" / "last.pth"


@pytest.mark.parametrize("override,shown", [("data.batch_size=4", "data.batch_size (2 -> 4)"),
                                            ("optim.type=adam", "optim.type (adamw -> adam)"),
                                            ("seed=9", "seed (3 -> 9)")])
def test_a_change_that_breaks_exact_resume_is_refused_naming_it(tmp_path, finished, capsys, override, shown):
    path, last = finished
    before = _tree(tmp_path / "experiments")
    code = run.main(["-c", str(path), "--no-eval", "--resume", str(last), "train.iters=4", override])
    one_line_error(capsys, code, shown, "not the same run", "--allow-config-change")
    assert _tree(tmp_path / "experiments") == before


def test_the_switch_continues_and_says_what_changed(finished, capsys):
    path, last = finished
    code = run.main(["-c", str(path), "--no-eval", "--resume", str(last), "train.iters=3", "data.batch_size=4",
                     "--allow-config-change"])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert "config changes since the checkpoint: data.batch_size: 2 -> 4; train.iters: 2 -> 3" in err
    assert "not an exact resume" in err


def test_changes_that_keep_the_run_are_listed_and_accepted(finished, capsys):
    path, last = finished
    assert run.main(["-c", str(path), "--no-eval", "--resume", str(last), "train.iters=3",
                     "train.log_every=1", "data.num_workers=1"]) == 0
    err = capsys.readouterr().err
    assert "note: resume: config changes since the checkpoint: data.num_workers: 0 -> 1; train.iters: 2 -> 3; " \
           "train.log_every: 2 -> 1" in err
    assert "not an exact resume" not in err


def test_resume_into_a_new_folder_with_fewer_iterations_is_refused_first(tmp_path, finished, capsys):
    path, last = finished
    code = run.main(["-c", str(path), "--no-eval", "--resume", str(last), "name=other", "train.iters=1"])
    one_line_error(capsys, code, "at iteration 2", "beyond train.iters=1", "set train.iters to 2 or more")
    assert not (tmp_path / "experiments" / "other").exists()


def test_resume_into_a_new_folder_at_the_checkpoints_iteration_evaluates_it(tmp_path, finished, capsys):
    path, last = finished  # at iteration 2: nothing is left to train, the evaluation still runs
    evaluating = write_yaml(tmp_path / "e.yaml", tiny_config(tmp_path, name="res", iters=2, eval_datasets=True))
    assert run.main(["-c", str(evaluating), "--resume", str(last), "name=other"]) == 0
    err = capsys.readouterr().err
    other = tmp_path / "experiments" / "other"
    assert "error" not in err and "matplotlib is not installed" not in err, err[-2000:]
    assert "no loss or validation values in logs/scalars.jsonl of this run folder yet: no curves.png" in err
    assert (other / "checkpoints" / "last.pth").is_file() and (other / "results" / "summary.json").is_file()


def test_keys_the_code_added_since_the_checkpoint_are_no_change():
    old = {"train": {"iters": 2}, "optim": {"type": "adamw"}}
    new = {"train": {"iters": 2, "ddp_timeout": 600}, "optim": {"type": "adamw", "new_knob": 1}}
    assert config_changes(old, new) == {}
    assert check_resume(old, new, 2, 2) == []
    with pytest.raises(UserError, match="optim.type"):
        check_resume(old, {**new, "optim": {"type": "adam"}}, 2, 2)


def test_a_run_shorter_than_its_semi_supervised_start_warns(tmp_path, capsys):
    from tests.core.test_kill_resume import _ssll

    cfg = _ssll(tmp_path)
    cfg["train"].update({"iters": 3, "val_every": 100, "save_every": 100})
    assert run.main(["-c", str(write_yaml(tmp_path / "s.yaml", cfg)), "--no-eval"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: this run ends at iteration 3, before its semi-supervised phase starts" in err
    log = (tmp_path / "experiments" / "ssll" / "logs" / "train.log").read_text()
    assert "before its semi-supervised phase starts" in log


def test_iceml_pretraining_longer_than_the_run_warns(tmp_path, capsys):
    from tests.core.test_kill_resume import _iceml

    cfg = _iceml(tmp_path)
    cfg["train"].update({"iters": 2, "val_every": 100, "save_every": 100})
    cfg["iceml"]["pretrain_iters"] = 5
    assert run.main(["-c", str(write_yaml(tmp_path / "i.yaml", cfg)), "--no-eval"]) == 0
    assert "mutual learning never runs" in capsys.readouterr().err


def test_a_supervised_checkpoint_resumed_into_an_ssll_config_is_a_new_phase(tmp_path, capsys):
    """The SSLL protocol: the baseline's checkpoint continues under the Mean-Teacher config."""
    from tests.core.test_kill_resume import _ssll

    sup = tiny_config(tmp_path, name="base", iters=2)
    assert run.main(["-c", str(write_yaml(tmp_path / "b.yaml", sup)), "--no-eval"]) == 0
    last = tmp_path / "experiments" / "base" / "checkpoints" / "last.pth"
    ssll = _ssll(tmp_path)
    ssll["train"].update({"iters": 6, "val_every": 100, "save_every": 100})
    ssll["data"]["num_workers"] = 0
    ssll["ssll"]["semi_start_epoch"] = 1
    capsys.readouterr()
    assert run.main(["-c", str(write_yaml(tmp_path / "s.yaml", ssll)), "--no-eval", "--resume", str(last)]) == 0
    err = capsys.readouterr().err
    assert "trainer: supervised -> mean_teacher" in err and "a new phase" in err
