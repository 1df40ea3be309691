"""A run's checkpoints: ``last.pth`` (full training state, last K kept as ``iter_*.pth`` hard links),
``best.pth`` / ``best_<network>.pth`` (weights only). Written atomically by rank 0.

What goes into a checkpoint is the trainer's :meth:`~core.trainer.BaseTrainer.state_dict`; this
module only stores and reads them, and refuses files that are not training checkpoints of this
framework when a run is resumed.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common_utils.checkpoint import CheckpointError, atomic_save, safe_load

TRAINING_FORMAT = "ssir-train-v1"
WEIGHTS_FORMAT = "ssir-weights-v1"


class CheckpointStore:
    """Saves and reads the checkpoints of one run folder."""

    def __init__(self, folder: Path, keep_last: int = 3) -> None:
        self.folder, self.keep_last = Path(folder), int(keep_last)

    def path(self, tag: str) -> Path:
        return self.folder / f"{tag}.pth"

    def save(self, tag: str, state: dict[str, Any], iteration: int,
             before_replace: Callable[[], None] | None = None) -> Path:
        """Write ``<tag>.pth``; for ``last`` also keep the last K as ``iter_<k>.pth`` (hard links).

        ``before_replace`` runs once the new file is complete on disk, before it replaces the old
        one (the crash tests kill the process there)."""
        path = self.path(tag)
        atomic_save(state, path, before_replace=before_replace)
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
