"""common_utils/study.py: how a study run is launched (its own checkpoint first, else its branch point)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common_utils import study


def _capture(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_call(cmd, **kwargs):
        calls.append(list(cmd))
        return 0

    monkeypatch.setattr(study.subprocess, "call", fake_call)
    return calls


def test_a_branch_resumes_the_start_checkpoint_as_a_changed_run_then_its_own(tmp_path, monkeypatch):
    calls = _capture(monkeypatch)
    start = tmp_path / "stage1" / "checkpoints" / "last.pth"
    start.parent.mkdir(parents=True)
    start.write_bytes(b"x")
    run = study.StudyRun("config/x.yaml", "arm_s0", ("seed=0", "iceml.w_inverse=0"), start_from=start)
    (tmp_path / "arm_s0").mkdir()
    study.run_training(run, tmp_path)
    cmd = calls[-1]
    # the arm changes loss weights on purpose: resume check told so, the branch point resumed
    assert cmd[cmd.index("--resume") + 1] == str(start) and "--allow-config-change" in cmd
    assert "name=arm_s0" in cmd and "iceml.w_inverse=0" in cmd

    own = tmp_path / "arm_s0" / "checkpoints" / "last.pth"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"y")
    study.run_training(run, tmp_path)
    cmd = calls[-1]
    # interrupted later: it continues itself, the same run, so no config change is allowed
    assert cmd[cmd.index("--resume") + 1] == str(own) and "--allow-config-change" not in cmd
    assert json.loads((tmp_path / "arm_s0" / "wall.json").read_text())["seconds"] >= 0


def test_a_branch_whose_start_is_missing_is_refused(tmp_path, monkeypatch):
    _capture(monkeypatch)
    run = study.StudyRun("config/x.yaml", "arm_s1", start_from=Path(tmp_path / "nope.pth"))
    with pytest.raises(RuntimeError, match="does not exist yet"):
        study.run_training(run, tmp_path)
