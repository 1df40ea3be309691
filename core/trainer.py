"""The one training loop. Trainers subclass :class:`BaseTrainer` and implement ``train_step``.

The base trainer builds the parts a config names (networks and their EMA teacher, losses,
datasets, optimizer, schedule), runs the loop (AMP, gradient clipping, DDP, the non-finite
guard, EMA, logging) and hands the rest to its helpers: :mod:`core.run_folder` (claiming and
locking the run folder), :mod:`core.validation` (sharded validation, best tracking, sample
pictures), :mod:`core.checkpointing` (storing checkpoints) and
:func:`common_utils.evaluation.runner.evaluate_datasets` (the final evaluation).

Resume is exact because every source of randomness is a function of the iteration: data order
and augmentations come from :class:`data.samplers.ResumableSampler` (a stream starts at a given
iteration), trainer draws (CutMix) from generators seeded by ``(seed, iteration)``, and the
checkpoint holds the optimizer, scheduler, scaler, EMA and RNG states.

``SIGTERM`` (what a cluster scheduler sends before it kills a job) and a first ``Ctrl-C`` finish
the current iteration, write ``last.pth`` and stop with exit code 143 / 130; ``--resume`` then
continues the same run.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from common_utils.checkpoint import CheckpointError, load_network_weights, read_network_state
from core.checkpointing import TRAINING_FORMAT, WEIGHTS_FORMAT, CheckpointStore
from core.config import Config
from core.ema import ema_update
from core.logger import ExperimentLogger
from core.run_folder import RunFolder, config_yaml, environment_banner
from core.runtime import capture_rng_state, init_distributed, restore_rng_state, seed_everything
from core.validation import Validator
from data import build_dataset
from data.loaders import DevicePrefetcher, eval_loader, train_loader
from data.paths import resolve_dataset_args, resolve_path
from foundation.errors import UserError
from losses import build_loss
from models import build_network, network_name


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


#: Test hook (used by tests/test_kill_resume.py): ``<iteration>[:<phase>]`` makes the process
#: SIGKILL itself at that point of that iteration, simulating a crash (no cleanup of any kind runs):
#: ``after`` (default) once the iteration's logging, validation and checkpoint are done; ``step``
#: after its backward pass, before the optimizer step; ``validation`` after its networks were
#: scored, before any checkpoint is written; ``checkpoint`` while ``last.pth`` is being written
#: (the new file is complete on disk but has not replaced the old one). Not for normal use.
KILL_AT_ITER_ENV = "SSIR_KILL_AT_ITER"
KILL_PHASES = ("after", "step", "validation", "checkpoint")


def _kill_point() -> tuple[int, str] | None:
    raw = os.environ.get(KILL_AT_ITER_ENV)
    if not raw:
        return None
    it, _, phase = raw.partition(":")
    phase = phase or "after"
    if not it.isdigit() or phase not in KILL_PHASES:
        raise UserError(f"{KILL_AT_ITER_ENV} must be <iteration>[:{'|'.join(KILL_PHASES)}], got '{raw}'")
    return int(it), phase


def _kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


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


class BaseTrainer:
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
        self._kill_point = _kill_point()
        if resume:
            self.load_state_dict(CheckpointStore.read_training(resume))
            self.log.info(f"resumed from {resume} at iteration {self.iter}")
        self._open_run_folder()

    # ------------------------------------------------------------------ set-up
    def _open_run_folder(self) -> None:
        """Claim the run folder now that the run is known to start (rank 0; see core.run_folder)."""
        if self.is_main:
            self.run_folder.open(config_yaml(self.cfg.to_dict()), environment_banner(self.device))
            self.log.attach(self.run_folder.logs)
            self.log.info(f"run folder {self.exp_dir} | device {self.device} | world size {self.dist.world_size} | "
                          f"git {environment_banner(self.device)['git_revision']}")
            for name, net in self.networks.items():
                n = sum(p.numel() for p in net.parameters())
                self.log.info(f"{name}: {type(net).__name__} with {n:,} parameters")
        self._barrier()

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
        net = net.to(self.device)
        if self.cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def build_network_for(self, key: str) -> nn.Module:
        """A fresh network for checkpoint entry ``key`` (all entries share one architecture by default)."""
        return self.new_network()

    def build_networks(self) -> dict[str, nn.Module]:
        """The trained networks; default one ``student``."""
        return {"student": self.new_network()}

    def build_teachers(self) -> dict[str, nn.Module]:
        """EMA copies of the trained networks (``teacher``) when ``train.ema_decay`` is set."""
        if self.cfg.train.ema_decay is None:
            return {}
        teacher = self.new_network()
        teacher.load_state_dict(self.networks["student"].state_dict())
        for p in teacher.parameters():
            p.requires_grad_(False)
        return {"teacher": teacher}

    def network_of(self, key: str) -> str:
        """The registered network name behind checkpoint entry ``key``."""
        return network_name(self.cfg.network.name)

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
    def _pretrained_iteration(path: str) -> int | None:
        from common_utils.checkpoint import safe_load

        ckpt = safe_load(path)
        if isinstance(ckpt, dict) and "iter" in ckpt:
            return int(ckpt.get("ema_steps", ckpt["iter"]))
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
            raise UserError("config key 'data.paired' must name a dataset type (e.g. paired_folder)")
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

    def make_stream(self, dataset: Any, batch_size: int, start_iter: int, seed_offset: int = 0
                    ) -> Iterator[dict[str, Any]]:
        """An endless device-side batch iterator that starts after ``start_iter`` batches of its own."""
        d = self.cfg.data
        loader, _ = train_loader(dataset, batch_size, d.num_workers, self.cfg.seed + seed_offset,
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
        """Validation of every network on ``data.val`` (None without a validation set)."""
        if self.val_set is None:
            return None
        from common_utils.evaluation.evaluator import EvalProtocol

        v = self.cfg.validation
        protocol = EvalProtocol(ssim=v.ssim, lpips=self._lpips_metric() if v.lpips else None)
        return Validator(self.val_set, protocol, v.watch, self.dist, self.device, self.make_eval_loader, self.log,
                         max_images=v.max_images, sample_images=self.cfg.train.sample_images,
                         samples_dir=self.exp_dir / "samples")

    def _lpips_metric(self) -> nn.Module | None:
        from models.lpips import try_build_lpips

        metric, reason = try_build_lpips()
        if metric is None:
            self.log.info(reason)
            return None
        return metric.to(self.device)

    # ------------------------------------------------------------------ step helpers
    @property
    def epoch(self) -> int:
        """1-based epoch of the current iteration (as the papers count)."""
        return self.iter // self.iters_per_epoch + 1

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

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Run from the current iteration to the end, validating and checkpointing on schedule."""
        t = self.cfg.train
        val_every = t.val_every or (t.val_every_epochs * self.iters_per_epoch if t.val_every_epochs else None)
        save_every = t.save_every or val_every or self.iters_per_epoch
        self.start_streams()
        for net in self.networks.values():
            net.train()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        tic = time.time()
        bar = tqdm(total=self.total_iters, initial=self.iter, disable=None if self.is_main else True,
                   desc=self.cfg.name, dynamic_ncols=True, leave=False)
        with _StopSignals() as stop:
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
                    self.validate()
                stopping = self._stop_requested(stop)
                if self.iter % save_every == 0 or self.iter == self.total_iters or stopping:
                    self.save_checkpoint("last")
                if self._kill_point == (self.iter, "after"):  # test hook, see KILL_AT_ITER_ENV
                    _kill_now()
                if stopping and self.iter < self.total_iters:
                    bar.close()
                    signum = stop.received or signal.SIGTERM
                    self.log.info(f"{signal.Signals(signum).name} received at iteration {self.iter}: "
                                  f"checkpoint written")
                    raise TrainingInterrupted(signum, self.ckpt_dir / "last.pth")
        bar.close()
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
        self.log.info(f"curves written to {path}" if path else "matplotlib is not installed: no curves.png (the "
                      "values are in logs/scalars.jsonl)")

    def _stop_requested(self, stop: _StopSignals) -> bool:
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
        if self._kill_point == (self.iter + 1, "step"):  # test hook, see KILL_AT_ITER_ENV
            _kill_now()
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
        self.log.info(f"iter {self.iter}/{self.total_iters} epoch {self.epoch} lr {lr:.3e} {text} "
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

    # ------------------------------------------------------------------ validation
    def make_eval_loader(self, dataset: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
        """Whole-image loader for validation and the final evaluation, with ``data.num_workers`` workers.

        Decoding full frames on the main process left the GPU idle most of the evaluation time
        (BENCHMARKS.md section 3d); workers overlap it with the forward passes.
        """
        workers = min(self.cfg.data.num_workers, len(dataset))
        return eval_loader(dataset, num_workers=workers, pin_memory=self.device.type == "cuda")

    def eval_networks(self) -> dict[str, nn.Module]:
        """Networks scored at validation (student and, if any, teacher)."""
        return {**self.networks, **self.teachers}

    def validate(self) -> dict[str, dict[str, float]]:
        """Score every eval network on the validation set; save ``best_<net>`` / ``best`` on improvement."""
        results, improved = self.validator.run(self.eval_networks(), self.iter)
        if self._kill_point == (self.iter, "validation"):  # test hook, see KILL_AT_ITER_ENV
            _kill_now()
        for name in improved:
            self.save_checkpoint(f"best_{name}")
        overall = self.validator.overall_best()
        if improved and overall is not None and overall[1]["iter"] == self.iter:
            self.save_checkpoint("best", extra={"best_network": overall[0]})
        return results

    # ------------------------------------------------------------------ checkpoints
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
            crash = _kill_now if tag == "last" and self._kill_point == (self.iter, "checkpoint") else None
            self.checkpoints.save(tag, state, self.iter, before_replace=crash)
        self._barrier()

    def _barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Stop loader workers, close the log, release the run folder and the process group."""
        for name in ("paired_stream", "unpaired_stream"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        self.log.close()
        self.run_folder.close()
        if dist.is_available() and dist.is_initialized():
            # every rank reaches teardown before any leaves: a rank exiting while another still
            # evaluates or writes would abort the other's gloo/NCCL threads
            dist.barrier()
            dist.destroy_process_group()


class _StopSignals:
    """Within the loop, a first SIGTERM/SIGINT only asks the loop to stop after the current
    iteration (and write its checkpoint); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _StopSignals:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they are
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
