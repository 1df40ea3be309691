"""One evaluation loop for validation, ``eval.py`` and ``eval_with_any_backbone.py``.

Each image runs through the network at full resolution (padded to its size multiple and
cropped back, or in overlapping tiles), the output is clamped to [0, 1], and PSNR / SSIM /
LPIPS are computed on the device. Large images follow :mod:`common_utils.memory_budget`: above
2048x2048 pixels they run in tiles unless told otherwise, above 4096x4096 PSNR and SSIM are
computed in strips and LPIPS / MS-SSIM / NIQE left out for them; one that runs out of memory is
reported and left out while the rest go on. The
forward time is measured with device synchronisation: ``latency_ms`` is the median with the first
image left out as warm-up, ``ms_per_image`` the mean over every image.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common_utils.inference import forward_padded, forward_self_ensemble, forward_tiled
from common_utils.memory_budget import (
    AUTO_TILE,
    AUTO_TILE_PIXELS,
    FULL_METRIC_PIXELS,
    STRIP_PIXELS,
    WHOLE_IMAGE_ONLY_NAMES,
    free_memory,
    is_out_of_memory,
    out_of_memory_line,
    scored_in_strips,
    tile_for,
)
from common_utils.metrics import SSIM_PROTOCOLS, gt_mean_correct, gt_mean_scale, ms_ssim_y, psnr, psnr_ssim_in_strips
from data.image_io import write_image

#: the Gaussian window of every SSIM variant: smaller images cannot be scored
SSIM_WINDOW = 11


@dataclass
class EvalProtocol:
    """How outputs are produced and scored (recorded next to every result); built from a named
    protocol of :mod:`common_utils.evaluation.protocols` by :func:`common_utils.evaluation.runner.build_protocol`."""

    name: str = "paper"
    description: str = ""
    ssim: str = "y"
    lpips: nn.Module | None = None
    lpips_reason: str | None = None
    fast: bool = False
    tile: int | None = None
    tile_overlap: int = 32
    resize: int | None = None
    gt_mean: bool = False
    channels_last: bool = False
    ms_ssim: bool = False                 # MS-SSIM on Y (images with a short side of 161 px or more)
    niqe: Callable[[torch.Tensor], torch.Tensor] | None = None   # no-reference NIQE (CPU, seconds per image)
    niqe_reason: str | None = None
    #: tile images above this many pixels when ``tile`` is not set (None: never); see
    #: :mod:`common_utils.memory_budget`, which also sets the metric budget below
    auto_tile_pixels: int | None = AUTO_TILE_PIXELS
    auto_tile: int = AUTO_TILE
    #: score images above this many pixels in strips (PSNR, SSIM; None: never) and leave LPIPS,
    #: MS-SSIM and NIQE out for them
    full_metric_pixels: int | None = FULL_METRIC_PIXELS
    strip_pixels: int = STRIP_PIXELS
    #: test-time self-ensemble: mean over the 8 flips/rotations (8 forwards per image)
    self_ensemble: bool = False

    def tile_for(self, x: torch.Tensor) -> int | None:
        """The tile size an input runs with: ``tile``, else ``auto_tile`` for a large image, else None."""
        h, w = x.shape[-2:]
        return tile_for(h, w, self.tile or None, self.auto_tile_pixels, self.auto_tile)

    def describe(self, device: torch.device) -> dict[str, Any]:
        """Protocol fields for summaries."""
        ssim_desc = {"y": "SSIM on Y (YIQ luma x255, rounded), Gaussian 11/1.5, valid (pyiqa default)",
                     "rgb": "SSIM on RGB (pytorch-msssim, Gaussian 11/1.5)",
                     "piq": "SSIM on RGB (piq defaults, with downsampling)"}[self.ssim]
        prec = "fp16 autocast" if self.fast and device.type == "cuda" else (
            "bf16 autocast" if self.fast else "fp32")
        return {
            "protocol": f"{self.name} ({self.description})" if self.description else self.name,
            "psnr": "RGB, data range 1, output clamped to [0,1]",
            "ssim": ssim_desc,
            "lpips": getattr(self.lpips, "description", None) if self.lpips is not None else
            f"unavailable: {self.lpips_reason}" if self.lpips_reason else "not computed",
            **({"ms_ssim": "MS-SSIM on Y (YIQ luma x255, rounded), pytorch-msssim, 5 scales"} if self.ms_ssim else {}),
            **({"niqe": getattr(self.niqe, "description", "NIQE") if self.niqe is not None else
                f"unavailable: {self.niqe_reason}"} if self.niqe is not None or self.niqe_reason else {}),
            "precision": prec,
            "resize": self.resize,
            "tile": self.tile if self.tile else (
                f"{self.auto_tile} for images above {self.auto_tile_pixels} pixels" if self.auto_tile_pixels
                else None),
            "gt_mean_columns": self.gt_mean,
            "large_images": (f"above {self.full_metric_pixels} pixels PSNR and SSIM in strips of at most "
                             f"{self.strip_pixels} pixels (exact), {WHOLE_IMAGE_ONLY_NAMES} not computed"
                             if self.full_metric_pixels else "every metric on the whole image"),
            **({"self_ensemble": "x8: mean over 4 rotations x 2 flips, each padded/tiled as above"}
               if self.self_ensemble else {}),
            "device": str(device),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def enhance(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, protocol: EvalProtocol) -> torch.Tensor:
    """Run ``net`` on ``x`` under the protocol and return the clamped float32 output."""
    if x.dtype != torch.float32:
        x = x.float()
    if protocol.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if protocol.fast:
        dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
        ctx = torch.autocast(device_type=x.device.type, dtype=dtype)
    else:
        ctx = contextlib.nullcontext()
    tile = protocol.tile_for(x) if isinstance(net, nn.Module) else None

    def run(t: torch.Tensor) -> torch.Tensor:
        if tile:
            return forward_tiled(net, t, tile, min(protocol.tile_overlap, tile // 2 - 1))
        return forward_padded(net, t) if isinstance(net, nn.Module) else net(t)

    with ctx:
        y = forward_self_ensemble(run, x) if protocol.self_ensemble else run(x)
    return y.float().clamp_(0, 1)


@dataclass
class EvalResult:
    """Per-image rows and their means."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    metric_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    tiled: list[str] = field(default_factory=list)
    #: images above the metric budget: PSNR/SSIM in strips, LPIPS/MS-SSIM/NIQE not computed
    scored_in_strips: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: ``should_stop`` said stop before every image was scored (the rows are a prefix)
    stopped: bool = False

    def summary(self) -> dict[str, Any]:
        """Means of the rows; ``latency_ms`` (median forward, the first image left out as warm-up, as
        benchmarks count) and ``ms_per_image`` (every image's forward, the first included: what a
        folder really took per image)."""
        out: dict[str, Any] = {"images": len(self.rows)}
        if self.skipped:
            out["skipped"] = list(self.skipped)
        if self.tiled:
            out["tiled_automatically"] = list(self.tiled)
        if self.scored_in_strips:
            out["scored_in_strips"] = list(self.scored_in_strips)
        keys = [k for k in (self.rows[0] if self.rows else {}) if k != "name"]
        for k in keys:
            vals = [r[k] for r in self.rows if r[k] is not None]
            out[k] = float(sum(vals) / len(vals)) if vals else None
        out.setdefault("lpips", None)
        timed = self.latencies[1:] if len(self.latencies) > 1 else self.latencies
        if timed:
            out["latency_ms"] = 1000.0 * statistics.median(timed)
            out["fps"] = len(timed) / sum(timed) if sum(timed) > 0 else None
            out["ms_per_image"] = 1000.0 * sum(self.latencies) / len(self.latencies)
        return out


