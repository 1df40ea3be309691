"""Train (and evaluate) from a config.

    python run.py -c config/demo_supervised.yaml [--resume CKPT] [--no-eval] [key.sub=value ...]
    python run.py -c config/local/sup_nafnet.yaml train.epochs=20         # a paper config on linked data

Overrides are dotted keys (``train.iters=100``, ``data.batch_size=2``, ``validation.max_images=2``);
every key, its type and default: docs/config_reference.md. ``--no-eval`` skips the final
evaluation. Paths given on the command line (``-c``, ``--resume``) are read from the current
directory; paths inside a config are relative to the repository root (README, "Paths").
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
# OpenCV's own decoder warnings ("PNG input buffer is incomplete") would precede, unasked, the one
# line that names the damaged file; set OPENCV_LOG_LEVEL to see them again
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

from common_utils.cli import help_text, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=help_text(__doc__, "run.py"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("--resume", default=None, help="training checkpoint to continue from (e.g. "
                        "experiments/<name>/checkpoints/last.pth, or the run folder: its last.pth)")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation on eval.datasets")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: continue although the config changed keys that make it a different run "
                             "(data, seed, network, optimizer, schedule, losses); they are listed either way")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.iters=100")
    args = parser.parse_args(argv)

    def job() -> int:
        from common_utils.checkpoint import run_checkpoint
        from common_utils.cli import capped_workers
        from core import TRAINERS
        from core.config import load_config
        from core.final_evaluation import final_evaluation
        from core.loop import TrainingInterrupted
        from core.runtime import configure_threads, init_distributed, is_collective_timeout, wait_for_every_rank
        from core.signals import EvaluationInterrupted, stop_evaluation_on_signals
        from data.demo import make_demo_data
        from data.paths import resolve_path

        cfg = load_config(Path(args.config).expanduser(), args.overrides)
        resume = str(run_checkpoint(Path(args.resume).expanduser().resolve(), "last")) if args.resume else None
        configure_threads(cfg.train.threads, capped_workers(cfg.data.num_workers))
        if cfg.demo_data.auto_create:
            root = resolve_path(cfg.demo_data.root or "demo_data")
            make_demo_data(root, seed=cfg.demo_data.seed, kind=cfg.demo_data.kind)
        if resume:  # a changed config, or a run shorter than the checkpoint, is said before anything starts
            for note in check_resume_against(resume, cfg, args.allow_config_change):
                print(f"note: resume: {note}", file=sys.stderr, flush=True)
        init_distributed(cfg.device, cfg.train.ddp_timeout)  # under torchrun: collectives time out
        trainer = TRAINERS.get(cfg.trainer)(cfg, resume=resume)
        try:
            trainer.train()
            if not args.no_eval and cfg.eval.after_train:
                with stop_evaluation_on_signals(trainer.ckpt_dir / "last.pth"):
                    final_evaluation(trainer)
        except (TrainingInterrupted, EvaluationInterrupted) as stop:
            print(f"stopped: {stop}", file=sys.stderr, flush=True)
            return stop.exit_code
        except RuntimeError as exc:
            if not (trainer.dist.enabled and is_collective_timeout(exc)):
                raise
            raise stalled_rank_error(trainer, exc) from None
        finally:
            # the other ranks wait for rank 0's final evaluation without train.ddp_timeout's limit
            wait_for_every_rank("close")
            trainer.close()
        return 0

    return run_cli(job)


def check_resume_against(resume: str, cfg, allow: bool) -> list[str]:
    """:func:`core.resume_check.check_resume` of the config against the checkpoint's stored one."""
    from common_utils.checkpoint import read_training_checkpoint
    from core.resume_check import check_resume

    ckpt = read_training_checkpoint(resume)
    return check_resume(ckpt.get("config"), cfg.to_dict(), int(ckpt.get("iter", 0)), cfg.train.iters, allow,
                        source=resume)


def stalled_rank_error(trainer, exc: BaseException) -> Exception:
    """The one line a rank prints when the others did not answer within ``train.ddp_timeout``.

    The process group is torn down first, so that closing the trainer does not wait once more.
    """
    import torch.distributed as dist

    from core.runtime import DistributedTimeout

    rank, world = trainer.dist.rank, trainer.dist.world_size
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # the group is already broken; leaving is what matters
            pass
    last = trainer.ckpt_dir / "last.pth"
    resume = f"; continue with --resume {last}" if last.exists() else ""
    return DistributedTimeout(
        f"rank {rank} of {world} waited more than {trainer.cfg.train.ddp_timeout:g} s (train.ddp_timeout) for the "
        f"other ranks at iteration {trainer.iter + 1}: one of them is stopped, hung or dead; last checkpoint: "
        f"{last if last.exists() else 'none yet'}{resume}")


if __name__ == "__main__":
    sys.exit(main())
