"""A run's checkpoint files, and the trainer turned into a checkpoint and back.

The format (keys, version, how it is read back) is :mod:`common_utils.checkpoint`'s; here the
trainer fills it in and the files of ``<run>/checkpoints/`` are named, all written atomically by
rank 0:

- ``last.pth``: the training state (networks, optimizer, scheduler, AMP scaler, EMA step offset,
  RNG, iteration): what ``--resume`` takes; each save also keeps it as ``iter_<k>.pth`` (a hard
  link) when ``train.keep_last`` > 1;
- ``net_<entry>_iter_<k>.pth``: the weights of one network (``student``, ``teacher``, ``rtx``,
  ``asm``) at that save, float32, without optimizer (what ``eval.py --weight`` takes);
- the files of the newest ``train.keep_last`` saves are kept, older ones deleted;
- ``best.pth`` (weights of every network at the best validation, ``best_network`` naming the best)
  and ``best_<entry>.pth`` (one network at its own best).

:class:`TrainerCheckpoints` is one of the three parts of :class:`core.trainer.BaseTrainer`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.distributed as dist

import common_utils.checkpoint as ckpt_format
from common_utils.checkpoint import CheckpointError, load_network_weights, training_checkpoint, weights_checkpoint
from core.runtime import capture_rng_state, restore_rng_state


class CheckpointStore:
    """Writes the checkpoint files of one run folder (names in the module docstring)."""

    def __init__(self, folder: str | os.PathLike, keep_last: int = 3) -> None:
        self.folder, self.keep_last = Path(folder), int(keep_last)

    def path(self, tag: str) -> Path:
        return self.folder / f"{tag}.pth"

    def save(self, tag: str, state: dict[str, Any], iteration: int) -> Path:
        """Write ``<tag>.pth``; ``last`` is also kept as ``iter_<k>.pth`` (a hard link) when K > 1."""
        path = self.path(tag)
        ckpt_format.atomic_save(state, path)
        if tag == "last" and self.keep_last > 1:
            link = self.folder / f"iter_{iteration:08d}.pth"
            try:  # same bytes as last.pth: a hard link costs no second write
                link.unlink(missing_ok=True)
                os.link(path, link)
            except OSError:
                ckpt_format.atomic_save(state, link)
        return path

    def save_weights(self, entry: str, state: dict[str, Any], iteration: int) -> Path:
        """Write ``net_<entry>_iter_<k>.pth``, the weights file of one network."""
        path = self.folder / f"net_{entry}_iter_{iteration:08d}.pth"
        ckpt_format.atomic_save(state, path)
        return path

    def prune(self) -> None:
        """Delete the ``iter_<k>.pth`` and ``net_*_iter_<k>.pth`` files of all but the newest ``keep_last`` saves."""
        files = [*self.folder.glob("iter_*.pth"), *self.folder.glob("net_*_iter_*.pth")]
        step = {f: f.stem.rsplit("_", 1)[-1] for f in files}
        kept = sorted({s for s in step.values() if s.isdigit()})[-self.keep_last:]
        for f, s in step.items():
            if s.isdigit() and s not in kept:
                f.unlink(missing_ok=True)


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

    def weights_state(self, only: str | None = None, **meta: Any) -> dict[str, Any]:
        """The networks (all, or entry ``only``) as a weights file, without optimizer state."""
        nets = {k: v.state_dict() for k, v in self._all_networks().items() if only is None or k == only}
        if only is not None:
            meta.setdefault("best_network", only)
        return weights_checkpoint(nets, self.network_specs(), self.cfg.network.name, self.iter, best=self.best,
                                  config=self.cfg.to_dict(), **meta)

    def save_checkpoint(self, tag: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``checkpoints/<tag>.pth`` (rank 0): ``last`` is the training state, and with it the weights
        file of each network; ``best*`` are weights files."""
        rng_ranks = None
        if not tag.startswith("best") and self.dist.enabled:  # collective: every rank takes part
            rng_ranks = [None] * self.dist.world_size
            dist.all_gather_object(rng_ranks, capture_rng_state())
        if self.is_main:
            if tag.startswith("best"):
                self.checkpoints.save(tag, self.weights_state(tag[len("best_"):] if tag.startswith("best_") else None,
                                                              **(extra or {})), self.iter)
            else:
                state = self.state_dict()
                if rng_ranks is not None:
                    state["rng_ranks"] = rng_ranks
                state.update(extra or {})
                self.checkpoints.save(tag, state, self.iter)
                for entry in self._all_networks():
                    self.checkpoints.save_weights(entry, self.weights_state(entry), self.iter)
                self.checkpoints.prune()
        self._barrier()
