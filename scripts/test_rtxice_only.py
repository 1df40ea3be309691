#!/usr/bin/env python
"""Dehaze a folder with RtxICE-Net, as the official ICEML ``src/test_rtxice_only.py``.

    python scripts/test_rtxice_only.py [--input test_input] [--output output]
        [--weights models/final_dehazing_model.pth] [--size 1024] [--device auto]

Loads the RtxICE-Net part (``retinex_model.*``) of the official CombinedModel checkpoint (or a
plain RtxICE-Net state dict, or a training checkpoint's ``networks['rtx']``), resizes every image
of ``--input`` (natural order, RGB) to SIZE x SIZE (``--size 0``: keep the size), computes
``J = clamp(I * lr_inv, 0, 1)`` and writes it under the same file name to
``<output>/J_RtxICE-Net/``, printing ``Image Processed:<fname>`` per image.
Shared code: ``common_utils/dehaze_tools.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common_utils.dehaze_tools import dehaze_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return dehaze_main("rtx", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
