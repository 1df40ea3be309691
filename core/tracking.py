"""Experiment tracking beyond TensorBoard: MLflow and Weights & Biases sinks, chosen in ``logging:``.

A sink receives what the run logs, through :class:`core.logger.ExperimentLogger`: every scalar of
``logs/scalars.jsonl`` (same tags, same steps), the validation sample grids, the resolved config
at the start and ``results/summary.json`` at the end. Both packages are optional: a config that
enables one that is not installed is refused when it is loaded (:func:`check_tracking_config`).

- **MLflow** (``logging.mlflow``): by default a local store beside the run folders,
  ``<output_root>/mlruns/mlflow.db`` (SQLite; MLflow 3 refuses its old ``file:`` store unless
  ``MLFLOW_ALLOW_FILE_STORE=true``), artifacts in ``<output_root>/mlruns/artifacts/``;
  ``mlflow ui --backend-store-uri sqlite:///experiments/mlruns/mlflow.db`` shows the runs. Any
  other ``tracking_uri`` (a server, ``sqlite:///other.db``, ``file:...``) is passed on, relative
  paths anchored at the repository root like every path in a config.
- **Weights & Biases** (``logging.wandb``): ``mode: offline`` (the default) needs no account and
  no network; the run is written under ``<run>/logs/wandb/`` and ``wandb sync`` uploads it later.

A resumed run continues the *same* tracked run: the ids are kept in ``logs/tracking.json`` in the
run folder and reused by ``--resume`` (a new run archives the folder and so starts a new tracked
run). Only rank 0 logs.
"""
from __future__ import annotations

import importlib.util
import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from data.paths import resolve_path
from foundation.errors import UserError

#: where a run folder keeps the ids of its tracked runs
TRACKING_FILE = "tracking.json"

#: config section -> the package it needs
_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def check_tracking_config(logging_cfg: Mapping[str, Any]) -> str | None:
    """Why the ``logging`` section cannot run here (an enabled sink whose package is missing), or None."""
    for section, package in _PACKAGES.items():
        if logging_cfg[section]["enabled"] and importlib.util.find_spec(package) is None:
            return (f"config key 'logging.{section}.enabled' is true but {package} is not installed; "
                    f"pip install {package}, or set logging.{section}.enabled=false")
    return None


def run_status(finished: bool) -> str:
    """The end state of a run for the trackers: FINISHED, KILLED (a stop signal, Ctrl-C) or FAILED.

    Called while the trainer closes (in a ``finally``), where ``sys.exc_info`` is the exception
    that ends the run, if any."""
    exc = sys.exc_info()[1]
    if exc is not None:
        return "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
    return "FINISHED" if finished else "KILLED"


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + sep, sep))
        else:
            out[key] = v
    return out


