"""Checkpoint I/O: atomic writes, safe reads, and THE reader of network weights.

- :func:`atomic_save` writes to a temporary file in the same folder, fsyncs it and renames it
  over the target, so a crash or a full disk never leaves a half-written checkpoint behind and
  the previous file survives.
- :func:`safe_load` reads with ``torch.load(weights_only=True)`` (a checkpoint cannot run code)
  and turns a truncated, corrupt or non-weights file into one clear message.
- :func:`read_network_state` is the one place that knows every supported checkpoint form and
  returns the state dict of the network asked for:

  * this framework's run checkpoints (``last.pth``, ``iter_*.pth``, ``best*.pth``): ``networks``
    holds ``student``/``teacher`` (low-light) or ``rtx``/``asm`` (ICEML); the network recorded
    in the file must match; ``which`` picks student or teacher, by default the network the run
    recorded as best, else the teacher (EMA) when there is one, else the student;
  * the official ICEML ``CombinedModel`` (``retinex_model.*`` / ``asm_model.*``): RtxICE-Net or
    ASMICE-Net is cut out of it;
  * the official SSLL training folder form ``<prefix>`` -> ``<prefix>_<Net>.pth`` (student) or
    ``<prefix>_<Net>_ema.pth`` (teacher); ``<prefix>_train_info.pth`` is never taken for weights;
  * plain state dicts and the usual wrappers (``params``, ``params_ema``, ``state_dict``,
    ``model``, ``net``, DDP ``module.``, ``torch.compile``'s ``_orig_mod.``).

  :func:`load_network` builds the network and loads that state strictly; a checkpoint of
  another network is refused naming the network it seems to belong to.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from foundation.errors import UserError
from models import build_network, network_name
from models.manifest import load_manifest, manifest_names

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "net", "network", "student", "generator")

#: ICEML networks: their entry in this framework's ICEML checkpoints and their key prefix in the
#: official CombinedModel checkpoint
ICEML_ENTRIES = {"RtxICE-Net": "rtx", "ASMICE-Net": "asm"}
COMBINED_PREFIXES = {"RtxICE-Net": "retinex_model.", "ASMICE-Net": "asm_model."}
COMBINED_MANIFEST = "ICEML-CombinedModel"

#: class names the official SSLL training code uses in checkpoint file names (<prefix>_<ClassName>.pth)
OFFICIAL_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "NAFNet": ("NAFNetLocal",),
    "MIRNet": ("MIRNet_v2", "MIRNetv2"),
    "Restormer": ("FullRestormer",),
    "UNet": ("Unet",),
}

WHICH = ("student", "teacher")


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the network."""


