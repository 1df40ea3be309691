"""Checkpoint I/O: atomic writes, safe reads, and unwrapping of released formats.

- :func:`atomic_save` writes to a temporary file in the same folder, fsyncs it and renames it
  over the target, so a crash or a full disk never leaves a half-written checkpoint behind and
  the previous file survives.
- :func:`safe_load` reads with ``torch.load(weights_only=True)`` (a checkpoint cannot run code)
  and turns a truncated or corrupt file into one clear message.
- :func:`extract_state_dict` accepts plain state dicts and the wrappers people release
  (``params``, ``params_ema``, ``state_dict``, ``model``, ``net``, DDP ``module.`` prefixes, this
  framework's own checkpoints) and :func:`load_network_weights` loads them strictly, naming the
  network a checkpoint seems to belong to when it does not fit.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.manifest import load_manifest, manifest_names
from models.registry import UserError

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "net", "network", "student", "generator")


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the network."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with torch.save so that ``path`` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                                  f"the previous checkpoint (if any) is unchanged") from None
        raise


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; a missing, truncated or corrupt file is a CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        prev = previous_checkpoint(p)
        hint = f"; the previous checkpoint is {prev}" if prev else ""
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise CheckpointError(f"cannot read checkpoint {p} (truncated or corrupt: {reason}){hint}") from None


def previous_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest other checkpoint next to ``path`` that looks complete, or None.

    Skips files that are hard links of ``path`` itself (the trainer links ``iter_<k>.pth`` to
    ``last.pth``, so damage to one is damage to both) and files whose zip directory is missing
    (truncated). Training checkpoints (``iter_*.pth``, newest iteration first) are preferred
    for a ``last`` / ``iter_*`` file, since weights-only ``best*.pth`` files cannot be resumed.
    """
    p = Path(path)

    def usable(f: Path) -> bool:
        try:
            return not (p.exists() and os.path.samefile(f, p)) and zipfile.is_zipfile(f)
        except OSError:
            return False

    others = [f for f in p.parent.glob("*.pth") if f.name != p.name and usable(f)]
    iters = sorted((f for f in others if f.name.startswith("iter_")), key=lambda f: f.name)
    if iters and (p.name == "last.pth" or p.name.startswith("iter_")):
        older = [f for f in iters if not p.name.startswith("iter_") or f.name < p.name]
        if older:
            return older[-1]
    others.sort(key=lambda f: f.stat().st_mtime)
    return others[-1] if others else None


def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def extract_state_dict(ckpt: Any, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Find the network state dict inside a checkpoint object (see module docstring)."""
    obj = ckpt
    if isinstance(obj, Mapping) and "networks" in obj:  # this framework's training checkpoints
        nets = obj["networks"]
        key = "teacher" if prefer_ema and "teacher" in nets else next(iter(nets))
        obj = nets[key]
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        keys = ("params_ema",) + WRAPPER_KEYS if prefer_ema else WRAPPER_KEYS
        inner = next((obj[k] for k in keys if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("no network state dict found in the checkpoint (looked for a plain state dict and "
                              f"the keys {', '.join(WRAPPER_KEYS)})")
    sd = _strip_prefix(obj, "module.")
    return _strip_prefix(sd, "_orig_mod.")


def guess_network(sd: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the official network whose manifest best matches this state dict's keys, if any."""
    keys = set(sd)
    best, best_score = None, 0.0
    for name in manifest_names():
        ref = set(load_manifest(name).shapes)
        score = len(keys & ref) / max(len(keys | ref), 1)
        if score > best_score:
            best, best_score = name, score
    return best if best_score >= 0.5 else None


def load_network_weights(net: nn.Module, ckpt: Any, network_name: str, source: str = "checkpoint",
                         prefer_ema: bool = False) -> None:
    """Load a checkpoint strictly into ``net``; a mismatch is one message naming the likely network."""
    sd = extract_state_dict(ckpt, prefer_ema=prefer_ema)
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        guess = guess_network(sd)
        if guess and guess.lower() != network_name.lower() and not _same_family(guess, network_name):
            raise CheckpointError(f"{source} does not fit {network_name}: it looks like a {guess} checkpoint "
                                  f"(use --network {guess})")
        detail = (f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:2]}), {len(wrong)} with other shapes (e.g. {wrong[:2]})")
        raise CheckpointError(f"{source} does not fit {network_name} as configured: {detail}; check the "
                              f"network's arguments")
    net.load_state_dict(sd, strict=True)


def _same_family(a: str, b: str) -> bool:
    return {a.lower(), b.lower()} <= {"icemL-combinedmodel".lower(), "rtxice-net", "asmice-net"}
