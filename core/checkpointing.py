"""A run's checkpoints: ``last.pth`` (full training state, last K kept as ``iter_*.pth`` hard links),
``best.pth`` / ``best_<network>.pth`` (weights only). Written atomically by rank 0.

:class:`TrainerCheckpoints` (one of the three parts of :class:`core.trainer.BaseTrainer`) turns
the trainer into a checkpoint and back; :class:`CheckpointStore` stores and reads the files, and
refuses files that are not training checkpoints of this framework when a run is resumed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.distributed as dist

from common_utils.checkpoint import CheckpointError, atomic_save, load_network_weights, safe_load
from core.runtime import capture_rng_state, restore_rng_state
from models import network_name

TRAINING_FORMAT = "ssir-train-v1"
WEIGHTS_FORMAT = "ssir-weights-v1"


class CheckpointStore:
    """Saves and reads the checkpoints of one run folder."""

    def __init__(self, folder: Path, keep_last: int = 3) -> None:
        self.folder, self.keep_last = Path(folder), int(keep_last)

    def path(self, tag: str) -> Path:
        return self.folder / f"{tag}.pth"

    def save(self, tag: str, state: dict[str, Any], iteration: int) -> Path:
        """Write ``<tag>.pth``; for ``last`` also keep the last K as ``iter_<k>.pth`` (hard links)."""
        path = self.path(tag)
        atomic_save(state, path)
        if tag == "last" and self.keep_last > 1:
            link = self.folder / f"iter_{iteration:08d}.pth"
            try:  # same bytes as last.pth: a hard link costs no second write
                link.unlink(missing_ok=True)
                os.link(path, link)
            except OSError:
                atomic_save(state, link)
            kept = sorted(self.folder.glob("iter_*.pth"))
            for old in kept[:-self.keep_last]:
                old.unlink(missing_ok=True)
        return path

    @staticmethod
    def read_training(path: str | os.PathLike) -> dict[str, Any]:
        """A training checkpoint of this framework (what ``--resume`` takes)."""
        ckpt = safe_load(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("format") != TRAINING_FORMAT:
            raise CheckpointError(f"{path} is not a training checkpoint of this framework (use pretrained.path to "
                                  f"start from released weights)")
        return ckpt


class TrainerCheckpoints:
    """The trainer's state as a checkpoint and back (mixed into :class:`core.trainer.BaseTrainer`)."""

    def extra_state(self) -> dict[str, Any]:
        """Trainer-specific state to checkpoint (override with :meth:`load_extra_state`)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (the base trainer saves nothing extra)."""

    def state_dict(self) -> dict[str, Any]:
        """The whole training state: resuming from it continues the same run."""
        return {
            "format": TRAINING_FORMAT,
            "network": network_name(self.cfg.network.name),
            "network_args": self.cfg.network.args.to_dict(),
            "networks": {**{k: v.state_dict() for k, v in self.networks.items()},
                         **{k: v.state_dict() for k, v in self.teachers.items()}},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iter": self.iter,
            "ema_steps_offset": self.ema_steps_offset,
            "best": self.best,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_streak": self.nonfinite_streak,
            "rng": capture_rng_state(),
            "trainer": self.extra_state(),
            "config": self.cfg.to_dict(),
            "amp": self.cfg.train.amp,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the networks strictly, then optimizer, schedule, RNG...)."""
        source = "the resume checkpoint"
        for k, net in {**self.networks, **self.teachers}.items():
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

    def weights_state(self, only: str | None = None) -> dict[str, Any]:
        """Network weights and metadata, without optimizer state (the ``best`` checkpoints)."""
        nets = {**self.networks, **self.teachers}
        return {
            "format": WEIGHTS_FORMAT,
            "network": network_name(self.cfg.network.name),
            "network_args": self.cfg.network.args.to_dict(),
            "networks": {k: v.state_dict() for k, v in nets.items() if only is None or k == only},
            "iter": self.iter,
            "best": self.best,
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self, tag: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``checkpoints/<tag>.pth`` (rank 0): ``last`` holds the training state, ``best*`` weights only."""
        rng_ranks = None
        if not tag.startswith("best") and self.dist.enabled:  # collective: every rank takes part
            rng_ranks = [None] * self.dist.world_size
            dist.all_gather_object(rng_ranks, capture_rng_state())
        if self.is_main:
            if tag.startswith("best"):
                state = self.weights_state(tag[len("best_"):] if tag.startswith("best_") else None)
            else:
                state = self.state_dict()
                if rng_ranks is not None:
                    state["rng_ranks"] = rng_ranks
            state.update(extra or {})
            self.checkpoints.save(tag, state, self.iter)
        self._barrier()