def atomic_save(obj: Any, path: str | os.PathLike, before_replace: Callable[[], None] | None = None) -> None:
    """Save ``obj`` with torch.save so that ``path`` is either the old file or the complete new one.

    ``before_replace`` is called after the new data is flushed to disk and before it replaces
    ``path`` (a crash at that moment leaves the old file and a stray temporary file, nothing else).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, 0o666 & ~file_mode_mask())  # mkstemp makes 0600 files; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
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


def file_mode_mask() -> int:
    """The process umask, read from /proc where possible (setting it to read it back would briefly
    change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; a missing, truncated, corrupt or non-weights file is a CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        text = _ANSI.sub("", str(exc))
        if "Weights only load failed" in text or "Unsupported global" in text:
            what = (" (the official training-state file: the weights are in <prefix>_<Net>.pth)"
                    if p.stem.endswith("_train_info") else "")
            raise CheckpointError(f"{p} holds Python objects besides tensors{what}; only weight files are read, "
                                  f"and never by running code from them") from None
        reason = next((ln.strip() for ln in text.splitlines() if ln.strip()), exc.__class__.__name__)
        prev = previous_checkpoint(p) if p.parent.name == "checkpoints" else None
        hint = f"; the previous checkpoint of this run is {prev}" if prev else ""
        raise CheckpointError(f"cannot read checkpoint {p}: it is truncated or corrupt ({reason}){hint}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
    """The state dict inside a plain or wrapped checkpoint object (``params``, ``state_dict``, ``module.``, ...).

    This framework's own run checkpoints go through :func:`network_state`, which picks the entry.
    """
    obj = ckpt
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
    """Name of the official network (or ``ICEML-CombinedModel``) whose manifest best matches these keys."""
    keys = set(sd)
    best, best_score = None, 0.0
    for name in manifest_names():
        ref = set(load_manifest(name).shapes)
        score = len(keys & ref) / max(len(keys | ref), 1)
        if score > best_score:
            best, best_score = name, score
    return best if best_score >= 0.5 else None


def _use_instead(guess: str) -> str:
    """What to pass as the network for a checkpoint that looks like ``guess``."""
    if guess == COMBINED_MANIFEST:
        return "an ICEML CombinedModel checkpoint (use the network RtxICE-Net or ASMICE-Net)"
    return f"a {guess} checkpoint (use the network {guess})"


def load_network_weights(net: nn.Module, sd: Mapping[str, torch.Tensor], network: str,
                         source: str = "checkpoint") -> None:
    """Load a state dict strictly into ``net``; a mismatch is one message naming the likely network."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        guess = guess_network(sd)
        if guess and guess.lower() != network.lower():
            raise CheckpointError(f"{source} does not fit {network}: it looks like {_use_instead(guess)}")
        detail = (f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:2]}), {len(wrong)} with other shapes (e.g. {wrong[:2]})")
        raise CheckpointError(f"{source} does not fit {network} as configured: {detail}; check the "
                              f"network's arguments")
    net.load_state_dict(sd, strict=True)


@dataclass
class NetworkState:
    """The weights of one network found in a checkpoint, and where they came from."""

    state: dict[str, torch.Tensor]
    source: str
    entry: str | None = None
    network_args: dict[str, Any] = field(default_factory=dict)


def _labels_for(network: str) -> list[str]:
    return [n.lower() for n in (network, *OFFICIAL_CLASS_NAMES.get(network, ()))]


def resolve_weight(weight: str | os.PathLike, network: str, which: str | None = None) -> Path:
    """The file behind ``weight``: the file itself, or the official ``<prefix>_<Net>[_ema].pth``."""
    path = Path(weight).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file (or the official prefix form "
                              f"<folder>/<prefix> for <prefix>_<Net>.pth)")
    ema = which == "teacher"
    plain: dict[str, Path] = {}
    emas: dict[str, Path] = {}
    if path.parent.is_dir():
        for f in sorted(path.parent.glob(glob.escape(path.name) + "_*.pth")):
            label = f.stem[len(path.name) + 1:].lower()
            if label == "train_info" or label.endswith("_train_info"):
                continue  # the training state (optimizer, RNG), not weights
            if label.endswith("_ema"):
                emas[label[:-4]] = f
            else:
                plain[label] = f
    pool, other = (emas, plain) if ema else (plain, emas)
    if pool:
        for label in _labels_for(network):
            if label in pool:
                return pool[label]
        if len(pool) == 1:
            return next(iter(pool.values()))
        raise CheckpointError(f"several checkpoints start with {path}_ ({', '.join(p.name for p in pool.values())}) "
                              f"and none is named for {network}")
    if other:
        kind = "EMA (teacher)" if ema else "plain (student)"
        raise CheckpointError(f"no {kind} checkpoint {path}_<Net>{'_ema' if ema else ''}.pth; found "
                              f"{', '.join(p.name for p in other.values())} (choose the "
                              f"{'student' if ema else 'teacher'} weights instead)")
    raise CheckpointError(f"checkpoint not found: {path} (nor the official training form "
                          f"{path}_<Net>.pth / {path}_<Net>_ema.pth)")


def default_entry(ckpt: Mapping[str, Any]) -> str:
    """The network a framework checkpoint is scored with by default (eval.py and run.py alike):
    the one the run recorded as best, else the teacher (EMA), else the first trained network."""
    nets = ckpt["networks"]
    best = ckpt.get("best_network")
    if best in nets:
        return best
    return "teacher" if "teacher" in nets else next(iter(nets))


def _framework_state(ckpt: Mapping[str, Any], network: str, which: str | None, source: str) -> NetworkState:
    nets = ckpt["networks"]
    args = dict(ckpt.get("network_args") or {})
    if set(nets) & set(ICEML_ENTRIES.values()):  # an ICEML run: both networks in one file
        if network not in ICEML_ENTRIES:
            raise CheckpointError(f"{source} is an ICEML checkpoint holding RtxICE-Net and ASMICE-Net, not "
                                  f"{network}; use the network RtxICE-Net or ASMICE-Net")
        entry = ICEML_ENTRIES[network]
        if which in WHICH:
            raise CheckpointError(f"{source} is an ICEML checkpoint: it has no student/teacher, only "
                                  f"RtxICE-Net and ASMICE-Net")
        if entry not in nets:
            raise CheckpointError(f"{source} holds no {network} weights (entries: {', '.join(nets)})")
        if network == "ASMICE-Net":
            t_min = (ckpt.get("config") or {}).get("iceml", {}).get("t_min")
            args = {**args, **({"t_min": t_min} if t_min is not None else {})}
        return NetworkState(dict(nets[entry]), f"{source} [{entry}]", entry, args)
    trained = ckpt.get("network")
    if isinstance(trained, str) and network_name(trained) != network:
        raise CheckpointError(f"{source} was trained for {network_name(trained)}, not {network} "
                              f"(use the network {network_name(trained)})")
    if which is None:
        entry = default_entry(ckpt)
    elif which in nets:
        entry = which
    else:
        raise CheckpointError(f"{source} holds no {which} weights, only {', '.join(nets)}")
    return NetworkState(dict(nets[entry]), f"{source} [{entry}]", entry, args)


def network_state(ckpt: Any, network: str, which: str | None = None, source: str = "checkpoint") -> NetworkState:
    """The state dict of ``network`` inside an already loaded checkpoint object (see module docstring)."""
    network = network_name(network)
    if which is not None and which not in WHICH:
        raise CheckpointError(f"unknown weights '{which}' (use one of {', '.join(WHICH)})")
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("networks"), Mapping):
        return _framework_state(ckpt, network, which, source)
    sd = extract_state_dict(ckpt, prefer_ema=which == "teacher")
    if any(k.startswith(tuple(COMBINED_PREFIXES.values())) for k in sd):  # official ICEML CombinedModel
        prefix = COMBINED_PREFIXES.get(network)
        if prefix is None:
            raise CheckpointError(f"{source} is an ICEML CombinedModel checkpoint holding RtxICE-Net and "
                                  f"ASMICE-Net, not {network}; use the network RtxICE-Net or ASMICE-Net")
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            raise CheckpointError(f"{source} is a CombinedModel checkpoint without {prefix}* keys ({network})")
        return NetworkState(sub, f"{source} [{prefix}*]", prefix.rstrip("."))
    return NetworkState(sd, source)


def read_network_state(weight: str | os.PathLike, network: str, which: str | None = None) -> NetworkState:
    """Resolve ``weight`` (a file or the official prefix form), read it safely, return ``network``'s state."""
    network = network_name(network)
    path = resolve_weight(weight, network, which)
    return network_state(safe_load(path), network, which, str(path))


def load_network(network: str, weight: str | os.PathLike, network_args: Mapping[str, Any] | None = None,
                 which: str | None = None, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build ``network`` with ``network_args`` (default: the arguments recorded in a framework
    checkpoint, else the paper's), load ``weight`` strictly, return it in eval mode on ``device``."""
    name = network_name(network)
    found = read_network_state(weight, name, which)
    args = dict(network_args) if network_args else found.network_args
    net = build_network(name, **args)
    load_network_weights(net, found.state, name, source=found.source)
    info: dict[str, Any] = {"network": name, "weight": found.source, "network_args": args}
    if found.entry:
        info["weights"] = found.entry
    return net.eval().to(device), info
