"""THE checkpoint format of this framework (written and read here only), atomic writes, safe reads,
the file layout of a run's ``checkpoints/`` folder, and THE reader of network weights in every
supported form.

**Format** ``{"format": "ssir-checkpoint", "version": FORMAT_VERSION, "kind": "training" | "weights"}``
plus ``networks`` ({entry: state dict}; entries ``student``/``teacher`` or ICEML's ``rtx``/``asm``),
``specs`` ({entry: {"network": name, "args": constructor arguments}}: what rebuilds each network,
ICEML's ``t_min`` included), ``network``, ``iter``, ``best``, optionally ``best_network`` (the entry
scored by default), ``config``, ``note``, ``scores``. ``training`` adds :data:`TRAINING_KEYS`
(``rng_ranks`` under DDP); ``weights`` holds float32 networks only. :func:`training_checkpoint`
and :func:`weights_checkpoint` build them in memory; :func:`check_format` reads them back:
version 1 (``ssir-train-v1`` / ``ssir-weights-v1``, one ``network_args`` for every entry, ICEML's
``t_min`` in ``config.iceml``) is upgraded, a newer version refused.

**Version 3 on disk**: a file may hold, instead of ``networks``, ``weight_files`` ({entry: file
name}, relative to the file's own folder): the weights files (kind ``weights``, one network each)
that hold those networks. The trainer writes every training state that way (``last.pth`` and
``iter_<k>.pth`` hold optimizer, scheduler, RNG... but no network tensor) and ``best.pth`` as such an
index. :func:`read_checkpoint` reads any file and puts the named networks back (a missing file is
one CheckpointError naming it), so every reader below sees the same in-memory form as for versions
1 and 2, whose files hold their networks. The writer's side of that layout is here too:
:func:`save_training_state` (weights files first, the state last: a kill in between leaves the
previous state and its files), :func:`save_best`, :func:`prune_checkpoints`, :func:`copy_checkpoint`
(a state with its weights files, for a branch into another run folder) and :func:`run_checkpoint`
(a run folder or its ``checkpoints/`` folder -> its ``last.pth`` or ``best.pth``).

:func:`atomic_save` writes a temporary file, fsyncs it and renames it over the target (a crash
leaves the previous file); :func:`safe_load` reads with ``torch.load(weights_only=True)`` (no code
runs) and turns a truncated, corrupt or non-weights file into one message.

:func:`read_network_state` returns the state dict of the network asked for from: this framework's
checkpoints (``which`` picks student or teacher; default ``best_network``, else the teacher, else
the student); the official ICEML ``CombinedModel`` (``retinex_model.*`` / ``asm_model.*``); the
official SSLL prefix form ``<prefix>`` -> ``<prefix>_<Net>.pth`` / ``<prefix>_<Net>_ema.pth`` (never
``<prefix>_train_info.pth``); plain state dicts and the usual wrappers (``params``, ``params_ema``,
``state_dict``, ``model``, ``net``, ``module.``, ``_orig_mod.``). :func:`load_network` builds the
network and loads it strictly (a checkpoint of another network is refused, naming the network it
seems to be); :func:`load_networks` loads every network of a framework checkpoint the same way.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
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


# ------------------------------------------------------------------ the format
FORMAT = "ssir-checkpoint"
#: 3: files may name their networks' weights files (``weight_files``) instead of holding them;
#: 2: ``format``/``version``/``kind`` and per-entry ``specs``; 1: ``ssir-train-v1`` / ``ssir-weights-v1``
FORMAT_VERSION = 3
V1_FORMATS = {"ssir-train-v1": "training", "ssir-weights-v1": "weights"}
KINDS = ("training", "weights")
#: what a training checkpoint holds besides the networks, the iteration and the config
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "ema_steps_offset", "best", "nonfinite_total",
                 "nonfinite_streak", "rng", "trainer", "amp")
#: the entry of each ICEML network in a framework checkpoint (read from ``specs`` in version 2)
ICEML_NETWORKS = {entry: net for net, entry in ICEML_ENTRIES.items()}

Specs = Mapping[str, tuple[str, Mapping[str, Any]]]


def _specs(specs: Specs, entries: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {k: {"network": network_name(specs[k][0]), "args": dict(specs[k][1])} for k in entries}


def _fp32(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in sd.items()}


def weights_checkpoint(networks: Mapping[str, Mapping[str, torch.Tensor]], specs: Specs, network: str,
                       iteration: int | None, **meta: Any) -> dict[str, Any]:
    """A ``weights`` file: ``networks`` as float32 on the CPU, how to build each (``specs``: entry ->
    (network, args)), and metadata (``best``, ``best_network``, ``config``, ``note``, ``scores``)."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "kind": "weights", "network": network_name(network),
            "networks": {k: _fp32(sd) for k, sd in networks.items()}, "specs": _specs(specs, networks),
            "iter": iteration, **meta}


