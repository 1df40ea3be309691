#!/usr/bin/env python
"""The one performance benchmark: inference, training step, data pipeline, evaluation, model statistics.

    python scripts/benchmark.py [--networks UNet,Restormer] [--network-args '{"UNet": {"width": 32}}']
        [--sizes 256,512] [--warmup N] [--repeats N] [--variants 'fp32 eager,torch.compile'] [--no-compile]
        [--train-size 192] [--train-warmup N] [--train-repeats N] [--workers 2] [--eval-network NET]
        [--eval-passes N] [--device auto] [--threads N] [--sections inference,training,data,eval[,stats]]
        [--json FILE] [--quick]

Networks run at the paper configuration unless ``--network-args`` overrides it. Printed: the machine
and the exact command, then Markdown tables (progress on stderr); ``--json FILE`` keeps every sample.
Timed calls: ``--warmup`` untimed, then the median of ``--repeats`` calls each timed on its own and
synchronised (``common_utils.benchmarking.time_fn``). Out of memory is a row status, not a crash.

(a) ``inference``: batch 1 through ``forward_padded``. The reference ``fp32 eager`` (inference_mode,
    TF32 and cudnn.benchmark off) first; each other row changes one switch; ``fp32 eager (again,
    last)`` re-measures the reference (its drift bounds the noise). cuDNN keeps its first algorithm
    choice per convolution for the whole process, so ``cudnn.benchmark (fresh process)`` is the
    reference timed by a child process run with ``--cudnn-benchmark``.
(b) ``training``: the real trainer of ``config/sup_<net>.yaml`` and ``config/ssll_<net>.yaml``
    (semi-supervised from the first iteration; fused and two-pass student forward) on synthetic
    pairs, the config's batch, ``--train-size`` crops. Timed: one ``BaseTrainer.train`` iteration
    from its batch on the device to the next fetch (the data fetch is excluded; 0 loader workers).
(c) ``data``: pairs/s of ``paired_folder`` through ``train_loader`` (0 and ``--workers`` workers) on
    the demo pairs and on synthetic 600x400 PNGs (LOLv2-Real size), against the pairs/s the fastest
    supervised step of (b) consumes (goal >= 3x); one pair's decode / crop + conversion cost.
(d) ``eval``: ``evaluate`` (PSNR, SSIM on Y, LPIPS when its weights are here) on the demo test set
    and on synthetic 600x400 pairs; wall time split into metrics, forward and the rest.
(e) ``stats`` (only when named): parameters, GMACs (``torch.utils.flop_counter``, FLOPs / 2) and the
    latency by ``torch.utils.benchmark.Timer.blocked_autorange`` for every network and size.

``--quick``: a smoke run (the first 2 networks, size 64, 1 warm-up, 3 repeats, training crop 64).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import subprocess
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
    autorange,
    backend_flags,
    backend_state,
    command_string,
    failure,
    fmt,
    free_memory,
    machine_info,
    markdown_table,
    measure,
    sync,
    write_json,
)
from common_utils.cli import run_cli  # noqa: E402
from foundation.errors import UserError  # noqa: E402
from models import list_networks  # noqa: E402

NETWORKS = tuple(list_networks())  # every registered network
SECTIONS = ("inference", "training", "data", "eval")  # the default; "stats" on request
SEMI_FLOOR = 8 / 3  # teacher fwd 2B + student fwd+bwd 2B (=6B) over fwd+bwd B (=3B), fwd = 1 unit
REFERENCE = "fp32 eager"
AGAIN = f"{REFERENCE} (again, last)"
FRESH = "cudnn.benchmark (fresh process)"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


def ratio_text(x: float | None) -> str:
    return fmt(x, 2) + ("x" if x else "")


def split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# ---------------------------------------------------------------------------- settings
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--networks", help="comma-separated networks (default: " + ",".join(NETWORKS) + "; training uses those "
                           "with a config/sup_<net>.yaml)")
    add("--network-args", help="JSON object {network: {constructor arg: value}} (or a .json file) overriding the "
                               "paper configuration, e.g. '{\"UNet\": {\"width\": 4}}'")
    add("--sizes", help="inference input sizes, comma-separated (default 256,512)")
    add("--warmup", type=int, help="untimed inference calls (default 20 CUDA, 2 CPU)")
    add("--repeats", type=int, help="timed inference calls (default 50 CUDA, 10 CPU)")
    add("--variants", help="only these inference rows (comma-separated names as in the table)")
    add("--no-compile", action="store_true", help="skip the torch.compile inference row")
    add("--cudnn-benchmark", action="store_true", help="cudnn.benchmark on for every inference row (used by the "
                                                       "'cudnn.benchmark (fresh process)' row's child process)")
    add("--train-size", type=int, help="training crop (default 192 CUDA, 64 CPU)")
    add("--train-warmup", type=int, help="untimed training steps (default 5 CUDA, 2 CPU)")
    add("--train-repeats", type=int, help="timed training steps (default 20 CUDA, 5 CPU)")
    add("--workers", type=int, default=2, help="loader workers of the data and eval sections (default 2)")
    add("--eval-network", help="network of the evaluation section (default: the first)")
    add("--eval-passes", type=int, help="passes over each evaluation set (default 3)")
    add("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    add("--threads", type=int, help="torch.set_num_threads(N) (default: leave as is)")
    add("--sections", default=",".join(SECTIONS), help="subset of " + ",".join(SECTIONS) + ",stats")
    add("--json", help="also write every result to this JSON file")
    add("--quick", action="store_true", help="smoke run: 2 networks, size 64, 1 warm-up, 3 repeats")
    return p


def resolve_settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every setting in effect (defaults filled in by device and --quick)."""
    from common_utils.evaluation.runner import parse_network_args
    from models import network_name

    cuda, q = device.type == "cuda", args.quick
    names = list(dict.fromkeys(network_name(n) for n in split(args.networks))) or list(NETWORKS)
    raw = parse_network_args(args.network_args)
    if not all(isinstance(v, dict) for v in raw.values()):
        raise UserError("--network-args must map network names to argument objects, e.g. '{\"UNet\": {\"width\": 4}}'")
    sections = split(args.sections)
    for sec in sections:
        if sec not in (*SECTIONS, "stats"):
            raise UserError(f"unknown section '{sec}' in --sections (valid: {', '.join(SECTIONS)}, stats)")
    try:
        sizes = [int(x) for x in split(args.sizes)] or ([64] if q else [256, 512])
    except ValueError:
        raise UserError(f"--sizes must be comma-separated integers, got '{args.sizes}'") from None
    if min(sizes) <= 0:
        raise UserError(f"--sizes must be positive integers, got '{args.sizes}'")
    for key, least in (("warmup", 0), ("train_warmup", 0), ("workers", 0), ("repeats", 1), ("train_repeats", 1),
                       ("eval_passes", 1), ("train_size", 1), ("threads", 1)):
        if getattr(args, key) is not None and getattr(args, key) < least:
            raise UserError(f"--{key.replace('_', '-')} must be at least {least}, got {getattr(args, key)}")

    def pick(value: int | None, quick: int, on_cuda: int, on_cpu: int) -> int:
        return value if value is not None else quick if q else on_cuda if cuda else on_cpu

    names = names[:2] if q else names
    return {"networks": names, "network_args": {network_name(k): dict(v) for k, v in raw.items()}, "sizes": sizes,
            "warmup": pick(args.warmup, 1, 20, 2), "repeats": pick(args.repeats, 3, 50, 10),
            "train_size": pick(args.train_size, 64, 192, 64), "train_warmup": pick(args.train_warmup, 1, 5, 2),
            "train_repeats": pick(args.train_repeats, 3, 20, 5), "workers": args.workers,
            "data_batches": 5 if q else 30, "eval_network": network_name(args.eval_network or names[0]),
            "eval_passes": pick(args.eval_passes, 1, 3, 3), "device": str(device), "threads": args.threads,
            "sections": sections, "compile": not args.no_compile, "cudnn_benchmark": args.cudnn_benchmark,
            "variants": split(args.variants) or None, "quick": q}


