"""The memory budget of one image, for every entry point that evaluates or enhances images.

``eval.py``, ``eval_with_any_backbone.py``, the trainer's validation and final evaluation (through
:mod:`common_utils.evaluation.evaluator`) and the dehazing scripts (:mod:`common_utils.dehaze_tools`)
all ask this module, so a large image is treated the same way everywhere:

- **The network** runs on the whole image up to :data:`AUTO_TILE_PIXELS` (2048x2048) and in
  overlapping tiles of :data:`AUTO_TILE` pixels above, unless a tile size is given (``--tile N``;
  ``--tile 0`` never tiles). Feature memory grows with the pixels of one forward, so a tiled image
  needs about what one 1024x1024 image needs, whatever its size. An image that still runs out of
  memory is named with a smaller ``--tile`` (:func:`out_of_memory_line`) and the others go on.
- **The full-reference metrics** need memory in proportion to the image too. Measured on the CPU
  (float32 2048x2048 pairs, peak above the inputs): PSNR 23 MB per megapixel, SSIM on Y 177, SSIM
  on RGB 240, MS-SSIM 130, LPIPS 222; a 9000x9000 (81 MP) pair thus needs about 20 GB for one
  SSIM. Up to :data:`FULL_METRIC_PIXELS` (4096x4096, about 4 GB) every metric runs on the whole
  image. Above it PSNR and SSIM run in horizontal strips of at most :data:`STRIP_PIXELS` pixels
  (:func:`common_utils.metrics.psnr_ssim_in_strips`: the same values up to float rounding, at about
  1 GB), and LPIPS, MS-SSIM and NIQE are not computed for that image: the summary names it, and the
  means of those metrics are over the other images.
"""
from __future__ import annotations

import gc

import torch

#: images with more pixels than this run in tiles automatically: 2048x2048, above every test set of
#: the papers (SDSD's 1920x1080 frames are the largest), below a phone's 12 MP photo or a 3840x2160
#: frame, which ran CIDNet out of memory at 11.5 GB untiled
AUTO_TILE_PIXELS = 2048 * 2048
#: the tile size used automatically
AUTO_TILE = 1024
#: images with more pixels than this are scored in strips (PSNR, SSIM) or not at all (LPIPS,
#: MS-SSIM, NIQE); 4096x4096, about 4 GB for the largest metric
FULL_METRIC_PIXELS = 4096 * 4096
#: the most pixels of one strip of the strip-wise PSNR / SSIM
STRIP_PIXELS = 2048 * 2048
#: the metrics left out for an image scored in strips, as messages name them
WHOLE_IMAGE_ONLY_NAMES = "LPIPS, MS-SSIM, NIQE"


def tile_for(h: int, w: int, tile: int | None, auto_tile_pixels: int | None = -1,
             auto_tile: int | None = None) -> int | None:
    """The tile size an ``h`` x ``w`` image runs with: ``tile`` when given (0: never tile), else
    ``auto_tile`` (default :data:`AUTO_TILE`) above ``auto_tile_pixels`` (default
    :data:`AUTO_TILE_PIXELS`; None: never automatically), else None (the whole image)."""
    if tile is not None:
        return tile or None
    limit = AUTO_TILE_PIXELS if auto_tile_pixels == -1 else auto_tile_pixels
    if limit is not None and h * w > limit:
        return auto_tile or AUTO_TILE
    return None


def scored_in_strips(h: int, w: int, full_metric_pixels: int | None = -1) -> bool:
    """Whether an ``h`` x ``w`` image is above the whole-image metric budget (default
    :data:`FULL_METRIC_PIXELS`; None: never)."""
    limit = FULL_METRIC_PIXELS if full_metric_pixels == -1 else full_metric_pixels
    return limit is not None and h * w > limit


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (CUDA, or the CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "DefaultCPUAllocator" in text)


def out_of_memory_line(name: str, h: int, w: int, device: torch.device | str, used_tile: int | None) -> str:
    """The one sentence naming an image that ran out of memory, with the ``--tile`` to try next."""
    smaller = max(64, (used_tile or min(h, w, AUTO_TILE)) // 2)
    return (f"{name}: {w}x{h} pixels ran out of memory on {device}"
            f"{f' in tiles of {used_tile}' if used_tile else ''}; use --tile {smaller} (or smaller)")


def free_memory(device: torch.device) -> None:
    """Give back what a failed forward held, so the next image starts with the device's memory free."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
