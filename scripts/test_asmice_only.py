#!/usr/bin/env python
"""Dehaze a folder with ASMICE-Net, as the official ICEML ``src/test_asmice_only.py``.

    python scripts/test_asmice_only.py [--input test_input] [--output output]
        [--weights models/final_dehazing_model.pth] [--size 1024] [--device auto]

Loads the ASMICE-Net part (``asm_model.*``) of the official CombinedModel checkpoint (or a
plain ASMICE-Net state dict, or a training checkpoint's ``networks['asm']``), resizes every image
of ``--input`` (natural order, RGB) to SIZE x SIZE (``--size 0``: keep the size), and writes under
the same file name ``J = clamp((I - a) / max(t, 0.1) + a, 0, 1)`` to ``<output>/J_ASMICE-Net/``
and the transmission map ``t`` (repeated to 3 channels, clamped) to ``<output>/trm_ASMICE-Net/``,
printing ``Image Processed:<fname>`` per image.
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
    return dehaze_main("asm", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
