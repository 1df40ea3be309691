"""The one training loop. Trainers subclass :class:`BaseTrainer` and implement ``train_step``.

The base trainer owns everything else: the run folder, networks and their EMA teacher,
optimizer and learning-rate schedule, AMP, gradient clipping, DDP, the non-finite guard,
logging, validation, best/last checkpoints (atomic, last K kept) and exact resume.

Resume is exact because every source of randomness is a function of the iteration: data order
and augmentations come from :class:`data.samplers.ResumableSampler`, trainer draws (CutMix)
from generators seeded by ``(seed, iteration)``, and the checkpoint holds the optimizer,
scheduler, scaler, EMA and RNG states.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from common_utils.checkpoint import CheckpointError, atomic_save, extract_state_dict, load_network_weights, safe_load
from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from core.config import Config, save_config
from core.ema import ema_update
from core.logger import ExperimentLogger
from core.runtime import capture_rng_state, init_distributed, restore_rng_state, seed_everything
from data import build_dataset
from data.paths import resolve_dataset_args, resolve_path
from data.loaders import DevicePrefetcher, eval_loader, train_loader
from losses import build_loss
from models import build_network, network_name
from models.registry import UserError



class TrainingStopped(UserError):
    """Training stopped on purpose (e.g. too many non-finite losses in a row)."""


#: Test hook (used by tests/test_kill_resume.py): when this environment variable holds an
#: iteration number, the process SIGKILLs itself right after that iteration's logging,
#: validation and checkpoint, simulating a crash at a known point. Not for normal use.
KILL_AT_ITER_ENV = "SSIR_KILL_AT_ITER"


def _kill_at_iter() -> int | None:
    raw = os.environ.get(KILL_AT_ITER_ENV)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{KILL_AT_ITER_ENV} must be an iteration number, got '{raw}'") from None


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
        self.exp_dir = self._prepare_run_dir(resume)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.log = ExperimentLogger(self.exp_dir / "logs" if self.is_main else None, enabled=self.is_main)
        # every rank builds the same initial networks (DDP broadcasts the student, but not the EMA
        # teacher, which is copied from the student before wrapping); the ranks draw their own
        # random numbers from here on
        seed_everything(cfg.seed)
        self._set_backend_flags()
        self.iter = 0
        self.best: dict[str, dict[str, Any]] = {}
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
        if resume:
            self._resume(resume)
        if self.is_main:
            save_config(cfg, self.exp_dir / "config.yaml")
            (self.exp_dir / "command.txt").write_text(" ".join(sys.argv) + "\n")
            self.log.info(f"run folder {self.exp_dir} | device {self.device} | world size {self.dist.world_size}")
            for name, net in self.networks.items():
                n = sum(p.numel() for p in net.parameters())
                self.log.info(f"{name}: {type(net).__name__} with {n:,} parameters")

    # ------------------------------------------------------------------ set-up
    def _prepare_run_dir(self, resume: str | None) -> Path:
        name = self.cfg.name
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
            raise UserError(f"config key 'name' must be a plain folder name (letters, digits, _ . -), got '{name}'")
        root = Path(resolve_path(self.cfg.output_root))
        exp = root / name
        if self.is_main:
            if resume is None and (exp / "checkpoints").exists() and any((exp / "checkpoints").iterdir()):
                stamp = time.strftime("%Y%m%d_%H%M%S")
                archived = exp.with_name(f"{name}_archived_{stamp}")
                n = 1
                while archived.exists():
                    archived = exp.with_name(f"{name}_archived_{stamp}_{n}")
                    n += 1
                shutil.move(str(exp), str(archived))
                print(f"note: an earlier run was in {exp}; moved it to {archived}", file=sys.stderr)
            try:
                (exp / "checkpoints").mkdir(parents=True, exist_ok=True)
                probe = exp / ".write_test"
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                raise UserError(f"cannot write to the output folder {exp}: {exc.strerror}; set output_root to a "
                                f"writable folder") from None
        self._barrier()
        return exp

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

    def new_network(self) -> nn.Module:
        """Build one instance of the configured network."""
        net = build_network(self.cfg.network.name, **self.cfg.network.args.to_dict())
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

    def _load_pretrained(self) -> None:
        """Start from a checkpoint's weights (e.g. SSLL from a supervised run) without its optimizer."""
        path = self.cfg.pretrained.path
        if not path:
            return
        path = resolve_path(path)
        ckpt = safe_load(path)
        name = self.cfg.network.name
        for key, net in self.networks.items():
            load_network_weights(net, ckpt.get("networks", {}).get(key, ckpt) if isinstance(ckpt, dict) else ckpt,
                                 name, source=path)
        if self.teachers:
            src = ckpt.get("networks", {}) if isinstance(ckpt, dict) else {}
            key = "teacher" if self.cfg.pretrained.teacher_from == "teacher" and "teacher" in src else "student"
            for net in self.teachers.values():
                load_network_weights(net, src.get(key, ckpt), name, source=path)
        if isinstance(ckpt, dict) and "iter" in ckpt:
            self.ema_steps_offset = int(ckpt.get("ema_steps", ckpt["iter"]))
        self.log.info(f"initialised from {path}")

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
            raise UserError(f"data.{key} ({dataset!r}) holds {n} image(s), fewer than one batch of "
                            f"{bs}{f' on each of {self.dist.world_size} processes' if self.dist.world_size > 1 else ''}; "
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

    def make_stream(self, dataset: Any, batch_size: int, seed_offset: int = 0) -> Iterator[dict[str, Any]]:
        """An endless device-side batch iterator starting at the current iteration."""
        d = self.cfg.data
        loader, _ = train_loader(dataset, batch_size, d.num_workers, self.cfg.seed + seed_offset,
                                 start_iter=self.iter, rank=self.dist.rank, world_size=self.dist.world_size,
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

    # ------------------------------------------------------------------ step helpers
    @property
    def epoch(self) -> int:
        """1-based epoch of the current iteration (as the papers count)."""
        return self.iter // self.iters_per_epoch + 1

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
        raise NotImplementedError

    def next_batches(self) -> dict[str, Any]:
        """The batch(es) for one iteration; default: the paired stream."""
        return next(self.paired_stream)

    def start_streams(self) -> None:
        self.paired_stream = self.make_stream(self.paired_set, self.batch_size("paired"))

    # ------------------------------------------------------------------ EMA
    ema_steps_offset = 0

    def update_teachers(self) -> None:
        if not self.teachers:
            return
        step = self.ema_steps_offset + self.iter
        for name, teacher in self.teachers.items():
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
        bar = tqdm(total=self.total_iters, initial=self.iter, disable=None if self.is_main else True, desc=self.cfg.name,
                   dynamic_ncols=True, leave=False)
        kill_at = _kill_at_iter()
        while self.iter < self.total_iters:
            batch = self.next_batches()
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                terms = self._run_step(batch)
            total = sum(v.detach().float() for v in terms.values())
            if self._all_finite(total):  # the one host sync per step: the non-finite guard
                self.nonfinite_streak = 0
                self.scaler.unscale_(self.optimizer)
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), t.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.iter += 1
                self.update_teachers()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                count += 1
            else:
                # the step is skipped (weights, optimizer and teacher untouched) but the iteration
                # counts, so logging, validation and checkpoints keep their schedule (and a run
                # whose last step is skipped still writes last.pth at the final iteration)
                self._skip_nonfinite(terms)
                self.iter += 1
                self.scheduler.step()
            bar.update(1)
            if self.iter % t.log_every == 0 or self.iter == self.total_iters:
                values = {k: float(v) / count for k, v in sums.items()}
                rate = count / max(time.time() - tic, 1e-9)
                self._log_train(values, rate)
                sums, count, tic = {}, 0, time.time()
            if val_every and (self.iter % val_every == 0 or self.iter == self.total_iters) and self.val_set:
                self.validate()
            if self.iter % save_every == 0 or self.iter == self.total_iters:
                self.save_checkpoint("last")
            if kill_at == self.iter:  # test hook, see _kill_at_iter
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        self.log.info(f"training finished at iteration {self.iter}")

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

    def _log_train(self, values: dict[str, float], rate: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        self.log.info(f"iter {self.iter}/{self.total_iters} epoch {self.epoch} lr {lr:.3e} {text} "
                      f"({rate:.2f} it/s)")
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
        """Score every eval network on the validation set (sharded over ranks); keep the best of each."""
        v = self.cfg.validation
        protocol = EvalProtocol(ssim=v.ssim, lpips=self._val_lpips() if v.lpips else None)
        shard = _Shard(self.val_set, self.dist.rank, self.dist.world_size, v.max_images)
        results = {}
        for name, net in self.eval_networks().items():
            was_training = net.training
            net.eval()
            res = evaluate(net, self.make_eval_loader(shard), self.device, protocol, time_forward=False)
            net.train(was_training)
            results[name] = self._reduce_means(res.rows, lpips=protocol.lpips is not None)
        if self.is_main:
            text = " | ".join(f"{n}: " + " ".join(f"{k}={val:.4f}" for k, val in r.items() if k != "images")
                              for n, r in results.items())
            self.log.info(f"validation @ {self.iter}: {text}")
            for n, r in results.items():
                self.log.scalars({k: val for k, val in r.items() if k != "images"}, self.iter, prefix=f"val/{n}/")
        watch = v.watch
        improved_any = False
        for name, r in results.items():
            score = r.get(watch)
            if score is None:
                continue
            prev = self.best.get(name)
            better = prev is None or (score < prev["score"] if watch == "lpips" else score > prev["score"])
            if better:
                self.best[name] = {"score": score, "iter": self.iter, **r}
                self.save_checkpoint(f"best_{name}")
                improved_any = True
        if improved_any:
            overall = max(self.best.items(), key=lambda kv: -kv[1]["score"] if watch == "lpips" else kv[1]["score"])
            if overall[1]["iter"] == self.iter:
                self.save_checkpoint("best", extra={"best_network": overall[0]})
        return results

    def _val_lpips(self) -> nn.Module | None:
        if not hasattr(self, "_lpips_metric"):
            from common_utils.lpips_weights import try_build_lpips

            self._lpips_metric, reason = try_build_lpips()
            if self._lpips_metric is None:
                self.log.info(reason)
            else:
                self._lpips_metric = self._lpips_metric.to(self.device)
        return self._lpips_metric

    def _reduce_means(self, rows: list[dict[str, Any]], lpips: bool = False) -> dict[str, float]:
        # the keys must not depend on this rank's rows: a rank whose shard is empty (fewer
        # validation images than ranks) still joins an all-reduce of the same size
        keys = ["psnr", "ssim"] + (["lpips"] if lpips else [])
        sums = torch.tensor([sum(r[k] for r in rows if r.get(k) is not None) for k in keys] + [len(rows)],
                            dtype=torch.float64,
                            device=self.device if self.device.type == "cuda" else "cpu")
        if self.dist.enabled:
            dist.all_reduce(sums)
        n = max(float(sums[-1]), 1.0)
        out = {k: float(sums[i]) / n for i, k in enumerate(keys)}
        out["images"] = int(sums[-1])
        return out

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """Trainer-specific state to checkpoint (override with :meth:`load_extra_state`)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (the base trainer saves nothing extra)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "ssir-train-v1",
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

    def weights_state(self, only: str | None = None) -> dict[str, Any]:
        """Network weights and metadata, without optimizer state (the ``best`` checkpoints)."""
        nets = {**self.networks, **self.teachers}
        return {
            "format": "ssir-weights-v1",
            "network": network_name(self.cfg.network.name),
            "network_args": self.cfg.network.args.to_dict(),
            "networks": {k: v.state_dict() for k, v in nets.items() if only is None or k == only},
            "iter": self.iter,
            "best": self.best,
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self, tag: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``checkpoints/<tag>.pth`` atomically (rank 0).

        ``last`` holds the full training state (and the last K are kept as ``iter_*.pth``);
        ``best`` / ``best_<network>`` hold weights only.
        """
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
            if extra:
                state.update(extra)
            atomic_save(state, self.ckpt_dir / f"{tag}.pth")
            if tag == "last" and self.cfg.train.keep_last > 1:
                link = self.ckpt_dir / f"iter_{self.iter:08d}.pth"
                try:  # same bytes as last.pth: a hard link costs no second write
                    link.unlink(missing_ok=True)
                    os.link(self.ckpt_dir / "last.pth", link)
                except OSError:
                    atomic_save(state, link)
                kept = sorted(self.ckpt_dir.glob("iter_*.pth"))
                for old in kept[:-self.cfg.train.keep_last]:
                    old.unlink(missing_ok=True)
        self._barrier()

    def _resume(self, path: str) -> None:
        ckpt = safe_load(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("format") != "ssir-train-v1":
            raise CheckpointError(f"{path} is not a training checkpoint of this framework (use pretrained.path to "
                                  f"start from released weights)")
        for k, net in {**self.networks, **self.teachers}.items():
            if k not in ckpt["networks"]:
                raise CheckpointError(f"{path} has no weights for '{k}'")
            load_network_weights(net, ckpt["networks"][k], self.cfg.network.name, source=path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iter"])
        self.ema_steps_offset = int(ckpt.get("ema_steps_offset", 0))
        self.best = dict(ckpt.get("best", {}))
        self.nonfinite_total = int(ckpt.get("nonfinite_total", 0))
        self.nonfinite_streak = int(ckpt.get("nonfinite_streak", 0))
        per_rank = ckpt.get("rng_ranks")
        if self.dist.enabled and isinstance(per_rank, (list, tuple)) and len(per_rank) == self.dist.world_size:
            restore_rng_state(per_rank[self.dist.rank])  # each rank continues its own random stream
        else:
            restore_rng_state(ckpt["rng"])
        self.load_extra_state(ckpt.get("trainer", {}))
        self.log.info(f"resumed from {path} at iteration {self.iter}")

    def _barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def best_network_checkpoint(self) -> tuple[Path, str]:
        """Path of the checkpoint and network key to evaluate at the end."""
        best = self.ckpt_dir / "best.pth"
        if self.cfg.eval.checkpoint == "best" and best.exists():
            ck = safe_load(best)
            return best, ck.get("best_network", self.trained_networks[0])
        return self.ckpt_dir / "last.pth", "teacher" if self.teachers else self.trained_networks[0]

    def close(self) -> None:
        """Stop loader workers, close the log and the process group."""
        for name in ("paired_stream", "unpaired_stream"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        self.log.close()
        if dist.is_available() and dist.is_initialized():
            # every rank reaches teardown before any leaves: a rank exiting while another still
            # evaluates or writes would abort the other's gloo/NCCL threads
            dist.barrier()
            dist.destroy_process_group()


class _Shard(torch.utils.data.Dataset):
    """Every ``world``-th item of a dataset, starting at ``rank`` (distributed validation)."""

    def __init__(self, base: Any, rank: int, world: int, limit: int | None) -> None:
        n = len(base) if limit is None else min(limit, len(base))
        self.base, self.idx = base, list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.idx[i]]


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    net = getattr(net, "module", net)
    return getattr(net, "_orig_mod", net)


__all__ = ["BaseTrainer", "TrainingStopped", "resolve_path", "unwrap", "extract_state_dict"]


def final_evaluation(trainer: BaseTrainer) -> dict[str, Any]:
    """Evaluate the selected checkpoint on ``eval.datasets``; write ``results/`` (rank 0 only).

    The summary holds, per dataset, the selected network's scores at the top level, every
    network of the checkpoint (student, teacher) under its name, and the input's own scores
    under ``input``.
    """
    from common_utils.evaluation.datasets import open_eval_datasets
    from common_utils.evaluation.report import write_rows_csv, write_summary
    from common_utils.lpips_weights import try_build_lpips

    cfg = trainer.cfg
    if not trainer.is_main or not cfg.eval.datasets:
        return {}
    ckpt_path, main_key = trainer.best_network_checkpoint()
    ckpt = safe_load(ckpt_path)
    nets: dict[str, nn.Module] = {}
    for key, sd in ckpt["networks"].items():
        net = trainer.build_network_for(key)
        net.load_state_dict(sd, strict=True)
        nets[key] = net.eval()
    lpips_metric, reason = try_build_lpips() if cfg.eval.lpips else (None, "disabled in the config")
    protocol = EvalProtocol(ssim=cfg.eval.ssim, lpips=lpips_metric.to(trainer.device) if lpips_metric else None,
                            lpips_reason=reason, fast=cfg.eval.fast, tile=cfg.eval.tile,
                            tile_overlap=cfg.eval.tile_overlap, resize=cfg.eval.resize)
    if reason and cfg.eval.lpips:
        trainer.log.info(reason)
    results_dir = trainer.exp_dir / "results"
    summary: dict[str, Any] = {}
    datasets, missing = open_eval_datasets(cfg.eval.datasets, cfg.eval.data_root)
    for name, msg in missing.items():
        trainer.log.info(f"dataset {name} skipped: {msg}")
        summary[name] = {"missing": msg}
    for name, ds in datasets.items():
        loader = trainer.make_eval_loader(ds)
        scored = {key: evaluate(net, loader, trainer.device, protocol) for key, net in nets.items()}
        main = scored[main_key]
        write_rows_csv(results_dir / name / "per_image.csv", main.rows)
        entry: dict[str, Any] = {**main.summary(), "network": main_key, "checkpoint": ckpt_path.name}
        entry.update({key: res.summary() for key, res in scored.items()})
        entry["input"] = evaluate(lambda x: x, loader, trainer.device, protocol, time_forward=False).summary()
        for k in ("latency_ms", "fps"):
            entry["input"].pop(k, None)
        summary[name] = entry
        trainer.log.info(f"test {name}: {main_key} PSNR {entry['psnr']:.2f} SSIM {entry['ssim']:.4f} | input PSNR "
                         f"{entry['input']['psnr']:.2f} SSIM {entry['input']['ssim']:.4f}")
    write_summary(results_dir, summary, protocol.describe(trainer.device), title=f"Results of {cfg.name}")
    trainer.log.info(f"results written to {results_dir / 'summary.json'}")
    return summary
