"""DataLoader construction and device prefetching."""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from data.samplers import ResumableSampler


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=pin_memory, collate_fn=_collate, drop_last=True, **kwargs)
    return loader, sampler


def eval_loader(dataset: Dataset, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batch-1, in-order loader over whole images (evaluation)."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
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
