"""Config, trainers, EMA, distributed set-up and logging.

Trainers are built by name: ``TRAINERS.get(cfg.trainer)(cfg, ...)``.
"""
from __future__ import annotations

from foundation.registry import Registry

TRAINERS = Registry("trainer", package=__name__, variable="TRAINERS")  # finds the @TRAINERS.register decorators
