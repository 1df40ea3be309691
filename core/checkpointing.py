"""A run's checkpoint files, and the trainer turned into a checkpoint and back.

The format (keys, version, file layout, how it is read back) is :mod:`common_utils.checkpoint`'s;
here the trainer fills it in and calls its writers. The files of ``<run>/checkpoints/`` (format
version 3), all written atomically by rank 0:

- ``net_<entry>_iter_<k>.pth``: the float32 weights of one network (``student``, ``teacher``,
  ``rtx``, ``asm``) at save ``k``, nothing else: what ``eval.py --weight`` takes, written first;
- ``last.pth``: the training state (optimizer, scheduler, AMP scaler, EMA step offset, RNG,
  iteration, config) WITHOUT network tensors: it names the weights files of its networks (names
  relative to its folder) and is written after them, so a kill between the two leaves the previous
  ``last.pth`` and its files; what ``--resume`` takes (also as the run folder or its
  ``checkpoints/``); each save also keeps it as ``iter_<k>.pth`` (a hard link) when
  ``train.keep_last`` > 1;
- ``best_<entry>.pth``: a hard link (else a copy) of that network's weights file at its own best
  validation; ``best.pth``: a small index naming every network's weights file at the overall best
  (``best_network`` naming the best); ``eval.py --weight`` and the final evaluation read it like any
  weights file;
- pruning (``train.keep_last`` = K): the newest K ``iter_<k>.pth`` states are kept, and every
  ``net_*_iter_*.pth`` that no remaining file names (``last.pth``, the kept states, ``best.pth``) is
  deleted; ``best_<entry>.pth`` keep their bytes through their own link.

Bytes per save, NAFNet of ``config/sup_nafnet.yaml`` (67,888,835 parameters, AdamW, EMA teacher),
measured with ``run.py -c config/local/sup_nafnet.yaml --no-eval train.iters=2 train.save_every=1
train.val_every=2 train.keep_last=3`` (a save at each iteration, a best at the second):

============================  ========================  ========================
file                          format 2                  format 3
============================  ========================  ========================
``last.pth`` / ``iter_<k>``   1,087,193,181 (networks   543,669,261 (Adam's two
                              and Adam's two moments)   moments, no network)
``net_<entry>_iter_<k>`` x2   2 x 271,761,231           2 x 271,761,295
**per save**                  **1,630,715,643**         **1,087,191,851**
``best.pth``                  543,519,655               4,397 (an index)
``best_<entry>.pth`` x2       2 x 271,761,295           0 (hard links)
folder after 2 saves          4,348,477,051             2,174,391,683
============================  ========================  ========================

A weights file is 4 bytes per parameter (271,555,340) plus ~0.2 MB of keys; the state is what an
exact resume needs beyond the networks (AdamW's moments: two more network sizes).

:class:`TrainerCheckpoints` is one of the three parts of :class:`core.trainer.BaseTrainer`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.distributed as dist

import common_utils.checkpoint as ckpt_format
from common_utils.checkpoint import CheckpointError, load_network_weights, training_checkpoint
from core.runtime import capture_rng_state, restore_rng_state


class CheckpointStore:
    """Writes the checkpoint files of one run folder (layout in the module docstring)."""

    def __init__(self, folder: str | os.PathLike, keep_last: int = 3) -> None:
        self.folder, self.keep_last = Path(folder), int(keep_last)
        #: weights files this process wrote at the current iteration (a best and the state of one
        #: iteration share them)
        self._written: dict[str, Path] = {}
        self._written_iter: int | None = None

    def path(self, tag: str) -> Path:
        return self.folder / f"{tag}.pth"

    def _fresh(self, iteration: int) -> dict[str, Path]:
        if self._written_iter != iteration:
            self._written, self._written_iter = {}, iteration
        return self._written

    def save_state(self, state: dict[str, Any]) -> Path:
        """Write the training ``state`` (networks in their weights files, then ``last.pth``), then prune."""
        last = ckpt_format.save_training_state(state, self.folder, self.keep_last > 1, self._fresh(int(state["iter"])))
        self.prune()
        return last

    def save_best(self, state: dict[str, Any], entry: str | None, **meta: Any) -> Path:
        """``best_<entry>.pth`` (entry given) or ``best.pth`` of the in-memory ``state``."""
        return ckpt_format.save_best(state, self.folder, entry, self._fresh(int(state["iter"])), **meta)

    def prune(self) -> list[Path]:
        """Keep the newest ``keep_last`` states and the weights files something kept names."""
        return ckpt_format.prune_checkpoints(self.folder, self.keep_last)


class TrainerCheckpoints:
    """The trainer's state as a checkpoint and back (mixed into :class:`core.trainer.BaseTrainer`)."""

    def extra_state(self) -> dict[str, Any]:
        """Trainer-specific state to checkpoint (override with :meth:`load_extra_state`)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (the base trainer saves nothing extra)."""

    def _all_networks(self) -> dict[str, Any]:
        return {**self.networks, **self.teachers}

    def network_specs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """entry -> (network, constructor arguments): what rebuilds each network from a checkpoint."""
        return {k: (self.network_of(k), self.network_args_of(k)) for k in self._all_networks()}

    def state_dict(self) -> dict[str, Any]:
        """The whole training state: resuming from it continues the same run."""
        return training_checkpoint(
            {k: v.state_dict() for k, v in self._all_networks().items()}, self.network_specs(),
            self.cfg.network.name, self.iter, self.cfg.to_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), ema_steps_offset=self.ema_steps_offset, best=self.best,
            nonfinite_total=self.nonfinite_total, nonfinite_streak=self.nonfinite_streak, rng=capture_rng_state(),
            trainer=self.extra_state(), amp=self.cfg.train.amp)

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the networks strictly, then optimizer, schedule, RNG...)."""
        source = "the resume checkpoint"
        for k, net in self._all_networks().items():
            if k not in ckpt["networks"]:
                raise CheckpointError(f"{source} has no weights for '{k}'")
            load_network_weights(net, ckpt["networks"][k], self.network_of(k), source=source)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iter"])
        self.ema_steps_offset = int(ckpt.get("ema_steps_offset", 0))
        if self.validator is not None:
            self.validator.best = dict(ckpt.get("best", {}))
        self.nonfinite_total = int(ckpt.get("nonfinite_total", 0))
        self.nonfinite_streak = int(ckpt.get("nonfinite_streak", 0))
        per_rank = ckpt.get("rng_ranks")
        if self.dist.enabled and isinstance(per_rank, (list, tuple)) and len(per_rank) == self.dist.world_size:
            restore_rng_state(per_rank[self.dist.rank])  # each rank continues its own random stream
        else:
            restore_rng_state(ckpt["rng"])
        self.load_extra_state(ckpt.get("trainer", {}))

    def save_checkpoint(self, tag: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``checkpoints/<tag>.pth`` (rank 0): ``last`` is the training state (with it the weights file
        of each network), ``best_<entry>`` / ``best`` the best weights (see the module docstring)."""
        rng_ranks = None
        if not tag.startswith("best") and self.dist.enabled:  # collective: every rank takes part
            rng_ranks = [None] * self.dist.world_size
            dist.all_gather_object(rng_ranks, capture_rng_state())
        if self.is_main:
            state = self.state_dict()
            if tag.startswith("best"):
                self.checkpoints.save_best(state, tag[len("best_"):] if tag.startswith("best_") else None,
                                           **(extra or {}))
            else:
                if rng_ranks is not None:
                    state["rng_ranks"] = rng_ranks
                state.update(extra or {})
                self.checkpoints.save_state(state)
        self._barrier()
