"""Run ``run.py`` under torchrun and report what every rank ended with (used by test_distributed.py).

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/ddp_probe.py OUT.json \\
        -c CONFIG [run.py arguments ...]

This is ``run.py``'s own ``main`` with two observers patched in:

- every batch a rank draws is recorded by stream (``paired`` / ``unpaired``) and iteration, as
  the item names it holds;
- when the trainer closes (before the process group goes), each rank computes a checksum of
  every tensor of every network (students and EMA teachers: a float64 sum and a SHA-256 of
  the bytes), the ranks all-gather them, and rank 0 writes OUT.json with, per rank, the
  checksums, the final iteration, the non-finite counters and the recorded batches.

``SSIR_KILL_AT_ITER=<iteration>[:<phase>]`` makes every rank SIGKILL itself there (see
``tests/kill_points.py``). ``PROBE_NAN_RANK1_AT=3,5`` makes rank 1 (only) report a NaN loss term at those 1-based
iterations, to check that the ranks skip such steps together.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import run  # noqa: E402
from core import TRAINERS  # noqa: E402
from core.trainer import BaseTrainer  # noqa: E402
from tests import kill_points  # noqa: E402

STREAM_NAMES = {0: "paired", 7919: "unpaired", 104729: "unpaired"}


def tensor_checksum(t: torch.Tensor) -> list:
    t = t.detach().cpu().contiguous()
    return [float(t.double().sum()), hashlib.sha256(t.numpy().tobytes()).hexdigest()]


def network_checksums(trainer: BaseTrainer) -> dict:
    nets = {**trainer.networks, **trainer.teachers}
    return {f"{name}/{key}": tensor_checksum(v) for name, net in nets.items() for key, v in net.state_dict().items()}


class _Recorder:
    """Iterator proxy recording the item names of each batch with the trainer's iteration."""

    def __init__(self, trainer: BaseTrainer, stream, label: str, log: list) -> None:
        self.trainer, self.stream, self.label, self.log = trainer, stream, label, log

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.stream)
        self.log.append({"stream": self.label, "iter": self.trainer.iter, "names": list(batch["name"])})
        return batch


def main() -> int:
    out_path = Path(sys.argv[1])
    argv = sys.argv[2:]
    batches: list = []
    rank = int(os.environ.get("RANK", "0"))
    nan_at = {int(x) for x in os.environ.get("PROBE_NAN_RANK1_AT", "").split(",") if x}

    make_stream = BaseTrainer.make_stream

    def recording_make_stream(self, dataset, batch_size, start_iter, seed_offset=0):
        stream = make_stream(self, dataset, batch_size, start_iter, seed_offset)
        return _Recorder(self, stream, STREAM_NAMES.get(seed_offset, str(seed_offset)), batches)

    BaseTrainer.make_stream = recording_make_stream

    close = BaseTrainer.close

    def reporting_close(self):
        mine = {"rank": self.dist.rank, "world_size": self.dist.world_size, "iter": self.iter,
                "nonfinite_total": self.nonfinite_total, "checksums": network_checksums(self),
                "batches": batches}
        gathered = [None] * self.dist.world_size
        if self.dist.enabled:
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        if self.is_main:
            out_path.write_text(json.dumps({"ranks": gathered}))
        close(self)

    BaseTrainer.close = reporting_close

    if nan_at and rank == 1:
        # patch the configured trainer's own train_step (subclasses override it)
        from core.config import load_config

        cfg_path = argv[argv.index("-c") + 1]
        cls = TRAINERS.get(load_config(cfg_path).trainer)
        step = cls.train_step

        def nan_step(self, batch):
            terms = step(self, batch)
            if self.iter + 1 in nan_at:
                first = next(iter(terms))
                terms = {**terms, first: terms[first] * float("nan")}
            return terms

        cls.train_step = nan_step

    if os.environ.get(kill_points.ENV):
        kill_points.install(os.environ[kill_points.ENV])
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
