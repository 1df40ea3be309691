"""DataLoader construction and device prefetching.

A :class:`foundation.errors.UserError` raised while loading an item (a truncated image, a low/GT
pair of different sizes) reaches the caller as that same error with its one-line message, also
from loader worker processes, where torch would otherwise re-raise it in the main process with
the worker's whole traceback pasted into the message.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from data.datasets import warn_skipped
from data.image_io import ImageReadError
from data.samplers import ResumableSampler
from foundation.errors import UserError


class _WorkerUserError:
    """A UserError caught in a loader worker, carried to the main process in place of a batch."""

    def __init__(self, exc: UserError) -> None:
        self.exc = exc


class _UserErrorGuard(Dataset):
    """Dataset view whose items are :class:`_WorkerUserError` instead of raising a UserError."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (files, pairs, ...)
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.base[key]
        except UserError as exc:
            return _WorkerUserError(exc)


class _Loader(DataLoader):
    """A DataLoader that re-raises, in the main process, the UserErrors its workers caught, and
    prints the skip warnings its workers' items carry once per file (not once per worker)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, _WorkerUserError):
                raise batch.exc
            if isinstance(batch, dict) and "_skipped" in batch:
                warn_skipped([why for reasons in batch.pop("_skipped") for why in reasons])
            yield batch


class _ReportUnreadable(Dataset):
    """Evaluation view: an unreadable image becomes ``{"unreadable": why, "name": ...}`` (reported, skipped)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.base[index]
        except ImageReadError as exc:
            return {"unreadable": str(exc), "name": str(index)}


def _make_loader(dataset: Dataset, num_workers: int, **kwargs: Any) -> DataLoader:
    # a loader draws its workers' base seed when an iterator starts; from its own generator, not
    # the global one, so opening a stream (at a resume, or for validation) leaves the training's
    # random numbers (dropout, ...) untouched
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    if num_workers > 0:
        kwargs.setdefault("worker_init_fn", _worker_init)
        return _Loader(_UserErrorGuard(dataset), num_workers=num_workers, **kwargs)
    return _Loader(dataset, num_workers=num_workers, **kwargs)


def _worker_init(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGINT: the main process owns stopping.

    ``timeout``, ``torchrun``, cluster schedulers and a terminal's Ctrl-C signal the whole process
    group; a worker that died of it first made the main process fail with "DataLoader worker ...
    is killed by signal" before it could write its final checkpoint. Ignoring them, the workers
    keep serving until the main process has stopped and shuts them down (they also exit on their
    own when the main process is gone).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _collate(items: list[Any]) -> Any:
    for it in items:
        if isinstance(it, _WorkerUserError):
            return it
    out: dict[str, Any] = {}
    skipped = [it.pop("_skipped") for it in items if isinstance(it, dict) and "_skipped" in it]
    if skipped:
        out["_skipped"] = skipped
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 prefetch_factor: int = 2) -> tuple[DataLoader, ResumableSampler]:
    """An endless training loader that can start at any iteration (see ResumableSampler)."""
    sampler = ResumableSampler(len(dataset), batch_size, seed=seed, shuffle=True, rank=rank,
                               world_size=world_size, start_iter=start_iter)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=False, prefetch_factor=prefetch_factor)
    loader = _make_loader(dataset, num_workers, batch_size=batch_size, sampler=sampler, pin_memory=pin_memory,
                          collate_fn=_collate, drop_last=True, **kwargs)
    return loader, sampler


def eval_loader(dataset: Dataset, num_workers: int = 0, pin_memory: bool = False,
                on_bad_image: str = "skip") -> DataLoader:
    """Batch-1, in-order loader over whole images (evaluation).

    ``on_bad_image``: ``skip`` (default) hands an unreadable image on as a ``{"unreadable": why}``
    item, which :func:`common_utils.evaluation.evaluator.evaluate` reports and leaves out;
    ``stop`` raises its one-line error.
    """
    if on_bad_image not in ("skip", "stop"):
        raise UserError(f"on_bad_image must be skip or stop, got '{on_bad_image}'")
    if on_bad_image == "skip":
        dataset = _ReportUnreadable(dataset)
    return _make_loader(dataset, num_workers, batch_size=1, shuffle=False, pin_memory=pin_memory,
                        collate_fn=_collate)


class DevicePrefetcher:
    """Iterate a loader while copying the next batch to the device on a side CUDA stream.

    On the CPU it simply forwards batches. On CUDA it overlaps the host-to-device copy of batch
    ``k+1`` with the compute on batch ``k`` (requires pinned memory to be asynchronous).
    """

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.iterator = iter(loader)
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.next_batch: dict[str, Any] | None = None
        if self.stream is not None:
            self._preload()

    def _move(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _preload(self) -> None:
        batch = next(self.iterator)
        with torch.cuda.stream(self.stream):
            self.next_batch = self._move(batch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.stream is None:
            return self._move(next(self.iterator))
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        batch = self.next_batch
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                v.record_stream(torch.cuda.current_stream(self.device))
        self._preload()
        return batch
