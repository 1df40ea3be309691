"""Validation during training: sharded scoring of every network, best tracking, sample pictures.

Each rank scores every ``world``-th validation image; the sums are all-reduced so every rank
gets the same means (a rank whose shard is empty still joins with zeros). The first
``train.sample_images`` images of rank 0's shard are drawn as input | each network | ground
truth, to TensorBoard when it is installed and to the trackers of ``logging:`` (MLflow, W&B), and
to ``<run>/samples/iter_<k>.jpg`` when none of them is in use.

A stop signal ends a validation between two images (``should_stop``): every rank learns it in
the same all-reduce that sums the scores, so under DDP all ranks abandon the validation together
(:class:`ValidationInterrupted`) and no rank is left waiting in a collective.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from common_utils.visual import image_grid, save_jpeg
from core.logger import ExperimentLogger
from core.runtime import DistInfo

#: metrics a run can watch to keep its best checkpoint, and whether higher is better
WATCHABLE = {"psnr": True, "ssim": True, "lpips": False}


class ValidationInterrupted(Exception):
    """A stop signal arrived during validation (on some rank): its scores are incomplete and unused."""


class Shard(torch.utils.data.Dataset):
    """Every ``world``-th item of a dataset, starting at ``rank`` (distributed validation)."""

    def __init__(self, base: Any, rank: int, world: int, limit: int | None) -> None:
        n = len(base) if limit is None else min(limit, len(base))
        self.base, self.idx = base, list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.idx[i]]


class Validator:
    """Scores networks on the validation set and keeps the best score of each."""

    def __init__(self, dataset: Any, protocol: EvalProtocol, watch: str, dist_info: DistInfo,
                 device: torch.device, make_loader: Callable[[Any], Any], log: ExperimentLogger,
                 max_images: int | None = None, sample_images: int = 0, samples_dir: Path | None = None) -> None:
        self.shard = Shard(dataset, dist_info.rank, dist_info.world_size, max_images)
        self.protocol, self.watch, self.dist, self.device = protocol, watch, dist_info, device
        self.make_loader, self.log = make_loader, log
        self.sample_images = sample_images if dist_info.is_main else 0
        self.samples_dir = samples_dir
        self.best: dict[str, dict[str, Any]] = {}
        self._warned: set[str] = set()
        self._timed = False  # the first validation's duration is logged once

    def run(self, networks: dict[str, nn.Module], step: int, should_stop: Callable[[], bool] | None = None
            ) -> tuple[dict[str, dict[str, float]], list[str]]:
        """Mean metrics per network, and the networks that beat their best ``watch`` score.

        Raises :class:`ValidationInterrupted` on every rank once ``should_stop()`` was true on any
        rank (asked before every image); nothing is logged and no best score changes then.
        """
        results: dict[str, dict[str, float]] = {}
        samples: dict[str, list[dict[str, Any]]] = {}
        n_images, started = len(self.shard), time.perf_counter()
        if self.dist.is_main and not self._timed:
            self.log.info(f"validation: {n_images} image(s) x {len(networks)} network(s) per validation"
                          + (" on this rank" if self.dist.enabled else "") + "; the first one is timed")
        for name, net in networks.items():
            was_training = net.training
            net.eval()
            kept: list[dict[str, Any]] = []
            samples[name] = kept

            def keep(i: int, batch: dict[str, Any], out: torch.Tensor, row: dict[str, Any],
                     kept: list = kept) -> None:
                if i < self.sample_images:
                    kept.append({"lq": batch["lq"][0], "gt": batch.get("gt", [None])[0], "out": out[0],
                                 "name": row["name"]})

            # a live bar on a terminal, a line every 10 s in a log file: a long validation shows progress
            bar = (lambda it, name=name: tqdm(it, total=n_images, desc=f"validation [{name}]", leave=False,
                                              file=sys.stderr, mininterval=2.0 if sys.stderr.isatty() else 10.0,
                                              disable=not self.dist.is_main or n_images < 2))
            res = evaluate(net, self.make_loader(self.shard), self.device, self.protocol, time_forward=False,
                           on_image=keep, should_stop=should_stop, progress=bar)
            net.train(was_training)
            results[name], stopped = self._reduce_means(res.rows, res.stopped)
            if stopped:
                raise ValidationInterrupted(f"validation @ {step} interrupted")
            for why in res.skipped:  # an unreadable validation image is left out, never silently
                if why not in self._warned:
                    self._warned.add(why)
                    self.log.warning(f"validation leaves out {why}")
        if self.dist.is_main:
            text = " | ".join(f"{n}: " + " ".join(f"{k}={v:.4f}" for k, v in r.items() if k != "images")
                              for n, r in results.items())
            self.log.info(f"validation @ {step}: {text}")
            if not self._timed:
                self._timed = True
                self.log.info(f"validation took {time.perf_counter() - started:.1f} s; every later one takes about "
                              f"as long (validation.max_images or train.val_every to change it)")
            for n, r in results.items():
                self.log.scalars({k: v for k, v in r.items() if k != "images"}, step, prefix=f"val/{n}/")
            if self.sample_images:
                self._write_samples(samples, step)
        return results, self._update_best(results, step)

    def _update_best(self, results: dict[str, dict[str, float]], step: int) -> list[str]:
        higher = WATCHABLE[self.watch]
        improved = []
        for name, r in results.items():
            score = r.get(self.watch)
            if score is None:
                continue
            prev = self.best.get(name)
            if prev is None or (score > prev["score"] if higher else score < prev["score"]):
                self.best[name] = {"score": score, "iter": step, **r}
                improved.append(name)
        return improved

    def overall_best(self) -> tuple[str, dict[str, Any]] | None:
        """The network with the best recorded score, and its record."""
        if not self.best:
            return None
        sign = 1 if WATCHABLE[self.watch] else -1
        return max(self.best.items(), key=lambda kv: sign * kv[1]["score"])

    def _reduce_means(self, rows: list[dict[str, Any]], stopped: bool = False) -> tuple[dict[str, float], bool]:
        """The means over every rank's rows, and whether any rank stopped early (one all-reduce)."""
        # the keys must not depend on this rank's rows: a rank whose shard is empty (fewer
        # validation images than ranks) still joins an all-reduce of the same size
        keys = ["psnr", "ssim"] + (["lpips"] if self.protocol.lpips is not None else [])
        sums = torch.tensor([sum(r[k] for r in rows if r.get(k) is not None) for k in keys]
                            + [len(rows), float(stopped)],
                            dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        if self.dist.enabled:
            dist.all_reduce(sums)
        n = max(float(sums[-2]), 1.0)
        out = {k: float(sums[i]) / n for i, k in enumerate(keys)}
        out["images"] = int(sums[-2])
        return out, bool(sums[-1] > 0)

    def _write_samples(self, samples: dict[str, list[dict[str, Any]]], step: int) -> None:
        """input | each network | ground truth for the first few validation images."""
        names = list(samples)
        if not names or not samples[names[0]]:
            return
        hwc = lambda t: t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        rows, labels = [], []
        for i, first in enumerate(samples[names[0]]):
            row = [hwc(first["lq"]), *(hwc(samples[n][i]["out"]) for n in names)]
            if first["gt"] is not None:
                row.append(hwc(first["gt"]))
            rows.append(row)
            labels.append(str(first["name"]))
        columns = ["input", *names] + (["ground truth"] if samples[names[0]][0]["gt"] is not None else [])
        grid = image_grid(rows, columns, tile_width=192, row_labels=labels)
        if not self.log.image("val/samples", grid, step) and self.samples_dir is not None:
            save_jpeg(self.samples_dir / f"iter_{step:08d}.jpg", np.ascontiguousarray(grid))
