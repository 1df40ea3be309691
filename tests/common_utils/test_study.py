"""common_utils/study.py: how a study run is launched (its own checkpoint first, else its branch point)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common_utils import study
from tests.helpers import REPO_ROOT


class _FakeTraining:
    """Stands in for the run.py subprocess: records its command; ``on_poll`` runs at each poll (a training
    that writes checkpoints as it goes), and it 'runs' until terminated or ``polls_left`` polls have passed."""

    calls: list[list[str]] = []
    on_poll = None
    polls_left = 0

    def __init__(self, cmd, **_kw):
        self.cmd = list(cmd)
        self.terminated = False
        _FakeTraining.calls.append(self.cmd)
        _FakeTraining.last = self

    def poll(self):
        if self.terminated or _FakeTraining.polls_left <= 0:
            return 0
        _FakeTraining.polls_left -= 1
        if _FakeTraining.on_poll is not None:
            _FakeTraining.on_poll()
        return None

    def terminate(self):
        self.terminated = True

    def wait(self):
        return -15 if self.terminated else 0


def _capture(monkeypatch) -> list[list[str]]:
    _FakeTraining.calls, _FakeTraining.on_poll, _FakeTraining.polls_left = [], None, 0
    monkeypatch.setattr(study.subprocess, "Popen", _FakeTraining)
    monkeypatch.setattr(study, "POLL_SECONDS", 0.0)
    return _FakeTraining.calls


def test_a_training_run_only_until_a_checkpoint_is_stopped_once_that_file_exists(tmp_path, monkeypatch):
    _capture(monkeypatch)
    needed = tmp_path / "base_s0" / "checkpoints" / "iter_00000500.pth"
    polls = []

    def progress():  # the checkpoint appears at the third poll of a training that would run for 100
        polls.append(1)
        if len(polls) == 3:
            needed.parent.mkdir(parents=True, exist_ok=True)
            needed.write_bytes(b"x")

    _FakeTraining.on_poll, _FakeTraining.polls_left = progress, 100
    (tmp_path / "base_s0").mkdir()
    study.run_training(study.StudyRun("config/x.yaml", "base_s0"), tmp_path, until=needed)
    assert _FakeTraining.last.terminated and len(polls) <= 4  # stopped right after, not run to its 100 polls
    # the same with no ``until``: runs to its end, never terminated
    _FakeTraining.on_poll, _FakeTraining.polls_left = None, 5
    study.run_training(study.StudyRun("config/x.yaml", "base_s0"), tmp_path)
    assert not _FakeTraining.last.terminated


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


def _scene_study():
    import importlib.util

    path = REPO_ROOT / "scripts" / "ssll_scene_study.py"
    spec = importlib.util.spec_from_file_location("ssll_scene_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summary(psnr: float, lpips: float) -> dict:
    entry = {"images": 1, "network": "teacher", "teacher": {"psnr": psnr, "ssim": 0.8, "lpips": lpips},
             "student": {"psnr": psnr - 0.1, "ssim": 0.79, "lpips": lpips}}
    return {"LOL-v1-test-scenes": entry, "LOL-v1": entry}


def test_scene_study_report_reads_finished_runs_from_their_records_when_the_folders_are_gone(tmp_path):
    mod = _scene_study()
    out, root = tmp_path / "report", tmp_path / "runs"
    root.mkdir()
    for seed, (base, ssll) in enumerate(((18.0, 18.5), (18.2, 18.4))):
        for arm, value in (("baseline", base), ("ssll", ssll)):
            rec = out / "runs" / f"n4_{arm}_s{seed}"
            rec.mkdir(parents=True)
            (rec / "summary.json").write_text(json.dumps(_summary(value, 0.25)))
    niqe = {"DICM": {"images": 2, "niqe": 3.0, "input": {"niqe": 4.0}},
            "LIME": {"images": 1, "niqe": 6.0, "input": {"niqe": 5.0}},
            "CrossDomain-samples": {"images": 3, "psnr": 15.5, "ssim": 0.79, "lpips": 0.25, "niqe": 9.0}}
    (out / "runs" / "n4_ssll_s0" / "extra_scores.json").write_text(json.dumps(niqe))
    text = mod.write_report(root, out, 4, [0, 1]).read_text()
    assert "| ssll | 2 | +0.50, +0.20 |" in text  # both seeds paired from the records alone
    assert "| ssll | 0 | 3.000 | 6.000 | 4.000 |" in text  # NIQE per set and image-weighted (2*3 + 6) / 3
    assert "| input | – | 4.000 | 5.000 | 4.333 |" in text  # the paired set's NIQE is not mixed in
    assert "| ssll | 0 | 15.50 | 0.7900 | 0.2500 |" in text


def test_score_extra_scores_only_the_sets_it_lacks_and_keeps_the_others(tmp_path, monkeypatch):
    mod = _scene_study()
    run = mod.run_of("baseline", 4, 0, tmp_path)
    folder = run.folder(tmp_path)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pth").write_bytes(b"x")
    (folder / "results").mkdir()
    old = {"network": "teacher", "DICM": {"images": 2, "niqe": 3.0}}
    (folder / "results" / "extra_scores.json").write_text(json.dumps(old))
    asked: list[list[str]] = []

    def fake_eval(cmd, **_kw):  # score_extra's own subprocess.call (the evaluation CLI)
        from common_utils.evaluation.eval import build_parser
        build_parser().parse_args(cmd[2:])  # the command is one the evaluation CLI accepts (it had no --force)
        sets = cmd[cmd.index("-d") + 1].split(",")
        asked.append(sets)
        out = Path(cmd[cmd.index("-o") + 1])
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({k: {"images": 1, "niqe": 5.0} for k in sets}))
        return 0

    monkeypatch.setattr(mod.subprocess, "call", fake_eval)
    dst = mod.score_extra(run, tmp_path, sets=("DICM", "LIME", "SICE-dark-heldout"))
    assert asked == [["LIME", "SICE-dark-heldout"]]  # DICM already scored: not run again
    scores = json.loads(dst.read_text())
    assert scores["DICM"] == old["DICM"] and scores["LIME"]["niqe"] == 5.0 and scores["network"] == "teacher"
    assert mod.score_extra(run, tmp_path, sets=("DICM", "LIME")) == dst and len(asked) == 1  # nothing left to do


def test_shipped_weights_are_chosen_by_validation_never_by_the_test_score(tmp_path):
    mod = _scene_study()
    out, root = tmp_path / "report", tmp_path / "runs"
    root.mkdir()
    val = {"ssim_l1": {"teacher": (18.00, 0.30), "student": (17.97, 0.25)},  # student within 0.05 dB, lower LPIPS
           "ssim_lpips": {"teacher": (17.50, 0.20), "student": (17.40, 0.21)}}
    for cand, nets in val.items():
        rec = out / "runs" / f"ship_{cand}_s0"
        rec.mkdir(parents=True)
        rows = [{"step": 400, "val/teacher/psnr": 1.0}]  # an earlier validation: not the one read
        rows += [{"step": 800, **{f"val/{who}/{m}": v for m, v in zip(("psnr", "lpips"), pv)}}
                 for who, pv in nets.items()]
        (rec / "scalars.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        test = 25.0 if cand == "ssim_lpips" else 19.0  # the test set favours the other recipe: must not matter
        scores = {who: {"psnr": test, "ssim": 0.8, "lpips": 0.2} for who in ("teacher", "student")}
        (rec / "summary.json").write_text(json.dumps({"LOL-v1": {"images": 15, **scores}}))
    result = mod.choose_shipped(root, out)
    assert result["choice"] == {"recipe": "ssim_l1", "network": "student"}
    assert "| ssim_l1 | student | 17.97 |" in (out / "ship.md").read_text()
    (out / "runs" / "ship_ssim_lpips_s0" / "summary.json").unlink()  # a candidate not finished: no choice
    assert mod.choose_shipped(root, out)["choice"] is None


def test_a_recorded_baseline_whose_folder_is_gone_is_retrained_only_up_to_the_arms_start(tmp_path, monkeypatch):
    mod = _scene_study()
    root, out = tmp_path / "runs", tmp_path / "report"
    (out / "runs" / "n4_baseline_s0").mkdir(parents=True)
    (out / "runs" / "n4_baseline_s0" / "summary.json").write_text(json.dumps(_summary(18.0, 0.25)))
    (out / "runs" / "n4_baseline_s0" / "scalars.jsonl").write_text('{"iter": 2000, "val/teacher/psnr": 16.0}\n')
    trained: list[tuple[str, Path | None]] = []

    def fake_training(run, root_, until=None):
        trained.append((run.name, until))
        if until is not None:  # the partial retrain leaves its folder with curves up to there only
            until.parent.mkdir(parents=True, exist_ok=True)
            until.write_bytes(b"x")
            (run.folder(root_) / "logs").mkdir(parents=True)
            (run.folder(root_) / "logs" / "scalars.jsonl").write_text('{"iter": 500}\n')
        return 1.0

    monkeypatch.setattr(mod, "run_training", fake_training)
    monkeypatch.setattr(mod, "write_report", lambda *a, **k: out / "README.md")
    mod.main(["study", "--arms", "baseline", "ssll", "--seeds", "0", "--runs", str(root), "--out", str(out),
              "--no-extra"])
    start = root / "n4_baseline_s0" / "checkpoints" / "iter_00000500.pth"
    assert trained == [("n4_baseline_s0", start), ("n4_ssll_s0", None)]  # only to iteration 500, then the arm
    # the report still reads the earlier session's full record, not the partial folder's curves
    assert mod.record("n4_baseline_s0", root, out, "scalars.jsonl") == out / "runs" / "n4_baseline_s0" / "scalars.jsonl"
    mod.archive_run("n4_baseline_s0", root, out)  # the report archives every run it reads: not from a partial one
    assert (out / "runs" / "n4_baseline_s0" / "scalars.jsonl").read_text().startswith('{"iter": 2000')
    trained.clear()  # once the start exists, nothing of the baseline is trained again
    mod.main(["study", "--arms", "baseline", "--seeds", "0", "--runs", str(root), "--out", str(out), "--no-extra"])
    assert trained == []


def test_iceml_stage_2_starts_from_a_copy_of_stage_1_with_its_weights_files(tmp_path, monkeypatch):
    """scripts/iceml_study.py copies stage 1's last.pth into stage 2's folder: a format-3 state must come
    with the weights files it names, so stage 2 reads it although stage 1 prunes its own later."""
    import importlib.util

    import torch

    from common_utils.checkpoint import read_training_checkpoint, save_training_state, training_checkpoint
    from models import build_network

    spec = importlib.util.spec_from_file_location("iceml_study", study.REPO_ROOT / "scripts" / "iceml_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    nets = {"rtx": build_network("RtxICE-Net", dim=16), "asm": build_network("ASMICE-Net", dim=16)}
    specs = {"rtx": ("RtxICE-Net", {"dim": 16}), "asm": ("ASMICE-Net", {"dim": 16})}
    state = training_checkpoint({k: n.state_dict() for k, n in nets.items()}, specs, "RtxICE-Net", 4, {},
                                optimizer={}, scheduler={}, scaler={}, ema_steps_offset=0, best={},
                                nonfinite_total=0, nonfinite_streak=0, rng={}, trainer={}, amp="off")
    runs = {"stage1": study.StudyRun("c.yaml", "s1"), "stage2": study.StudyRun("c.yaml", "s2")}
    save_training_state(state, runs["stage1"].folder(tmp_path) / "checkpoints", keep_iter=False)
    (tmp_path / "s1" / "results").mkdir(parents=True)
    (tmp_path / "s1" / "results" / "summary.json").write_text("{}")  # stage 1 finished
    started = []
    monkeypatch.setattr(mod, "run_training", lambda run, root: started.append(run.name) or 0.0)
    mod.execute(runs, tmp_path)
    assert started == ["s2"]
    for f in (tmp_path / "s1" / "checkpoints").glob("net_*.pth"):
        f.unlink()  # stage 1's own files may go; the copy has its own
    back = read_training_checkpoint(tmp_path / "s2" / "checkpoints" / "last.pth")
    assert all(torch.equal(back["networks"]["asm"][k], v) for k, v in nets["asm"].state_dict().items())