@torch.inference_mode()
def evaluate(net: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[dict[str, Any]], device: torch.device,
             protocol: EvalProtocol, save_dir: Path | None = None, max_images: int | None = None,
             progress: Callable[[Iterable], Iterable] | None = None, time_forward: bool = True,
             on_image: Callable[[int, dict[str, Any], torch.Tensor, dict[str, Any]], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """Evaluate ``net`` on batch-1 paired ``batches`` (dicts with lq, gt, name).

    ``on_image(index, batch, output, row)`` is called for every image (sample pictures, comparison
    pages) with the batch on the device, the clamped output and the image's metric row. An item
    the loader could not read, and an image smaller than the SSIM window, are left out and listed
    in ``EvalResult.skipped`` with the reason; so is an image that runs out of memory (with the hint
    to use a smaller ``--tile``), and the images after it are still evaluated. Images above the
    protocol's ``auto_tile_pixels`` run in tiles (listed in ``EvalResult.tiled``).
    ``should_stop()`` is asked before every image: once it is true the loop ends there with
    ``EvalResult.stopped`` set (a stop signal during validation then waits for one image at most).
    """
    result = EvalResult()
    start = time.perf_counter()
    it = progress(batches) if progress else batches
    for i, batch in enumerate(it):
        if max_images is not None and i >= max_images:
            break
        if should_stop is not None and should_stop():
            result.stopped = True
            break
        if "unreadable" in batch:
            result.skipped.append(batch["unreadable"][0])
            continue
        if "gt" in batch and min(batch["gt"].shape[-2:]) < SSIM_WINDOW and not protocol.resize:
            name = batch["name"][0] if isinstance(batch["name"], (list, tuple)) else batch["name"]
            h, w = batch["gt"].shape[-2:]
            result.skipped.append(f"{name}: {w}x{h} pixels, smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window "
                                  f"of the protocol")
            continue
        lq = batch["lq"].to(device, non_blocking=True)
        gt = batch["gt"].to(device, non_blocking=True) if "gt" in batch else None
        if protocol.resize:
            size = (protocol.resize, protocol.resize)
            lq = F.interpolate(lq, size=size, mode="bilinear", align_corners=False, antialias=True)
            if gt is not None:
                gt = F.interpolate(gt, size=size, mode="bilinear", align_corners=False, antialias=True)
        if time_forward:
            _sync(device)
        t0 = time.perf_counter()
        tile = protocol.tile_for(lq) if isinstance(net, nn.Module) else None
        try:
            out = enhance(net, lq, protocol)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            lq = gt = None
            free_memory(device)
            result.skipped.append(out_of_memory_line(_name(batch, "path"), *batch["lq"].shape[-2:], device, tile))
            continue
        if tile and not protocol.tile:
            result.tiled.append(_name(batch))
        if time_forward:
            _sync(device)
        result.latencies.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        names = batch["name"]
        row: dict[str, Any] = {"name": names[0] if isinstance(names, (list, tuple)) else names}
        in_strips = scored_in_strips(*out.shape[-2:], protocol.full_metric_pixels)
        if in_strips and (gt is not None or protocol.niqe is not None):
            result.scored_in_strips.append(row["name"])
        if gt is not None:
            row.update(_full_reference(out, gt, protocol, in_strips))
        if protocol.niqe is not None:
            row["niqe"] = None if in_strips else float(protocol.niqe(out)[0])
        result.metric_seconds += time.perf_counter() - t1
        if save_dir is not None:
            write_image(Path(save_dir) / f"{row['name']}.png", out[0].permute(1, 2, 0).cpu().numpy())
        if on_image is not None:
            on_image(i, {**batch, "lq": lq, **({"gt": gt} if gt is not None else {})}, out, row)
        result.rows.append(row)
    result.seconds = time.perf_counter() - start
    return result


def _full_reference(out: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol, in_strips: bool) -> dict[str, Any]:
    """One image's full-reference metric row (PSNR, SSIM, LPIPS; MS-SSIM and the GT-mean columns
    when the protocol asks). Every metric stays on the device and one host read fetches them all.
    ``in_strips`` (an image above the metric budget): PSNR and SSIM in strips, the whole-image-only
    metrics None."""
    ssim = SSIM_PROTOCOLS[protocol.ssim]
    columns = ["psnr", "ssim", "lpips", *(["ms_ssim"] if protocol.ms_ssim else []),
               *(["psnr_gt_mean", "ssim_gt_mean"] if protocol.gt_mean else [])]
    values: dict[str, torch.Tensor] = {}
    if in_strips:
        values["psnr"], values["ssim"] = psnr_ssim_in_strips(out, gt, protocol.ssim, protocol.strip_pixels)
        if protocol.gt_mean:
            scale = gt_mean_scale(out, gt, protocol.strip_pixels)
            values["psnr_gt_mean"], values["ssim_gt_mean"] = psnr_ssim_in_strips(
                out, gt, protocol.ssim, protocol.strip_pixels, scale=scale)
    else:
        values = {"psnr": psnr(out, gt)[0], "ssim": ssim(out, gt)[0]}
        if protocol.lpips is not None:
            values["lpips"] = protocol.lpips(out, gt)[0]
        if protocol.ms_ssim:
            values["ms_ssim"] = ms_ssim_y(out, gt)[0]
        if protocol.gt_mean:
            corr = gt_mean_correct(out, gt)
            values["psnr_gt_mean"], values["ssim_gt_mean"] = psnr(corr, gt)[0], ssim(corr, gt)[0]
    values = {k: v.reshape(-1)[0] for k, v in values.items()}
    host = dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))
    row = {k: host.get(k) for k in columns}  # None: not computed (no LPIPS, or a strip-scored image)
    if row.get("ms_ssim") is not None and row["ms_ssim"] != row["ms_ssim"]:
        row["ms_ssim"] = None  # NaN: image too small for five scales
    return row


def _name(batch: dict[str, Any], prefer: str = "name") -> str:
    names = batch.get(prefer, batch["name"])
    return str(names[0] if isinstance(names, (list, tuple)) else names)
