"""The metric protocols of the papers, by name: the one table every evaluation reads.

A named dataset layout says which protocol its paper scores it with (``protocol`` of
:class:`data.layouts.NamedDataset`: the ICEML sets RICE-I and SOTS-outdoor ``iceml``, every other
set ``paper``), and :func:`common_utils.evaluation.runner.dataset_protocols` builds the
:class:`~common_utils.evaluation.evaluator.EvalProtocol` of each set from it, for ``eval.py``,
validation and a run's final evaluation alike. A folder or a dataset given by ``type`` is scored
with :data:`DEFAULT`. Plain Python (the config schema reads the names).
"""
from __future__ import annotations

from typing import Any

#: protocol name -> SSIM variant (common_utils.metrics.SSIM_PROTOCOLS), resize (None: full
#: resolution) and what it is
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"ssim": "y", "resize": None, "description": "SSLL paper: full resolution, PSNR RGB, SSIM on Y, "
                                                          "LPIPS AlexNet"},
    "iceml": {"ssim": "piq", "resize": 1024, "description": "ICEML paper: resize to 1024x1024, piq PSNR/SSIM"},
}

#: the protocol of sets that name none (folders, ``type:`` datasets)
DEFAULT = "paper"

#: ``auto``: every set with its own protocol
AUTO = "auto"
