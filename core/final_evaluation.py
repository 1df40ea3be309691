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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common_utils.checkpoint import load_networks
from common_utils.evaluation.runner import dataset_protocols, evaluate_datasets, open_datasets
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
    nets, main, _ = load_networks(ckpt_path, trainer.device)
    e = cfg.eval
    datasets, missing = open_datasets(e.datasets, e.data_root)
    protocols = dataset_protocols(e.datasets, e.protocol, ssim=e.ssim, resize=e.resize, fast=e.fast, tile=e.tile,
                                  tile_overlap=e.tile_overlap, lpips=e.lpips, device=trainer.device,
                                  lpips_off_reason="disabled in the config (eval.lpips)")
    results_dir = trainer.exp_dir / "results"
    summary = evaluate_datasets(nets, datasets, missing, protocols, trainer.device, results_dir, main=main,
                                with_input=True, workers=cfg.data.num_workers, log=trainer.log.info,
                                extra={"checkpoint": ckpt_path.name, "network": main},
                                annotate={"checkpoint": ckpt_path.name}, title=f"Results of {cfg.name}")
    trainer.log.info(f"results written to {results_dir / 'summary.json'}")
    return summary
