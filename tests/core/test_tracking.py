"""Experiment trackers (core/tracking.py): what reaches MLflow and W&B, and that ``--resume`` continues
the same tracked run. Each tracker's test runs only where its package is installed."""
from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from core import TRAINERS
from core.config import ConfigError, load_config
from core.final_evaluation import final_evaluation
from core.logger import ExperimentLogger, read_scalars
from foundation.errors import UserError
from tests.helpers import tiny_config, write_yaml

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed (optional: pip install mlflow)")
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb is not installed (optional: pip install wandb)")


def _config(tmp_path: Path, tracker: str) -> Path:
    cfg = tiny_config(tmp_path, name=f"tracked_{tracker}", iters=2, eval_datasets=True)
    cfg["train"].update(val_every=2, sample_images=1)
    cfg["eval"]["lpips"] = False
    cfg["logging"] = {tracker: {"enabled": True}}
    return write_yaml(tmp_path / f"{tracker}.yaml", cfg)


def _run(path: Path, overrides: list[str], resume: Path | None = None) -> None:
    """Train, evaluate and close, as run.py does."""
    trainer = TRAINERS.get("supervised")(load_config(path, overrides), resume=str(resume) if resume else None)
    try:
        trainer.train()
        final_evaluation(trainer)
    finally:
        trainer.close()
        trainer.paired_stream = None


def _run_and_resume(tmp_path: Path, tracker: str) -> Path:
    """A 2-iteration run, then ``--resume`` of its last.pth to 4 iterations; returns the run folder."""
    path = _config(tmp_path, tracker)
    exp = tmp_path / "experiments" / f"tracked_{tracker}"
    _run(path, [])
    first = json.loads((exp / "logs" / "tracking.json").read_text())[tracker]
    _run(path, ["train.iters=4"], resume=exp / "checkpoints" / "last.pth")
    assert json.loads((exp / "logs" / "tracking.json").read_text())[tracker] == first  # the same tracked run
    return exp


def _expected_scalars(exp: Path) -> dict[tuple[str, int], float]:
    return {(tag, step): v for tag, pts in read_scalars(exp / "logs" / "scalars.jsonl").items() for step, v in pts}


