"""Running a study as documented never writes under docs/: the report goes beside the run folders in
experiments/, the committed report only with --publish; --help shows the defaults (seeds, folders)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from common_utils.cli import HelpFormatter
from common_utils.study import add_output_arguments, report_folder, runs_folder
from data.paths import REPO_ROOT

SCRIPTS = ("ssll_study", "iceml_study", "iceml_arms_study", "iceml_objective")


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_output_arguments(p, "demo_study", "demo", **kw)
    return p


def test_default_report_is_under_experiments_and_publish_is_explicit(tmp_path):
    args = _parser().parse_args([])
    assert runs_folder(args) == REPO_ROOT / "experiments" / "demo_study"
    assert report_folder(args, "demo_study", "demo") == REPO_ROOT / "experiments" / "demo_study" / "report_cpu"
    args = _parser().parse_args(["--tag", "gpu", "--runs", str(tmp_path)])
    assert report_folder(args, "demo_study", "demo") == tmp_path / "report_gpu"
    args = _parser().parse_args(["--publish"])
    assert report_folder(args, "demo_study", "demo") == REPO_ROOT / "docs" / "studies" / "demo_cpu"
    args = _parser().parse_args(["--publish", "--out", str(tmp_path / "mine")])
    assert report_folder(args, "demo_study", "demo") == tmp_path / "mine"
    args = _parser(tag=None, runs=False).parse_args([])
    assert report_folder(args, "demo_study", "demo") == REPO_ROOT / "experiments" / "demo_study"


@pytest.mark.parametrize("name", SCRIPTS)
def test_study_help_shows_defaults_and_writes_no_committed_report_by_default(name, capsys):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--publish" in text and "None: experiments/" in text
    if name != "iceml_objective":
        assert "(default: [0, 1, 2])" in text  # the seeds
        assert "(default: cpu)" in text  # the tag


def test_no_study_script_defaults_to_docs():
    for name in SCRIPTS:
        source = Path(REPO_ROOT / "scripts" / f"{name}.py").read_text()
        assert '"docs" / "studies"' not in source, name
