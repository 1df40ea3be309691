"""Training and evaluation side by side with the official SSLL code (eezkni/CMT), on the CPU.

    python scripts/compare_official.py --official /work/official/CMT [--backbones RetinexFormer CIDNet UNet] [--out DIR]

The official side needs piq, loguru, timm and pyiqa (``--official-python`` may name another
interpreter that has them and the same torch). Results and the method: docs/official_comparison.md.

Sections (``--sections``, default train, equality, eval; ``profile`` on request):

- ``train``: seconds per training iteration, ours vs official, for the supervised step and the
  SSLL step (Mean Teacher + CutMix + PICo) of each backbone, with the same backbone, batch, crop,
  losses (1-SSIM + LPIPS AlexNet, PICo, masked consistency) and images. Two feeds: ``premade``
  (identical pre-made tensors: forward + backward + optimizer + EMA and the loop around them) and
  ``loader`` (each side's own data pipeline over the same PNG files, ``num_workers=0``). Ours runs
  with the config defaults (``ours``), with the documented speed switches (``ours_fast``,
  ``--fast-switches``) and, with ``--ours-env``, with defaults in a process started with extra
  environment variables (``ours_env``, e.g. glibc malloc settings). Blocks are interleaved
  (official, ours, ours_fast, ours_env, official, ...); each block starts with ``--warmup`` untimed
  iterations; an iteration is timed from one batch fetch to the next; the table gives the median
  over every timed iteration.
- ``equality``: the per-term losses of the first ``--equality-iters`` iterations, ours vs official,
  from the same initial weights (ours copied into the official networks, strictly), the same
  batches and the same CutMix boxes (injected on both sides). Ours runs with the switches that
  restore the official behaviour (``train.output_clamp=hard``, ``ssll.official_lpips_range``,
  ``ssll.fused_student_forward=false``) and a constant learning rate; the initial teacher is the
  student plus ``--teacher-offset`` x N(0, 1) per weight, loaded on both sides.
- ``eval``: images per second end to end (process start to exit) of ours
  ``common_utils/evaluation/eval.py`` and of the official ``common_utils/evaluation/eval.py`` on
  the same network, random-init weights and images, with the share of the loop spent in metrics,
  and the per-image PSNR / SSIM / LPIPS of both.
- ``profile``: per step (premade batch) wall / user / sys seconds and minor page faults, then a
  torch.profiler table (self CPU time), for every side and for ours with two student passes.

Each side runs in its own worker process (the official packages ``data``, ``models``,
``common_utils`` share names with ours); only one of them computes at a time. The official code is
imported only from ``--official`` and runs unmodified: its ``.cuda()`` / ``.to("cuda")`` calls are
made no-ops by CPU shims in its worker, its TensorBoard writer is replaced by an in-memory recorder
(which also yields its per-term losses), and its torchvision/LPIPS downloads are served from a
local ``TORCH_HOME`` (a stand-in AlexNet state dict shared with ours, and the linear LPIPS heads
of the installed ``lpips`` package). The official evaluation computes only the metrics ours
computes (PSNR, SSIM, LPIPS): its NIQE and NIMA need downloaded weights.

Writes ``<out>/compare_official.json`` and ``<out>/compare_official.md``; worker logs in ``<out>/logs``.

Modules: ``protocol`` (what the parent and both workers share: the backbone table, the JSON-line
worker protocol, timing helpers), ``ours`` and ``official`` (the two worker sides), ``shims`` (what
lets the official code run unmodified on the CPU), ``prepare`` (data, batches, TORCH_HOME),
``sections`` (train, equality, eval, profile as run by the parent), ``report`` (the Markdown
report) and ``cli`` (arguments and the run). Every module imports only the standard library at
load time: the official worker must not import this framework's packages, whose names its own share.
"""
