"""The base trainer. Trainers subclass :class:`BaseTrainer` and implement ``train_step``.

:class:`BaseTrainer` is three parts and the step helpers a ``train_step`` uses:

- :class:`core.assembly.TrainerAssembly` builds what a config names (networks and their EMA
  teacher, pretrained weights, DDP wrapping, losses, datasets, optimizer, schedule, validator);
- :class:`core.loop.TrainingLoop` runs the loop (AMP, gradient clipping, the non-finite guard,
  EMA, logging, validation and checkpoints on schedule, stop signals);
- :class:`core.checkpointing.TrainerCheckpoints` turns the trainer into a checkpoint and back.

Its helpers: :mod:`core.run_folder` (claiming and locking the run folder), :mod:`core.validation`
(sharded validation, best tracking, sample pictures) and :mod:`core.final_evaluation`.

Resume is exact because every source of randomness is a function of the iteration: data order
and augmentations come from :class:`data.samplers.ResumableSampler` (a stream starts at a given
iteration), trainer draws (CutMix) from generators seeded by ``(seed, iteration)``, and the
checkpoint holds the optimizer, scheduler, scaler, EMA and RNG states.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from common_utils.checkpoint import read_training_checkpoint
from core.assembly import TrainerAssembly, clamp_output
from core.checkpointing import CheckpointStore, TrainerCheckpoints
from core.config import Config
from core.ema import ema_update
from core.logger import ExperimentLogger
from core.loop import TrainingLoop
from core.run_folder import RunFolder, config_yaml, environment_banner
from core.runtime import init_distributed, seed_everything
from data.loaders import eval_loader


class BaseTrainer(TrainerAssembly, TrainingLoop, TrainerCheckpoints):
    """Generic trainer; see the module docstring. Subclasses implement :meth:`train_step`."""

    #: names of the networks this trainer optimises (teacher networks are EMA copies)
    trained_networks: tuple[str, ...] = ("student",)

    def __init__(self, cfg: Config, resume: str | None = None) -> None:
        self.cfg = cfg
        self.dist, self.device = init_distributed(cfg.device)
        self.is_main = self.dist.is_main
        # the run folder is only named here; nothing is written before every part below is built
        self.run_folder = RunFolder(cfg.output_root, cfg.name, resume=resume is not None)
        self.exp_dir, self.ckpt_dir = self.run_folder.path, self.run_folder.checkpoints
        self.log = ExperimentLogger(enabled=self.is_main)
        # every rank builds the same initial networks (DDP broadcasts the student, but not the EMA
        # teacher, which is copied from the student before wrapping); the ranks draw their own
        # random numbers from here on
        seed_everything(cfg.seed)
        self._set_backend_flags()
        self.iter = 0
        self.ema_steps_offset = 0
        self.nonfinite_total = 0
        self.nonfinite_streak = 0
        self.networks: dict[str, nn.Module] = self.build_networks()
        self.teachers: dict[str, nn.Module] = self.build_teachers()
        self._load_pretrained()
        self.wrapped: dict[str, nn.Module] = self._wrap_networks()
        if self.dist.enabled:
            seed_everything(cfg.seed + self.dist.rank)
        self.losses = self.build_losses()
        self.build_data()
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler()
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16" and self.device.type == "cuda")
        self.validator = self.build_validator()
        self.checkpoints = CheckpointStore(self.ckpt_dir, cfg.train.keep_last)
        #: the validation of the current iteration was interrupted by a stop signal: the loop runs it first
        self.validation_pending = False
        if resume:
            ckpt = read_training_checkpoint(resume)
            self.load_state_dict(ckpt)
            self.validation_pending = bool(ckpt.get("validation_pending", False)) and self.validator is not None
            self.log.info(f"resumed from {resume} at iteration {self.iter}")
        self._open_run_folder()

    # ------------------------------------------------------------------ set-up
    def _open_run_folder(self) -> None:
        """Claim the run folder now that the run is known to start (rank 0; see core.run_folder)."""
        if self.is_main:
            config_text = config_yaml(self.cfg.to_dict())
            self.run_folder.open(config_text, environment_banner(self.device))
            self.log.attach(self.run_folder.logs, tracking=self.cfg.logging, config_text=config_text)
            self.log.info(f"run folder {self.exp_dir} | device {self.device} | world size {self.dist.world_size} | "
                          f"git {environment_banner(self.device)['git_revision']}")
            for name, net in self.networks.items():
                n = sum(p.numel() for p in net.parameters())
                self.log.info(f"{name}: {type(net).__name__} with {n:,} parameters")
        self._barrier()

    # ------------------------------------------------------------------ step helpers
    def epoch_of(self, iteration: int) -> int:
        """1-based epoch of the 1-based ``iteration`` (iterations 1..K are epoch 1 at K per epoch)."""
        return (iteration - 1) // self.iters_per_epoch + 1

    @property
    def epoch(self) -> int:
        """1-based epoch of the step in progress (``self.iter`` steps are done), as the papers count."""
        return self.epoch_of(self.iter + 1)

    @property
    def best(self) -> dict[str, dict[str, Any]]:
        """Best validation record per network (empty without validation)."""
        return self.validator.best if self.validator is not None else {}

    def autocast(self) -> contextlib.AbstractContextManager:
        amp = self.cfg.train.amp
        if amp == "off":
            return contextlib.nullcontext()
        dtype = torch.float16 if amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through the AMP scaler (several calls accumulate into one step)."""
        self.scaler.scale(loss).backward()

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def clamp_output(self, y: torch.Tensor) -> torch.Tensor:
        """A student output clamped to [0, 1] for the losses (``train.output_clamp``)."""
        return clamp_output(y, self.cfg.train.output_clamp)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Compute the losses of one iteration, call :meth:`backward`, return named terms (detached ok)."""
        raise NotImplementedError  # the one method every trainer implements

    def next_batches(self) -> dict[str, Any]:
        """The batch(es) for one iteration; default: the paired stream."""
        return next(self.paired_stream)

    def start_streams(self) -> None:
        """Open the data streams at the current iteration (subclasses add their own)."""
        self.paired_stream = self.make_stream(self.paired_set, self.batch_size("paired"), start_iter=self.iter)

    # ------------------------------------------------------------------ EMA
    def update_teachers(self) -> None:
        if not self.teachers:
            return
        step = self.ema_steps_offset + self.iter
        for teacher in self.teachers.values():
            ema_update(teacher, self.networks["student"], step, self.cfg.train.ema_decay)


    # ------------------------------------------------------------------ validation
    def make_eval_loader(self, dataset: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
        """Whole-image loader for validation and the final evaluation, with ``data.num_workers`` workers
        (at most the usable cores).

        Decoding full frames on the main process left the GPU idle most of the evaluation time
        (BENCHMARKS.md section 3d); workers overlap it with the forward passes.
        """
        workers = min(self.loader_workers, len(dataset))
        return eval_loader(dataset, num_workers=workers, pin_memory=self.device.type == "cuda")

    def eval_networks(self) -> dict[str, nn.Module]:
        """Networks scored at validation (student and, if any, teacher)."""
        return {**self.networks, **self.teachers}

    def validate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, dict[str, float]]:
        """Score every eval network on the validation set; save ``best_<net>`` / ``best`` on improvement.

        ``should_stop`` is asked before every image (see :meth:`core.validation.Validator.run`).
        """
        results, improved = self.validator.run(self.eval_networks(), self.iter, should_stop=should_stop)
        for name in improved:
            self.save_checkpoint(f"best_{name}")
        overall = self.validator.overall_best()
        if improved and overall is not None and overall[1]["iter"] == self.iter:
            self.save_checkpoint("best", extra={"best_network": overall[0]})
        return results


    def _barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Stop loader workers, close the log, release the run folder and the process group."""
        for name in ("paired_stream", "unpaired_stream"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        self.log.close(finished=self.iter >= getattr(self, "total_iters", 0))
        self.run_folder.close()
        if dist.is_available() and dist.is_initialized():
            # every rank reaches teardown before any leaves: a rank exiting while another still
            # evaluates or writes would abort the other's gloo/NCCL threads
            dist.barrier()
            dist.destroy_process_group()


