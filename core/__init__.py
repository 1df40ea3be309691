"""Config, trainers, EMA, distributed set-up and logging.

Trainers are built by name: ``TRAINERS.get(cfg.trainer)(cfg, ...)``.
"""
from __future__ import annotations

from foundation.registry import Registry

_TRAINER_MODULES = {
    "supervised": "core.supervised",
    "mean_teacher": "core.mean_teacher",
    "iceml": "core.iceml",
}

TRAINERS = Registry("trainer", lazy=_TRAINER_MODULES)
