"""The three entry points' --help: plain text (no reStructuredText markup), the program's own name in
the usage lines, and no short option that means one thing in one CLI and another in the next."""
from __future__ import annotations

import argparse

import pytest

import run
from common_utils.cli import help_text
from common_utils.evaluation import eval as eval_cli
from common_utils.evaluation import eval_with_any_backbone


def _help(main, prog: str, capsys) -> str:
    import sys

    old = sys.argv[0]
    sys.argv[0] = prog  # as the installed ssir-* script would run
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
    finally:
        sys.argv[0] = old
    return capsys.readouterr().out


@pytest.mark.parametrize("main,prog", [(run.main, "ssir-train"), (eval_cli.main, "ssir-eval"),
                                       (eval_with_any_backbone.main, "ssir-enhance")])
def test_help_is_plain_text_with_the_programs_name(main, prog, capsys):
    text = _help(main, prog, capsys)
    assert "``" not in text and ":func:" not in text and ":class:" not in text
    assert "python common_utils" not in text and "python run.py" not in text
    assert f"\n    {prog} -" in text  # the usage examples keep their lines and name the program


def test_short_options_mean_one_thing():
    seen: dict[str, str] = {}
    for build in (eval_cli.build_parser, eval_with_any_backbone.build_parser):
        for action in build()._actions:
            for opt in action.option_strings:
                if len(opt) == 2 and opt != "-h":
                    meaning = {"out": "output"}.get(action.dest, action.dest)  # -o: the output folder in both
                    assert seen.setdefault(opt, meaning) == meaning, opt


def test_help_text_strips_markup_only():
    doc = "Use ``--x`` and :func:`a.b` here::\n\n    python s.py -n 1 (100%)\n"
    out = help_text(doc, "s.py")
    assert out == "Use --x and a.b here:\n\n    %(prog)s -n 1 (100%%)\n"
    assert argparse.ArgumentParser(prog="p", description=out).format_help().count("p -n 1 (100%)") == 1


def test_worker_defaults_stay_within_the_cores(monkeypatch):
    import common_utils.cli as cli

    monkeypatch.setattr(cli, "usable_cores", lambda: 2)
    assert cli.default_workers() == 1  # the evaluation CLIs on a 2-core machine: no torch warning
    assert cli.capped_workers(4) == 2  # a paper config's data.num_workers: 4 on a 2-core machine
    assert cli.capped_workers(0) == 0 and cli.capped_workers(1) == 1


def test_every_inference_cli_takes_the_one_threads_rule():
    import importlib.util
    from pathlib import Path

    from common_utils import dehaze_tools

    spec = importlib.util.spec_from_file_location("reproduce_tables", Path(run.__file__).parent /
                                                  "scripts/reproduce_tables.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    builders = [eval_cli.build_parser, eval_with_any_backbone.build_parser, reproduce.build_parser,
                *(lambda job=job: dehaze_tools.build_parser(job) for job in dehaze_tools.JOBS.values())]
    for build in builders:
        threads = [a for a in build()._actions if "--threads" in a.option_strings]
        assert threads and threads[0].default == "auto", build
