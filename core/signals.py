"""Stopping a run on SIGTERM / SIGINT (a scheduler's stop, ``timeout``, ``torchrun``, Ctrl-C).

A first SIGTERM or Ctrl-C ends the run with ``last.pth`` written and the ``--resume`` line printed:

* **training**: the current iteration finishes, ``last.pth`` is written, exit 143 / 130;
* **validation**: it ends before its next image (the loop asks ``received`` per image, and under
  DDP the ranks agree in the all-reduce of the scores, so no rank leaves a collective early),
  then as in training; ``last.pth`` marks the validation pending and ``--resume`` runs it first;
* **final evaluation**: it stops at once; training is complete in ``last.pth``, and ``--resume``
  with it only runs the evaluation again.

Loader workers ignore both signals (:func:`data.loaders._worker_init`): a signal sent to the whole
process group reaches them too, and a worker that died of it used to take the main process down
before it could write anything. A second Ctrl-C interrupts at once, without a checkpoint.
"""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopNow(Exception):
    """Raised by the signal handler inside an interruptible section (validation, evaluation)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Within the training loop, a first SIGTERM/SIGINT asks the loop to stop after the current
    iteration (``received``); inside :meth:`interruptible` it raises :class:`StopNow` at once.
    A second SIGINT raises KeyboardInterrupt wherever the run is."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._raise_now = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if self._raise_now:
            self._raise_now = False
            raise StopNow(signum)

    @contextlib.contextmanager
    def interruptible(self, enabled: bool = True) -> Iterator[None]:
        """A section that a first signal ends at once (its caller catches :class:`StopNow`)."""
        if not enabled or self.received is not None:
            yield
            return
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False

    def __enter__(self) -> StopSignals:
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they are
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class EvaluationInterrupted(Exception):
    """SIGTERM / SIGINT during the final evaluation: training is complete in ``checkpoint``."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"{signal.Signals(signum).name} received during the final evaluation: training is complete "
                         f"in {checkpoint}; evaluate it with --resume {checkpoint} (nothing is left to train)")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_evaluation_on_signals(checkpoint: Path) -> Iterator[None]:
    """The final evaluation: a first SIGTERM/SIGINT ends it at once with :class:`EvaluationInterrupted`."""
    with StopSignals() as stop, stop.interruptible():
        try:
            yield
        except StopNow as now:
            raise EvaluationInterrupted(now.signum, checkpoint) from None
