"""(c) The data pipeline: pairs/s of the training loader against what the training step consumes."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common_utils.benchmarking import failure, fmt, markdown_table

from .common import demo_lowlight, log, out, ratio_text, write_pairs


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