@needs_mlflow
def test_mlflow_gets_scalars_config_images_summary_and_resume_continues_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    exp = _run_and_resume(tmp_path, "mlflow")
    state = json.loads((exp / "logs" / "tracking.json").read_text())["mlflow"]
    # the default store: SQLite beside the run folders
    assert state["tracking_uri"] == f"sqlite:///{tmp_path / 'experiments' / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    experiment = client.get_experiment_by_name("tracked_mlflow")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [state["run_id"]]  # the resume added no second run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["network.name"] == "UNet" and run.data.params["data.batch_size"] == "2"
    # every scalar of scalars.jsonl, at its step, from both segments of the run
    expected = _expected_scalars(exp)
    got = {(m.key, m.step): m.value for key in {k for k, _ in expected}
           for m in client.get_metric_history(run.info.run_id, key)}
    assert {s for _, s in expected} == {2, 4}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "images"} <= artifacts
    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert config["train"]["iters"] == 4  # the resolved config of the latest segment
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("step+2+" in p for p in images) and any("step+4+" in p for p in images)
    summary = json.loads((exp / "results" / "summary.json").read_text())
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert logged == summary
    assert run.data.metrics["final/tiny_test/psnr"] == pytest.approx(summary["tiny_test"]["psnr"])


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file (W&B's offline log: 7-byte header, then 32 KiB blocks of
    records, each a 7-byte header (crc, length, type) and a piece of a protobuf ``Record``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


@needs_wandb
def test_wandb_offline_gets_scalars_config_images_summary_and_resume_keeps_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    exp = _run_and_resume(tmp_path, "wandb")
    run_id = json.loads((exp / "logs" / "tracking.json").read_text())["wandb"]["id"]
    segments = sorted((exp / "logs" / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in segments] == [run_id, run_id]  # both segments: one run id
    history: dict[tuple[str, int], float] = {}
    config: dict[str, str] = {}
    summary_keys: dict[str, float] = {}
    runs = []
    for seg in segments:
        for record in _wandb_records(seg / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run.run_id)
            elif kind == "history":
                items = {_item_key(i): i.value_json for i in record.history.item}
                step = int(items.pop("_step"))
                for k, v in items.items():
                    if "/" in k and "." not in k:  # a scalar (images are nested dicts)
                        history[(k, step)] = float(v)
            elif kind == "config":
                config.update({_item_key(i): i.value_json for i in record.config.update})
            elif kind == "summary":
                summary_keys.update({_item_key(i): json.loads(i.value_json) for i in record.summary.update
                                     if _item_key(i).startswith("final/")})
    assert set(runs) == {run_id}
    expected = _expected_scalars(exp)
    assert {s for _, s in expected} == {2, 4}
    for key, value in expected.items():
        assert history[key] == pytest.approx(value, rel=1e-6), key
    assert json.loads(config["network"])["name"] == "UNet"
    assert json.loads(config["train"])["iters"] == 4  # the resumed segment's config came last
    summary = json.loads((exp / "results" / "summary.json").read_text())
    assert summary_keys["final/tiny_test/psnr"] == pytest.approx(summary["tiny_test"]["psnr"])
    assert all(math.isfinite(v) for v in summary_keys.values())
    images = [p.name for seg in segments for p in (seg / "files" / "media" / "images" / "val").glob("*.png")]
    assert any(n.startswith("samples_2_") for n in images) and any(n.startswith("samples_4_") for n in images)


def test_an_enabled_tracker_that_is_not_installed_is_a_config_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    path = write_yaml(tmp_path / "t.yaml", {**tiny_config(tmp_path), "logging": {"mlflow": {"enabled": True}}})
    with pytest.raises(ConfigError, match=r"logging\.mlflow\.enabled.*mlflow is not installed"):
        load_config(path)
    assert not (tmp_path / "experiments").exists()


class _Recorder:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.calls, self.closed = name, fail, [], None

    def log_scalars(self, values, step):
        if self.fail:
            raise ConnectionError("server gone")
        self.calls.append((dict(values), step))

    def log_image(self, tag, rgb, step):
        self.calls.append((tag, step))

    def log_summary(self, summary):
        self.calls.append(summary)

    def close(self, status):
        self.closed = status


def test_a_failing_tracker_is_dropped_with_a_warning_and_the_others_go_on(tmp_path):
    log = ExperimentLogger()
    log.attach(tmp_path / "logs", tensorboard=False)
    good, bad = _Recorder("good"), _Recorder("bad", fail=True)
    log.sinks = [bad, good]
    log.scalars({"l1": 0.5}, 3, prefix="train/")
    log.scalars({"l1": 0.25}, 4, prefix="train/")
    assert log.image("val/samples", np.zeros((4, 4, 3), np.uint8), 4)
    log.close(finished=True)
    assert good.calls == [({"train/l1": 0.5}, 3), ({"train/l1": 0.25}, 4), ("val/samples", 4)]
    assert good.closed == "FINISHED" and bad.closed is None
    text = (tmp_path / "logs" / "train.log").read_text()
    assert text.count("WARNING: bad tracking failed (ConnectionError: server gone)") == 1


@needs_mlflow
def test_a_tracker_that_cannot_start_is_one_error_naming_its_section(tmp_path):
    from core.tracking import open_sinks

    settings = {"mlflow": {"enabled": True, "tracking_uri": "nosuchscheme://host/x", "experiment": None},
                "wandb": {"enabled": False}}
    (tmp_path / "run" / "logs").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^logging\.mlflow: the tracked run could not start .*logging\.mlflow"):
        open_sinks(settings, tmp_path / "run" / "logs", "run", "a: 1\n", print)
    assert not (tmp_path / "run" / "logs" / "tracking.json").exists()