def training_checkpoint(networks: Mapping[str, Mapping[str, torch.Tensor]], specs: Specs, network: str,
                        iteration: int, config: Mapping[str, Any], **state: Any) -> dict[str, Any]:
    """A ``training`` file: the networks as they are (exact resume), their ``specs``, the config and every
    one of :data:`TRAINING_KEYS` in ``state`` (``rng_ranks`` optional)."""
    missing = [k for k in TRAINING_KEYS if k not in state]
    if missing:
        raise ValueError(f"training checkpoint without {', '.join(missing)}")
    return {"format": FORMAT, "version": FORMAT_VERSION, "kind": "training", "network": network_name(network),
            "networks": {k: dict(sd) for k, sd in networks.items()}, "specs": _specs(specs, networks),
            "iter": int(iteration), "config": dict(config), **state}


def _upgrade_v1(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint in the version-2 layout (one ``network_args`` for every entry -> ``specs``)."""
    nets, args = ckpt["networks"], dict(ckpt.get("network_args") or {})
    trained = ckpt.get("network")
    iceml = bool(set(nets) & set(ICEML_NETWORKS))
    specs = {}
    for entry in nets:
        name = ICEML_NETWORKS.get(entry) if iceml else network_name(trained) if isinstance(trained, str) else None
        entry_args = dict(args)
        if name == "ASMICE-Net":  # version 1 kept ASMICE-Net's t_min in the run's config only
            t_min = ((ckpt.get("config") or {}).get("iceml") or {}).get("t_min")
            entry_args.update({"t_min": t_min} if t_min is not None else {})
        specs[entry] = {"network": name, "args": entry_args}
    kind = V1_FORMATS.get(ckpt.get("format"), "training" if "optimizer" in ckpt else "weights")
    rest = {k: v for k, v in ckpt.items() if k != "network_args"}
    return {**rest, "format": FORMAT, "version": 1, "kind": kind, "specs": specs}


def check_format(ckpt: Any, source: str = "checkpoint") -> dict[str, Any] | None:
    """A loaded framework checkpoint in the current layout (older versions upgraded), or None for any
    other object (released weights, plain state dicts). A newer or unknown version is a CheckpointError."""
    if not isinstance(ckpt, Mapping):
        return None
    fmt = ckpt.get("format")
    if fmt == FORMAT:
        version = ckpt.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{source} has no valid checkpoint format version ({version!r})")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{source} was written by a newer version of this framework (checkpoint format "
                                  f"version {version}; this one reads versions 1 to {FORMAT_VERSION}): update "
                                  f"the code to read it")
        held = isinstance(ckpt.get("networks"), Mapping) or (
            version >= 3 and isinstance(ckpt.get(WEIGHT_FILES), Mapping))
        if ckpt.get("kind") not in KINDS or not held or not isinstance(ckpt.get("specs"), Mapping):
            raise CheckpointError(f"{source} is a damaged {FORMAT} file (no kind, networks or specs)")
        return dict(ckpt)
    if fmt in V1_FORMATS or (fmt is None and isinstance(ckpt.get("networks"), Mapping)):
        return _upgrade_v1(ckpt)
    if isinstance(fmt, str) and fmt.startswith("ssir-") and "networks" in ckpt:
        raise CheckpointError(f"{source} has the unknown checkpoint format '{fmt}' (written by a newer version "
                              f"of this framework?): update the code to read it")
    return None


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint of this framework (what ``--resume`` takes), in the current layout."""
    ckpt = check_format(read_checkpoint(path), str(path))
    if ckpt is None:
        raise CheckpointError(f"{path} is not a training checkpoint of this framework (use pretrained.path to "
                              f"start from released weights)")
    if ckpt["kind"] != "training":
        raise CheckpointError(f"{path} holds network weights only, no optimizer or RNG state: resume from the "
                              f"run's last.pth or iter_*.pth, or start from these weights with pretrained.path")
    missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "iter") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete training checkpoint (no {', '.join(missing)})")
    return ckpt