# ---------------------------------------------------------------------------- (a) inference
VARIANTS = [  # row name, switches, CUDA only, description (each row changes one switch from the reference)
    (REFERENCE, {}, False, "inference_mode, fp32, TF32 off, cudnn.benchmark as set"),
    ("fp32 no_grad (straightforward)", {"no_grad": True}, False, "plain forward under torch.no_grad"),
    ("tf32", {"tf32": True}, True, "TF32 matmul and cuDNN"),
    (FRESH, {"fresh": True}, True, "the reference with cudnn.benchmark on, in a child process"),
    ("fp16 autocast", {"dtype": torch.float16}, True, "torch.autocast float16"),
    ("bf16 autocast", {"dtype": torch.bfloat16}, False, "torch.autocast bfloat16"),
    ("channels-last", {"channels_last": True}, False, "NHWC weights and input, fp32"),
    ("torch.compile", {"compile": True}, True, "torch.compile (default mode, static shapes)"),
]


def inference_variants(device: torch.device, s: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool, str]]:
    """The inference rows that apply here (``--variants`` picks some), the reference first."""
    v = [x for x in VARIANTS if (device.type == "cuda" or not x[2]) and not (x[1].get("fresh") and s["cudnn_benchmark"])
         and not (x[1].get("compile") and not s["compile"])]
    unknown = [x for x in s["variants"] or [] if x not in [name for name, *_ in v]]
    if unknown:
        raise UserError(f"unknown --variants {', '.join(unknown)} on {device.type} (valid: "
                        f"{', '.join(name for name, *_ in v)})")
    v = [x for x in v if x[0] in (s["variants"] or [x[0]])]
    return v + [(AGAIN, {}, False, "the reference measured again after every other row")] * (
        len(v) > 1 and v[0][0] == REFERENCE)


def forward_fn(net: torch.nn.Module, x: torch.Tensor, device: torch.device, spec: dict[str, Any]) -> Callable[[], Any]:
    from common_utils.inference import forward_padded

    grad = torch.no_grad if spec.get("no_grad") else torch.inference_mode
    dtype = spec.get("dtype")

    def run() -> Any:
        with grad(), torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            return forward_padded(net, x)

    return run


