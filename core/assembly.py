"""Assembling a trainer from its config: networks and their EMA teachers, pretrained weights,
DDP/compile wrapping, losses, data streams, optimizer and learning-rate schedule, validator.

:class:`TrainerAssembly` is one of the three parts of :class:`core.trainer.BaseTrainer` (with
:class:`core.loop.TrainingLoop` and :class:`core.checkpointing.TrainerCheckpoints`); every
``build_*`` method here is a hook a trainer may override or extend with ``super()``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from common_utils.checkpoint import CheckpointError, load_network_weights, read_network_state
from core.config import Config
from core.validation import Validator
from data import build_dataset
from data.loaders import DevicePrefetcher, train_loader
from data.paths import resolve_dataset_args, resolve_path
from foundation.errors import UserError
from losses import build_loss
from models import build_network, network_name
from models.grad_checkpoint import set_grad_checkpoint


def init_normal_(net: nn.Module, std: float = 0.02) -> None:
    """N(0, std) on conv/linear weights, zero biases (the SSLL ``init_method: normal``)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _StraightThroughClamp(torch.autograd.Function):
    """clamp(y, 0, 1) forward; the identity backward (out-of-range pixels keep their gradient)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor) -> torch.Tensor:
        return y.clamp(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def clamp_output(y: torch.Tensor, mode: str = "straight_through") -> torch.Tensor:
    """Clamp a student output to [0, 1] before the losses, as the SSLL recipe does.

    ``hard`` is the official ``torch.clamp``: pixels outside [0, 1] get no gradient, so an output
    channel that starts below 0 everywhere never receives one and stays dead (the UNet at its
    paper configuration starts that way on dark inputs for 3 of 5 seeds; BENCHMARKS.md section 4).
    ``straight_through`` (default) has the same forward values and passes the gradient through.
    """
    if mode == "hard":
        return y.clamp(0, 1)
    if mode == "straight_through":
        return _StraightThroughClamp.apply(y)
    raise ValueError(f"unknown output clamp mode '{mode}' (hard, straight_through)")


class TrainerAssembly:
    """Builds the parts of a trainer from ``self.cfg`` (mixed into :class:`core.trainer.BaseTrainer`)."""

    cfg: Config
    #: what ``data.paired`` holds for this trainer (named when it is missing)
    paired_example = "e.g. paired_folder"

    def _set_backend_flags(self) -> None:
        tf32 = bool(self.cfg.train.tf32)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if self.cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def new_network(self, name: str | None = None, **extra_args: Any) -> nn.Module:
        """One network (default: the configured one) with the config's arguments, init and memory format."""
        net = build_network(name or self.cfg.network.name, **{**self.cfg.network.args.to_dict(), **extra_args})
        if self.cfg.network.init == "normal":
            init_normal_(net)
        if self.cfg.train.grad_checkpoint:
            set_grad_checkpoint(net)
        net = net.to(self.device)
        if self.cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def build_network_for(self, key: str) -> nn.Module:
        """A fresh network for checkpoint entry ``key``: :meth:`network_of` built with :meth:`network_args_of`."""
        return self.new_network(self.network_of(key), **self.network_args_of(key))

    def build_networks(self) -> dict[str, nn.Module]:
        """The trained networks; default one ``student``."""
        return {"student": self.build_network_for("student")}

    def build_teachers(self) -> dict[str, nn.Module]:
        """EMA copies of the trained networks (``teacher``) when ``train.ema_decay`` is set."""
        if self.cfg.train.ema_decay is None:
            return {}
        teacher = self.build_network_for("teacher")
        teacher.load_state_dict(self.networks["student"].state_dict())
        for p in teacher.parameters():
            p.requires_grad_(False)
        return {"teacher": teacher}

    def network_of(self, key: str) -> str:
        """The registered network name behind checkpoint entry ``key``."""
        return network_name(self.cfg.network.name)

    def network_args_of(self, key: str) -> dict[str, Any]:
        """The constructor arguments of checkpoint entry ``key`` (recorded in every checkpoint)."""
        return self.cfg.network.args.to_dict()

    def pretrained_entry(self, key: str) -> str | None:
        """Which weights of a ``pretrained.path`` checkpoint network ``key`` starts from (None: the
        reader's default). Students start from students, teachers as ``pretrained.teacher_from`` says."""
        if key == "student":
            return "student"
        if key == "teacher":
            return self.cfg.pretrained.teacher_from
        return None

    def _load_pretrained(self) -> None:
        """Start from a checkpoint's weights (e.g. SSLL from a supervised run) without its optimizer."""
        path = self.cfg.pretrained.path
        if not path:
            return
        path = resolve_path(path)
        for key, net in {**self.networks, **self.teachers}.items():
            which = self.pretrained_entry(key)
            try:
                found = read_network_state(path, self.network_of(key), which)
            except CheckpointError:
                if which is None:
                    raise
                found = read_network_state(path, self.network_of(key), None)  # a plain file has no student/teacher
            load_network_weights(net, found.state, self.network_of(key), source=found.source)
        ckpt_iter = self._pretrained_iteration(path)
        if ckpt_iter is not None:
            self.ema_steps_offset = ckpt_iter
        self.log.info(f"initialised from {path}")

    @staticmethod
    def _pretrained_iteration(path: str | Path) -> int | None:
        """EMA steps already taken by the run that wrote ``path``: its own offset plus its iteration
        (a start from a run that itself started pretrained continues that run's EMA count); None for a
        plain weights file."""
        from common_utils.checkpoint import run_checkpoint, safe_load

        path = run_checkpoint(path, "best")  # the file read_network_state read for a run folder
        if not path.is_file():
            return None  # the official prefix form: released weights, no run
        ckpt = safe_load(path)
        if isinstance(ckpt, dict) and "iter" in ckpt:
            return int(ckpt.get("ema_steps_offset", 0)) + int(ckpt["iter"])
        return None

    def _wrap_networks(self) -> dict[str, nn.Module]:
        """torch.compile and DDP wrappers of the trained networks (``self.networks`` stay unwrapped).

        Under DDP, a network that declares ``unused_parameters`` (official architectures that
        register modules their forward never runs, e.g. RtxICE-Net's ``acm4``/``fa4``) gets
        ``find_unused_parameters=True`` whatever ``train.find_unused_parameters`` says, and the
        EMA teachers are broadcast from rank 0 like the students.
        """
        out = {}
        for name, net in self.networks.items():
            m: nn.Module = net
            if self.cfg.train.compile:
                m = torch.compile(m)
            if self.dist.enabled:
                declared = tuple(getattr(net, "unused_parameters", ()) or ())
                find_unused = bool(self.cfg.train.find_unused_parameters or declared)
                if declared and not self.cfg.train.find_unused_parameters:
                    self.log.info(f"{name}: DDP find_unused_parameters on ({type(net).__name__} declares unused "
                                  f"parameters {', '.join(declared[:3])}{' ...' if len(declared) > 3 else ''})")
                m = nn.parallel.DistributedDataParallel(
                    m, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=find_unused)
            out[name] = m
        if self.dist.enabled:
            for teacher in self.teachers.values():
                for t in list(teacher.parameters()) + list(teacher.buffers()):
                    dist.broadcast(t.data, src=0)
        return out

    def build_losses(self) -> dict[str, nn.Module]:
        """Losses of ``cfg.losses`` keyed by name, with their weights in ``self.loss_weights``."""
        self.loss_weights: dict[str, float] = {}
        losses = {}
        for spec in self.cfg.losses:
            loss = build_loss(spec.name, **spec.args.to_dict()).to(self.device)
            losses[spec.name] = loss
            self.loss_weights[spec.name] = float(spec.weight)
        return losses

    def _dataset(self, spec: Config, **extra: Any) -> Any:
        return build_dataset(spec.type, **resolve_dataset_args(spec.args.to_dict()), **extra)

    def batch_size(self, key: str) -> int:
        """Per-process batch size of the stream ``data.<key>`` (its own, else the paired one, else data.batch_size)."""
        d = self.cfg.data
        return d[key].batch_size or d.paired.batch_size or d.batch_size

    def check_stream_size(self, key: str, dataset: Any) -> None:
        """A training set must fill one batch on every process: say so at start-up, naming the key."""
        bs, n = self.batch_size(key), len(dataset)
        if n < bs * self.dist.world_size:
            where = f" on each of {self.dist.world_size} processes" if self.dist.world_size > 1 else ""
            raise UserError(f"data.{key} ({dataset!r}) holds {n} image(s), fewer than one batch of {bs}{where}; "
                            f"add images or lower data.{key}.batch_size")

    def build_data(self) -> None:
        """Paired training stream (or its labelled part) and validation set; subclasses add their own streams."""
        d = self.cfg.data
        if not d.paired.type:
            raise UserError(f"config key 'data.paired' must name a dataset type ({self.paired_example})")
        self.paired_set = self._dataset(d.paired)
        self.withheld_inputs: list[str] = []
        if d.labelled_pairs is not None:
            self.paired_set, self.withheld_inputs = self._label_budget(self.paired_set)
        self.check_stream_size("paired", self.paired_set)
        self.iters_per_epoch = self._iters_per_epoch_of(self.paired_set)
        self.val_set = self._dataset(d.val) if d.val.type else None
        self.total_iters = self._total_iters()

    def _label_budget(self, full: Any) -> tuple[Any, list[str]]:
        """Keep ``data.labelled_pairs`` pairs (a seeded choice); return them and the withheld inputs."""
        from data.datasets import PairSubset, label_split

        d = self.cfg.data
        if not hasattr(full, "pairs"):
            raise UserError(f"data.labelled_pairs needs a paired folder dataset; data.paired.type is '{d.paired.type}'")
        seed = self.cfg.seed if d.label_split_seed is None else d.label_split_seed
        labelled, rest = label_split(len(full.pairs), d.labelled_pairs, seed)
        self.log.info(f"label budget: {len(labelled)} of {len(full.pairs)} pairs of {full!r} keep their ground "
                      f"truth (split seed {seed}); {len(rest)} are withheld")
        return PairSubset(full, labelled), [str(full.pairs[i][0]) for i in rest]

    @property
    def loader_workers(self) -> int:
        """``data.num_workers``, at most the usable cores (:func:`common_utils.cli.capped_workers`); said
        once in the log when it is lowered."""
        from common_utils.cli import capped_workers

        n = capped_workers(self.cfg.data.num_workers)
        if n < self.cfg.data.num_workers and not getattr(self, "_said_workers", False):
            self._said_workers = True
            self.log.info(f"data.num_workers={self.cfg.data.num_workers} lowered to {n}, the usable cores here")
        return n

    def make_stream(self, dataset: Any, batch_size: int, start_iter: int, seed_offset: int = 0
                    ) -> Iterator[dict[str, Any]]:
        """An endless device-side batch iterator that starts after ``start_iter`` batches of its own."""
        d = self.cfg.data
        loader, _ = train_loader(dataset, batch_size, self.loader_workers, self.cfg.seed + seed_offset,
                                 start_iter=start_iter, rank=self.dist.rank, world_size=self.dist.world_size,
                                 pin_memory=d.pin_memory and self.device.type == "cuda",
                                 prefetch_factor=d.prefetch_factor)
        return DevicePrefetcher(loader, self.device)

    def _total_iters(self) -> int:
        t = self.cfg.train
        if t.iters:
            return int(t.iters)
        if t.epochs:
            return int(t.epochs) * self.iters_per_epoch
        raise UserError("set train.epochs or train.iters in the config")

    def _iters_per_epoch_of(self, dataset: Any, key: str = "paired") -> int:
        """``train.iters_per_epoch`` if set, else whole batches of ``dataset`` per process."""
        return self.cfg.train.iters_per_epoch or len(dataset) // self.dist.world_size // self.batch_size(key)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.trained_networks for p in self.networks[name].parameters() if p.requires_grad]

    def build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
        return cls(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                   weight_decay=o.weight_decay)

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step`` (cosine to eta_min, optional warm-up)."""
        s = self.cfg.scheduler
        warm = s.warmup_iters
        if warm and step < warm:
            return (step + 1) / warm
        if s.type == "constant":
            return 1.0
        base = self.cfg.optim.lr
        floor = s.eta_min / base if base > 0 else 0.0
        if s.by_epoch:
            period = s.period_epochs or max(1, math.ceil(self.total_iters / self.iters_per_epoch))
            pos = min(step // self.iters_per_epoch, period) / period
        else:
            period = (s.period_epochs * self.iters_per_epoch) if s.period_epochs else self.total_iters
            pos = min(step, period) / max(period, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * pos))

    def build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)

    def build_validator(self) -> Validator | None:
        """Validation of every network on ``data.val`` (None without a validation set), scored with
        the protocol of its dataset (:func:`common_utils.evaluation.runner.dataset_protocol`)."""
        if self.val_set is None:
            return None
        from common_utils.evaluation.runner import dataset_protocol

        v = self.cfg.validation
        protocol = dataset_protocol(self.cfg.data.val.to_dict(), ssim=v.ssim, lpips=v.lpips, device=self.device,
                                    lpips_off_reason="disabled in the config")
        if v.lpips and protocol.lpips is None:
            self.log.info(protocol.lpips_reason)
        return Validator(self.val_set, protocol, v.watch, self.dist, self.device, self.make_eval_loader, self.log,
                         max_images=v.max_images, sample_images=self.cfg.train.sample_images,
                         samples_dir=self.exp_dir / "samples")
