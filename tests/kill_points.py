"""Crash injection for the resume tests: ``run.py`` whose process SIGKILLs itself at a chosen point.

    python tests/kill_points.py <iteration>[:<phase>] -c CONFIG [run.py arguments ...]

:func:`install` patches the trainer classes (production code has no hook): at that point of that
iteration the process kills itself with SIGKILL, so no cleanup of any kind runs (as after a
power cut or an OOM kill). The phases:

- ``after`` (default): once the iteration's logging, validation and checkpoint are done;
- ``step``: after its backward pass, before the optimizer step;
- ``validation``: after its networks were scored, before any checkpoint is written;
- ``checkpoint``: while ``last.pth`` is being written (the new file is complete on disk but has
  not replaced the old one).

``tests/ddp_probe.py`` installs the same points from ``SSIR_KILL_AT_ITER`` under torchrun.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ("after", "step", "validation", "checkpoint")
ENV = "SSIR_KILL_AT_ITER"


def parse(spec: str) -> tuple[int, str]:
    """``"6"`` -> (6, "after"); ``"5:step"`` -> (5, "step")."""
    it, _, phase = spec.partition(":")
    phase = phase or "after"
    if not it.isdigit() or phase not in PHASES:
        raise SystemExit(f"kill point must be <iteration>[:{'|'.join(PHASES)}], got '{spec}'")
    return int(it), phase


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str) -> None:
    """Patch the trainer so the process SIGKILLs itself at ``spec`` (see the module docstring)."""
    import common_utils.checkpoint as checkpointing
    from core.loop import TrainingLoop
    from core.validation import Validator

    at, phase = parse(spec)
    if phase == "after":  # iteration ``at`` is complete when iteration ``at + 1`` begins
        one_iteration = TrainingLoop._one_iteration

        def killing_iteration(self, grad_clip):
            if self.iter == at:
                _kill()
            return one_iteration(self, grad_clip)

        TrainingLoop._one_iteration = killing_iteration
    elif phase == "step":  # the loss is computed and back-propagated; the optimizer has not stepped
        run_step = TrainingLoop._run_step

        def killing_step(self, batch):
            terms = run_step(self, batch)
            if self.iter + 1 == at:
                _kill()
            return terms

        TrainingLoop._run_step = killing_step
    elif phase == "validation":
        run = Validator.run

        def killing_validation(self, networks, step, **kwargs):
            out = run(self, networks, step, **kwargs)
            if step == at:
                _kill()
            return out

        Validator.run = killing_validation
    else:  # "checkpoint": the new last.pth is complete on disk, not yet renamed over the old one
        atomic_save = checkpointing.atomic_save

        def killing_save(obj, path, before_replace=None):
            crash = Path(path).name == "last.pth" and isinstance(obj, dict) and obj.get("iter") == at
            return atomic_save(obj, path, before_replace=_kill if crash else before_replace)

        checkpointing.atomic_save = killing_save


def main() -> int:
    install(sys.argv[1])
    import run

    return run.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