def numeric_leaves(summary: Mapping[str, Any]) -> dict[str, float]:
    """The scores of a ``summary.json`` as ``final/<dataset>/<metric>`` scalars (not its ``_protocol``)."""
    scores = {k: v for k, v in summary.items() if not k.startswith("_")}
    return {f"final/{k}": float(v) for k, v in flatten(scores, sep="/").items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrackingSink:
    """What a tracker receives; one subclass per tracker."""

    name = "sink"

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        raise NotImplementedError

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What ``tracking.json`` keeps to continue this tracked run after ``--resume``."""
        raise NotImplementedError


def _local_path_uri(uri: str) -> str:
    """``uri`` with a relative local path anchored at the repository root (servers are left alone)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") else "sqlite:///" + resolve_path(path)
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        return uri if path.startswith("//") else "file:" + resolve_path(path)
    if "://" not in uri:  # a bare folder: MLflow's file store
        return "file:" + resolve_path(uri)
    return uri


class MlflowSink(TrackingSink):
    """One MLflow run per run folder: metrics, the config (params and ``config.yaml``), sample
    images, the summary (``summary.json`` and ``final/...`` metrics)."""

    name = "mlflow"

    def __init__(self, settings: Mapping[str, Any], run_name: str, config: Mapping[str, Any], config_text: str,
                 output_root: Path, previous: Mapping[str, Any] | None, log: Callable[[str], None]) -> None:
        from mlflow.tracking import MlflowClient

        default_dir = output_root / "mlruns"
        uri = settings["tracking_uri"]
        if uri is None:
            default_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{default_dir / 'mlflow.db'}"
        self.uri = _local_path_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = settings["experiment"] or run_name
        run_id = previous.get("run_id") if previous and previous.get("tracking_uri") == self.uri else None
        if run_id is not None and self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            log(f"mlflow: continuing run {run_id} in {self.uri}")
        else:
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                artifacts = (default_dir / "artifacts" / experiment).as_uri() if settings["tracking_uri"] is None \
                    else None
                experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            self._log_params(run_id, config)
            log(f"mlflow: run {run_id} in experiment '{experiment}' of {self.uri}")
        self.run_id = run_id
        self.client.log_text(run_id, config_text, "config.yaml")  # the latest resolved config

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _log_params(self, run_id: str, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=params[i:i + 100])

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in values.items()])

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, np.ascontiguousarray(rgb), key=tag.replace("/", "_"), step=int(step))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.client.log_dict(self.run_id, dict(summary), "summary.json")
        self.log_scalars(numeric_leaves(summary), 0)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class WandbSink(TrackingSink):
    """One W&B run per run folder (offline by default): history, config, images, summary."""

    name = "wandb"

    def __init__(self, settings: Mapping[str, Any], run_name: str, config: Mapping[str, Any], log_dir: Path,
                 previous: Mapping[str, Any] | None, log: Callable[[str], None]) -> None:
        import wandb

        self._wandb = wandb
        self.id = previous.get("id") if previous else None
        resumed = self.id is not None
        self.id = self.id or secrets.token_hex(4)
        directory = Path(resolve_path(settings["dir"])) if settings["dir"] else log_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=settings["project"] or run_name, entity=settings["entity"], name=run_name,
                              id=self.id, resume="allow", mode=settings["mode"], dir=str(directory),
                              config=dict(config), settings=wandb.Settings(console="off", silent=True))
        if resumed:
            self.run.config.update(dict(config), allow_val_change=True)
        log(f"wandb: {'continuing' if resumed else 'started'} run {self.id} ({settings['mode']}) in {directory}")

    def state(self) -> dict[str, Any]:
        return {"id": self.id}

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=int(step))

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        self.run.log({tag: self._wandb.Image(np.ascontiguousarray(rgb))}, step=int(step))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(numeric_leaves(summary))

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def open_sinks(logging_cfg: Mapping[str, Any], log_dir: Path, run_name: str, config_text: str,
               log: Callable[[str], None]) -> list[TrackingSink]:
    """Start (or, with the ids in ``log_dir/tracking.json``, continue) the enabled trackers.

    ``log_dir`` is the run folder's ``logs/``; the MLflow store defaults to ``<output_root>/mlruns``;
    ``config_text`` is the resolved config as written to the run's ``config.yaml``.
    """
    config = yaml.safe_load(config_text) or {}
    state_path = log_dir / TRACKING_FILE
    previous: dict[str, Any] = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    starters: dict[str, Callable[[], TrackingSink]] = {
        "mlflow": lambda: MlflowSink(logging_cfg["mlflow"], run_name, config, config_text, log_dir.parent.parent,
                                     previous.get("mlflow"), log),
        "wandb": lambda: WandbSink(logging_cfg["wandb"], run_name, config, log_dir, previous.get("wandb"), log),
    }
    sinks: list[TrackingSink] = []
    for name, start in starters.items():
        if not logging_cfg[name]["enabled"]:
            continue
        try:
            sinks.append(start())
        except Exception as exc:  # the tracker's own errors (store, server, account) vary; name the section
            for sink in sinks:
                sink.close("FAILED")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"logging.{name}: the tracked run could not start ({type(exc).__name__}: {first}); "
                            f"fix the logging.{name} keys or set logging.{name}.enabled=false") from None
    if sinks:
        from core.run_folder import write_text_atomic

        state = {**previous, **{s.name: s.state() for s in sinks}}
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
    return sinks
