"""Helpers of the real-photograph studies (``scripts/ssll_study.py``, ``scripts/iceml_study.py``).

A study is a grid of ordinary ``run.py`` trainings. Each run is a subprocess with its own run
folder, so a study stopped at any point continues where it stopped: finished runs (with a
``results/summary.json``) are kept, an interrupted run resumes from its ``last.pth``. The
report is rebuilt from the run folders alone, so it can be regenerated at any time.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.paths import REPO_ROOT


@dataclass
class StudyRun:
    """One training of a study: its config, run name and overrides."""

    config: str
    name: str
    overrides: tuple[str, ...] = ()
    start_from: Path | None = None  # a checkpoint to resume from when the run has none of its own (SSLL
                                    # arms resume their baseline's checkpoint at the semi-phase start)

    def folder(self, root: Path) -> Path:
        return root / self.name

    def summary(self, root: Path) -> dict[str, Any] | None:
        path = self.folder(root) / "results" / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def wall_seconds(self, root: Path) -> float | None:
        path = self.folder(root) / "wall.json"
        return json.loads(path.read_text())["seconds"] if path.is_file() else None


def add_output_arguments(parser: Any, study: str, committed: str, tag: str | None = "cpu",
                         runs: bool = True) -> None:
    """``--tag`` (unless ``tag`` is None), ``--runs`` (if ``runs``), ``--out`` and ``--publish`` of a study script.

    A study run as documented writes its run folders to ``experiments/<study>/`` and its report to
    ``experiments/<study>/report_<tag>/`` (without run folders: ``experiments/<study>/``); only
    ``--publish`` writes the committed report ``docs/studies/<committed>_<tag>/``. An explicit
    ``--out`` wins over both. Use with :func:`report_folder` and :class:`common_utils.cli.HelpFormatter`.
    """
    if tag is not None:
        parser.add_argument("--tag", default=tag, help="names the runs and the report (cpu, gpu, ...)")
    parser.set_defaults(study_name=study)
    if runs:
        parser.add_argument("--runs", default=None, help=f"folder of the run folders (None: experiments/{study} in "
                            "the repository)")
    mine = f"experiments/{study}/report_<tag>" if tag is not None else f"experiments/{study}"
    where = f"docs/studies/{committed}_<tag>" if tag is not None else f"docs/studies/{committed}"
    parser.add_argument("--out", default=None, help=f"report folder (None: {mine}; with --publish: the committed "
                        f"{where})")
    parser.add_argument("--publish", action="store_true", help=f"write the report to the committed {where}; "
                        "without it nothing under docs/ is written")


def runs_folder(args: Any) -> Path:
    """``--runs`` as a folder (a path given on the command line is read from the current directory)."""
    return Path(args.runs).expanduser().resolve() if args.runs else REPO_ROOT / "experiments" / args.study_name


def report_folder(args: Any, study: str, committed: str) -> Path:
    """The report folder :func:`add_output_arguments` describes."""
    tag = getattr(args, "tag", None)
    if args.out:
        return Path(args.out).expanduser().resolve()
    if args.publish:
        return REPO_ROOT / "docs" / "studies" / (f"{committed}_{tag}" if tag is not None else committed)
    base = runs_folder(args) if hasattr(args, "runs") else REPO_ROOT / "experiments" / study
    return base / f"report_{tag}" if tag is not None else base


POLL_SECONDS = 5.0


def run_training(run: StudyRun, root: Path, log_to: Path | None = None, until: Path | None = None) -> float:
    """Train ``run`` (resuming an interrupted one); return the wall time spent in this call.

    With ``until``, the training is stopped (SIGTERM, which writes its final checkpoint) as soon as that
    file exists: a finished run whose folder is gone is retrained only as far as another run needs it
    (an SSLL arm needs its baseline's iteration-500 checkpoint, not the baseline's 2000 iterations).
    The wall time of every call adds up in ``<run folder>/wall.json``.
    """
    folder = run.folder(root)
    last = folder / "checkpoints" / "last.pth"
    cmd = [sys.executable, str(REPO_ROOT / "run.py"), "-c", run.config, f"name={run.name}",
           f"output_root={root}", *run.overrides]
    if last.is_file():
        cmd += ["--resume", str(last)]
    elif run.start_from is not None:
        if not Path(run.start_from).is_file():
            raise RuntimeError(f"run {run.name} starts from {run.start_from}, which does not exist yet")
        # a branch from another run's checkpoint changes its config on purpose (an arm's loss weights,
        # the SSLL phase): that is what the run is, so the resume check is told so
        cmd += ["--resume", str(run.start_from), "--allow-config-change"]
    t0 = time.time()
    with open(log_to or folder.with_suffix(".out"), "a") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        while until is not None and proc.poll() is None and not Path(until).is_file():
            time.sleep(POLL_SECONDS)
        if until is not None and proc.poll() is None:  # checkpoints are written atomically: there means complete
            proc.terminate()
        code = proc.wait()
    spent = time.time() - t0
    if until is not None and Path(until).is_file():
        code = 0  # stopped on purpose once the needed checkpoint exists
    if code != 0:
        raise RuntimeError(f"run {run.name} failed with exit code {code}: {' '.join(cmd)}")
    wall = folder / "wall.json"
    before = json.loads(wall.read_text())["seconds"] if wall.is_file() else 0.0
    wall.write_text(json.dumps({"seconds": before + spent, "command": " ".join(cmd[1:])}))
    return spent


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def pm(values: Sequence[float | None], digits: int = 2) -> str:
    """``mean ± std`` of ``values`` for a table."""
    m, s = mean_std(values)
    if m is None:
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")
