"""The training loop: one optimizer step per iteration, with AMP, gradient clipping, the
non-finite guard, EMA, logging, validation and checkpoints on schedule, and stop signals.

``SIGTERM`` (what a cluster scheduler sends before it kills a job) and a first ``Ctrl-C`` finish
the current iteration (a validation in progress ends before its next image and is run again on
resume), write ``last.pth`` and stop with exit code 143 / 130; ``--resume`` then continues the
same run.

A non-finite loss (on any rank) skips the optimizer step but not the iteration: the weights,
optimizer state and teachers stay as they were, while the iteration count and the learning-rate
schedule advance, so logging, validation and checkpoints keep their schedule.
``train.max_nonfinite`` such steps in a row stop the run.
"""
from __future__ import annotations

import importlib.util
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from core.runtime import capture_rng_state, restore_rng_state
from core.signals import StopSignals
from core.validation import ValidationInterrupted
from foundation.errors import UserError


class TrainingStopped(UserError):
    """Training stopped on purpose (e.g. too many non-finite losses in a row)."""


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT: the last checkpoint was written; the run can be resumed."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped after writing {checkpoint}; continue with --resume {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class TrainingLoop:
    """The loop of :class:`core.trainer.BaseTrainer` (mixed into it; uses its parts and step hooks)."""

    def train(self) -> None:
        """Run from the current iteration to the end, validating and checkpointing on schedule."""
        t = self.cfg.train
        val_every = t.val_every or (t.val_every_epochs * self.iters_per_epoch if t.val_every_epochs else None)
        save_every = t.save_every or val_every or self.iters_per_epoch
        self.start_streams()
        start = self.iter
        for net in self.networks.values():
            net.train()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        tic = time.time()
        bar = tqdm(total=self.total_iters, initial=self.iter, disable=None if self.is_main else True,
                   desc=self.cfg.name, dynamic_ncols=True, leave=False)
        with StopSignals() as stop:
            if self.validation_pending and self.validator:  # resumed from a stop during this iteration's validation
                self._validate_unless_stopped(stop)
                self._checkpoint_or_stop(stop, bar, scheduled=True)  # last.pth as the uninterrupted run wrote it
            while self.iter < self.total_iters:
                terms = self._one_iteration(t.grad_clip)
                if terms is not None:
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0) + v.detach().float()
                    count += 1
                bar.update(1)
                if self.iter % t.log_every == 0 or self.iter == self.total_iters:
                    values = {k: float(v) / max(count, 1) for k, v in sums.items()}
                    self._log_train(values, count / max(time.time() - tic, 1e-9), bar)
                    sums, count, tic = {}, 0, time.time()
                if val_every and (self.iter % val_every == 0 or self.iter == self.total_iters) and self.validator:
                    self._validate_unless_stopped(stop)
                self._checkpoint_or_stop(stop, bar, scheduled=self.iter % save_every == 0
                                         or self.iter == self.total_iters)
        bar.close()
        if self.iter == start:
            # nothing left to train (a resume at the run's last iteration, maybe into a new folder):
            # this folder still gets the last.pth that its evaluation and a later --resume read
            self.save_checkpoint("last")
        self.log.info(f"training finished at iteration {self.iter}")
        self.write_curves()

    def write_curves(self) -> None:
        """``results/curves.png``: loss terms and validation metrics over the whole run (resumes included)."""
        if not self.is_main:
            return
        from common_utils.visual import plot_curves
        from core.logger import read_scalars

        curves = read_scalars(self.run_folder.logs / "scalars.jsonl")
        path = plot_curves(curves, self.exp_dir / "results" / "curves.png", title=self.cfg.name)
        if path:
            self.log.info(f"curves written to {path}")
        elif importlib.util.find_spec("matplotlib") is None:
            self.log.info("matplotlib is not installed: no curves.png (the values are in logs/scalars.jsonl)")
        else:
            self.log.info("no loss or validation values in logs/scalars.jsonl of this run folder yet: no curves.png")

    def _validate_unless_stopped(self, stop: StopSignals) -> None:
        """Validate; a stop signal ends it before the next image and leaves ``validation_pending`` set.

        The RNG state is put back as it was before the validation, so that the resumed run, which
        validates this iteration again, continues as if nothing had happened.
        """
        rng = capture_rng_state()
        try:
            self.validate(should_stop=lambda: stop.received is not None)
        except ValidationInterrupted:
            restore_rng_state(rng)
            self.validation_pending = True
        else:
            self.validation_pending = False

    def _checkpoint_or_stop(self, stop: StopSignals, bar: Any, scheduled: bool) -> None:
        """Write ``last.pth`` when it is due or a stop signal arrived; after a signal, stop the run.

        A stop at the last iteration stops too (the final evaluation does not start): training is
        complete in ``last.pth``, and ``--resume`` runs what is left (a pending validation, the
        evaluation).
        """
        stopping = self._stop_requested(stop)
        if scheduled or stopping:
            self.save_checkpoint("last", extra={"validation_pending": True} if self.validation_pending else None)
        if stopping:
            bar.close()
            signum = stop.received or signal.SIGTERM
            where = " during validation" if self.validation_pending else ""
            self.log.info(f"{signal.Signals(signum).name} received at iteration {self.iter}{where}: "
                          f"checkpoint written")
            raise TrainingInterrupted(signum, self.ckpt_dir / "last.pth")

    def _stop_requested(self, stop: StopSignals) -> bool:
        """Whether a stop signal arrived (on any rank: the ranks stop at the same iteration)."""
        flag = stop.received is not None
        if self.dist.enabled:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    def _one_iteration(self, grad_clip: float | None) -> dict[str, torch.Tensor] | None:
        """One optimizer step (or a skipped one); returns the loss terms of a taken step."""
        batch = self.next_batches()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            terms = self._run_step(batch)
        total = sum(v.detach().float() for v in terms.values())
        if not self._all_finite(total):
            # the step is skipped (weights, optimizer and teacher untouched) but the iteration
            # counts, so logging, validation and checkpoints keep their schedule (and a run
            # whose last step is skipped still writes last.pth at the final iteration)
            self._skip_nonfinite(terms)
            self.iter += 1
            self.scheduler.step()
            return None
        self.nonfinite_streak = 0
        self.scaler.unscale_(self.optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), grad_clip)
        try:
            self.scaler.step(self.optimizer)
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            raise TrainingStopped(f"the optimizer step overflowed at iteration {self.iter + 1} with optim.lr="
                                  f"{self.cfg.optim.lr:g}; lower optim.lr") from None
        self.scaler.update()
        self.scheduler.step()
        self.iter += 1
        self.update_teachers()
        return terms

    def _run_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        try:
            return self.train_step(batch)
        except RuntimeError as exc:
            if self.dist.enabled and "find_unused_parameters" in str(exc):
                raise UserError("under DDP a trained network has parameters that get no gradient; set "
                                "train.find_unused_parameters=true (or list them in the network's "
                                "unused_parameters)") from None
            raise

    def _all_finite(self, total: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (one rank's NaN poisons the all-reduced gradients,
        so under DDP all ranks skip the step together)."""
        finite = torch.isfinite(total).reshape(1).to(torch.float32)
        if self.dist.enabled:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _log_train(self, values: dict[str, float], rate: float, bar: Any = None) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        self.log.info(f"iter {self.iter}/{self.total_iters} epoch {self.epoch_of(self.iter)} lr {lr:.3e} {text} "
                      f"({rate:.2f} it/s)")
        if bar is not None:
            bar.set_postfix_str(" ".join(f"{k}={v:.3f}" for k, v in values.items()), refresh=False)
        self.log.scalars({**values, "lr": lr}, self.iter, prefix="train/")

    def _skip_nonfinite(self, terms: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.update(self.scaler.get_scale() / 2)
        self.nonfinite_total += 1
        self.nonfinite_streak += 1
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        if all(bool(torch.isfinite(v.detach()).all()) for v in terms.values()):
            shown += "; non-finite on another rank"
        self.log.info(f"iteration {self.iter + 1}: non-finite loss ({shown}); step skipped "
                      f"({self.nonfinite_streak} in a row, {self.nonfinite_total} in total)")
        if self.nonfinite_streak >= self.cfg.train.max_nonfinite:
            last = self.ckpt_dir / "last.pth"
            raise TrainingStopped(
                f"stopped at iteration {self.iter + 1}: {self.nonfinite_streak} non-finite losses in a row "
                f"({shown}); last good checkpoint: {last if last.exists() else 'none yet'}")

