"""The Markdown report of a comparison (``compare_official.md``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a result dict (as written to compare_official.json)."""
    m, s, lines = result["machine"], result["settings"], []
    lines += ["# Ours vs the official SSLL code (CPU)", "",
              f"- date: {m['date']}; CPU: {m['cpu']} ({m['logical_cpus']} logical); torch {result.get('torch')}; "
              f"1 thread per process; load average at start {m.get('load_avg_at_start')}",
              f"- command: `{result['command']}`",
              f"- ours: {result.get('ours_repo')} at commit {result.get('ours_commit')} with "
              f"{result.get('ours_uncommitted_files')} uncommitted file(s)",
              f"- official: commit {result.get('official_commit')} at {result['official']}; stand-in AlexNet "
              f"sha256 {result.get('alexnet_sha256')}",
              f"- sides: `official` = Retinol.supervise_train_step / semi_supervise_train_step; `ours` = config "
              f"defaults; `ours_fast` = {', '.join(s['fast_switches']) or 'not run'}; `ours_env` = defaults in a "
              f"process started with {' '.join(s['ours_env']) or 'not run'}"]
    tr = result.get("training")
    if tr:
        ok = [r for r in tr if "error" not in r]
        labels = list(dict.fromkeys(k for r in ok for k in [*r["median_s"], *r.get("failed", {})] if k != "official"))
        lines += ["", "## Training: seconds per iteration (median), ratio to official", "",
                  f"crop {s['crop']}, {s['rounds']} interleaved rounds x {s['iters']} timed iterations after "
                  f"{s['warmup']} warm-up per block; `premade` = identical pre-made tensors (forward, backward, "
                  f"optimizer, EMA, loop), `loader` = each side's data pipeline (num_workers 0) included.", "",
                  "| backbone | step | batch | feed | official s | "
                  + " | ".join(f"{k} s | {k}/official" for k in labels) + " |",
                  "|---|---|---|---|---|" + "---|---|" * len(labels)]
        for r in tr:
            if "error" in r:
                lines.append(f"| {r['backbone']} | {r['mode']} | – | failed: {r['error'].splitlines()[0]} |")
                continue
            md, ra, bad = r["median_s"], r["ratio"], r.get("failed", {})
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['batch']} | {r['feed']} | {_f(md['official'])} | "
                         + " | ".join("failed | –" if k in bad else f"{_f(md.get(k))} | {_f(ra.get(k), '{:.2f}')}"
                                      for k in labels) + " |")
        fails = {(r["backbone"], r["mode"], k): v for r in ok for k, v in r.get("failed", {}).items()}
        for (bb_name, mode, k), v in fails.items():
            lines.append(f"\n`{k}` failed for {bb_name} {mode}: {v}")
    eq = result.get("equality")
    if eq:
        terms = ["ssim", "lpips", "pico_paired", "consistency", "pico_unpaired"]
        lines += ["", "## Loss equality: max |ours - official| per term over the first iterations", "",
                  "Same initial weights, batches and CutMix boxes; ours with `train.output_clamp=hard`, "
                  "`ssll.official_lpips_range=true`, `ssll.fused_student_forward=false`, constant lr; "
                  "terms weighted as in each side's total (PICo x lambda, unpaired terms x w(e)); initial teacher "
                  f"= student + {eq[0].get('teacher_offset', 0)} x N(0,1) per weight.", "",
                  "| backbone | step | epoch | iters | " + " | ".join(terms) + " |",
                  "|---|---|---|---|" + "---|" * len(terms)]
        for r in eq:
            if "error" in r:
                lines.append(f"| {r['backbone']} | {r['mode']} | failed: {r['error'].splitlines()[0]} |")
                continue
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['epoch']} | {r['iters']} | "
                         + " | ".join(_f(r["max_abs_diff"].get(t), "{:.1e}") for t in terms) + " |")
    ev = result.get("eval")
    if ev:
        lines += ["", f"## Evaluation: {ev['network']}, {ev['images']} images ({ev['weights']})", "",
                  "| side | end-to-end s | images/s end to end | speed-up | images/s in the loop | metric share | "
                  "mean PSNR | mean SSIM | mean LPIPS | max per-image diff PSNR / SSIM / LPIPS |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for side in ev["wall_s"]:
            mm, d = ev["means"][side], ev["max_abs_diff_per_image"].get(side)
            diff = "–" if d is None else " / ".join(_f(d[k], "{:.1e}") for k in ("psnr", "ssim", "lpips"))
            lines.append(f"| {side} | {_f(ev['wall_s'][side], '{:.1f}')} | {_f(ev['images_per_s'][side])} | "
                         f"{_f(ev['speedup_end_to_end'].get(side), '{:.2f}x')} | {_f(ev['loop_images_per_s'][side])} | "
                         f"{_f(ev['metric_share'][side], '{:.1%}')} | {_f(mm['psnr'], '{:.4f}')} | "
                         f"{_f(mm['ssim'], '{:.5f}')} | {_f(mm['lpips'], '{:.5f}')} | {diff} |")
    prof = result.get("profile")
    if prof:
        lines += ["", "## Resource use per step (premade batch, no profiler) and profiler tables", "",
                  "| backbone | step | side | wall s | user s | sys s | minor page faults | profiler table |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in prof:
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['side']} | {_f(r['wall_s'])} | {_f(r['user_s'])} | "
                         f"{_f(r['sys_s'])} | {r['minor_faults']:.0f} | `{Path(r['table']).name}` |")
    if result.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e.splitlines()[0] if e else e}" for e in result["errors"]]
    return "\n".join(lines) + "\n"