def inference_row(net: torch.nn.Module, x: torch.Tensor, device: torch.device, variant: str, spec: dict[str, Any],
                  s: dict[str, Any], extra: dict[str, Any]) -> BenchRow:
    model, inp = net, x
    try:
        with backend_flags(tf32=spec.get("tf32", False), cudnn_benchmark=s["cudnn_benchmark"]):
            extra["backend"] = backend_state()
            if spec.get("channels_last"):
                model = copy.deepcopy(net).to(memory_format=torch.channels_last)
                inp = x.contiguous(memory_format=torch.channels_last)
            if spec.get("compile"):
                torch.compiler.reset()
                model = torch.compile(net, dynamic=False)
                t0 = time.perf_counter()
                forward_fn(model, inp, device, spec)()  # compilation: the first call, untimed
                sync(device)
                extra["compile_s"] = time.perf_counter() - t0
            row = measure("inference", extra["network"], variant, forward_fn(model, inp, device, spec), device,
                          s["warmup"], s["repeats"], **extra)
    except Exception as exc:  # set-up failure of this row (compile, OOM in the copy)
        row = BenchRow("inference", extra["network"], variant, extra=extra).fail(exc)
    finally:
        if spec.get("compile"):
            torch.compiler.reset()
        del model
        free_memory(device)
    if "compile_s" in extra and row.ok:
        row.note = f"compile {extra['compile_s']:.1f} s (untimed)"
    return row


def fresh_process_rows(name: str, s: dict[str, Any], tmp: Path) -> dict[int, dict[str, Any]]:
    """The reference of ``name`` at every size with cudnn.benchmark on, measured by a child process."""
    out_json = tmp / f"fresh_{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sections", "inference", "--networks", name,
           "--sizes", ",".join(map(str, s["sizes"])), "--warmup", str(s["warmup"]), "--repeats", str(s["repeats"]),
           "--device", s["device"], "--cudnn-benchmark", "--variants", REFERENCE, "--json", str(out_json)]
    cmd += ["--network-args", json.dumps({name: s["network_args"][name]})] if s["network_args"].get(name) else []
    cmd += ["--threads", str(s["threads"])] if s["threads"] else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO_ROOT))
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {size: {"status": "error", "note": f"child process failed (exit {proc.returncode}): {tail}"[:200]}
                for size in s["sizes"]}
    return {r["size"]: r for r in json.loads(out_json.read_text())["inference"]["rows"] if r.get("size")}


def child_row(variant: str, child: dict[str, Any] | None, extra: dict[str, Any]) -> BenchRow:
    row = BenchRow("inference", extra["network"], variant, extra=extra)
    if child is None or child.get("status") != "ok" or not child.get("timing"):
        row.status = "error" if child is None else child.get("status", "error")
        row.note = "the child process reported no row for this size" if child is None else child.get("note", "")
    else:
        row.timing = Timing(list(child["timing"]["samples_s"]))
        row.extra["backend"] = child.get("backend")
    return row


