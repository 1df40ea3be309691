"""Process set-up: device, distributed process group, seeds and RNG state capture."""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from common_utils.cli import configure_threads, usable_cores  # noqa: F401  (the one threads rule, shared by every CLI)
from common_utils.device import select_device
from foundation.errors import UserError


@dataclass
class DistInfo:
    """Rank and world size of this process (world 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_pref: str = "auto", timeout_s: float | None = None) -> tuple[DistInfo, torch.device]:
    """Initialise torch.distributed from torchrun's environment (NCCL on GPUs, gloo on CPU).

    The device follows :func:`common_utils.device.select_device` (the rule evaluation uses too).
    ``timeout_s`` bounds every collective operation: a rank that waits longer than that for the
    others (one of them stopped, hung or died) fails with :class:`DistributedTimeout` instead of
    waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_pref, local, where="config key 'device'")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = DistInfo(rank, world, local)
    if world > 1 and not dist.is_initialized():
        kwargs = {"timeout": datetime.timedelta(seconds=float(timeout_s))} if timeout_s else {}
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
    return info, device


def wait_for_every_rank(tag: str, timeout_s: float = 7 * 24 * 3600) -> None:
    """A barrier through the rendezvous store, without the collectives' ``train.ddp_timeout``.

    Where one rank works alone for long (rank 0's final evaluation) the others wait here: a gloo or
    NCCL barrier would give up after ``train.ddp_timeout``. A no-op outside torchrun.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
    if get_store is None:  # an older torch: the plain barrier
        dist.barrier()
        return
    store = get_store()
    rank, world = dist.get_rank(), dist.get_world_size()
    store.set(f"ssir/{tag}/{rank}", "1")
    store.wait([f"ssir/{tag}/{r}" for r in range(world)], datetime.timedelta(seconds=timeout_s))


class DistributedTimeout(UserError):
    """A collective operation waited longer than ``train.ddp_timeout`` for the other ranks."""


def is_collective_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is gloo's / NCCL's "the other ranks did not answer in time" error."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, dist.DistBackendError)) and (
        "timed out" in text or "timeout" in text or "connection closed by peer" in text
        or "connection reset by peer" in text)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """RNG states as plain tensors/tuples (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_to_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    if isinstance(x, (list, tuple)):
        return tuple(_to_tuple(i) for i in x)
    return x
