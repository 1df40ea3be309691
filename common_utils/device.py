"""The one device rule of training (``device:`` in a config) and evaluation (``--device``).

``auto``  the GPU when CUDA is available (under torchrun: the process's ``LOCAL_RANK`` GPU), else the CPU;
``cpu``   the CPU;
``cuda``  a GPU (under torchrun: the ``LOCAL_RANK`` GPU); an error when CUDA is not available;
``cuda:N`` GPU N; an error when it does not exist;
``mps``   Apple's GPU; an error when it is not available.

Nothing falls back silently: a device that was asked for and is not there is a one-line error
that says what to write instead (``auto`` is the explicit fallback).
"""
from __future__ import annotations

import re

import torch

from foundation.errors import UserError

DEVICE_WORDS = ("auto", "cpu", "cuda", "cuda:N", "mps")
_PATTERN = re.compile(r"^(auto|cpu|cuda|mps|cuda:\d+)$")


def check_device_name(pref: str, where: str = "device") -> str:
    """``pref`` normalised (lower case, stripped) if it is a device word, else a UserError naming ``where``."""
    text = str(pref).strip().lower()
    if not _PATTERN.match(text):
        hint = " (did you mean 'cuda'?)" if text in ("gpu", "cuda0", "nvidia") or text.startswith("gpu") else ""
        raise UserError(f"{where} must be one of {', '.join(DEVICE_WORDS)}, got '{pref}'{hint}")
    return text


def select_device(pref: str | None = "auto", local_rank: int = 0, where: str = "--device") -> torch.device:
    """The device ``pref`` names (see the module docstring); ``where`` names the setting in errors."""
    text = "auto" if pref in (None, "") else check_device_name(pref, where)
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    if text == "auto":
        return torch.device("cuda", local_rank % count) if cuda and count else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"{where} is 'mps' but Apple's GPU (MPS) is not available here; use cpu, or auto to "
                            f"take whatever this machine has")
        return torch.device("mps")
    if not cuda or not count:
        raise UserError(f"{where} is '{pref}' but CUDA is not available here (torch {torch.__version__}, "
                        f"CUDA build {torch.version.cuda or 'none'}); use cpu, or auto to take a GPU only when "
                        f"there is one")
    if text == "cuda":
        return torch.device("cuda", local_rank % count)
    index = int(text.split(":")[1])
    if index >= count:
        raise UserError(f"{where} is '{pref}' but this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)
