#!/usr/bin/env python
"""Training and evaluation side by side with the official SSLL code (eezkni/CMT), on the CPU.

    python scripts/compare_official.py --official /work/official/CMT [--backbones RetinexFormer CIDNet UNet] [--out DIR]

The official side needs piq, loguru, timm and pyiqa (``--official-python`` may name another
interpreter that has them and the same torch). Results and the method: docs/official_comparison.md.

Sections (``--sections``, default train, equality, eval; ``profile`` on request):

- ``train``: seconds per training iteration, ours vs official, for the supervised step and the
  SSLL step (Mean Teacher + CutMix + PICo) of each backbone, with the same backbone, batch, crop,
  losses (1-SSIM + LPIPS AlexNet, PICo, masked consistency) and images. Two feeds: ``premade``
  (identical pre-made tensors: forward + backward + optimizer + EMA and the loop around them) and
  ``loader`` (each side's own data pipeline over the same PNG files, ``num_workers=0``). Ours runs
  with the config defaults (``ours``), with the documented speed switches (``ours_fast``,
  ``--fast-switches``) and, with ``--ours-env``, with defaults in a process started with extra
  environment variables (``ours_env``, e.g. glibc malloc settings). Blocks are interleaved
  (official, ours, ours_fast, ours_env, official, ...); each block starts with ``--warmup`` untimed
  iterations; an iteration is timed from one batch fetch to the next; the table gives the median
  over every timed iteration.
- ``equality``: the per-term losses of the first ``--equality-iters`` iterations, ours vs official,
  from the same initial weights (ours copied into the official networks, strictly), the same
  batches and the same CutMix boxes (injected on both sides). Ours runs with the switches that
  restore the official behaviour (``train.output_clamp=hard``, ``ssll.official_lpips_range``,
  ``ssll.fused_student_forward=false``) and a constant learning rate; the initial teacher is the
  student plus ``--teacher-offset`` x N(0, 1) per weight, loaded on both sides.
- ``eval``: images per second end to end (process start to exit) of ours
  ``common_utils/evaluation/eval.py`` and of the official ``common_utils/evaluation/eval.py`` on
  the same network, random-init weights and images, with the share of the loop spent in metrics,
  and the per-image PSNR / SSIM / LPIPS of both.
- ``profile``: per step (premade batch) wall / user / sys seconds and minor page faults, then a
  torch.profiler table (self CPU time), for every side and for ours with two student passes.

Each side runs in its own worker process (the official packages ``data``, ``models``,
``common_utils`` share names with ours); only one of them computes at a time. The official code is
imported only from ``--official`` and runs unmodified: its ``.cuda()`` / ``.to("cuda")`` calls are
made no-ops by CPU shims in its worker, its TensorBoard writer is replaced by an in-memory recorder
(which also yields its per-term losses), and its torchvision/LPIPS downloads are served from a
local ``TORCH_HOME`` (a stand-in AlexNet state dict shared with ours, and the linear LPIPS heads
of the installed ``lpips`` package). The official evaluation computes only the metrics ours
computes (PSNR, SSIM, LPIPS): its NIQE and NIMA need downloaded weights.

Writes ``<out>/compare_official.json`` and ``<out>/compare_official.md``; worker logs in ``<out>/logs``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's file name, looked up by both sides
LPIPS_HEADS_FILE = "alex.pth"  # the official LPIPS loss fetches its linear heads under this name
MODES = ("sup", "ssll")
FEEDS = ("premade", "loader")


@dataclass(frozen=True)
class Backbone:
    """One backbone on both sides: our config stem and network name, the official config prefix."""

    name: str
    config_stem: str  # config/sup_<stem>.yaml, config/ssll_<stem>.yaml
    official_prefix: str  # <official>/config/<prefix>_{Baseline,Contra}.json
    batch: int  # the paper's per-step batch (paired; the unpaired batch is the same)


BACKBONES: dict[str, Backbone] = {
    "RetinexFormer": Backbone("RetinexFormer", "retinexformer", "Retinol_RetinexFormer", 3),
    "CIDNet": Backbone("CIDNet", "cidnet", "Retinol_CIDNet", 8),
    "UNet": Backbone("UNet", "unet", "Retinol_Unet", 3),
}

# official loss group -> our term name (per loss class); the unpaired groups carry the ramp weight
OFFICIAL_TERMS: dict[tuple[str, str], str] = {
    ("supervised_loss", "ModifiedSSIMLoss"): "ssim",
    ("supervised_loss", "LPIPSLoss"): "lpips",
    ("paired_contrastive_loss", "ContrastiveLoss"): "pico_paired",
    ("unpaired_consist_loss", "MaskConsistencyLoss"): "consistency",
    ("unpaired_contrastive_loss", "ContrastiveLoss"): "pico_unpaired",
}
UNPAIRED_GROUPS = ("unpaired_consist_loss", "unpaired_contrastive_loss")
# the tag each official step passes to its loss_fn -> loss group
OFFICIAL_TAG_GROUP: dict[str, str] = {
    "Supervised": "supervised_loss",
    "Paired-student-GT": "supervised_loss",
    "Paired-contrastive": "paired_contrastive_loss",
    "Unpaired-student-teacher": "unpaired_consist_loss",
    "CutMix-feature": "cutmix_loss",
    "Unpaired-contrastive": "unpaired_contrastive_loss",
}


# ====================================================================== shared helpers
def set_single_thread() -> None:
    """One intra-op and one inter-op thread (call before any torch work)."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)


def worker_env(torch_home: Path) -> dict[str, str]:
    """Environment of every worker: one thread everywhere, local TORCH_HOME, no foreign PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LPIPS_ALEXNET_WEIGHTS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TORCHINDUCTOR_COMPILE_THREADS="1", TORCH_HOME=str(torch_home), PYTHONUNBUFFERED="1",
               OPENCV_LOG_LEVEL="ERROR", PYTHONWARNINGS="ignore")
    return env


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Stamped:
    """An iterable of ``n`` items that records ``time.perf_counter()`` before fetching each one.

    ``source`` is called once per ``iter()`` and returns the underlying iterator.
    """

    def __init__(self, source: Callable[[], Iterator[Any]], n: int, stamps: list[float] | None) -> None:
        self.source, self.n, self.stamps = source, n, stamps

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        it = self.source()
        for _ in range(self.n):
            if self.stamps is not None:
                self.stamps.append(time.perf_counter())
            yield next(it)


def intervals(stamps: list[float], warmup: int) -> list[float]:
    """Per-iteration seconds from start stamps (the last stamp closes the last iteration)."""
    d = [b - a for a, b in zip(stamps, stamps[1:])]
    return d[warmup:]


# ====================================================================== worker plumbing
def serve(make_side: Callable[[], Any]) -> int:
    """Build the side, then answer JSON-line commands on stdin with JSON lines (prints go to stderr)."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    side = make_side()
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            result = getattr(side, req["cmd"])(**req.get("args", {}))
            reply.write(json.dumps({"ok": result}) + "\n")
        except Exception:  # reported to the parent, which raises it with the worker's traceback
            reply.write(json.dumps({"error": traceback.format_exc()}) + "\n")
    return 0


class WorkerError(RuntimeError):
    """A command failed inside a worker (the message holds its traceback)."""