# ------------------------------------------------------------------ version 3 on disk: a run's files
#: the key of a file that names its networks' weights files instead of holding them (version 3)
WEIGHT_FILES = "weight_files"
LAST = "last.pth"
BEST = "best.pth"
CHECKPOINTS = "checkpoints"
_ITER = re.compile(r"iter_(\d+)\.pth")
_WEIGHTS = re.compile(r"net_.+_iter_\d+\.pth")


def state_file_name(iteration: int) -> str:
    """``iter_<k>.pth``: the training state of iteration ``k`` (kept when ``train.keep_last`` > 1)."""
    return f"iter_{int(iteration):08d}.pth"


def weights_file_name(entry: str, iteration: int) -> str:
    """``net_<entry>_iter_<k>.pth``: the float32 weights of one network at iteration ``k``."""
    return f"net_{entry}_iter_{int(iteration):08d}.pth"


def best_file_name(entry: str | None = None) -> str:
    """``best.pth`` (every network at the overall best) or ``best_<entry>.pth`` (one network at its own best)."""
    return BEST if entry is None else f"best_{entry}.pth"


def _named_path(path: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise CheckpointError(f"{path} names the weights file {name!r}, which is not a file name in its folder")
    return path.parent / name


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """:func:`safe_load` of ``path``, with the networks of a version-3 file read from the weights files it
    names (relative to its folder) and put under ``networks``: every reader sees one in-memory form."""
    path = Path(path)
    ckpt = safe_load(path, map_location=map_location)
    fmt = check_format(ckpt, str(path))
    if fmt is None or isinstance(fmt.get("networks"), Mapping):
        return ckpt
    networks = {}
    for entry, name in fmt[WEIGHT_FILES].items():
        f = _named_path(path, name)
        if not f.is_file():
            raise CheckpointError(f"{path} needs the weights file {f}, which is missing (checkpoints copied "
                                  f"elsewhere must be copied with their weights files: copy_checkpoint)")
        held = check_format(safe_load(f, map_location=map_location), str(f))
        if held is None or entry not in held["networks"]:
            raise CheckpointError(f"{f}, named by {path} for '{entry}', holds no weights for '{entry}'")
        networks[entry] = held["networks"][entry]
    return {**fmt, "networks": networks}


def weight_file_names(path: str | os.PathLike) -> list[str]:
    """The weights files a version-3 file names (empty for any other file); read without its tensors."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged file names nothing (reading it says why)
        return []
    named = ckpt.get(WEIGHT_FILES) if isinstance(ckpt, Mapping) and ckpt.get("format") == FORMAT else None
    return [n for n in named.values() if isinstance(n, str)] if isinstance(named, Mapping) else []


def _spec_tuples(ckpt: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    return {k: (s["network"], s["args"]) for k, s in ckpt["specs"].items()}


def _weights_meta(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in ("best", "config", "ema_steps_offset") if k in state}


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Put ``src``'s bytes at ``dst`` atomically: a hard link (no second write) where the file system
    allows one, else a copy. Checkpoint files are only ever replaced, never changed in place, so a
    linked file stays what it was."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.link.tmp"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {dst}: {exc.strerror or exc}") from None
    return dst


def save_training_state(state: Mapping[str, Any], folder: str | os.PathLike, keep_iter: bool,
                        written: dict[str, Path] | None = None) -> Path:
    """Write a :func:`training_checkpoint` into a run's ``folder``: each network's weights file
    (``net_<entry>_iter_<k>.pth``, skipped when ``written`` holds it: written by this process at this
    iteration), then ``last.pth`` naming them (no network tensors), then ``iter_<k>.pth`` (a hard link)
    when ``keep_iter``. Files are written atomically and the state last: a kill leaves the previous one
    with all its files."""
    folder = Path(folder)
    iteration = int(state["iter"])
    names = write_weights_files(state, folder, state["networks"], written)
    on_disk = {k: v for k, v in state.items() if k != "networks"}
    on_disk.update({"version": FORMAT_VERSION, WEIGHT_FILES: names})
    last = folder / LAST
    atomic_save(on_disk, last)
    if keep_iter:
        link_or_copy(last, folder / state_file_name(iteration))
    return last


def write_weights_files(state: Mapping[str, Any], folder: str | os.PathLike, entries: Iterable[str],
                        written: dict[str, Path] | None = None) -> dict[str, str]:
    """The weights file of each of ``entries`` of an in-memory state at its iteration (``written``:
    files already written by this process at this iteration, reused); returns {entry: file name}."""
    folder, iteration = Path(folder), int(state["iter"])
    specs = _spec_tuples(state)
    names = {}
    for entry in entries:
        name = weights_file_name(entry, iteration)
        if written is None or name not in written or not Path(written[name]).is_file():
            one = weights_checkpoint({entry: state["networks"][entry]}, {entry: specs[entry]}, state["network"],
                                     iteration, best_network=entry, **_weights_meta(state))
            atomic_save(one, folder / name)
            if isinstance(written, dict):
                written[name] = folder / name
        names[entry] = name
    return names


def save_best(state: Mapping[str, Any], folder: str | os.PathLike, entry: str | None,
              written: dict[str, Path] | None = None, **meta: Any) -> Path:
    """``best_<entry>.pth``: a hard link (else a copy) of that network's weights file at this iteration;
    ``best.pth`` (``entry`` None): a small index naming every network's weights file, with ``meta``
    (``best_network``). The weights files are written first when this iteration has none yet."""
    folder = Path(folder)
    entries = list(state["networks"]) if entry is None else [entry]
    names = write_weights_files(state, folder, entries, written)
    target = folder / best_file_name(entry)
    if entry is not None:
        return link_or_copy(folder / names[entry], target)
    index = {"format": FORMAT, "version": FORMAT_VERSION, "kind": "weights", "network": state["network"],
             "specs": {k: state["specs"][k] for k in entries}, "iter": int(state["iter"]), WEIGHT_FILES: names,
             **_weights_meta(state), **meta}
    atomic_save(index, target)
    return target


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> list[Path]:
    """Keep the ``keep_last`` newest ``iter_<k>.pth`` states, then delete every ``net_*_iter_*.pth`` that no
    remaining file names (``last.pth``, kept states, ``best.pth``, any state copied here by hand). States
    go first, so a kill in between never leaves a state without its files. Returns what was deleted."""
    folder = Path(folder)
    states = sorted((f for f in folder.glob("iter_*.pth") if _ITER.fullmatch(f.name)),
                    key=lambda f: int(_ITER.fullmatch(f.name).group(1)))
    gone = states[:-int(keep_last)] if keep_last >= 1 else states
    for f in gone:
        f.unlink(missing_ok=True)
    weights = [f for f in folder.glob("net_*_iter_*.pth") if _WEIGHTS.fullmatch(f.name)]
    if not weights:
        return gone
    named: set[str] = set()
    for f in folder.glob("*.pth"):
        if f.is_file() and not _WEIGHTS.fullmatch(f.name):
            named.update(weight_file_names(f))
    dropped = [f for f in weights if f.name not in named]
    for f in dropped:
        f.unlink(missing_ok=True)
    return gone + dropped


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint file into another place (``dst``: a file, or a folder keeping the name) with
    the weights files it names (hard links where possible), the file itself last and atomically:
    what a branch into another run folder (a study's stage 2) uses. Any version; returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        dst = dst / src.name
    if not src.is_file():
        raise CheckpointError(f"checkpoint not found: {src}")
    for name in weight_file_names(src):
        f = _named_path(src, name)
        if not f.is_file():
            raise CheckpointError(f"{src} needs the weights file {f}, which is missing: nothing was copied to {dst}")
        link_or_copy(f, dst.parent / name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.copy.tmp"
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not copy {src} to {dst}: {exc.strerror or exc}") from None
    return dst


def run_checkpoint(path: str | os.PathLike, prefer: str = "last") -> Path:
    """The checkpoint file behind ``path``: ``path`` itself unless it is a run folder or its ``checkpoints/``
    folder, then its ``last.pth`` (``prefer="last"``, what ``--resume`` takes) or its ``best.pth`` when the
    run wrote one, else ``last.pth`` (``prefer="best"``, what ``--weight`` and ``eval.checkpoint: best`` take)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    folder = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    if prefer == "best" and (folder / BEST).is_file():
        return folder / BEST
    if (folder / LAST).is_file():
        return folder / LAST
    raise CheckpointError(f"{path} is a folder without {CHECKPOINTS}/{LAST}; give a checkpoint file, a run folder "
                          f"or its {CHECKPOINTS}/ folder (or the official prefix form <folder>/<prefix> for "
                          f"<prefix>_<Net>.pth)")


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
    """The file behind ``weight``: the file itself, a run folder's checkpoint (:func:`run_checkpoint`,
    ``best``), or the official ``<prefix>_<Net>[_ema].pth``."""
    path = Path(weight).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return run_checkpoint(path, "best")
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
    """``network``'s entry of a framework checkpoint in the current layout (see :func:`check_format`)."""
    if not isinstance(ckpt.get("networks"), Mapping):
        raise CheckpointError(f"{source} names its weights files instead of holding them: read it with "
                              f"read_checkpoint (path), not as a loaded object")
    nets, specs = ckpt["networks"], ckpt["specs"]
    held = list(dict.fromkeys(s["network"] for s in specs.values() if s.get("network")))
    if len(held) > 1:  # several networks in one file (ICEML): the network picks its entry
        names = " and ".join(held)
        if network not in held:
            raise CheckpointError(f"{source} is a checkpoint holding {names}, not {network}; use the network "
                                  f"{' or '.join(held)}")
        if which in WHICH:
            raise CheckpointError(f"{source} holds {names}: it has no student/teacher, only {names}")
        entry = next(k for k, s in specs.items() if s.get("network") == network)
        return NetworkState(dict(nets[entry]), f"{source} [{entry}]", entry, dict(specs[entry]["args"]))
    if held and held[0] != network:
        raise CheckpointError(f"{source} was trained for {held[0]}, not {network} (use the network {held[0]})")
    if which is None:
        entry = default_entry(ckpt)
    elif which in nets:
        entry = which
    else:
        raise CheckpointError(f"{source} holds no {which} weights, only {', '.join(nets)}")
    return NetworkState(dict(nets[entry]), f"{source} [{entry}]", entry, dict(specs[entry]["args"]))


def network_state(ckpt: Any, network: str, which: str | None = None, source: str = "checkpoint") -> NetworkState:
    """The state dict of ``network`` inside an already loaded checkpoint object (see module docstring)."""
    network = network_name(network)
    if which is not None and which not in WHICH:
        raise CheckpointError(f"unknown weights '{which}' (use one of {', '.join(WHICH)})")
    framework = check_format(ckpt, source)
    if framework is not None:
        return _framework_state(framework, network, which, source)
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
    return network_state(read_checkpoint(path), network, which, str(path))


def _build_loaded(name: str, found: NetworkState, network_args: Mapping[str, Any] | None,
                  device: torch.device | str) -> tuple[nn.Module, dict[str, Any]]:
    args = dict(network_args) if network_args else found.network_args
    net = build_network(name, **args)
    load_network_weights(net, found.state, name, source=found.source)
    info: dict[str, Any] = {"network": name, "weight": found.source, "network_args": args}
    if found.entry:
        info["weights"] = found.entry
    return net.eval().to(device), info


def load_network(network: str, weight: str | os.PathLike, network_args: Mapping[str, Any] | None = None,
                 which: str | None = None, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build ``network`` with ``network_args`` (default: the arguments recorded in a framework
    checkpoint, else the paper's), load ``weight`` strictly, return it in eval mode on ``device``."""
    name = network_name(network)
    return _build_loaded(name, read_network_state(weight, name, which), network_args, device)


def load_networks(weight: str | os.PathLike, device: torch.device | str = "cpu"
                  ) -> tuple[dict[str, nn.Module], str, dict[str, dict[str, Any]]]:
    """Every network of a framework checkpoint, each built and loaded as :func:`load_network` does;
    returns ``({entry: network}, the entry scored by default, {entry: info})``."""
    path = run_checkpoint(weight, "best")
    ckpt = check_format(read_checkpoint(path), str(path))
    if ckpt is None:
        raise CheckpointError(f"{path} is not a checkpoint of this framework (give the network with eval.py -n)")
    nets, infos = {}, {}
    for entry, spec in ckpt["specs"].items():
        name = spec.get("network") or ckpt.get("network")
        if not isinstance(name, str):
            raise CheckpointError(f"{path} does not say which network its entry '{entry}' is")
        found = NetworkState(dict(ckpt["networks"][entry]), f"{path} [{entry}]", entry, dict(spec["args"]))
        nets[entry], infos[entry] = _build_loaded(network_name(name), found, None, device)
    return nets, default_entry(ckpt), infos
