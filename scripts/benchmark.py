#!/usr/bin/env python
"""The one performance benchmark: inference, training step, data pipeline and evaluation.

    python scripts/benchmark.py [--networks UNet,Restormer] [--network-args '{"UNet": {"width": 32}}']
        [--sizes 256,512] [--warmup N] [--repeats N] [--train-size 192] [--train-warmup N]
        [--train-repeats N] [--train-override KEY=VALUE ...] [--workers 2] [--device auto]
        [--threads N] [--sections inference,training,data,eval] [--no-compile] [--timer wall|events]
        [--json FILE] [--quick]

Every network runs at the paper configuration (constructor defaults, as ``config/sup_*.yaml``
use) unless ``--network-args`` (a JSON object ``{network: {arg: value}}`` or a file holding one)
overrides it. The machine and the exact command are printed first; the results are Markdown
tables on stdout (progress on stderr); ``--json FILE`` writes everything, every timed sample
included.

(a) **Inference** (``inference``): batch 1, random input, ``eval()``, fp32, through
    ``forward_padded`` (the network's size multiple). Rows per network and size:
    ``fp32 eager`` (``torch.inference_mode``, TF32 off, ``cudnn.benchmark`` off) is the reference
    of the speed-up column; ``fp32 no_grad (straightforward)`` is the plain forward under
    ``torch.no_grad`` instead of ``inference_mode``; on CUDA also ``tf32``, ``cudnn.benchmark
    (fresh process)``, ``fp16 autocast``, ``bf16 autocast``, ``channels-last`` and ``torch.compile``
    (compilation in an untimed first call, its time in the note); on CPU ``bf16 autocast`` and
    ``channels-last``; last, ``fp32 eager (again, last)`` re-measures the reference (its drift
    bounds the noise of the speed-ups). Each row changes one switch from the reference, so each is
    shown helping or not. cuDNN caches its algorithm choice per convolution for the whole process
    whatever ``cudnn.benchmark`` says, so the ``cudnn.benchmark`` row is the reference measured in
    a child process with ``--cudnn-benchmark`` (which turns it on for every row). Latency =
    median of ``--repeats`` calls after ``--warmup``, each call timed on its own with
    ``torch.cuda.synchronize`` before and after (or CUDA events with ``--timer events``);
    images/s = 1 / median. Out of memory -> the row says ``oom`` and the sweep goes on.
(b) **Training step** (``training``): the real trainer built from ``config/sup_<net>.yaml`` and
    ``config/ssll_<net>.yaml`` (semi-supervised from the first iteration:
    ``ssll.semi_start_epoch=1``; fused and two-pass student forward), on tiny synthetic data in a
    temporary folder at the ``--train-size`` crop, batch = the config's. ``BaseTrainer.train``
    itself runs; the timed interval is one loop iteration from the moment its batch is on the
    device to the request for the next batch: ``zero_grad``, ``train_step`` (forward, losses,
    backward) under the config's autocast, the non-finite check, unscale / clip, optimizer and
    scheduler step, EMA update. The data fetch is excluded (measured in (c)); loader workers are
    0 here so they do not compete with the step for the CPU. Median of ``--train-repeats`` after
    ``--train-warmup``; the ratio semi / sup is printed (arithmetic floor about 2.7x: teacher
    forward on 2B images plus student forward+backward on 2B, against forward+backward on B).
    Without the LPIPS AlexNet weights the losses are ``[ssim]`` and the output says so.
(c) **Data pipeline** (``data``): decoded, cropped and flipped pairs per second of the
    ``paired_folder`` dataset through ``train_loader`` with ``--workers`` (and 0 for reference) at
    the training crop, on the demo low-light training pairs (created with ``make_demo_data`` when
    missing; they are 96x96, so a larger crop is reflect-padded) and on synthetic 600x400 PNGs
    (the LOLv2-Real size, decoding cost closer to the paper's data). Compared with the pairs per
    second that the fastest supervised training step of (b) consumes (batch / step time); goal >= 3x.
    A second table splits one pair's cost in one process into decoding and crop + conversion and
    gives the ceiling it sets for the workers and the workers the 3x goal would need.
(d) **Evaluation** (``eval``): ``evaluate`` with the paper protocol (PSNR, SSIM on Y, LPIPS when
    its weights are here -- reported) on the demo low-light test set (96x96) and on synthetic
    600x400 pairs (the LOLv2-Real frame size, representative of the paper's protocol); the share
    of the evaluation wall time spent computing metrics (``EvalResult.metric_seconds``), the
    forward and the rest.

``--quick``: a smoke run (the first 2 networks, size 64, 1 warm-up, 3 repeats, training crop 64).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common_utils.benchmarking import (  # noqa: E402
    BenchRow,
    Timing,
    backend_flags,
    backend_state,
    command_string,
    error_text,
    fmt,
    free_memory,
    is_oom,
    machine_info,
    markdown_table,
    measure,
    sync,
)
from common_utils.cli import run_cli  # noqa: E402

INFERENCE_NETWORKS = ("UNet", "Restormer", "NAFNet", "LLFormer", "RetinexFormer", "MIRNet", "CIDNet",
                      "RtxICE-Net", "ASMICE-Net")
SECTIONS = ("inference", "training", "data", "eval")
SEMI_FLOOR = 8 / 3  # teacher fwd 2B + student fwd+bwd 2B (=6B) over fwd+bwd B (=3B), fwd = 1 unit
REFERENCE = "fp32 eager"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default=None,
                   help="comma-separated networks (default: " + ",".join(INFERENCE_NETWORKS) + "; training "
                        "uses those with a config/sup_<net>.yaml)")
    p.add_argument("--network-args", default=None,
                   help="JSON object {network: {constructor arg: value}} (or a .json file) overriding the paper "
                        "configuration, e.g. '{\"UNet\": {\"width\": 4}}'")
    p.add_argument("--sizes", default=None, help="inference input sizes, comma-separated (default 256,512)")
    p.add_argument("--warmup", type=int, default=None, help="untimed inference calls (default 20 CUDA, 2 CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed inference calls (default 50 CUDA, 10 CPU)")
    p.add_argument("--train-size", type=int, default=None, help="training crop (default 192 CUDA, 64 CPU)")
    p.add_argument("--train-warmup", type=int, default=None, help="untimed training steps (default 5 CUDA, 2 CPU)")
    p.add_argument("--train-repeats", type=int, default=None, help="timed training steps (default 20 CUDA, 5 CPU)")
    p.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every trainer (repeatable), e.g. train.amp=bf16")
    p.add_argument("--workers", type=int, default=2, help="loader workers for the data pipeline (default 2)")
    p.add_argument("--data-batches", type=int, default=None, help="batches timed per loader (default 30)")
    p.add_argument("--eval-network", default=None, help="network of the evaluation section (default: the first)")
    p.add_argument("--eval-passes", type=int, default=None, help="passes over the demo test set (default 3)")
    p.add_argument("--demo-root", default="demo_data", help="demo data folder (default demo_data)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) (default: leave as is)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="subset of " + ",".join(SECTIONS))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile inference rows")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="cudnn.benchmark on for every inference row, the reference included (default off; the "
                        "'cudnn.benchmark (fresh process)' row measures it in a child process)")
    p.add_argument("--variants", default=None,
                   help="only these inference rows (comma-separated names as in the table, e.g. 'fp32 eager')")
    p.add_argument("--timer", choices=("wall", "events"), default="wall",
                   help="wall: perf_counter with synchronize around each call (default); events: CUDA events")
    p.add_argument("--json", default=None, help="also write every result to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 networks, size 64, 1 warm-up, 3 repeats")
    return p


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    from foundation.errors import UserError

    if value is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")


def resolve_settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every setting in effect (defaults filled in by device and --quick)."""
    from common_utils.evaluation.runner import parse_network_args
    from foundation.errors import UserError
    from models import network_name as canonical_network

    cuda = device.type == "cuda"
    names = ([canonical_network(n.strip()) for n in args.networks.split(",") if n.strip()]
             if args.networks else list(INFERENCE_NETWORKS))
    if not names:
        raise UserError("--networks names no network")
    names = list(dict.fromkeys(names))
    raw = parse_network_args(args.network_args)
    if raw and not all(isinstance(v, dict) for v in raw.values()):
        raise UserError("--network-args must map network names to argument objects, e.g. "
                        "'{\"UNet\": {\"width\": 4}}'")
    net_args = {canonical_network(k): dict(v) for k, v in raw.items()}
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise UserError(f"unknown section '{s}' in --sections (valid: {', '.join(SECTIONS)})")
    q = args.quick
    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--sizes must be comma-separated integers, got '{args.sizes}'") from None
    else:
        sizes = [64] if q else [256, 512]
    if not sizes or any(s <= 0 for s in sizes):
        raise UserError(f"--sizes must be positive integers, got '{args.sizes}'")
    for name in ("warmup", "train_warmup"):
        _positive("--" + name.replace("_", "-"), getattr(args, name), 0)
    for name in ("repeats", "train_repeats", "data_batches", "eval_passes", "train_size", "threads"):
        _positive("--" + name.replace("_", "-"), getattr(args, name), 1)
    _positive("--workers", args.workers, 0)

    def pick(value: int | None, quick: int, on_cuda: int, on_cpu: int) -> int:
        return value if value is not None else quick if q else on_cuda if cuda else on_cpu

    if q:
        names = names[:2]
    eval_net = canonical_network(args.eval_network) if args.eval_network else names[0]
    return {
        "networks": names,
        "network_args": net_args,
        "sizes": sizes,
        "warmup": pick(args.warmup, 1, 20, 2),
        "repeats": pick(args.repeats, 3, 50, 10),
        "train_size": pick(args.train_size, 64, 192, 64),
        "train_warmup": pick(args.train_warmup, 1, 5, 2),
        "train_repeats": pick(args.train_repeats, 3, 20, 5),
        "train_overrides": list(args.train_override),
        "workers": args.workers,
        "data_batches": pick(args.data_batches, 5, 30, 30),
        "eval_network": eval_net,
        "eval_passes": pick(args.eval_passes, 1, 3, 3),
        "demo_root": args.demo_root,
        "device": str(device),
        "threads": args.threads,
        "sections": sections,
        "compile": not args.no_compile,
        "cudnn_benchmark": bool(args.cudnn_benchmark),
        "variants": [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None,
        "timer": args.timer,
        "quick": q,
    }


# ---------------------------------------------------------------------------- (a) inference
FRESH = "cudnn.benchmark (fresh process)"


def _inference_variants(device: torch.device, s: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per row: name, autocast dtype, no_grad instead of inference_mode, backend flags, ...

    ``cudnn.benchmark`` cannot be compared inside one process: cuDNN's algorithm cache is keyed by
    the convolution (shape, dtype, layout, TF32) but not by the flag, and the first choice for a
    key wins for the life of the process (autotuned or heuristic). That row therefore runs the
    reference in a child process with ``--cudnn-benchmark`` (``fresh``).
    """
    cuda = device.type == "cuda"
    bench = "on" if s["cudnn_benchmark"] else "off"
    v: list[dict[str, Any]] = [
        {"variant": REFERENCE, "what": f"inference_mode, fp32, TF32 off, cudnn.benchmark {bench}"},
        {"variant": "fp32 no_grad (straightforward)", "no_grad": True,
         "what": "plain forward under torch.no_grad instead of inference_mode"},
    ]
    if cuda:
        v.append({"variant": "tf32", "tf32": True, "what": "TF32 matmul and cuDNN"})
        if not s["cudnn_benchmark"]:
            v.append({"variant": FRESH, "fresh": True,
                      "what": "the reference with cudnn.benchmark on, in a child process (fresh cuDNN cache)"})
        v.append({"variant": "fp16 autocast", "dtype": torch.float16, "what": "torch.autocast float16"})
    v.append({"variant": "bf16 autocast", "dtype": torch.bfloat16, "what": "torch.autocast bfloat16"})
    v.append({"variant": "channels-last", "channels_last": True, "what": "NHWC weights and input, fp32"})
    if cuda and s["compile"]:
        v.append({"variant": "torch.compile", "compile": True, "what": "torch.compile (default mode, static shapes)"})
    if s["variants"]:
        known = [x["variant"] for x in v]
        unknown = [x for x in s["variants"] if x not in known]
        if unknown:
            from foundation.errors import UserError

            raise UserError(f"unknown --variants {', '.join(unknown)} on {device.type} (valid: {', '.join(known)})")
        v = [x for x in v if x["variant"] in s["variants"]]
    if len(v) > 1 and v[0]["variant"] == REFERENCE:
        v.append(AGAIN)
    return v


AGAIN = {"variant": f"{REFERENCE} (again, last)",
         "what": "the reference measured again after every other row (drift check)"}


def _prime(net: torch.nn.Module, x: torch.Tensor, device: torch.device, s: dict[str, Any]) -> None:
    """Untimed reference forwards before the first row (clocks up, allocator and kernels warm)."""
    try:
        with backend_flags(tf32=False, cudnn_benchmark=s["cudnn_benchmark"]):
            fn = _forward_fn(net, x, device, {})
            for _ in range(max(1, s["warmup"])):
                fn()
            sync(device)
    except KeyboardInterrupt:
        raise
    except Exception:
        free_memory(device)


def _forward_fn(net: torch.nn.Module, x: torch.Tensor, device: torch.device,
                spec: dict[str, Any]) -> Callable[[], Any]:
    from common_utils.inference import forward_padded

    grad_ctx = torch.no_grad if spec.get("no_grad") else torch.inference_mode
    dtype = spec.get("dtype")

    def run() -> Any:
        with grad_ctx():
            if dtype is not None:
                with torch.autocast(device_type=device.type, dtype=dtype):
                    return forward_padded(net, x)
            return forward_padded(net, x)

    return run


def _fresh_process_rows(name: str, s: dict[str, Any], tmp: Path) -> dict[int, dict[str, Any]]:
    """The reference of ``name`` at every size with cudnn.benchmark on, measured by a child process."""
    import subprocess

    out_json = tmp / f"fresh_{name.replace('/', '_')}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sections", "inference", "--networks", name,
           "--sizes", ",".join(str(x) for x in s["sizes"]), "--warmup", str(s["warmup"]),
           "--repeats", str(s["repeats"]), "--device", s["device"], "--timer", s["timer"], "--cudnn-benchmark",
           "--variants", REFERENCE, "--json", str(out_json)]
    if s["network_args"].get(name):
        cmd += ["--network-args", json.dumps({name: s["network_args"][name]})]
    if s["threads"]:
        cmd += ["--threads", str(s["threads"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO_ROOT))
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {size: {"status": "error", "note": f"child process failed (exit {proc.returncode}): {tail}"[:200]}
                for size in s["sizes"]}
    rows = json.loads(out_json.read_text())["inference"]["rows"]
    return {r["size"]: r for r in rows if r.get("variant") == REFERENCE and r.get("size") is not None}


def bench_inference(s: dict[str, Any], device: torch.device, tmp: Path) -> dict[str, Any]:
    from models import build_network

    rows: list[BenchRow] = []
    variants = _inference_variants(device, s)
    for name in s["networks"]:
        kwargs = s["network_args"].get(name, {})
        try:
            net = build_network(name, **kwargs).eval().to(device)
        except Exception as exc:
            rows.append(BenchRow("inference", name, "build", status="error", note=error_text(exc)))
            log(f"[inference] {name}: cannot be built: {error_text(exc)}")
            continue
        for p in net.parameters():
            p.requires_grad_(False)
        params_m = sum(p.numel() for p in net.parameters()) / 1e6
        fresh: dict[int, dict[str, Any]] | None = None
        for size in s["sizes"]:
            torch.manual_seed(0)
            x = torch.rand(1, 3, size, size, device=device)
            _prime(net, x, device, s)
            ref_ms = None
            for spec in variants:
                extra = {"network": name, "size": size, "params_m": params_m, "network_args": kwargs,
                         "what": spec["what"]}
                if spec.get("fresh"):
                    if fresh is None:
                        free_memory(device)
                        log(f"[inference] {name}: {FRESH} rows in a child process")
                        fresh = _fresh_process_rows(name, s, tmp)
                    row = _row_from_child(name, spec, fresh.get(size), extra)
                else:
                    row = _one_inference_row(net, x, device, spec, s, extra)
                if spec["variant"] == REFERENCE and row.ok:
                    ref_ms = row.median_s
                row.extra["speedup_vs_fp32"] = (ref_ms / row.median_s) if (ref_ms and row.ok) else None
                if spec is AGAIN and row.ok and ref_ms:
                    drift = row.median_s / ref_ms - 1
                    row.extra["drift"] = drift
                    row.note = (f"drift {100 * drift:+.1f}% vs the first {REFERENCE} row"
                                + (": speed-ups within this are noise" if abs(drift) > 0.05 else ""))
                rows.append(row)
                log(f"[inference] {name} {size}x{size} {spec['variant']}: "
                    f"{fmt(None if row.median_s is None else 1000 * row.median_s)} ms {row.status} {row.note}")
            del x
            free_memory(device)
        del net
        free_memory(device)
    return {"rows": [r.to_dict() for r in rows], "_rows": rows}


def _row_from_child(name: str, spec: dict[str, Any], child: dict[str, Any] | None, extra: dict[str, Any]) -> BenchRow:
    row = BenchRow("inference", name, spec["variant"], extra=extra)
    if child is None:
        row.status, row.note = "error", "the child process reported no row for this size"
    elif child.get("status") != "ok" or not child.get("timing"):
        row.status, row.note = child.get("status", "error"), child.get("note", "")
    else:
        row.timing = Timing(list(child["timing"]["samples_s"]))
        row.extra["backend"] = child.get("backend")
    return row


def _one_inference_row(net: torch.nn.Module, x: torch.Tensor, device: torch.device, spec: dict[str, Any],
                       s: dict[str, Any], extra: dict[str, Any]) -> BenchRow:
    variant, name = spec["variant"], extra["network"]
    tf32 = spec.get("tf32", False)
    bench = spec.get("cudnn_benchmark", s["cudnn_benchmark"])
    model, inp = net, x
    try:
        with backend_flags(tf32=tf32, cudnn_benchmark=bench):
            extra["backend"] = backend_state()
            if spec.get("channels_last"):
                model = copy.deepcopy(net).to(memory_format=torch.channels_last)
                inp = x.contiguous(memory_format=torch.channels_last)
            if spec.get("compile"):
                _dynamo_reset()
                model = torch.compile(net, dynamic=False)
                fn = _forward_fn(model, inp, device, spec)
                sync(device)
                t0 = time.perf_counter()
                fn()  # compilation (untimed, reported)
                sync(device)
                extra["compile_s"] = time.perf_counter() - t0
            row = measure("inference", name, variant, _forward_fn(model, inp, device, spec), device,
                          s["warmup"], s["repeats"], items=1, timer=s["timer"], **extra)
            if "compile_s" in extra and row.ok:
                row.note = f"compile {extra['compile_s']:.1f} s (untimed)"
            return row
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        free_memory(device)
        status = "oom" if is_oom(exc) else "error"
        return BenchRow("inference", name, variant, status=status,
                        note="out of memory" if status == "oom" else error_text(exc), extra=extra)
    finally:
        if spec.get("compile"):
            _dynamo_reset()
        if model is not net:
            del model
        free_memory(device)


def _dynamo_reset() -> None:
    """Drop torch.compile's caches (compiled graphs hold memory and count against recompile limits)."""
    import importlib

    importlib.import_module("torch._dynamo").reset()


def print_inference(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (a) Inference latency (batch 1, median of {s['repeats']} after {s['warmup']} warm-up, "
        f"timer: {s['timer']})")
    out()
    table = []
    for r in res["rows"]:
        tmin = r.get("timing", {}).get("min_s") if r.get("timing") else None
        table.append([r["name"], f"{r.get('size', '–')}x{r.get('size', '–')}" if r.get("size") else "–",
                      r["variant"], r["status"], fmt(r["median_ms"], 2),
                      fmt(None if tmin is None else 1000 * tmin, 2), fmt(r["per_second"], 1),
                      fmt(r.get("speedup_vs_fp32"), 2) + ("x" if r.get("speedup_vs_fp32") else ""), r["note"]])
    out(markdown_table(["network", "input", "variant", "status", "median ms", "min ms", "images/s",
                        f"speed-up vs {REFERENCE}", "note"], table))
    out()
    bench = "on" if s["cudnn_benchmark"] else "off"
    text = (f"`{REFERENCE}`: torch.inference_mode, fp32 with TF32 off and cudnn.benchmark {bench} (the reference). "
            "Each other row changes one thing; speed-up > 1 means that switch helps. "
            "`fp32 no_grad (straightforward)` is the plain forward without inference_mode: a speed-up <= 1.00x "
            "there means inference_mode is no slower. "
            f"`{AGAIN['variant']}` re-measures the reference after the other rows: its drift bounds the noise.")
    if any(r["variant"] == FRESH for r in res["rows"]):
        text += (f" `{FRESH}` is the reference run by a child process with cudnn.benchmark on (cuDNN keeps its "
                 "first algorithm choice per convolution for the whole process, whatever the flag says later).")
    out(text)
    out()


# ---------------------------------------------------------------------------- (b) training
def _write_training_data(root: Path, size: int, n: int) -> dict[str, Path]:
    """``n`` synthetic low/GT pairs and ``n`` unpaired low images, ``size`` x ``size`` PNGs."""
    from data.image_io import write_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        base = 0.5 + 0.3 * np.sin(6 * xx[..., None] + i + np.arange(3)) * np.cos(5 * yy[..., None] - i)
        gt = np.clip(base + 0.1 * rng.random((size, size, 3), dtype=np.float32), 0, 1)
        write_image(root / "train" / "high" / f"{i:04d}.png", gt)
        write_image(root / "train" / "low" / f"{i:04d}.png", 0.15 * gt)
        write_image(root / "unpaired" / "low" / f"{i:04d}.png", 0.12 * np.roll(gt, i * 7, axis=1))
    return {"lq": root / "train" / "low", "gt": root / "train" / "high", "unpaired": root / "unpaired" / "low"}


def _trainer_overrides(name: str, mode: str, s: dict[str, Any], data: dict[str, Path], out_root: Path,
                       lpips_ok: bool) -> list[str]:
    crop, iters = s["train_size"], s["train_warmup"] + s["train_repeats"] + 1
    ov = [f"name=bench_{mode.replace(' ', '_').replace('-', '_')}_{name.lower()}",
          f"output_root={out_root}",
          f"device={s['device']}",
          f"data.paired.args.lq_dir={data['lq']}",
          f"data.paired.args.gt_dir={data['gt']}",
          f"data.paired.args.crop_size={crop}",
          "data.val.type=null",
          "data.num_workers=0",
          f"train.iters={iters}",
          "train.val_every=null",
          "train.val_every_epochs=null",
          "train.save_every=1000000000",
          "train.log_every=1000000000",
          "train.keep_last=1",
          "eval.after_train=false"]
    for k, v in s["network_args"].get(name, {}).items():
        ov.append(f"network.args.{k}={json.dumps(v)}")
    if not lpips_ok:
        ov.append("losses=[ssim]")
    if mode != "supervised":
        ov += [f"data.unpaired.args.root={data['unpaired']}",
               f"data.unpaired.args.crop_size={crop}",
               "ssll.semi_start_epoch=1",
               f"ssll.fused_student_forward={'true' if mode == 'semi fused' else 'false'}"]
    return ov + list(s["train_overrides"])


def _time_trainer(trainer: Any, warmup: int) -> tuple[Timing, Timing, bool]:
    """Run ``trainer.train()``; time each loop iteration between two batch fetches (device-synced).

    Returns the step timing (after ``warmup`` steps), the fetch timing, and whether every batch
    carried the unpaired part (semi-supervised step) or none did.
    """
    device = trainer.device
    original = trainer.next_batches
    steps, fetches, kinds = Timing(), Timing(), []
    last = {"t": None}

    def timed_next_batches() -> dict[str, Any]:
        sync(device)
        now = time.perf_counter()
        if last["t"] is not None:
            steps.samples.append(now - last["t"])
        batch = original()
        sync(device)
        last["t"] = time.perf_counter()
        fetches.samples.append(last["t"] - now)
        kinds.append("unpaired" in batch)
        return batch

    trainer.next_batches = timed_next_batches  # instance attribute: BaseTrainer.train calls it
    trainer.save_checkpoint = lambda *a, **k: None  # the run's last.pth is not needed
    trainer.train()
    # the last iteration's step ends in the end-of-run logging: it has no following fetch, so it is
    # not in ``steps``; the first ``warmup`` steps are dropped
    steps.samples = steps.samples[warmup:]
    semi = bool(kinds) and all(kinds)
    return steps, fetches, semi


def _one_training_row(name: str, mode: str, s: dict[str, Any], data: dict[str, Path], out_root: Path,
                      lpips_ok: bool) -> BenchRow:
    from core import TRAINERS
    from core.config import load_config

    cfg_file = REPO_ROOT / "config" / f"{'sup' if mode == 'supervised' else 'ssll'}_{name.lower()}.yaml"
    row = BenchRow("training", name, mode, items=0)
    row.extra.update({"network": name, "config": str(cfg_file.relative_to(REPO_ROOT)), "crop": s["train_size"]})
    trainer = None
    try:
        cfg = load_config(cfg_file, _trainer_overrides(name, mode, s, data, out_root, lpips_ok))
        batch = cfg.data.paired.batch_size or cfg.data.batch_size
        row.items = float(batch)
        row.extra.update({"batch": batch, "trainer": cfg.trainer, "losses": [x.name for x in cfg.losses],
                          "amp": cfg.train.amp, "tf32": cfg.train.tf32, "channels_last": cfg.train.channels_last,
                          "compile": cfg.train.compile, "ema_decay": cfg.train.ema_decay,
                          "fused_student_forward": cfg.ssll.fused_student_forward if mode != "supervised" else None})
        if mode != "supervised":
            row.extra["unpaired_batch"] = cfg.data.unpaired.batch_size or batch
        with backend_flags():  # the trainer sets TF32 / cudnn.benchmark from its config; restore after
            trainer = TRAINERS.get(cfg.trainer)(cfg)
            steps, fetches, semi = _time_trainer(trainer, s["train_warmup"])
            row.extra["backend"] = backend_state()
        row.timing = steps
        row.extra["fetch_median_s"] = fetches.median
        row.extra["nonfinite_steps"] = trainer.nonfinite_total
        if mode != "supervised" and not semi:
            row.status, row.note = "error", "not every timed step was semi-supervised"
        elif not steps.samples:
            row.status, row.note = "error", "no step timed"
        elif trainer.nonfinite_total:
            row.note = f"{trainer.nonfinite_total} non-finite step(s) skipped (cheaper than a real step)"
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row.status = "oom" if is_oom(exc) else "error"
        row.note = "out of memory" if row.status == "oom" else error_text(exc)
        row.timing = None
    finally:
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.close()
        del trainer
        free_memory(s["device"])
    return row


def bench_training(s: dict[str, Any], tmp: Path, lpips_ok: bool, lpips_reason: str | None) -> dict[str, Any]:
    names = [n for n in s["networks"] if (REPO_ROOT / "config" / f"sup_{n.lower()}.yaml").is_file()]
    skipped = [n for n in s["networks"] if n not in names]
    notes = []
    if skipped:
        notes.append(f"no paper training config (config/sup_<net>.yaml) for {', '.join(skipped)}: not trained here")
    if not lpips_ok:
        notes.append("LPIPS weights unavailable: the training losses are [ssim] instead of the paper's "
                     "[ssim, lpips], so these step times exclude the LPIPS (AlexNet) forward and backward and "
                     f"underestimate the paper's step ({lpips_reason})")
    if not names:
        return {"rows": [], "_rows": [], "ratios": [], "lpips_in_loss": lpips_ok, "notes": notes}
    n_images = 16
    data = _write_training_data(tmp / "train_data", s["train_size"] + 16, n_images)
    rows: list[BenchRow] = []
    ratios = []
    for name in names:
        by_mode = {}
        for mode in ("supervised", "semi fused", "semi two-pass"):
            row = _one_training_row(name, mode, s, data, tmp / "experiments", lpips_ok)
            rows.append(row)
            by_mode[mode] = row
            log(f"[training] {name} {mode}: {fmt(row.median_s, 4)} s {row.status} {row.note}")
        sup = by_mode["supervised"].median_s
        ratio = {"network": name, "sup_s": sup}
        for mode, key in (("semi fused", "fused"), ("semi two-pass", "two_pass")):
            m = by_mode[mode].median_s
            ratio[f"semi_{key}_s"] = m
            ratio[f"semi_{key}_over_sup"] = (m / sup) if (m and sup) else None
        ratios.append(ratio)
    return {"rows": [r.to_dict() for r in rows], "_rows": rows, "ratios": ratios, "lpips_in_loss": lpips_ok,
            "semi_over_sup_floor": SEMI_FLOOR, "synthetic_pairs": n_images, "notes": notes}


def print_training(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (b) Training step (crop {s['train_size']}, median of {s['train_repeats']} steps after "
        f"{s['train_warmup']} warm-up)")
    out()
    table = []
    for r in res["rows"]:
        table.append([r["name"], r["variant"], r.get("config", "–"), r.get("batch", "–"),
                      ",".join(r.get("losses", []) or []) or "–", r.get("amp", "–"), fmt(r["median_s"], 4),
                      fmt(r["per_second"], 1), r["status"], r["note"]])
    if table:
        out(markdown_table(["network", "step", "config", "batch", "losses", "amp", "median s/step",
                            "pairs/s", "status", "note"], table))
        out()
        rt = [[x["network"], fmt(x["sup_s"], 4), fmt(x["semi_fused_s"], 4),
               fmt(x["semi_fused_over_sup"], 2) + ("x" if x["semi_fused_over_sup"] else ""),
               fmt(x["semi_two_pass_s"], 4),
               fmt(x["semi_two_pass_over_sup"], 2) + ("x" if x["semi_two_pass_over_sup"] else "")]
              for x in res["ratios"]]
        out(markdown_table(["network", "sup s", "semi fused s", "semi/sup fused", "semi two-pass s",
                            "semi/sup two-pass"], rt))
        out()
        out(f"Semi/sup arithmetic floor ~{SEMI_FLOOR:.2f}x in FLOPs (teacher forward on 2B + student forward and "
            "backward on 2B, against forward and backward on B); a measured ratio below it means the device was not "
            "saturated at batch B, so the larger semi-supervised batches cost less than their FLOPs. Timed: one "
            "BaseTrainer.train iteration without the data fetch (zero_grad, train_step, non-finite check, optimizer "
            "and scheduler step, EMA update); pairs/s = paired batch / step time.")
    for n in res.get("notes", []):
        out(f"- note: {n}")
    out()


# ---------------------------------------------------------------------------- (c) data pipeline
def _ensure_demo(root: Path) -> tuple[Path, bool]:
    """The demo low-light folder under ``root``; created with make_demo_data when missing."""
    from data.image_io import list_images

    low = root / "lowlight"
    needed = [low / "train" / "low", low / "train" / "high", low / "test" / "low", low / "test" / "high"]

    def present() -> bool:
        try:
            return all(d.is_dir() and list_images(d, False) for d in needed)
        except Exception:
            return False

    if present():
        return low, False
    from data.demo import make_demo_data

    log(f"[data] demo data missing under {root}: creating it with make_demo_data")
    make_demo_data(root, kind="lowlight")
    return low, True


def _write_lolv2_like(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` synthetic 600x400 low/GT PNG pairs (the LOLv2-Real image size)."""
    from data.image_io import write_image

    rng = np.random.default_rng(1)
    h, w = 400, 600
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        base = 0.5 + 0.25 * np.sin(xx[..., None] / (23 + i) + np.arange(3)) * np.cos(yy[..., None] / (17 + i))
        gt = np.clip(base + 0.04 * rng.standard_normal((h, w, 3), dtype=np.float32), 0, 1)
        write_image(root / "high" / f"{i:04d}.png", gt)
        write_image(root / "low" / f"{i:04d}.png", np.clip(0.12 * gt + 0.01 * rng.random((h, w, 3),
                                                                                       dtype=np.float32), 0, 1))
    return root / "low", root / "high"


def _loader_rate(lq: Path, gt: Path, crop: int, batch: int, workers: int, n_batches: int,
                 pin: bool) -> dict[str, Any]:
    from data import build_dataset
    from data.loaders import train_loader

    ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt), crop_size=crop, flip=True)
    prefetch = 2
    loader, _ = train_loader(ds, batch, workers, seed=0, pin_memory=pin, prefetch_factor=prefetch)
    it = iter(loader)
    try:
        t0 = time.perf_counter()
        next(it)
        first = time.perf_counter() - t0
        for _ in range(workers * prefetch):  # drain what the workers prefetched while starting
            next(it)
        t1 = time.perf_counter()
        for _ in range(n_batches):
            b = next(it)
        elapsed = time.perf_counter() - t1
    finally:
        del it
    shape = list(b["lq"].shape)
    return {"workers": workers, "batch": batch, "crop": crop, "dataset_pairs": len(ds), "batches_timed": n_batches,
            "seconds": elapsed, "pairs_per_s": n_batches * batch / elapsed if elapsed > 0 else None,
            "first_batch_s": first, "batch_shape": shape}


def _pair_cost(lq: Path, gt: Path, crop: int, n: int) -> dict[str, Any]:
    """Single-process cost of one training pair (median ms), in the two steps of the dataset's
    ``__getitem__``: decoding the two files, then its own crop + flip and the float conversion.

    It bounds what a loader can deliver: ``workers * 1000 / total_ms`` pairs/s at most.
    """
    from data import build_dataset
    from data.image_io import image_to_float, read_image_raw
    from data.transforms import to_tensor_chw

    ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt), crop_size=crop, flip=True)
    decode, convert = [], []
    for i in range(n):
        lq_path, gt_path = ds.pairs[i % len(ds.pairs)]
        t0 = time.perf_counter()
        images = [read_image_raw(lq_path), read_image_raw(gt_path)]
        t1 = time.perf_counter()
        [to_tensor_chw(image_to_float(im)) for im in ds._augment(images, seed=i)]
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        convert.append(t2 - t1)
    med = lambda v: 1000.0 * float(np.median(v))
    return {"decode_ms": med(decode), "crop_convert_ms": med(convert),
            "total_ms": med([d + c for d, c in zip(decode, convert)]), "pairs": n}


def bench_data(s: dict[str, Any], tmp: Path, training: dict[str, Any] | None,
               device: torch.device) -> dict[str, Any]:
    from data.paths import resolve_path

    notes = []
    demo_root = Path(resolve_path(s["demo_root"]))
    low, created = _ensure_demo(demo_root)
    if created:
        notes.append(f"demo data created under {demo_root}")
    crop = s["train_size"]
    # the consumer: the fastest supervised step of (b)
    consumer = None
    for r in (training or {}).get("_rows", []):
        if r.variant == "supervised" and r.ok and (consumer is None or r.median_s < consumer.median_s):
            consumer = r
    batch = int(consumer.items) if consumer else 3
    consumed = consumer.per_second if consumer else None
    if consumer is None:
        notes.append("no supervised training step was timed: the consumption rate and ratio are unavailable "
                     "(batch 3 used)")
    n_lol = 8 if s["quick"] else 24
    lol_lq, lol_gt = _write_lolv2_like(tmp / "lolv2_like", max(n_lol, batch))
    sources = [("demo lowlight/train (96x96 PNG)", low / "train" / "low", low / "train" / "high"),
               ("synthetic 600x400 PNG (LOLv2-Real size)", lol_lq, lol_gt)]
    if crop > 96:
        notes.append(f"the demo training images are 96x96: a {crop} crop reflect-pads them, so that row decodes "
                     "less than real data would; the 600x400 row is closer to LOLv2")
    rows = []
    for label, lq, gt in sources:
        for w in sorted({0, s["workers"]}):
            try:
                r = _loader_rate(lq, gt, crop, batch, w, s["data_batches"], pin=device.type == "cuda")
                r["status"] = "ok"
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                r = {"workers": w, "batch": batch, "crop": crop, "status": "error", "note": error_text(exc),
                     "pairs_per_s": None}
            r["source"] = label
            r["ratio_vs_training"] = (r["pairs_per_s"] / consumed) if (consumed and r.get("pairs_per_s")) else None
            rows.append(r)
            log(f"[data] {label} workers={w}: {fmt(r.get('pairs_per_s'), 1)} pairs/s {r['status']}")
    costs = []
    for label, lq, gt in sources:
        try:
            c = _pair_cost(lq, gt, crop, 8 if s["quick"] else 24)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            costs.append({"source": label, "status": "error", "note": error_text(exc)})
            continue
        ceiling = s["workers"] * 1000.0 / c["total_ms"] if c["total_ms"] > 0 else None
        c.update({"source": label, "status": "ok", "ceiling_pairs_per_s": ceiling,
                  "ceiling_vs_training": (ceiling / consumed) if (ceiling and consumed) else None,
                  "workers_for_goal": (int(np.ceil(3.0 * consumed * c["total_ms"] / 1000.0)) if consumed else None)})
        costs.append(c)
    main = next((r for r in rows if r["source"] == sources[0][0] and r["workers"] == s["workers"]), None)
    return {"rows": rows, "costs": costs, "consumer": None if consumer is None else {
        "network": consumer.name, "step": consumer.variant, "batch": batch, "step_median_s": consumer.median_s,
        "pairs_per_s": consumed}, "ratio": main.get("ratio_vs_training") if main else None, "goal_ratio": 3.0,
        "workers": s["workers"], "crop": crop, "notes": notes}


def print_data(res: dict[str, Any]) -> None:
    out(f"## (c) Data pipeline (paired_folder through train_loader, crop {res['crop']}, flips on)")
    out()
    table = [[r["source"], r["workers"], r["batch"], fmt(r.get("pairs_per_s"), 1), fmt(r.get("first_batch_s"), 2),
              fmt(r.get("ratio_vs_training"), 2) + ("x" if r.get("ratio_vs_training") else ""), r["status"],
              r.get("note", "")] for r in res["rows"]]
    out(markdown_table(["source", "workers", "batch", "pairs/s", "first batch s", "vs training", "status", "note"],
                       table))
    out()
    c = res["consumer"]
    if c:
        ratio = res["ratio"]
        verdict = "meets" if ratio is not None and ratio >= res["goal_ratio"] else "below"
        out(f"Training consumes {c['pairs_per_s']:.1f} pairs/s ({c['network']} {c['step']} step, the fastest: batch "
            f"{c['batch']} / {c['step_median_s']:.4f} s). Loader with {res['workers']} workers on the demo data: "
            f"**{fmt(ratio, 2)}x** that rate ({verdict} the goal of >= {res['goal_ratio']:.0f}x).")
    costs = [c for c in res.get("costs", []) if c["status"] == "ok"]
    if costs:
        out()
        out(f"The cost of one pair in one process (median of {costs[0]['pairs']}) and the ceiling it sets for "
            f"{res['workers']} workers ({res['workers']} x 1000 / total ms): where the loader falls short of 3x, "
            f"this shows whether decoding is the reason and how many workers would be needed.")
        out()
        out(markdown_table(
            ["source", "decode 2 images ms", "crop + convert ms", "total ms", f"ceiling, {res['workers']} workers",
             "ceiling vs training", "workers for 3x"],
            [[c["source"], fmt(c["decode_ms"], 2), fmt(c["crop_convert_ms"], 2), fmt(c["total_ms"], 2),
              fmt(c["ceiling_pairs_per_s"], 1), fmt(c["ceiling_vs_training"], 2) + ("x" if c["ceiling_vs_training"] else ""),
              c["workers_for_goal"] if c["workers_for_goal"] is not None else "–"] for c in costs]))
    for n in res["notes"]:
        out(f"- note: {n}")
    out()


# ---------------------------------------------------------------------------- (d) evaluation
def _eval_row(net: torch.nn.Module, ds: Any, source: str, device: torch.device, protocol: Any,
              passes: int, workers: int) -> dict[str, Any]:
    """Evaluate ``net`` over ``ds`` ``passes`` times; split the wall time into metrics, forward, rest."""
    from common_utils.evaluation.evaluator import evaluate
    from data.loaders import eval_loader

    row: dict[str, Any] = {"source": source, "workers": workers}
    loader = lambda: eval_loader(ds, num_workers=workers, pin_memory=device.type == "cuda")
    try:
        evaluate(net, loader(), device, protocol, max_images=2)  # warm-up (untimed)
        total = metric = forward = 0.0
        images = 0
        for _ in range(passes):
            sync(device)
            t0 = time.perf_counter()
            r = evaluate(net, loader(), device, protocol)
            sync(device)
            total += time.perf_counter() - t0
            metric += r.metric_seconds
            forward += sum(r.latencies)
            images += len(r.rows)
        row.update({"status": "ok", "images": images, "passes": passes, "total_s": total,
                    "metric_s": metric, "forward_s": forward, "other_s": max(0.0, total - metric - forward),
                    "metric_fraction": metric / total if total > 0 else None,
                    "forward_fraction": forward / total if total > 0 else None,
                    "images_per_s": images / total if total > 0 else None})
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row.update({"status": "oom" if is_oom(exc) else "error", "note": error_text(exc)})
    free_memory(device)
    log(f"[eval] {source}: metric fraction {fmt(row.get('metric_fraction'), 3)} {row['status']}")
    return row


def bench_eval(s: dict[str, Any], device: torch.device, tmp: Path, lpips_metric: Any,
               lpips_reason: str | None) -> dict[str, Any]:
    """Metric share of evaluation on the demo test set (96x96) and on LOLv2-Real-sized images (600x400).

    The paper's protocol scores full LOLv2 / SID / SDSD frames; the demo images are far smaller,
    so their forward is cheap and the fixed per-image metric cost weighs more there.
    """
    from common_utils.evaluation.evaluator import EvalProtocol
    from data import build_dataset
    from data.paths import resolve_path
    from models import build_network

    name = s["eval_network"]
    low, _ = _ensure_demo(Path(resolve_path(s["demo_root"])))
    lol_lq, lol_gt = _write_lolv2_like(tmp / "lolv2_like_eval", 2 if s["quick"] else 6)
    sources = [("demo lowlight/test (96x96)", low / "test" / "low", low / "test" / "high"),
               ("synthetic 600x400 (LOLv2-Real size)", lol_lq, lol_gt)]
    kwargs = s["network_args"].get(name, {})
    res: dict[str, Any] = {"network": name, "network_args": kwargs, "rows": [],
                           "lpips_included": lpips_metric is not None, "lpips_reason": lpips_reason}
    try:
        net = build_network(name, **kwargs).eval().to(device)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        res.update({"status": "oom" if is_oom(exc) else "error", "note": error_text(exc)})
        return res
    protocol = EvalProtocol(ssim="y", lpips=lpips_metric.to(device) if lpips_metric is not None else None,
                            lpips_reason=lpips_reason)
    res["protocol"] = protocol.describe(device)
    res["backend"] = backend_state()  # evaluate() runs with the process's flags (not changed here)
    for source, lq, gt in sources:
        ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt))
        res["rows"].append(_eval_row(net, ds, source, device, protocol, s["eval_passes"], s["workers"]))
    res["status"] = "ok" if all(r["status"] == "ok" for r in res["rows"]) else "error"
    del net
    free_memory(device)
    return res


def print_eval(res: dict[str, Any]) -> None:
    out("## (d) Evaluation (paper protocol: PSNR, SSIM-Y, LPIPS when available)")
    out()
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    out(markdown_table(
        ["network", "images", "source", "workers", "total s", "forward s", "metrics s", "other s", "metrics share",
         "forward share", "LPIPS included", "status"],
        [[res["network"], r.get("images", "–"), r["source"], r.get("workers", "–"), fmt(r.get("total_s"), 3), fmt(r.get("forward_s"), 3),
          fmt(r.get("metric_s"), 3), fmt(r.get("other_s"), 3), pct(r.get("metric_fraction")),
          pct(r.get("forward_fraction")), "yes" if res["lpips_included"] else "no", r["status"]]
         for r in res["rows"]]))
    out()
    if not res["lpips_included"]:
        out(f"- note: LPIPS not included ({res['lpips_reason']})")
    for note in [res.get("note")] + [r.get("note") for r in res["rows"]]:
        if note:
            out(f"- note: {note}")
    out("- metrics = EvalResult.metric_seconds (PSNR/SSIM/LPIPS and their host reads); forward = the synchronised "
        "forward latencies; other = loading, decoding and transfers. The paper's protocol scores full frames "
        "(LOLv2-Real 600x400 and larger): the 600x400 row is the representative one.")
    out()


# ---------------------------------------------------------------------------- main
def print_header(command: str, machine: dict[str, Any], s: dict[str, Any]) -> None:
    out("# Benchmark")
    out()
    out(f"Command: `{command}`")
    out()
    gpu = (f"{machine['gpu']} ({machine.get('gpu_memory_gib')} GiB, capability {machine.get('gpu_capability')})"
           if machine.get("gpu") else "none")
    out(markdown_table(["field", "value"], [
        ["CPU", machine["cpu_model"]],
        ["CPU cores (logical / usable)", f"{machine['cpu_cores_logical']} / {machine['cpu_cores_usable']}"],
        ["torch threads (intra / inter-op)",
         f"{machine['torch_num_threads']} / {machine['torch_num_interop_threads']}"],
        ["load average (1/5/15 min)", machine["load_average_1_5_15"]],
        ["GPU", gpu],
        ["device", machine["device"]],
        ["torch / CUDA / cuDNN", f"{machine['torch']} / {machine['cuda']} / {machine['cudnn']}"],
        ["Python / platform", f"{machine['python']} / {machine['platform']}"],
        ["networks", ", ".join(s["networks"])],
        ["network args", json.dumps(s["network_args"]) if s["network_args"] else "paper defaults"],
    ]))
    out()
    for n in machine_notes(machine):
        out(f"- note: {n}")
        out()


def machine_notes(machine: dict[str, Any]) -> list[str]:
    """Warnings about conditions that make the timings unreliable."""
    notes = []
    load, cores = machine.get("load_average_1_5_15"), machine.get("cpu_cores_usable") or 1
    if load and load[0] > 0.5 * cores:
        notes.append(f"the machine is busy (1-minute load {load[0]} on {cores} usable cores): CPU timings and the "
                     "data-loader rates are unreliable; rerun on an idle machine")
    if machine.get("torch_num_threads", 1) > cores:
        notes.append(f"torch uses {machine['torch_num_threads']} threads on {cores} usable cores (oversubscribed)")
    return notes


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    return obj


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from common_utils.evaluation.runner import select_device
    from models.lpips import try_build_lpips

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    s = resolve_settings(args, device)
    command = command_string(argv, "scripts/benchmark.py")
    machine = machine_info(device)
    print_header(command, machine, s)
    report: dict[str, Any] = {"format": "ssir-benchmark-v1", "command": command, "machine": machine,
                              "settings": s, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    lpips_metric, lpips_reason = try_build_lpips()
    report["lpips_available"] = lpips_metric is not None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssir_bench_") as tmp_dir:
        tmp = Path(tmp_dir)
        if "inference" in s["sections"]:
            report["inference"] = bench_inference(s, device, tmp)
            print_inference(report["inference"], s)
        if "training" in s["sections"]:
            report["training"] = bench_training(s, tmp, lpips_metric is not None, lpips_reason)
            print_training(report["training"], s)
        if "data" in s["sections"]:
            report["data_pipeline"] = bench_data(s, tmp, report.get("training"), device)
            print_data(report["data_pipeline"])
        if "eval" in s["sections"]:
            report["evaluation"] = bench_eval(s, device, tmp, lpips_metric, lpips_reason)
            print_eval(report["evaluation"])
    report["wall_s"] = time.perf_counter() - t_start
    try:
        report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        report["load_average_end"] = None
    report["machine_notes"] = machine_notes(machine)
    out(f"Total benchmark time {report['wall_s']:.1f} s.")
    clean = _jsonable(report)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean, indent=2) + "\n")
        log(f"results written to {path}")
    return clean


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
