"""(d) Evaluation: the wall time split into metrics, forward and the rest."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from common_utils.benchmarking import backend_state, failure, fmt, free_memory, markdown_table, sync

from .common import demo_lowlight, log, out, write_pairs


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
    from common_utils.evaluation.runner import dataset_protocol
    from data import build_dataset
    from models import build_network

    name, low = s["eval_network"], demo_lowlight()
    sources = [("demo lowlight/test (96x96)", low / "test" / "low", low / "test" / "high"),
               ("synthetic 600x400 (LOLv2-Real size)", *write_pairs(tmp / "lolv2_like_eval", 2 if s["quick"] else 6))]
    kwargs = s["network_args"].get(name, {})
    specs = [{"type": "paired_folder", "args": {"lq_dir": str(lq), "gt_dir": str(gt)}} for _, lq, gt in sources]
    # the protocol a folder is scored with by eval.py (the dataset layout's rule, not a copy of it)
    protocol = dataset_protocol(specs[0], device=device)
    res: dict[str, Any] = {"network": name, "network_args": kwargs, "rows": [],
                           "lpips_included": protocol.lpips is not None, "lpips_reason": protocol.lpips_reason}
    try:
        net = build_network(name, **kwargs).eval().to(device)
    except Exception as exc:
        return res | failure(exc)
    res.update(protocol=protocol.describe(device), backend=backend_state())
    for (source, _, _), spec in zip(sources, specs):
        ds = build_dataset(spec["type"], **spec["args"])
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