class Worker:
    """A persistent worker process (``--worker ours|official``) driven by JSON lines."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log_file = open(log, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file,
                                     env=env, cwd=str(cwd), text=True, bufsize=1)

    def call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.name} worker exited (code {self.proc.wait()}); see {self.log_file.name}")
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.name} worker, command {cmd}:\n{msg['error']}")
        return msg["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
        self.log_file.close()


# ====================================================================== our side
class OursSide:
    """This framework, driven through its config loader and trainer loop (``BaseTrainer.train``)."""

    def __init__(self, work: str, crop: int) -> None:
        set_single_thread()
        sys.path.insert(0, str(REPO_ROOT))
        from common_utils.cli import keep_freed_memory

        keep_freed_memory()  # as run.py does through run_cli (opt out: SSIR_DEFAULT_MALLOC=1)
        self.work, self.crop = Path(work), crop
        self.trainers: dict[str, Any] = {}
        self.backbone: str | None = None

    # -------------------------------------------------------------- building
    def _config(self, bb: Backbone, mode: str, batch: int, extra: list[str]) -> Any:
        from core.config import load_config

        stem = f"{'sup' if mode == 'sup' else 'ssll'}_{bb.config_stem}"
        ov = [f"name=cmp_{stem}_{os.getpid()}_{zlib.crc32(' '.join(extra).encode()):08x}",
              f"output_root={self.work / 'ours_runs'}",
              f"data.paired.args.lq_dir={self.work / 'paired' / 'low'}",
              f"data.paired.args.gt_dir={self.work / 'paired' / 'normal'}",
              f"data.paired.args.crop_size={self.crop}",
              f"data.batch_size={batch}", "data.num_workers=0", "data.val.type=null",
              "train.log_every=1000000000", "train.save_every=1000000000", "eval.after_train=false"]
        if mode == "ssll":
            ov += [f"data.unpaired.args.root={self.work / 'unpaired' / 'low' / 'student'}",
                   f"data.unpaired.args.crop_size={self.crop}", f"data.unpaired.batch_size={batch}"]
        return load_config(REPO_ROOT / "config" / f"{stem}.yaml", ov + extra)

    def _trainer(self, cfg: Any) -> Any:
        from core import TRAINERS

        tr = TRAINERS.get(cfg.trainer)(cfg)
        tr.save_checkpoint = lambda *a, **k: None  # no checkpoint I/O inside timed blocks
        return tr

    def _switch_backbone(self, name: str) -> None:
        if self.backbone != name:
            self.trainers.clear()
            gc.collect()
            self.backbone = name

    def setup(self, backbone: str, mode: str, variant: str, batch: int, switches: list[str],
              warmup: int) -> dict[str, Any]:
        """Build (and warm up) the trainer of ``variant`` ('default': config defaults; any other name: with
        ``switches``); return the warm-up seconds."""
        self._switch_backbone(backbone)
        extra = ["ssll.semi_start_epoch=1"] if mode == "ssll" else []
        if variant != "default":  # ssll.* switches only where the config has an ssll section
            extra += [sw for sw in switches if mode == "ssll" or not sw.startswith("ssll.")]
        tr = self._trainer(self._config(BACKBONES[backbone], mode, batch, extra))
        self.trainers[f"{mode}/{variant}"] = tr
        batch = self._premade(mode)
        t0 = time.perf_counter()
        self._run(tr, lambda: batch, max(warmup, 1), None)
        return {"warmup_s": time.perf_counter() - t0, "switches": extra,
                "params": sum(p.numel() for p in tr.networks["student"].parameters())}

    def _premade(self, mode: str, index: int = 0) -> dict[str, Any]:
        import torch

        b = torch.load(self.work / f"batches_{self.backbone}.pt", weights_only=True)
        batch = {"lq": b["x_p"][index], "gt": b["gt"][index]}
        if mode == "ssll":
            batch["unpaired"] = {"lq": b["x_u"][index]}
        return batch

    @staticmethod
    def _run(tr: Any, feed: Callable[[], dict[str, Any]] | None, n: int, stamps: list[float] | None) -> None:
        """Run ``n`` iterations of the trainer's own loop; ``feed`` replaces its data stream.

        With ``stamps``, one more iteration runs so that every timed iteration is closed by the next
        fetch: whatever the trainer does after its loop (final log, curves) is never timed.
        """
        own = type(tr).next_batches.__get__(tr)

        def next_batches() -> dict[str, Any]:
            if stamps is not None:
                stamps.append(time.perf_counter())
            return feed() if feed is not None else own()

        tr.next_batches = next_batches
        if hasattr(tr, "write_curves"):
            tr.write_curves = lambda *a, **k: None  # a plot per block would only cost wall time
        tr.total_iters = tr.iter + n + (1 if stamps is not None else 0)
        tr.train()

    # -------------------------------------------------------------- commands
    def info(self) -> dict[str, Any]:
        import torch

        git = ["git", "-C", str(REPO_ROOT)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout.splitlines()
        import core

        return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                "repo": str(REPO_ROOT), "commit": head or None, "uncommitted_files": len(dirty),
                "core_imported_from": str(Path(core.__file__).parent)}

    def block(self, mode: str, variant: str, feed: str, iters: int, warmup: int) -> list[float]:
        """Seconds per iteration of ``iters`` timed iterations after ``warmup`` untimed ones."""
        tr = self.trainers[f"{mode}/{variant}"]
        stamps: list[float] = []
        batch = self._premade(mode) if feed == "premade" else None
        self._run(tr, (lambda: batch) if batch is not None else None, warmup + iters, stamps)
        return intervals(stamps, warmup)[:iters]

    def save_init(self, backbone: str, path: str, seed: int = 0) -> dict[str, Any]:
        """Save a random-init state dict of ``backbone`` (built by our registry) to ``path``."""
        import torch

        from models import build_network

        torch.manual_seed(seed)
        net = build_network(backbone)
        torch.save(net.state_dict(), path)
        return {"params": sum(p.numel() for p in net.parameters())}

    def equality(self, backbone: str, mode: str, batch: int, iters: int, epoch: int, semi_start: int,
                 init_out: str, teacher_offset: float = 0.0) -> list[dict[str, float]]:
        """Per-term losses of ``iters`` iterations with the official behaviours switched on.

        The teacher starts as the student plus ``teacher_offset`` x N(0, 1) on every weight (as in a
        run past its first steps, where the EMA teacher differs from the student); with 0 both start
        equal, and |student - teacher| = 0 makes the L1 terms' gradient sign(0) decided by rounding.
        ``init_out`` receives {"student": ..., "teacher": ...} for the official side.
        """
        import torch

        self._switch_backbone(backbone)
        ipe = 1000
        extra = ["train.output_clamp=hard", "ssll.official_lpips_range=true", "ssll.fused_student_forward=false",
                 "scheduler.type=constant", f"train.iters_per_epoch={ipe}",
                 f"ssll.semi_start_epoch={semi_start if mode == 'ssll' else 'null'}"]
        bb = BACKBONES[backbone]
        cfg = self._config(bb, "ssll", batch, extra)  # the SSLL trainer; its supervised phase for mode sup
        tr = self._trainer(cfg)
        student = tr.networks["student"].state_dict()
        gen = torch.Generator().manual_seed(1234)
        teacher = {k: (v + teacher_offset * torch.randn(v.shape, generator=gen, dtype=v.dtype)
                       if teacher_offset and v.is_floating_point() else v.clone()) for k, v in student.items()}
        for net in tr.teachers.values():
            net.load_state_dict(teacher)
        torch.save({"student": student, "teacher": teacher}, init_out)
        tr.iter = (epoch - 1) * ipe  # the official run's epoch (ramp weight); constant lr
        tr.ema_steps_offset = 10 ** 6  # EMA decay at its plateau, as the official global_step later on
        b = torch.load(self.work / f"batches_{backbone}.pt", weights_only=True)
        batches = iter([{"lq": b["x_p"][k], "gt": b["gt"][k], **({"unpaired": {"lq": b["x_u"][k]}}
                                                                   if mode == "ssll" else {})}
                        for k in range(iters)])
        mixes = iter([(b["x_c"][k], b["mask"][k]) for k in range(iters)])
        tr.mix = lambda x_p, x_u: next(mixes)  # the injected CutMix boxes
        rows: list[dict[str, float]] = []
        step = type(tr).train_step.__get__(tr)

        def capture(batch_: dict[str, Any]) -> dict[str, torch.Tensor]:
            terms = step(batch_)
            rows.append({k: float(v.detach()) for k, v in terms.items()})
            return terms

        tr.train_step = capture
        self._run(tr, lambda: next(batches), iters, None)
        del tr
        gc.collect()
        return rows

    def profile(self, mode: str, variant: str, iters: int) -> dict[str, Any]:
        """Resource use of ``iters`` steps (no profiler), then a torch.profiler table of ``iters`` more."""
        tr = self.trainers[f"{mode}/{variant}"]
        batch = self._premade(mode)
        return profile_steps(lambda n: self._run(tr, lambda: batch, n, None), iters)


# ====================================================================== official side
def install_cpu_shims() -> None:
    """Make the official code's CUDA placement calls no-ops on a CPU-only machine (no file edited)."""
    import torch
    import torch.nn as nn

    if torch.cuda.is_available():
        return
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    module_to = nn.Module.to

    def to(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return module_to(self, *args, **kwargs)

    nn.Module.to = to  # type: ignore[method-assign]


def read_official_json(path: Path) -> dict[str, Any]:
    """An official JSON config (``//`` comments allowed, as its own parser does)."""
    text = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
    return json.loads(text)


class ScalarRecorder:
    """Stands in for the official SummaryWriter: keeps the scalars, writes nothing."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.rows.append((tag, float(value), int(step)))

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class OfficialSide:
    """The official trainer (``models.model.Retinol``) and its loaders, imported from ``official``."""

    def __init__(self, official: str, work: str, crop: int) -> None:
        set_single_thread()
        install_cpu_shims()
        self.root = Path(official).resolve()
        sys.path.insert(0, str(self.root))
        self.work, self.crop = Path(work), crop
        self.models: dict[str, Any] = {}
        self.backbone: str | None = None

    def info(self) -> dict[str, Any]:
        import torch

        head = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True, text=True)
        return {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "commit": head.stdout.strip() or None}

    def _options(self, bb: Backbone, mode: str, batch: int, run_dir: Path) -> Any:
        from utils.util import convert_dict_to_nonedict

        kind = "Baseline" if mode == "sup" else "Contra"
        opt = read_official_json(self.root / "config" / f"{bb.official_prefix}_{kind}.json")
        run_dir.mkdir(parents=True, exist_ok=True)
        opt["path"] = {"iqa_csv": str(run_dir / "iqa.csv"), "tensorboard_log_dir": str(run_dir / "tb"),
                       "results": str(run_dir / "results"), "checkpoint": str(run_dir / "checkpoint"),
                       "log_file": str(run_dir / "run.log"), "profile_path": None, "resume_state": None}
        ds = opt["datasets"]["train"]
        ds["which_dataset"]["paired_dataset"]["args"] = {"paired_path": str(self.work / "paired"),
                                                         "image_size": [self.crop, self.crop]}
        ds["which_dataset"]["unpaired_dataset"]["args"] = {"dir_list": [str(self.work / "unpaired")],
                                                           "image_size": [self.crop, self.crop]}
        ds["which_dataset"]["valid_datasets"] = {}
        for key in ("paired_args", "unpaired_args"):
            ds["dataloader"][key].update(batch_size=batch, num_workers=0, pin_memory=False)
        opt.update(phase="train", visual=False)
        return convert_dict_to_nonedict(opt)

    def _build(self, bb: Backbone, mode: str, batch: int, tag: str) -> dict[str, Any]:
        """The official Retinol trainer with its networks, losses, optimizer and loaders."""
        from utils.util import set_seed

        import data as odata
        import models as omodels
        from models.model import GradScaler, Retinol

        options = self._options(bb, mode, batch, self.work / "official_runs" / f"{bb.name}_{mode}_{tag}")
        set_seed(options["seed"])  # as run.py: seeds and deterministic algorithms
        if options["use_non_deterministic"]:
            import torch

            torch.use_deterministic_algorithms(False)
        paired_loader, unpaired_loader, _ = odata.create_dataloader(options)
        m = options["model"]
        net_opt = m["which_networks"][0]
        networks = [omodels.create_network(options, copy.deepcopy(net_opt), ema=False),
                    omodels.create_network(options, copy.deepcopy(net_opt), ema=True)]
        losses = {name: [omodels.create_loss(copy.deepcopy(o)) for o in lst]
                  for name, lst in m["which_losses"].items()}
        model_args = copy.deepcopy(m["which_model"]["args"])
        model = Retinol(networks, paired_loader, unpaired_loader, {}, losses, {}, model_args["optimizer"],
                        False, None, model_args.get("init_method"), options["path"]["tensorboard_log_dir"], options)
        model.summery_writer.close()
        model.summery_writer = ScalarRecorder()
        model.network.train()
        model.ema_network.train()
        scaler = GradScaler(enabled=bool(options["speed_up"]["enable_amp"]))
        return {"model": model, "options": options, "scaler": scaler, "losses": losses,
                "paired_loader": paired_loader, "unpaired_loader": unpaired_loader}

    def _epoch(self, entry: dict[str, Any], mode: str) -> int:
        return 1 if mode == "sup" else int(entry["options"]["train"]["semi_start_epoch"])

    def _step_fn(self, entry: dict[str, Any], mode: str, epoch: int) -> Callable[[], None]:
        model, options, scaler = entry["model"], entry["options"], entry["scaler"]

        def run() -> None:
            model.optimizer.zero_grad(set_to_none=True)  # as Retinol.train does per epoch
            if mode == "sup":
                model.supervise_train_step(options, epoch, scaler)
            else:
                model.semi_supervise_train_step(options, epoch, scaler)
        return run

    def _premade(self, index: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        b = torch.load(self.work / f"batches_{self.backbone}.pt", weights_only=True)
        x_p, gt, x_u = b["x_p"][index], b["gt"][index], b["x_u"][index]
        return ({"file_name": ["premade"] * x_p.shape[0], "student_input": x_p, "teacher_input": x_p,
                 "ground_truth": gt},
                {"file_name": ["premade"] * x_u.shape[0], "student_input": x_u, "teacher_input": x_u})

    def _feed(self, entry: dict[str, Any], feed: str, n: int, stamps: list[float] | None) -> None:
        model = entry["model"]
        if feed == "premade":
            paired, unpaired = self._premade()
            model.paired_loader = Stamped(lambda: iter(lambda: paired, None), n, stamps)
            model.unpaired_loader = Stamped(lambda: iter(lambda: unpaired, None), n, None)
        else:
            pl, ul = entry["paired_loader"], entry["unpaired_loader"]
            model.paired_loader = Stamped(lambda: _endless(pl), n, stamps)
            model.unpaired_loader = Stamped(lambda: _endless(ul), n, None)

    def setup(self, backbone: str, mode: str, batch: int, warmup: int) -> dict[str, Any]:
        if self.backbone != backbone:
            self.models.clear()
            gc.collect()
            self.backbone = backbone
        entry = self._build(BACKBONES[backbone], mode, batch, "timing")
        self.models[mode] = entry
        t0 = time.perf_counter()
        self._feed(entry, "premade", max(warmup, 1), None)
        self._step_fn(entry, mode, self._epoch(entry, mode))()
        return {"warmup_s": time.perf_counter() - t0,
                "params": sum(p.numel() for p in entry["model"].network.parameters())}

    def block(self, mode: str, feed: str, iters: int, warmup: int) -> list[float]:
        entry = self.models[mode]
        stamps: list[float] = []
        self._feed(entry, feed, warmup + iters, stamps)
        self._step_fn(entry, mode, self._epoch(entry, mode))()
        stamps.append(time.perf_counter())
        return intervals(stamps, warmup)

    def equality(self, backbone: str, mode: str, batch: int, iters: int, epoch: int,
                 init: str) -> dict[str, Any]:
        """Per-term losses (weighted as in the official total) from ``init`` weights and injected CutMix."""
        import torch

        import data as odata
        from models.model import get_current_consistency_weight

        self.backbone = backbone
        entry = self._build(BACKBONES[backbone], mode, batch, "equality")
        model, options = entry["model"], entry["options"]
        state = torch.load(init, weights_only=True)
        model.network.load_state_dict(state["student"], strict=True)
        model.ema_network.load_state_dict(state["teacher"], strict=True)
        model.global_step = 10 ** 6  # EMA decay at its plateau (the run is past its first steps)
        b = torch.load(self.work / f"batches_{backbone}.pt", weights_only=True)
        paired = [{"file_name": ["eq"] * batch, "student_input": b["x_p"][k], "teacher_input": b["x_p"][k],
                   "ground_truth": b["gt"][k]} for k in range(iters)]
        unpaired = [{"file_name": ["eq"] * batch, "student_input": b["x_u"][k], "teacher_input": b["x_u"][k]}
                    for k in range(iters)]
        mixes = iter([(b["x_c"][k], b["x_c"][k].clone(), b["mask"][k]) for k in range(iters)])
        model.paired_loader, model.unpaired_loader = paired, unpaired
        original_cutmix = odata.RandomCutMix
        odata.RandomCutMix = lambda *a, **k: next(mixes)
        try:
            self._step_fn(entry, mode, epoch)()
        finally:
            odata.RandomCutMix = original_cutmix
        cw = (get_current_consistency_weight(options["train"]["semi_loss_weight"],
                                             options["train"]["semi_loss_consistency_ramp_up"], epoch)
              if mode == "ssll" else 1.0)
        weights = {}
        for group, lst in entry["losses"].items():
            for loss in lst:
                weights[(group, type(loss).__name__)] = float(loss.weight_from_epoch(epoch)) * (
                    cw if group in UNPAIRED_GROUPS else 1.0)
        rows: dict[int, dict[str, float]] = {}
        for tag, value, step in model.summery_writer.rows:
            if not tag.startswith("[") or tag.endswith("Total Loss"):
                continue
            group_tag, cls = tag[1:].split("] ", 1)
            key = (OFFICIAL_TAG_GROUP.get(group_tag, group_tag), cls)
            if key in OFFICIAL_TERMS:
                rows.setdefault(step, {})[OFFICIAL_TERMS[key]] = value * weights[key]
        del entry, model
        gc.collect()
        return {"rows": [rows[s] for s in sorted(rows)], "consistency_weight": cw}

    def profile(self, mode: str, iters: int) -> dict[str, Any]:
        """Resource use of ``iters`` steps (no profiler), then a torch.profiler table of ``iters`` more."""
        entry = self.models[mode]

        def run(n: int) -> None:
            self._feed(entry, "premade", n, None)
            self._step_fn(entry, mode, self._epoch(entry, mode))()

        return profile_steps(run, iters)


def profile_steps(run: Callable[[int], None], iters: int) -> dict[str, Any]:
    """Wall, user and system seconds and minor page faults per step of ``run(iters)``; then the
    20 ops with the most self CPU time under torch.profiler (a second ``run(iters)``)."""
    import resource

    import torch

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(iters)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(iters)
    return {"wall_s": (t1 - t0) / iters, "user_s": (r1.ru_utime - r0.ru_utime) / iters,
            "sys_s": (r1.ru_stime - r0.ru_stime) / iters, "minor_faults": (r1.ru_minflt - r0.ru_minflt) / iters,
            "table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)}


def _endless(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


# ====================================================================== evaluation workers
class _Timed:
    """Wrap a callable and add its wall time to ``self.seconds``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def run_ours_eval(argv: list[str], report: Path) -> int:
    """Run our eval.py's ``main(argv)`` in this process and write its loop's forward/metric seconds.

    ``common_utils.evaluation.evaluator.evaluate`` (the one evaluation loop) is wrapped before the
    CLI module imports it, so every module that binds it records its results.
    """
    import importlib.util

    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO_ROOT))
    import common_utils.evaluation.evaluator as evaluator

    results: list[tuple[Any, float]] = []
    evaluate = evaluator.evaluate

    def capture(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        res = evaluate(*args, **kwargs)
        results.append((res, time.perf_counter() - t))
        return res

    evaluator.evaluate = capture
    cli = REPO_ROOT / "common_utils" / "evaluation" / "eval.py"
    spec = importlib.util.spec_from_file_location("ssir_eval_cli", cli)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code = mod.main(argv)
    report.write_text(json.dumps({
        "code": code, "images": len(results[0][0].rows) if results else 0,
        "loop_s": sum(s for _, s in results),
        "forward_s": sum(sum(getattr(r, "latencies", [])) for r, _ in results),
        "metrics_s": sum(getattr(r, "metric_seconds", 0.0) for r, _ in results),
        "in_process_s": time.perf_counter() - t0}))
    return int(code or 0)


def run_official_eval(official: Path, network: str, weight: str, low: str, high: str, result_dir: Path,
                      report: Path) -> int:
    """Run the official evaluation loop (``eval_one_dataset``) on one folder pair, metrics PSNR/SSIM/LPIPS."""
    import functools

    set_single_thread()
    install_cpu_shims()
    t0 = time.perf_counter()
    sys.path.insert(0, str(official))
    os.chdir(official)
    import torch.utils.data
    from utils.network_loader import load_network
    from utils.util import set_seed

    import common_utils.evaluation.eval as oeval
    from common_utils.evaluation import metrics as ometrics
    from data.general_dataset import PairedEvalDataset

    set_seed(oeval.SEED)
    result_dir.mkdir(parents=True, exist_ok=True)
    oeval.RESULT_DIR = str(result_dir)
    oeval.args = argparse.Namespace(save=False, dataset="LOLv2", network=network, weight=weight)
    oeval.get_dataset = lambda name: PairedEvalDataset(low, high)
    # the official loader starts 8 worker processes; one core is all this machine may use
    oeval.DataLoader = functools.partial(_loader_without_workers, torch.utils.data.DataLoader)
    net = load_network(network, weight).cuda()
    net.eval()
    forward = _Timed(net)
    oeval.network = forward
    funcs = {"PSNR": _Timed(ometrics.PSNR()), "SSIM": _Timed(ometrics.SSIM()), "LPIPS": _Timed(ometrics.LPIPS())}
    values: dict[str, list[float]] = {k: [] for k in funcs}
    t1 = time.perf_counter()
    oeval.eval_one_dataset("LOLv2", network, funcs, values)
    loop = time.perf_counter() - t1
    report.write_text(json.dumps({"code": 0, "images": len(values["PSNR"]), "loop_s": loop,
                                  "forward_s": forward.seconds, "metrics_s": sum(f.seconds for f in funcs.values()),
                                  "in_process_s": time.perf_counter() - t0}))
    return 0


def _loader_without_workers(cls: Any, *args: Any, **kwargs: Any) -> Any:
    kwargs["num_workers"] = 0
    kwargs["pin_memory"] = False
    return cls(*args, **kwargs)


# ====================================================================== parent: preparation
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_at_start": load,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def ensure_alexnet(path: Path, seed: int = 0) -> str:
    """The ONE stand-in AlexNet state dict both sides use (torchvision.alexnet() with a fixed seed)."""
    if not path.is_file():
        import torch
        import torchvision

        torch.manual_seed(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.alexnet().state_dict(), path)
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def prepare_torch_home(work: Path, alexnet: Path) -> Path:
    """TORCH_HOME whose hub cache holds the stand-in AlexNet and the lpips package's linear heads."""
    import lpips

    ckpt = work / "torch_home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for name, target in ((ALEXNET_FILE, alexnet.resolve()),
                         (LPIPS_HEADS_FILE, Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")):
        link = ckpt / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return work / "torch_home"


def _link_dir(dst: Path, files: list[Path], prefix: str = "") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f"{prefix}{f.name}").symlink_to(f.resolve())


def prepare_data(work: Path, train_root: Path, eval_root: Path, eval_copies: int, n_paired: int) -> dict[str, Any]:
    """Folder layouts both sides read: paired (low/normal), unpaired (low/student, low/teacher), eval."""
    for sub in ("paired", "unpaired", "eval"):
        shutil.rmtree(work / sub, ignore_errors=True)
    lows = sorted((train_root / "low").glob("*.png"))
    highs = sorted((train_root / "high").glob("*.png"))
    if len(lows) < 2 * n_paired or [p.name for p in lows] != [p.name for p in highs]:
        raise SystemExit(f"error: need at least {2 * n_paired} pairs with equal names in {train_root}/low and /high")
    paired, pool = lows[:n_paired], lows[n_paired:2 * n_paired]
    _link_dir(work / "paired" / "low", paired)
    _link_dir(work / "paired" / "normal", [train_root / "high" / p.name for p in paired])
    _link_dir(work / "unpaired" / "low" / "student", pool)
    _link_dir(work / "unpaired" / "low" / "teacher", pool)
    elows = sorted((eval_root / "low").glob("*.png"))
    for c in range(eval_copies):
        prefix = f"c{c}_" if eval_copies > 1 else ""
        _link_dir(work / "eval" / "LOLv2" / "low", elows, prefix)
        _link_dir(work / "eval" / "LOLv2" / "normal", [eval_root / "high" / p.name for p in elows], prefix)
    return {"paired": len(paired), "unpaired": len(pool), "eval_images": len(elows) * eval_copies,
            "train_source": str(train_root), "eval_source": str(eval_root)}


def make_batches(work: Path, backbone: str, batch: int, crop: int, count: int, seed: int) -> None:
    """``count`` batches of real crops (paired low, GT, unpaired low) and CutMix boxes, for both sides."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(seed)
    lows = sorted((work / "paired" / "low").glob("*.png"))
    pool = sorted((work / "unpaired" / "low" / "student").glob("*.png"))

    def crop_of(path: Path, top: int, left: int) -> torch.Tensor:
        im = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[top:top + crop, left:left + crop] / 255.0
        return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))

    def corner(path: Path) -> tuple[int, int]:
        w, h = Image.open(path).size
        return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))

    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("x_p", "gt", "x_u", "mask", "x_c")}
    for _ in range(count):
        xp, gt, xu, mk = [], [], [], []
        for _ in range(batch):
            p = lows[int(rng.integers(len(lows)))]
            t, l = corner(p)
            xp.append(crop_of(p, t, l))
            gt.append(crop_of(work / "paired" / "normal" / p.name, t, l))
            u = pool[int(rng.integers(len(pool)))]
            xu.append(crop_of(u, *corner(u)))
            r = float(np.clip(rng.normal(0.5, 0.3), 0.1, 0.9))
            side = int(crop * math.sqrt(r))
            cy, cx = int(rng.integers(crop)), int(rng.integers(crop))
            m = torch.zeros(3, crop, crop)
            m[:, max(cy - side // 2, 0):min(cy + side // 2, crop), max(cx - side // 2, 0):min(cx + side // 2, crop)] = 1
            mk.append(m)
        x_p, x_u, mask = torch.stack(xp), torch.stack(xu), torch.stack(mk)
        out["x_p"].append(x_p)
        out["gt"].append(torch.stack(gt))
        out["x_u"].append(x_u)
        out["mask"].append(mask)
        out["x_c"].append(torch.where(mask > 0, x_p, x_u))
    torch.save({k: torch.stack(v) for k, v in out.items()}, work / f"batches_{backbone}.pt")


# ====================================================================== parent: sections
@dataclass
class Side:
    """One timed column: the official trainer, or one variant of ours in one worker process."""

    label: str
    worker: Worker
    variant: str | None = None  # None: the official worker; else 'default' or 'fast'
    switches: tuple[str, ...] = ()

    def setup(self, backbone: str, mode: str, batch: int, warmup: int) -> dict[str, Any]:
        if self.variant is None:
            return self.worker.call("setup", backbone=backbone, mode=mode, batch=batch, warmup=warmup)
        return self.worker.call("setup", backbone=backbone, mode=mode, variant=self.variant, batch=batch,
                                switches=list(self.switches), warmup=max(warmup, 2) if self.switches else warmup)

    def block(self, mode: str, feed: str, iters: int, warmup: int) -> list[float]:
        if self.variant is None:
            return self.worker.call("block", mode=mode, feed=feed, iters=iters, warmup=warmup)
        return self.worker.call("block", mode=mode, variant=self.variant, feed=feed, iters=iters, warmup=warmup)


def run_training(sides: list[Side], args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Interleaved blocks (one per side, in order, ``--rounds`` times) per backbone, step and feed."""
    rows = []
    for name in args.backbones:
        batch = args.batch or BACKBONES[name].batch
        for mode in MODES:
            setup: dict[str, Any] = {}
            failed: dict[str, str] = {}
            for sd in sides:
                try:
                    setup[sd.label] = sd.setup(name, mode, batch, args.warmup)
                except WorkerError as exc:  # e.g. a speed switch that does not work with this backbone
                    failed[sd.label] = str(exc)
                    log(f"{name} {mode}: {sd.label} set-up failed: {_last_line(str(exc))}")
            live = [sd for sd in sides if sd.label in setup]
            if "official" in failed or len(live) < 2:
                rows.append({"backbone": name, "mode": mode, "error": "; ".join(failed.values())})
                continue
            warm = ", ".join(f"{k} warm-up {v['warmup_s']:.1f}s" for k, v in setup.items())
            log(f"{name} {mode}: set up ({warm})")
            for feed in FEEDS:
                times: dict[str, list[float]] = {sd.label: [] for sd in live}
                per_round: dict[str, list[float]] = {sd.label: [] for sd in live}
                for _ in range(args.rounds):
                    for sd in live:
                        t = sd.block(mode, feed, args.iters, args.warmup)
                        times[sd.label] += t
                        per_round[sd.label].append(statistics.median(t))
                med = {k: median(v) for k, v in times.items()}
                ref = med.get("official")
                row = {"backbone": name, "mode": mode, "feed": feed, "batch": batch, "crop": args.crop,
                       "median_s": med, "samples_s": times, "round_medians_s": per_round,
                       "warmup_s": {k: v["warmup_s"] for k, v in setup.items()},
                       "failed": {k: _last_line(v) for k, v in failed.items()},
                       "ratio": {k: (v / ref if v and ref else None) for k, v in med.items() if k != "official"}}
                rows.append(row)
                log(f"{name} {mode} {feed}: " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items())
                    + " | " + ", ".join(f"{k}/official {v:.2f}" for k, v in row["ratio"].items()))
    return rows


