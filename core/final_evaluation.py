"""The evaluation at the end of a run: the selected checkpoint's networks on ``eval.datasets``.

It goes through :func:`common_utils.evaluation.runner.evaluate_datasets`, the function
``eval.py`` uses, so a run's ``results/summary.json`` and ``eval.py`` on the same checkpoint give
the same numbers. The main network is chosen by the same rule as ``eval.py``'s default
(:func:`common_utils.checkpoint.default_entry`: the recorded best, else the teacher). A run whose
main network scores below its own input on PSNR or SSIM ends with a warning in the log and a
``warnings`` list in the summary (see :func:`common_utils.evaluation.runner.worse_than_input`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn

from common_utils.checkpoint import default_entry, load_network_weights, safe_load
from common_utils.evaluation.evaluator import EvalProtocol
from common_utils.evaluation.runner import evaluate_datasets, open_datasets
from core.trainer import BaseTrainer


def selected_checkpoint(trainer: BaseTrainer) -> Path:
    """``best.pth`` when ``eval.checkpoint: best`` and one exists, else ``last.pth``."""
    best = trainer.ckpt_dir / "best.pth"
    return best if trainer.cfg.eval.checkpoint == "best" and best.exists() else trainer.ckpt_dir / "last.pth"


def final_evaluation(trainer: BaseTrainer) -> dict[str, Any]:
    """Evaluate the selected checkpoint on ``eval.datasets``; write ``results/`` (rank 0 only)."""
    cfg = trainer.cfg
    if not trainer.is_main or not cfg.eval.datasets:
        return {}
    ckpt_path = selected_checkpoint(trainer)
    ckpt = safe_load(ckpt_path)
    main = default_entry(ckpt)
    nets: dict[str, nn.Module] = {}
    for key, sd in ckpt["networks"].items():
        net = trainer.build_network_for(key)
        load_network_weights(net, sd, trainer.network_of(key), source=f"{ckpt_path} [{key}]")
        nets[key] = net.eval()
    lpips_metric = trainer._lpips_metric() if cfg.eval.lpips else None
    reason = None if lpips_metric is not None else ("disabled in the config" if not cfg.eval.lpips else
                                                    "AlexNet weights unavailable (see the log)")
    protocol = EvalProtocol(ssim=cfg.eval.ssim, lpips=lpips_metric, lpips_reason=reason, fast=cfg.eval.fast,
                            tile=cfg.eval.tile, tile_overlap=cfg.eval.tile_overlap, resize=cfg.eval.resize)
    datasets, missing = open_datasets(cfg.eval.datasets, cfg.eval.data_root)
    results_dir = trainer.exp_dir / "results"
    summary = evaluate_datasets(nets, datasets, missing, protocol, trainer.device, results_dir, main=main,
                                with_input=True, workers=cfg.data.num_workers, log=trainer.log.info,
                                extra={"checkpoint": ckpt_path.name, "network": main},
                                annotate={"checkpoint": ckpt_path.name}, title=f"Results of {cfg.name}")
    trainer.log.info(f"results written to {results_dir / 'summary.json'}")
    trainer.log.summary(json.loads((results_dir / "summary.json").read_text(encoding="utf-8")))
    return summary
