"""Our side: this framework driven through its config loader and trainer loop, and our eval.py."""
from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .protocol import BACKBONES, REPO_ROOT, Backbone, intervals, profile_steps, set_single_thread


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