def _last_line(text: str) -> str:
    """The last non-empty line of a worker traceback (the exception itself)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(" ")]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or [text])[-1]


def official_epochs(official: Path, bb: Backbone) -> tuple[int, int]:
    """(finish epoch, semi start epoch) of the official SSLL config (the equality check runs at the finish epoch)."""
    t = read_official_json(official / "config" / f"{bb.official_prefix}_Contra.json")["train"]
    return int(t["finish_epoch"]), int(t["semi_start_epoch"])


def run_equality(ours: Worker, off: Worker, args: argparse.Namespace, work: Path,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for name in args.backbones:
        bb = BACKBONES[name]
        batch = args.batch or bb.batch
        finish, semi_start = official_epochs(args.official, bb)
        for mode in MODES:
            init = work / f"init_{name}_{mode}.pth"
            try:
                o = ours.call("equality", backbone=name, mode=mode, batch=batch, iters=args.equality_iters,
                              epoch=finish, semi_start=semi_start, init_out=str(init),
                              teacher_offset=args.teacher_offset)
                f = off.call("equality", backbone=name, mode=mode, batch=batch, iters=args.equality_iters,
                             epoch=finish, init=str(init))
            except WorkerError as exc:
                log(f"{name} {mode} equality failed: {exc}")
                rows.append({"backbone": name, "mode": mode, "error": str(exc)})
                continue
            terms = sorted(set().union(*[r.keys() for r in o]))
            diff: dict[str, float] = {}
            rel: dict[str, float] = {}
            for t in terms:
                pairs = [(a.get(t), b.get(t)) for a, b in zip(o, f["rows"])]
                d = [abs(a - b) for a, b in pairs if a is not None and b is not None]
                diff[t] = max(d) if d else float("nan")
                rel[t] = max((abs(a - b) / max(abs(b), 1e-12) for a, b in pairs if a is not None and b is not None),
                             default=float("nan"))
            row = {"backbone": name, "mode": mode, "batch": batch, "epoch": finish, "iters": args.equality_iters,
                   "teacher_offset": args.teacher_offset,
                   "ours": o, "official": f["rows"], "consistency_weight": f["consistency_weight"],
                   "max_abs_diff": diff, "max_rel_diff": rel}
            rows.append(row)
            log(f"{name} {mode} equality: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    return rows


def _read_rows(path: Path, name_key: str, cols: dict[str, str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            key = Path(row.get(name_key) or "").stem
            if not key or key == "Average":
                continue
            out[key] = {ours: float(row[theirs]) for ours, theirs in cols.items()
                        if row.get(theirs) not in (None, "", "None")}
    return out


def run_eval(ours: Worker, args: argparse.Namespace, work: Path, envs: dict[str, dict[str, str]],
             log: Callable[[str], None]) -> dict[str, Any]:
    """Both evaluation scripts as fresh processes, interleaved; ``envs``: label -> environment (ours*, official)."""
    net = args.eval_network
    weight = work / f"eval_{net}.pth"
    ours.call("save_init", backbone=net, path=str(weight), seed=0)
    low, high = work / "eval" / "LOLv2" / "low", work / "eval" / "LOLv2" / "normal"
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in envs}
    for r in range(args.eval_rounds):
        for label, env in envs.items():
            report = work / f"eval_{label}_{r}.json"
            out = work / f"eval_{label}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            if label.startswith("ours"):
                cmd = [sys.executable, str(THIS_FILE), "--worker", "ours-eval", "--report", str(report), "--",
                       "-n", net, "-w", str(weight), "-d", "LOLv2", "--data-root", str(work / "eval"),
                       "--out", str(out), "--device", "cpu", "--workers", "0"]
                cwd = REPO_ROOT
            else:
                cmd = [args.official_python, str(THIS_FILE), "--worker", "official-eval", "--official",
                       str(args.official), "--report", str(report), "--eval-network", net, "--weight", str(weight),
                       "--low", str(low), "--high", str(high), "--result-dir", str(out)]
                cwd = work
            t0 = time.perf_counter()
            with open(args.out / "logs" / f"eval_{label}.log", "a") as fh:
                proc = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=fh, stderr=fh)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise WorkerError(f"{label} evaluation failed (code {proc.returncode}); see "
                                  f"{args.out}/logs/eval_{label}.log")
            rep = json.loads(report.read_text())
            rep.update(wall_s=wall, images_per_s=rep["images"] / wall, loop_images_per_s=rep["images"] / rep["loop_s"],
                       metric_share=rep["metrics_s"] / rep["loop_s"], out=str(out))
            runs[label].append(rep)
            log(f"eval {label} round {r}: {rep['images']} images in {wall:.1f}s end to end "
                f"({rep['images_per_s']:.3f} img/s), metrics {100 * rep['metric_share']:.1f}% of the loop")
    # per-image numbers of the last round of each side
    cols = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS"}
    scores = {label: (_read_rows(next(Path(rs[-1]["out"]).glob("metric_*.csv")), "image", cols)
                      if not label.startswith("ours") else
                      _read_rows(Path(rs[-1]["out"]) / "LOLv2" / "per_image.csv", "name", {k: k for k in cols}))
              for label, rs in runs.items()}
    theirs = scores["official"]
    common = sorted(set.intersection(*[set(v) for v in scores.values()]))
    diffs = {label: {m: max((abs(v[k][m] - theirs[k][m]) for k in common if m in v[k] and m in theirs[k]),
                            default=None) for m in cols}
             for label, v in scores.items() if label != "official"}
    means = {label: {m: statistics.mean(v[k][m] for k in common if m in v[k]) if common else None for m in cols}
             for label, v in scores.items()}
    summary: dict[str, Any] = {"network": net, "weights": "random init (seed 0), saved by our registry",
                               "images": len(common), "runs": runs, "max_abs_diff_per_image": diffs, "means": means,
                               "env": {k: {e: v for e, v in env.items() if e in args.ours_env_keys}
                                       for k, env in envs.items()}}
    for key in ("wall_s", "images_per_s", "loop_images_per_s", "metric_share", "forward_s", "metrics_s", "loop_s"):
        summary[key] = {label: median([r[key] for r in rs]) for label, rs in runs.items()}
    ref, ref_loop = summary["images_per_s"]["official"], summary["loop_images_per_s"]["official"]
    summary["speedup_end_to_end"] = {k: v / ref for k, v in summary["images_per_s"].items() if k != "official"}
    summary["speedup_loop"] = {k: v / ref_loop for k, v in summary["loop_images_per_s"].items() if k != "official"}
    return summary


def run_profile(sides: list[Side], args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per step: wall / user / sys seconds and page faults, and a torch.profiler table, for every side."""
    rows = []
    for name in args.backbones:
        batch = args.batch or BACKBONES[name].batch
        for mode in MODES:
            for sd in sides:
                if mode == "sup" and any(sw.startswith("ssll.") for sw in sd.switches):
                    continue  # an SSLL switch: the supervised config has no ssll section
                try:
                    sd.setup(name, mode, batch, 1)
                    if sd.variant is None:
                        res = sd.worker.call("profile", mode=mode, iters=args.iters)
                    else:
                        res = sd.worker.call("profile", mode=mode, variant=sd.variant, iters=args.iters)
                except WorkerError as exc:
                    log(f"profile {name} {mode} {sd.label} failed: {_last_line(str(exc))}")
                    continue
                path = args.out / f"profile_{name}_{mode}_{sd.label}.txt"
                path.write_text(res.pop("table"))
                rows.append({"backbone": name, "mode": mode, "side": sd.label, **res, "table": str(path)})
                log(f"profile {name} {mode} {sd.label}: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in res.items()))
    return rows


# ====================================================================== report
def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a result dict (as written to compare_official.json)."""
    m, s, lines = result["machine"], result["settings"], []
    lines += ["# Ours vs the official SSLL code (CPU)", "",
              f"- date: {m['date']}; CPU: {m['cpu']} ({m['logical_cpus']} logical); torch {result.get('torch')}; "
              f"1 thread per process; load average at start {m.get('load_avg_at_start')}",
              f"- command: `{result['command']}`",
              f"- ours: {result.get('ours_repo')} at commit {result.get('ours_commit')} with "
              f"{result.get('ours_uncommitted_files')} uncommitted file(s)",
              f"- official: commit {result.get('official_commit')} at {result['official']}; stand-in AlexNet "
              f"sha256 {result.get('alexnet_sha256')}",
              f"- sides: `official` = Retinol.supervise_train_step / semi_supervise_train_step; `ours` = config "
              f"defaults; `ours_fast` = {', '.join(s['fast_switches']) or 'not run'}; `ours_env` = defaults in a "
              f"process started with {' '.join(s['ours_env']) or 'not run'}"]
    tr = result.get("training")
    if tr:
        ok = [r for r in tr if "error" not in r]
        labels = list(dict.fromkeys(k for r in ok for k in [*r["median_s"], *r.get("failed", {})] if k != "official"))
        lines += ["", "## Training: seconds per iteration (median), ratio to official", "",
                  f"crop {s['crop']}, {s['rounds']} interleaved rounds x {s['iters']} timed iterations after "
                  f"{s['warmup']} warm-up per block; `premade` = identical pre-made tensors (forward, backward, "
                  f"optimizer, EMA, loop), `loader` = each side's data pipeline (num_workers 0) included.", "",
                  "| backbone | step | batch | feed | official s | "
                  + " | ".join(f"{k} s | {k}/official" for k in labels) + " |",
                  "|---|---|---|---|---|" + "---|---|" * len(labels)]
        for r in tr:
            if "error" in r:
                lines.append(f"| {r['backbone']} | {r['mode']} | – | failed: {r['error'].splitlines()[0]} |")
                continue
            md, ra, bad = r["median_s"], r["ratio"], r.get("failed", {})
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['batch']} | {r['feed']} | {_f(md['official'])} | "
                         + " | ".join("failed | –" if k in bad else f"{_f(md.get(k))} | {_f(ra.get(k), '{:.2f}')}"
                                      for k in labels) + " |")
        fails = {(r["backbone"], r["mode"], k): v for r in ok for k, v in r.get("failed", {}).items()}
        for (bb_name, mode, k), v in fails.items():
            lines.append(f"\n`{k}` failed for {bb_name} {mode}: {v}")
    eq = result.get("equality")
    if eq:
        terms = ["ssim", "lpips", "pico_paired", "consistency", "pico_unpaired"]
        lines += ["", "## Loss equality: max |ours - official| per term over the first iterations", "",
                  "Same initial weights, batches and CutMix boxes; ours with `train.output_clamp=hard`, "
                  "`ssll.official_lpips_range=true`, `ssll.fused_student_forward=false`, constant lr; "
                  "terms weighted as in each side's total (PICo x lambda, unpaired terms x w(e)); initial teacher "
                  f"= student + {eq[0].get('teacher_offset', 0)} x N(0,1) per weight.", "",
                  "| backbone | step | epoch | iters | " + " | ".join(terms) + " |",
                  "|---|---|---|---|" + "---|" * len(terms)]
        for r in eq:
            if "error" in r:
                lines.append(f"| {r['backbone']} | {r['mode']} | failed: {r['error'].splitlines()[0]} |")
                continue
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['epoch']} | {r['iters']} | "
                         + " | ".join(_f(r["max_abs_diff"].get(t), "{:.1e}") for t in terms) + " |")
    ev = result.get("eval")
    if ev:
        lines += ["", f"## Evaluation: {ev['network']}, {ev['images']} images ({ev['weights']})", "",
                  "| side | end-to-end s | images/s end to end | speed-up | images/s in the loop | metric share | "
                  "mean PSNR | mean SSIM | mean LPIPS | max per-image diff PSNR / SSIM / LPIPS |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for side in ev["wall_s"]:
            mm, d = ev["means"][side], ev["max_abs_diff_per_image"].get(side)
            diff = "–" if d is None else " / ".join(_f(d[k], "{:.1e}") for k in ("psnr", "ssim", "lpips"))
            lines.append(f"| {side} | {_f(ev['wall_s'][side], '{:.1f}')} | {_f(ev['images_per_s'][side])} | "
                         f"{_f(ev['speedup_end_to_end'].get(side), '{:.2f}x')} | {_f(ev['loop_images_per_s'][side])} | "
                         f"{_f(ev['metric_share'][side], '{:.1%}')} | {_f(mm['psnr'], '{:.4f}')} | "
                         f"{_f(mm['ssim'], '{:.5f}')} | {_f(mm['lpips'], '{:.5f}')} | {diff} |")
    prof = result.get("profile")
    if prof:
        lines += ["", "## Resource use per step (premade batch, no profiler) and profiler tables", "",
                  "| backbone | step | side | wall s | user s | sys s | minor page faults | profiler table |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in prof:
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['side']} | {_f(r['wall_s'])} | {_f(r['user_s'])} | "
                         f"{_f(r['sys_s'])} | {r['minor_faults']:.0f} | `{Path(r['table']).name}` |")
    if result.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e.splitlines()[0] if e else e}" for e in result["errors"]]
    return "\n".join(lines) + "\n"


# ====================================================================== main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, help="checkout of github.com/eezkni/CMT (the official SSLL code)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "compare_official")
    p.add_argument("--sections", nargs="+", default=["train", "equality", "eval"],
                   choices=["train", "equality", "eval", "profile"])
    p.add_argument("--official-python", default=sys.executable,
                   help="interpreter for the official side (needs piq, loguru, timm, pyiqa; default: this one)")
    p.add_argument("--alexnet", type=Path, default=None,
                   help="stand-in AlexNet state dict shared by both sides (default: <official>/../alexnet_standin.pth, "
                        "created from torchvision.models.alexnet() with seed 0 when missing)")
    p.add_argument("--train-data", type=Path, default=REPO_ROOT / "datasets" / "LOL" / "our485",
                   help="folder with low/ and high/ PNG pairs (paired set and unpaired pool are cut from it)")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "datasets" / "LOL" / "eval15")
    p.add_argument("--pairs", type=int, default=60, help="pairs in the paired set (as many low images form the pool)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=None,
                   help="override the paper batch (RetinexFormer 3, CIDNet 8, UNet 3)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per block")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations at the start of every block")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (official, ours, ours_fast, ours_env)")
    p.add_argument("--fast-switches", nargs="*", default=["train.channels_last=true", "train.compile=true"],
                   help="config overrides of the 'ours_fast' variant (none: skip it)")
    p.add_argument("--ours-env", nargs="*", default=[], metavar="VAR=VALUE",
                   help="environment of an extra 'ours_env' variant (defaults, own process; e.g. glibc malloc "
                        "tunables MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824); none: skip it")
    p.add_argument("--equality-iters", type=int, default=5)
    p.add_argument("--teacher-offset", type=float, default=1e-3,
                   help="equality check: initial teacher = student + this x N(0,1) per weight (0: equal)")
    p.add_argument("--eval-network", default="RetinexFormer", choices=list(BACKBONES))
    p.add_argument("--eval-copies", type=int, default=1, help="copies of the eval images (a larger set)")
    p.add_argument("--eval-rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    # worker modes (internal)
    p.add_argument("--worker", choices=["ours", "official", "ours-eval", "official-eval"], help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--weight", help=argparse.SUPPRESS)
    p.add_argument("--low", help=argparse.SUPPRESS)
    p.add_argument("--high", help=argparse.SUPPRESS)
    p.add_argument("--result-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    return p


def official_missing(path: Path | None) -> str | None:
    """One line saying why ``path`` is not a usable official checkout, or None."""
    if path is None:
        return "official SSLL code: pass --official PATH (a checkout of github.com/eezkni/CMT)"
    if not (path / "models" / "model.py").is_file() or not (path / "config").is_dir():
        return (f"official SSLL code not found at {path} (expected a checkout of github.com/eezkni/CMT with "
                f"models/model.py and config/); nothing was run")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        set_single_thread()
    if args.worker == "ours":
        return serve(lambda: OursSide(str(args.work), args.crop))
    if args.worker == "official":
        return serve(lambda: OfficialSide(str(args.official), str(args.work), args.crop))
    if args.worker == "ours-eval":
        return run_ours_eval(args.rest, args.report)
    if args.worker == "official-eval":
        return run_official_eval(args.official.resolve(), args.eval_network, args.weight, args.low, args.high,
                                 args.result_dir, args.report)

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # still closes the workers
    why = official_missing(args.official)
    if why:
        print(why)
        return 2
    set_single_thread()
    args.official = args.official.resolve()
    args.out = args.out.resolve()
    work = args.out / "work"
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    progress = open(args.out / "logs" / "progress.log", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        progress.write(line + "\n")
        progress.flush()

    alexnet = (args.alexnet or args.official.parent / "alexnet_standin.pth").resolve()
    result: dict[str, Any] = {
        "command": " ".join(["python", "scripts/compare_official.py", *(argv if argv is not None else sys.argv[1:])]),
        "official": str(args.official), "machine": machine_info(), "errors": [],
        "alexnet": str(alexnet), "alexnet_sha256": ensure_alexnet(alexnet),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("worker", "work", "report", "weight", "low", "high", "result_dir", "rest")},
    }
    env = worker_env(prepare_torch_home(work, alexnet))
    result["data"] = prepare_data(work, args.train_data.resolve(), args.eval_data.resolve(), args.eval_copies,
                                  args.pairs)
    for name in args.backbones:
        make_batches(work, name, args.batch or BACKBONES[name].batch, args.crop, max(args.equality_iters, 1),
                     args.seed + 17)
    log(f"data ready in {work}; out {args.out}")

    extra_env = dict(kv.split("=", 1) for kv in args.ours_env)
    args.ours_env_keys = sorted(extra_env)
    ours_cmd = [sys.executable, str(THIS_FILE), "--worker", "ours", "--work", str(work), "--crop", str(args.crop)]
    ours = Worker("ours", ours_cmd, env, REPO_ROOT, args.out / "logs" / "worker_ours.log")
    off = Worker("official", [args.official_python, str(THIS_FILE), "--worker", "official", "--official",
                              str(args.official), "--work", str(work), "--crop", str(args.crop)],
                 env, work, args.out / "logs" / "worker_official.log")
    workers = [ours, off]
    sides = [Side("official", off), Side("ours", ours, "default")]
    if args.fast_switches:
        sides.append(Side("ours_fast", ours, "fast", tuple(args.fast_switches)))
    profile_sides = [Side(f"ours_{v}", ours, v, tuple(sw)) for v, sw in
                     (("twopass", ["ssll.fused_student_forward=false"]),)] if "profile" in args.sections else []
    envs = {"official": env, "ours": env}
    if extra_env:
        ours_env = Worker("ours_env", ours_cmd, {**env, **extra_env}, REPO_ROOT,
                          args.out / "logs" / "worker_ours_env.log")
        workers.append(ours_env)
        sides.append(Side("ours_env", ours_env, "default"))
        envs["ours_env"] = {**env, **extra_env}
    try:
        info_o, info_f = ours.call("info"), off.call("info")
        result.update(torch=info_o["torch"], official_torch=info_f["torch"], official_commit=info_f["commit"],
                      ours_repo=info_o["repo"], ours_commit=info_o["commit"],
                      ours_uncommitted_files=info_o["uncommitted_files"])
        sections: list[tuple[str, Callable[[], Any]]] = [
            ("train", lambda: run_training(sides, args, log)),
            ("equality", lambda: run_equality(ours, off, args, work, log)),
            ("eval", lambda: run_eval(ours, args, work, envs, log)),
            ("profile", lambda: run_profile(sides + profile_sides, args, log)),
        ]
        for key, fn in sections:
            if key not in args.sections:
                continue
            try:
                result[{"train": "training"}.get(key, key)] = fn()
            except WorkerError as exc:
                log(f"{key} failed: {exc}")
                result["errors"].append(f"{key}: {exc}")
            (args.out / "compare_official.json").write_text(json.dumps(result, indent=1))
            (args.out / "compare_official.md").write_text(markdown(result))
    finally:
        for w in workers:
            w.close()
        progress.close()
    print(markdown(result))
    print(f"written: {args.out / 'compare_official.json'}, {args.out / 'compare_official.md'}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