def bench_inference(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    from models import build_network

    rows: list[BenchRow] = []
    variants = inference_variants(device, s)
    for name in s["networks"]:
        kwargs = s["network_args"].get(name, {})
        try:
            net = build_network(name, **kwargs).eval().to(device).requires_grad_(False)
        except Exception as exc:
            rows.append(BenchRow("inference", name, "build").fail(exc))
            log(f"[inference] {name}: cannot be built: {rows[-1].note}")
            continue
        params_m = sum(p.numel() for p in net.parameters()) / 1e6
        fresh = None
        for size in s["sizes"]:
            torch.manual_seed(0)
            x = torch.rand(1, 3, size, size, device=device)
            with contextlib.suppress(Exception), backend_flags(tf32=False, cudnn_benchmark=s["cudnn_benchmark"]):
                for _ in range(max(1, s["warmup"])):  # prime: clocks up, allocator and kernels warm
                    forward_fn(net, x, device, {})()
            ref_ms = None
            for variant, spec, _, what in variants:
                extra = {"network": name, "size": size, "params_m": params_m, "network_args": kwargs, "what": what}
                if spec.get("fresh"):
                    if fresh is None:
                        free_memory(device)
                        log(f"[inference] {name}: {FRESH} rows in a child process")
                        fresh = fresh_process_rows(name, s, tmp)
                    row = child_row(variant, fresh.get(size), extra)
                else:
                    row = inference_row(net, x, device, variant, spec, s, extra)
                if variant == REFERENCE and row.ok:
                    ref_ms = row.median_s
                row.extra["speedup_vs_fp32"] = (ref_ms / row.median_s) if (ref_ms and row.ok) else None
                if variant == AGAIN and row.ok and ref_ms:
                    row.extra["drift"] = drift = row.median_s / ref_ms - 1
                    row.note = (f"drift {100 * drift:+.1f}% vs the first {REFERENCE} row"
                                + (": speed-ups within this are noise" if abs(drift) > 0.05 else ""))
                rows.append(row)
                log(f"[inference] {name} {size}x{size} {variant}: {fmt(row.median_s and 1000 * row.median_s)} ms "
                    f"{row.status} {row.note}")
            del x
            free_memory(device)
        del net
        free_memory(device)
    return {"rows": [r.to_dict() for r in rows]}


def print_inference(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (a) Inference latency (batch 1, median of {s['repeats']} after {s['warmup']} warm-up, "
        "each call synchronised)")
    out()
    out(markdown_table(
        ["network", "input", "variant", "status", "median ms", "min ms", "images/s", f"speed-up vs {REFERENCE}",
         "note"],
        [[r["name"], f"{r['size']}x{r['size']}" if r.get("size") else "–", r["variant"], r["status"],
          fmt(r["median_ms"]), fmt(r["timing"]["min_s"] * 1000 if r.get("timing") else None),
          fmt(r["per_second"], 1), ratio_text(r.get("speedup_vs_fp32")), r["note"]] for r in res["rows"]]))
    out()
    text = (f"`{REFERENCE}`: torch.inference_mode, fp32 with TF32 off and cudnn.benchmark "
            f"{'on' if s['cudnn_benchmark'] else 'off'} (the reference). Each other row changes one thing; speed-up "
            "> 1 means that switch helps. `fp32 no_grad (straightforward)` is the plain forward without "
            "inference_mode: a speed-up <= 1.00x there means inference_mode is no slower. "
            f"`{AGAIN}` re-measures the reference after the other rows: its drift bounds the noise.")
    if any(r["variant"] == FRESH for r in res["rows"]):
        text += (f" `{FRESH}` is the reference run by a child process with cudnn.benchmark on (cuDNN keeps its "
                 "first algorithm choice per convolution for the whole process, whatever the flag says later).")
    out(text)
    out()


# ---------------------------------------------------------------------------- synthetic data
def write_pairs(root: Path, n: int, h: int = 400, w: int = 600, unpaired: bool = False) -> tuple[Path, Path]:
    """``n`` synthetic low/GT PNG pairs (default 600x400, the LOLv2-Real size) under ``root/low``, ``root/high``
    (and ``n`` unpaired low images under ``root/unpaired``); kept when already there."""
    from data.image_io import write_image

    if not (root / "low").is_dir():
        rng = np.random.default_rng(1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(n):
            base = 0.5 + 0.25 * np.sin(xx[..., None] / (23 + i) + np.arange(3)) * np.cos(yy[..., None] / (17 + i))
            gt = np.clip(base + 0.04 * rng.standard_normal((h, w, 3), dtype=np.float32), 0, 1)
            write_image(root / "high" / f"{i:04d}.png", gt)
            write_image(root / "low" / f"{i:04d}.png",
                        np.clip(0.12 * gt + 0.01 * rng.random((h, w, 3), dtype=np.float32), 0, 1))
            if unpaired:
                write_image(root / "unpaired" / f"{i:04d}.png", 0.12 * np.roll(gt, i * 7, axis=1))
    return root / "low", root / "high"


def demo_lowlight() -> Path:
    """The demo low-light folder (``make_demo_data`` creates it when missing; a complete copy is kept)."""
    from data.demo import make_demo_data
    from data.paths import resolve_path

    return make_demo_data(resolve_path("demo_data"), kind="lowlight") / "lowlight"


# ---------------------------------------------------------------------------- (b) training
def trainer_overrides(name: str, mode: str, s: dict[str, Any], data: Path, lpips_ok: bool) -> list[str]:
    crop = s["train_size"]
    ov = [f"name=bench_{mode.replace(' ', '_').replace('-', '_')}_{name.lower()}", f"output_root={data.parent}/exp",
          f"device={s['device']}", f"data.paired.args.lq_dir={data}/low", f"data.paired.args.gt_dir={data}/high",
          f"data.paired.args.crop_size={crop}", "data.val.type=null", "data.num_workers=0",
          f"train.iters={s['train_warmup'] + s['train_repeats'] + 1}", "train.val_every=null",
          "train.val_every_epochs=null", "train.save_every=1000000000", "train.log_every=1000000000",
          "train.keep_last=1", "eval.after_train=false"]
    ov += [f"network.args.{k}={json.dumps(v)}" for k, v in s["network_args"].get(name, {}).items()]
    ov += [] if lpips_ok else ["losses=[ssim]"]
    if mode != "supervised":
        ov += [f"data.unpaired.args.root={data / 'unpaired'}", f"data.unpaired.args.crop_size={crop}",
               "ssll.semi_start_epoch=1", f"ssll.fused_student_forward={str(mode == 'semi fused').lower()}"]
    return ov


def time_trainer(trainer: Any, warmup: int) -> tuple[Timing, Timing, bool]:
    """Run ``trainer.train()`` timing each loop iteration between two batch fetches (synchronised).

    Returns the step timing after ``warmup`` steps, the fetch timing, and whether every batch carried
    the unpaired part. The last step ends in the end-of-run logging (no following fetch): not timed.
    """
    original, steps, fetches, kinds, last = trainer.next_batches, Timing(), Timing(), [], [None]

    def timed_next_batches() -> dict[str, Any]:
        sync(trainer.device)
        now = time.perf_counter()
        if last[0] is not None:
            steps.samples.append(now - last[0])
        batch = original()
        sync(trainer.device)
        last[0] = time.perf_counter()
        fetches.samples.append(last[0] - now)
        kinds.append("unpaired" in batch)
        return batch

    trainer.next_batches = timed_next_batches  # instance attribute: BaseTrainer.train calls it
    trainer.save_checkpoint = lambda *a, **k: None
    trainer.train()
    steps.samples = steps.samples[warmup:]
    return steps, fetches, bool(kinds) and all(kinds)


def training_row(name: str, mode: str, s: dict[str, Any], data: Path, lpips_ok: bool) -> BenchRow:
    from core import TRAINERS
    from core.config import load_config

    cfg_file = f"config/{'sup' if mode == 'supervised' else 'ssll'}_{name.lower()}.yaml"
    row = BenchRow("training", name, mode, items=0, extra={"network": name, "config": cfg_file,
                                                           "crop": s["train_size"]})
    trainer = None
    try:
        cfg = load_config(REPO_ROOT / cfg_file, trainer_overrides(name, mode, s, data, lpips_ok))
        row.items = batch = cfg.data.paired.batch_size or cfg.data.batch_size
        row.extra.update(batch=batch, trainer=cfg.trainer, losses=[x.name for x in cfg.losses], amp=cfg.train.amp,
                         tf32=cfg.train.tf32, channels_last=cfg.train.channels_last, compile=cfg.train.compile,
                         ema_decay=cfg.train.ema_decay)
        if mode != "supervised":
            row.extra.update(fused_student_forward=cfg.ssll.fused_student_forward,
                             unpaired_batch=cfg.data.unpaired.batch_size or batch)
        with backend_flags():  # the trainer sets TF32 / cudnn.benchmark from its config; restored after
            trainer = TRAINERS.get(cfg.trainer)(cfg)
            row.timing, fetches, semi = time_trainer(trainer, s["train_warmup"])
            row.extra["backend"] = backend_state()
        row.extra.update(fetch_median_s=fetches.median, nonfinite_steps=trainer.nonfinite_total)
        if mode != "supervised" and not semi:
            row.status, row.note = "error", "not every timed step was semi-supervised"
        elif not row.timing.samples:
            row.status, row.note = "error", "no step timed"
        elif trainer.nonfinite_total:
            row.note = f"{trainer.nonfinite_total} non-finite step(s) skipped (cheaper than a real step)"
    except Exception as exc:
        row.fail(exc)
    finally:
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.close()
        del trainer
        free_memory(s["device"])
    return row


def bench_training(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    lpips_ok, lpips_reason = lpips()[0] is not None, lpips()[1]
    names = [n for n in s["networks"] if (REPO_ROOT / "config" / f"sup_{n.lower()}.yaml").is_file()]
    notes = []
    if len(names) < len(s["networks"]):
        notes.append("no paper training config (config/sup_<net>.yaml) for "
                     f"{', '.join(n for n in s['networks'] if n not in names)}: not trained here")
    if not lpips_ok:
        notes.append("LPIPS weights unavailable: the training losses are [ssim] instead of the paper's "
                     "[ssim, lpips], so these step times exclude the LPIPS (AlexNet) forward and backward and "
                     f"underestimate the paper's step ({lpips_reason})")
    data, size = tmp / "train_data", s["train_size"] + 16
    write_pairs(data, 16, size, size, unpaired=True)
    rows, ratios = [], []
    for name in names:
        by_mode = {}
        for mode in ("supervised", "semi fused", "semi two-pass"):
            rows.append(by_mode.setdefault(mode, training_row(name, mode, s, data, lpips_ok)))
            log(f"[training] {name} {mode}: {fmt(rows[-1].median_s, 4)} s {rows[-1].status} {rows[-1].note}")
        sup = by_mode["supervised"].median_s
        ratio = {"network": name, "sup_s": sup}
        for mode, key in (("semi fused", "fused"), ("semi two-pass", "two_pass")):
            m = ratio[f"semi_{key}_s"] = by_mode[mode].median_s
            ratio[f"semi_{key}_over_sup"] = (m / sup) if (m and sup) else None
        ratios.append(ratio)
    return {"rows": [r.to_dict() for r in rows], "ratios": ratios, "lpips_in_loss": lpips_ok,
            "semi_over_sup_floor": SEMI_FLOOR, "synthetic_pairs": 16, "notes": notes}


def print_training(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (b) Training step (crop {s['train_size']}, median of {s['train_repeats']} steps after "
        f"{s['train_warmup']} warm-up)")
    out()
    if res["rows"]:
        out(markdown_table(
            ["network", "step", "config", "batch", "losses", "amp", "median s/step", "pairs/s", "status", "note"],
            [[r["name"], r["variant"], r["config"], r.get("batch", "–"), ",".join(r.get("losses", [])) or "–",
              r.get("amp", "–"), fmt(r["median_s"], 4), fmt(r["per_second"], 1), r["status"], r["note"]]
             for r in res["rows"]]))
        out()
        out(markdown_table(
            ["network", "sup s", "semi fused s", "semi/sup fused", "semi two-pass s", "semi/sup two-pass"],
            [[x["network"], fmt(x["sup_s"], 4), fmt(x["semi_fused_s"], 4), ratio_text(x["semi_fused_over_sup"]),
              fmt(x["semi_two_pass_s"], 4), ratio_text(x["semi_two_pass_over_sup"])] for x in res["ratios"]]))
        out()
        out(f"Semi/sup arithmetic floor ~{SEMI_FLOOR:.2f}x in FLOPs (teacher forward on 2B + student forward and "
            "backward on 2B, against forward and backward on B); a measured ratio below it means the device was not "
            "saturated at batch B, so the larger semi-supervised batches cost less than their FLOPs. Timed: one "
            "BaseTrainer.train iteration without the data fetch (zero_grad, train_step, non-finite check, optimizer "
            "and scheduler step, EMA update); pairs/s = paired batch / step time.")
    for n in res["notes"]:
        out(f"- note: {n}")
    out()


# ---------------------------------------------------------------------------- (c) data pipeline
def loader_rate(lq: Path, gt: Path, crop: int, batch: int, workers: int, n_batches: int, pin: bool) -> dict[str, Any]:
    from data import build_dataset
    from data.loaders import train_loader

    ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt), crop_size=crop, flip=True)
    prefetch = 2
    it = iter(train_loader(ds, batch, workers, seed=0, pin_memory=pin, prefetch_factor=prefetch)[0])
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    for _ in range(workers * prefetch):  # drain what the workers prefetched while starting
        next(it)
    t1 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    elapsed = time.perf_counter() - t1
    del it
    return {"workers": workers, "batch": batch, "crop": crop, "dataset_pairs": len(ds), "batches_timed": n_batches,
            "seconds": elapsed, "pairs_per_s": n_batches * batch / elapsed, "first_batch_s": first}


def pair_cost(lq: Path, gt: Path, crop: int, n: int) -> dict[str, Any]:
    """One training pair's cost in one process (median ms), in the two steps of the dataset's ``__getitem__``:
    decoding the two files, then its crop + flip and the float conversion. A loader delivers at most
    ``workers * 1000 / total_ms`` pairs/s."""
    from data import build_dataset
    from data.image_io import image_to_float, read_image_raw
    from data.transforms import to_tensor_chw

    ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt), crop_size=crop, flip=True)
    decode, convert = [], []
    for i in range(n):
        t0 = time.perf_counter()
        images = [read_image_raw(p) for p in ds.pairs[i % len(ds.pairs)]]
        t1 = time.perf_counter()
        [to_tensor_chw(image_to_float(im)) for im in ds._augment(images, seed=i)]
        decode.append(t1 - t0)
        convert.append(time.perf_counter() - t1)
    med = lambda v: 1000.0 * float(np.median(v))
    return {"decode_ms": med(decode), "crop_convert_ms": med(convert),
            "total_ms": med([d + c for d, c in zip(decode, convert)]), "pairs": n}


def bench_data(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    low, crop, notes = demo_lowlight(), s["train_size"], []
    steps = report.get("training", {}).get("rows", [])
    supervised = [r for r in steps if r["variant"] == "supervised" and r["median_s"]]
    consumer = min(supervised, key=lambda r: r["median_s"], default=None)  # the fastest supervised step of (b)
    batch, consumed = (int(consumer["batch"]), consumer["per_second"]) if consumer else (3, None)
    if consumer is None:
        notes.append("no supervised training step was timed: the consumption rate and ratio are unavailable "
                     "(batch 3 used)")
    if crop > 96:
        notes.append(f"the demo training images are 96x96: a {crop} crop reflect-pads them, so that row decodes "
                     "less than real data would; the 600x400 row is closer to LOLv2")
    lol = write_pairs(tmp / "lolv2_like", max(8 if s["quick"] else 24, batch))
    sources = [("demo lowlight/train (96x96 PNG)", low / "train" / "low", low / "train" / "high"),
               ("synthetic 600x400 PNG (LOLv2-Real size)", *lol)]
    rows, costs = [], []
    for label, lq, gt in sources:
        for w in sorted({0, s["workers"]}):
            try:
                r = loader_rate(lq, gt, crop, batch, w, s["data_batches"], pin=device.type == "cuda") | {"status": "ok"}
            except Exception as exc:
                r = {"workers": w, "batch": batch, "crop": crop, **failure(exc)}
            r.update(source=label, ratio_vs_training=(r["pairs_per_s"] / consumed) if consumed and r.get(
                "pairs_per_s") else None)
            rows.append(r)
            log(f"[data] {label} workers={w}: {fmt(r.get('pairs_per_s'), 1)} pairs/s {r['status']}")
        try:
            c = pair_cost(lq, gt, crop, 8 if s["quick"] else 24)
        except Exception as exc:
            costs.append({"source": label, **failure(exc)})
            continue
        ceiling = s["workers"] * 1000.0 / c["total_ms"]
        costs.append(c | {"source": label, "status": "ok", "ceiling_pairs_per_s": ceiling,
                          "ceiling_vs_training": ceiling / consumed if consumed else None,
                          "workers_for_goal": math.ceil(3.0 * consumed * c["total_ms"] / 1000.0) if consumed else None})
    main = next((r for r in rows if r["source"] == sources[0][0] and r["workers"] == s["workers"]), {})
    return {"rows": rows, "costs": costs, "ratio": main.get("ratio_vs_training"), "goal_ratio": 3.0,
            "workers": s["workers"], "crop": crop, "notes": notes, "consumer": consumer and {
                "network": consumer["name"], "step": consumer["variant"], "batch": batch,
                "step_median_s": consumer["median_s"], "pairs_per_s": consumed}}


def print_data(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (c) Data pipeline (paired_folder through train_loader, crop {res['crop']}, flips on)")
    out()
    out(markdown_table(["source", "workers", "batch", "pairs/s", "first batch s", "vs training", "status", "note"],
                       [[r["source"], r["workers"], r["batch"], fmt(r.get("pairs_per_s"), 1),
                         fmt(r.get("first_batch_s")), ratio_text(r["ratio_vs_training"]), r["status"],
                         r.get("note", "")] for r in res["rows"]]))
    out()
    c, w = res["consumer"], res["workers"]
    if c:
        verdict = "meets" if (res["ratio"] or 0) >= res["goal_ratio"] else "below"
        out(f"Training consumes {c['pairs_per_s']:.1f} pairs/s ({c['network']} {c['step']} step, the fastest: batch "
            f"{c['batch']} / {c['step_median_s']:.4f} s). Loader with {w} workers on the demo data: "
            f"**{fmt(res['ratio'])}x** that rate ({verdict} the goal of >= {res['goal_ratio']:.0f}x).")
    costs = [c for c in res["costs"] if c["status"] == "ok"]
    if costs:
        out()
        out(f"The cost of one pair in one process (median of {costs[0]['pairs']}) and the ceiling it sets for "
            f"{w} workers ({w} x 1000 / total ms): where the loader falls short of 3x, this shows whether decoding "
            "is the reason and how many workers would be needed.")
        out()
        out(markdown_table(
            ["source", "decode 2 images ms", "crop + convert ms", "total ms", f"ceiling, {w} workers",
             "ceiling vs training", "workers for 3x"],
            [[c["source"], fmt(c["decode_ms"]), fmt(c["crop_convert_ms"]), fmt(c["total_ms"]),
              fmt(c["ceiling_pairs_per_s"], 1), ratio_text(c["ceiling_vs_training"]), fmt(c["workers_for_goal"])]
             for c in costs]))
    for n in res["notes"]:
        out(f"- note: {n}")
    out()


# ---------------------------------------------------------------------------- (d) evaluation
def eval_row(net: torch.nn.Module, ds: Any, source: str, device: torch.device, protocol: Any, passes: int,
             workers: int) -> dict[str, Any]:
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
            metric, forward, images = metric + r.metric_seconds, forward + sum(r.latencies), images + len(r.rows)
        row.update(status="ok", images=images, passes=passes, total_s=total, metric_s=metric, forward_s=forward,
                   other_s=max(0.0, total - metric - forward), metric_fraction=metric / total,
                   forward_fraction=forward / total, images_per_s=images / total)
    except Exception as exc:
        row.update(failure(exc))
    free_memory(device)
    log(f"[eval] {source}: metric fraction {fmt(row.get('metric_fraction'), 3)} {row['status']}")
    return row


def bench_eval(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Metric share of evaluation on the demo test set (96x96) and on LOLv2-Real-sized images (600x400)."""
    from common_utils.evaluation.evaluator import EvalProtocol
    from data import build_dataset
    from models import build_network

    (lpips_metric, lpips_reason), name, low = lpips(), s["eval_network"], demo_lowlight()
    sources = [("demo lowlight/test (96x96)", low / "test" / "low", low / "test" / "high"),
               ("synthetic 600x400 (LOLv2-Real size)", *write_pairs(tmp / "lolv2_like_eval", 2 if s["quick"] else 6))]
    kwargs = s["network_args"].get(name, {})
    res: dict[str, Any] = {"network": name, "network_args": kwargs, "rows": [],
                           "lpips_included": lpips_metric is not None, "lpips_reason": lpips_reason}
    try:
        net = build_network(name, **kwargs).eval().to(device)
    except Exception as exc:
        return res | failure(exc)
    protocol = EvalProtocol(ssim="y", lpips=lpips_metric.to(device) if lpips_metric is not None else None,
                            lpips_reason=lpips_reason)
    res.update(protocol=protocol.describe(device), backend=backend_state())
    for source, lq, gt in sources:
        ds = build_dataset("paired_folder", lq_dir=str(lq), gt_dir=str(gt))
        res["rows"].append(eval_row(net, ds, source, device, protocol, s["eval_passes"], s["workers"]))
    res["status"] = "ok" if all(r["status"] == "ok" for r in res["rows"]) else "error"
    del net
    free_memory(device)
    return res


def print_eval(res: dict[str, Any], s: dict[str, Any]) -> None:
    out("## (d) Evaluation (paper protocol: PSNR, SSIM-Y, LPIPS when available)")
    out()
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    out(markdown_table(
        ["network", "images", "source", "workers", "total s", "forward s", "metrics s", "other s", "metrics share",
         "forward share", "LPIPS included", "status"],
        [[res["network"], r.get("images", "–"), r["source"], r["workers"], fmt(r.get("total_s"), 3),
          fmt(r.get("forward_s"), 3), fmt(r.get("metric_s"), 3), fmt(r.get("other_s"), 3),
          pct(r.get("metric_fraction")), pct(r.get("forward_fraction")), "yes" if res["lpips_included"] else "no",
          r["status"]] for r in res["rows"]]))
    out()
    notes = [] if res["lpips_included"] else [f"LPIPS not included ({res['lpips_reason']})"]
    for note in notes + [res.get("note")] + [r.get("note") for r in res["rows"]]:
        if note:
            out(f"- note: {note}")
    out("- metrics = EvalResult.metric_seconds (PSNR/SSIM/LPIPS and their host reads); forward = the synchronised "
        "forward latencies; other = loading, decoding and transfers. The paper's protocol scores full frames "
        "(LOLv2-Real 600x400 and larger): the 600x400 row is the representative one.")
    out()


# ---------------------------------------------------------------------------- (e) model statistics
def bench_stats(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Parameters, GMACs and a ``Timer.blocked_autorange`` latency of every network at every size."""
    from torch.utils.flop_counter import FlopCounterMode

    from common_utils.inference import forward_padded
    from models import build_network

    rows, min_run_time = [], 0.05 if s["quick"] else 1.0
    for name in s["networks"]:
        try:
            net = build_network(name, **s["network_args"].get(name, {})).eval().to(device)
        except Exception as exc:
            rows.append({"network": name, **failure(exc)})
            continue
        params = sum(p.numel() for p in net.parameters()) / 1e6
        for size in s["sizes"]:
            row = {"network": name, "params_m": params, "size": size}
            try:
                x = torch.rand(1, 3, size, size, device=device)
                with torch.inference_mode():
                    with FlopCounterMode(display=False) as counter:
                        forward_padded(net, x)  # also the first warm-up call
                    t = autorange(functools.partial(forward_padded, net, x), device, s["warmup"], min_run_time)
                row.update(status="ok", gmacs=counter.get_total_flops() / 2e9, latency_ms=1000 * t.median,
                           fps=1 / t.median, blocks=len(t.samples))
            except Exception as exc:  # a report: one failing size must not stop the table
                row.update(failure(exc))
            rows.append(row)
            x = None
            free_memory(device)
            log(f"[stats] {name} {size}x{size}: {fmt(row.get('latency_ms'))} ms {row['status']}")
        del net
        free_memory(device)
    return {"rows": rows, "min_run_time_s": min_run_time}


def print_stats(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (e) Model statistics (fp32, batch 1, inference_mode; latency: median of "
        f"torch.utils.benchmark.Timer.blocked_autorange, min_run_time {res['min_run_time_s']} s)")
    out()
    out(markdown_table(["network", "params (M)", "input", "GMACs", "latency (ms)", "FPS", "status", "note"],
                       [[r["network"], fmt(r.get("params_m"), 3), f"{r['size']}x{r['size']}" if "size" in r else "–",
                         fmt(r.get("gmacs")), fmt(r.get("latency_ms")), fmt(r.get("fps")), r["status"],
                         r.get("note", "")] for r in res["rows"]]))
    out()
    out("GMACs = torch.utils.flop_counter FLOPs / 2 (convolutions and matrix products); parameters include every "
        "declared block.")
    out()


# ---------------------------------------------------------------------------- main
def machine_notes(machine: dict[str, Any]) -> list[str]:
    """Warnings about conditions that make the timings unreliable."""
    notes = []
    load, cores = machine.get("load_average_1_5_15"), machine.get("cpu_cores_usable") or 1
    if load and load[0] > 0.5 * cores:
        notes.append(f"the machine is busy (1-minute load {load[0]} on {cores} usable cores): CPU timings and the "
                     "data-loader rates are unreliable; rerun on an idle machine")
    if machine["torch_num_threads"] > cores:
        notes.append(f"torch uses {machine['torch_num_threads']} threads on {cores} usable cores (oversubscribed)")
    return notes


def print_header(command: str, m: dict[str, Any], s: dict[str, Any]) -> None:
    gpu = f"{m['gpu']} ({m.get('gpu_memory_gib')} GiB, capability {m.get('gpu_capability')})" if m["gpu"] else "none"
    out(f"# Benchmark\n\nCommand: `{command}`\n")
    out(markdown_table(["field", "value"], [
        ["CPU", m["cpu_model"]],
        ["CPU cores (logical / usable)", f"{m['cpu_cores_logical']} / {m['cpu_cores_usable']}"],
        ["torch threads (intra / inter-op)", f"{m['torch_num_threads']} / {m['torch_num_interop_threads']}"],
        ["load average (1/5/15 min)", m["load_average_1_5_15"]], ["GPU", gpu], ["device", m["device"]],
        ["torch / CUDA / cuDNN", f"{m['torch']} / {m['cuda']} / {m['cudnn']}"],
        ["Python / platform", f"{m['python']} / {m['platform']}"], ["networks", ", ".join(s["networks"])],
        ["network args", json.dumps(s["network_args"]) if s["network_args"] else "paper defaults"]]))
    out()
    for n in machine_notes(m):
        out(f"- note: {n}\n")


@functools.cache
def lpips() -> tuple[Any, str | None]:
    """The LPIPS metric (None without its AlexNet weights) and the reason it is missing."""
    from models.lpips import try_build_lpips

    return try_build_lpips()


SECTION_RUNNERS = {  # section: (report key, measure, print), in the order they run
    "inference": ("inference", bench_inference, print_inference),
    "training": ("training", bench_training, print_training),
    "data": ("data_pipeline", bench_data, print_data),
    "eval": ("evaluation", bench_eval, print_eval),
    "stats": ("stats", bench_stats, print_stats),
}


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from common_utils.evaluation.runner import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    s = resolve_settings(args, device)
    command, machine = command_string(argv, "scripts/benchmark.py"), machine_info(device)
    print_header(command, machine, s)
    report: dict[str, Any] = {"format": "ssir-benchmark-v1", "command": command, "machine": machine, "settings": s,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if {"training", "eval"} & set(s["sections"]):
        report["lpips_available"] = lpips()[0] is not None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssir_bench_") as tmp:
        for section, (key, measure_section, show) in SECTION_RUNNERS.items():
            if section in s["sections"]:
                report[key] = measure_section(s, device, Path(tmp), report)
                show(report[key], s)
    report["wall_s"] = time.perf_counter() - t_start
    report["load_average_end"] = machine_info()["load_average_1_5_15"]
    report["machine_notes"] = machine_notes(machine)
    out(f"Total benchmark time {report['wall_s']:.1f} s.")
    if args.json:
        log(f"results written to {write_json(args.json, report)}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
