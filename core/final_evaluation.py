"""The evaluation at the end of a run: the selected checkpoint's networks on ``eval.datasets``.

It goes the way ``eval.py`` goes: the networks are loaded by the one checkpoint loader
(:func:`common_utils.checkpoint.load_networks`, the loader of ``eval.py --weight``), each set is
scored with the protocol of its dataset (:func:`common_utils.evaluation.runner.dataset_protocols`)
and everything runs through :func:`common_utils.evaluation.runner.evaluate_datasets`, so a run's
``results/summary.json`` and ``eval.py`` on the same checkpoint give the same numbers. The main
network is chosen by the same rule as ``eval.py``'s default
(:func:`common_utils.checkpoint.default_entry`: the recorded best, else the teacher). A run whose
main network scores below its own input on PSNR or SSIM ends with a warning in the log and a
``warnings`` list in the summary (see :func:`common_utils.evaluation.runner.worse_than_input`).
An evaluation set whose images were read in training (its inputs or ground truths are files of
``data.paired`` or ``data.unpaired``, links resolved) is scored, but warned about in the log and the
summary (``seen_in_training``): its scores are not held-out scores. The main network is the teacher
by default because it is chosen before any test image is seen (picking whichever of student and
teacher scores higher on the test set would be selection on the test set).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common_utils.checkpoint import load_networks, run_checkpoint, safe_load
from common_utils.evaluation.report import write_summary
from common_utils.evaluation.runner import dataset_protocols, evaluate_datasets, open_datasets
from core.trainer import BaseTrainer


def selected_checkpoint(trainer: BaseTrainer) -> Path:
    """``best.pth`` when ``eval.checkpoint: best`` and one exists, else ``last.pth``."""
    return run_checkpoint(trainer.ckpt_dir, trainer.cfg.eval.checkpoint)


def final_evaluation(trainer: BaseTrainer) -> dict[str, Any]:
    """Evaluate the selected checkpoint on ``eval.datasets``; write ``results/`` (rank 0 only)."""
    cfg = trainer.cfg
    if not trainer.is_main or not cfg.eval.datasets:
        return {}
    ckpt_path = selected_checkpoint(trainer)
    nets, main, _ = load_networks(ckpt_path, trainer.device)
    best_network = safe_load(ckpt_path).get("best_network")
    e = cfg.eval
    datasets, missing = open_datasets(e.datasets, e.data_root)
    protocols = dataset_protocols(e.datasets, e.protocol, ssim=e.ssim, resize=e.resize, fast=e.fast, tile=e.tile,
                                  tile_overlap=e.tile_overlap, lpips=e.lpips, device=trainer.device,
                                  lpips_off_reason="disabled in the config (eval.lpips)")
    seen = seen_in_training(datasets, {"data.paired": getattr(trainer, "paired_set", None),
                                       "data.unpaired": getattr(trainer, "unpaired_set", None)})
    for key, (n, total, where) in seen.items():
        trainer.log.warning(f"{key}: {n} of its {total} images were read in training ({where}): its scores are not "
                            f"held-out scores")
    why = ("the best on validation" if best_network == main else
           "the EMA teacher" if main == "teacher" else "the trained network")
    trainer.log.info(f"headline network: {main} ({why}; eval.py scores the same one by default)")
    results_dir = trainer.exp_dir / "results"
    extra = {"checkpoint": ckpt_path.name, "network": main}
    title = f"Results of {cfg.name}"
    summary = evaluate_datasets(nets, datasets, missing, protocols, trainer.device, results_dir, main=main,
                                with_input=True, workers=trainer.loader_workers, log=trainer.log.info,
                                extra=extra, annotate={"checkpoint": ckpt_path.name}, title=title)
    if seen:
        for key, (n, total, where) in seen.items():
            if isinstance(summary.get(key), dict):
                summary[key]["seen_in_training"] = {"images": n, "of": total, "in": where}
        summary["warnings"] = list(summary.get("warnings", [])) + [
            f"{key}: {n} of {total} images were read in training ({where})" for key, (n, total, where) in seen.items()]
        first = next(iter(protocols.values()), None)
        write_summary(results_dir, summary, {**(first.describe(trainer.device) if first else {}), **extra},
                      title=title)
    trainer.log.info(f"results written to {results_dir / 'summary.json'}")
    trainer.log.summary(json.loads((results_dir / "summary.json").read_text(encoding="utf-8")))
    return summary


def _files_read(dataset: Any) -> set[str]:
    """Every image file a training dataset reads (real paths: links to one file are one file)."""
    found: set[str] = set()
    base = getattr(dataset, "base", dataset)  # a label budget's subset reads only its pairs
    for lq, gt in getattr(dataset, "pairs", None) or getattr(base, "pairs", None) or []:
        found.update((os.path.realpath(lq), os.path.realpath(gt)))
    for f in getattr(dataset, "files", None) or []:
        found.add(os.path.realpath(f))
    for item in getattr(dataset, "items", None) or []:  # the haze datasets: tuples holding paths
        found.update(os.path.realpath(x) for x in item if isinstance(x, Path))
    return found


def seen_in_training(datasets: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, tuple[int, int, str]]:
    """Per evaluation set: how many of its pairs have an input or ground truth that a training set
    reads, of how many, and which training keys (``{"data.paired": dataset, ...}``)."""
    read = {key: _files_read(ds) for key, ds in training.items() if ds is not None}
    out: dict[str, tuple[int, int, str]] = {}
    for key, ds in datasets.items():
        pairs = getattr(ds, "pairs", None)
        if not pairs:
            continue
        hits, where = 0, set()
        for lq, gt in pairs:
            files = {os.path.realpath(lq), os.path.realpath(gt)}
            owners = [k for k, f in read.items() if files & f]
            hits += bool(owners)
            where.update(owners)
        if hits:
            out[key] = (hits, len(pairs), ", ".join(sorted(where)))
    return out
