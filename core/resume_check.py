"""What ``--resume`` compares: the new config against the one stored in the checkpoint.

A resumed run continues *the same run* only when everything that shapes the stream of data and
updates is unchanged: the data (sets, batch sizes, label budget), the seed, the network, the
optimizer and schedule, the losses and the trainer's own recipe. A change there is refused with
one line that names every changed key, unless ``--allow-config-change`` is given (then the
changes are logged and the run continues as a different one). A checkpoint continued by another
trainer is the next phase of a protocol, not the same run, and is accepted with every change
listed: SSLL resumes the supervised baseline's checkpoint into its Mean-Teacher config (spec
ssll.md section 3). Adding ``data.unpaired`` (a second stream) leaves the paired stream as it was.
Keys that only change where, how often or how fast things are written or measured (the
schedule's length ``train.iters`` / ``train.epochs``, logging and trackers, validation, checkpoints,
workers, device, gradient checkpointing, evaluation) may change and are listed in the log.

A checkpoint at iteration ``k`` cannot resume a run of fewer than ``k`` iterations (exactly ``k``:
nothing left to train, the final evaluation still runs).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundation.errors import UserError

#: keys (dotted prefixes) whose change keeps the resume exact up to where they apply
FREE_TO_CHANGE = (
    "name", "output_root", "device", "demo_data", "pretrained", "eval", "validation", "logging",
    "data.num_workers", "data.pin_memory", "data.prefetch_factor", "data.unpaired",
    "train.iters", "train.epochs", "train.log_every", "train.val_every", "train.val_every_epochs",
    "train.save_every", "train.keep_last", "train.sample_images", "train.threads", "train.compile",
    "train.ddp_timeout", "train.max_nonfinite", "train.find_unused_parameters", "train.tf32",
    "train.deterministic", "train.grad_checkpoint",
)

ALLOW_SWITCH = "--allow-config-change"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k.startswith("_"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (stored value, new value)}`` for every leaf both configs hold that differs.

    A key only one of them holds is a key the code added or removed since the checkpoint was
    written (its default applies), not a change of the run."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def _is_free(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in FREE_TO_CHANGE)


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume(stored: Mapping[str, Any] | None, new: Mapping[str, Any], ckpt_iter: int,
                 total_iters: int | None, allow_changes: bool = False, source: str = "the checkpoint") -> list[str]:
    """Refuse a resume that cannot continue the stored run; return the notes to log otherwise.

    ``total_iters``: the new run's length when known (``train.iters``), else None.
    """
    if total_iters is not None and ckpt_iter > total_iters:
        raise UserError(f"{source} is at iteration {ckpt_iter}, beyond train.iters={total_iters} of this run: nothing "
                        f"would be trained; set train.iters to {ckpt_iter} or more (or leave it as it was)")
    if not stored:
        return []
    changes = config_changes(stored, new)
    new_phase = changes.get("trainer")
    # another trainer continues the checkpoint's networks: a new phase of a protocol, not the same
    # run (SSLL resumes the supervised baseline into the Mean-Teacher config); every change is said
    breaking = {} if new_phase else {k: v for k, v in changes.items() if not _is_free(k)}
    shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())
    if breaking and not allow_changes:
        listed = ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, (a, b) in list(breaking.items())[:6])
        more = f" and {len(breaking) - 6} more" if len(breaking) > 6 else ""
        raise UserError(f"--resume {source}: the config differs from the run's in keys that change its data or "
                        f"updates: {listed}{more}; a resume with them is not the same run. Set them back, or add "
                        f"{ALLOW_SWITCH} to continue as a changed run")
    if not changes:
        return []
    notes = [f"config changes since the checkpoint: {shown}"]
    if new_phase:
        notes.append(f"the {new_phase[1]} trainer continues the {new_phase[0]} checkpoint (a new phase: the "
                     f"changes above are accepted)")
    if breaking:
        notes.append(f"{ALLOW_SWITCH}: continuing although {', '.join(breaking)} changed (not an exact resume)")
    return notes
