"""The sections run by the parent (train, equality, eval, profile), each over both workers."""
from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .official import official_epochs
from .protocol import BACKBONES, ENTRY, FEEDS, MODES, REPO_ROOT, Worker, WorkerError, median


@dataclass
class Side:
    """One timed column: the official trainer, or one variant of ours in one worker process."""

    label: str
    worker: Worker
    variant: str | None = None  # None: the official worker; else 'default' or 'fast'
    switches: tuple[str, ...] = ()

    def setup(self, backbone: str, mode: str, batch: int, warmup: int) -> dict[str, Any]:
        if self.variant is None:
            return self.worker.call("setup", backbone=backbone, mode=mode, batch=batch, warmup=warmup)
        return self.worker.call("setup", backbone=backbone, mode=mode, variant=self.variant, batch=batch,
                                switches=list(self.switches), warmup=max(warmup, 2) if self.switches else warmup)

    def block(self, mode: str, feed: str, iters: int, warmup: int) -> list[float]:
        if self.variant is None:
            return self.worker.call("block", mode=mode, feed=feed, iters=iters, warmup=warmup)
        return self.worker.call("block", mode=mode, variant=self.variant, feed=feed, iters=iters, warmup=warmup)


def run_training(sides: list[Side], args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Interleaved blocks (one per side, in order, ``--rounds`` times) per backbone, step and feed."""
    rows = []
    for name in args.backbones:
        batch = args.batch or BACKBONES[name].batch
        for mode in MODES:
            setup: dict[str, Any] = {}
            failed: dict[str, str] = {}
            for sd in sides:
                try:
                    setup[sd.label] = sd.setup(name, mode, batch, args.warmup)
                except WorkerError as exc:  # e.g. a speed switch that does not work with this backbone
                    failed[sd.label] = str(exc)
                    log(f"{name} {mode}: {sd.label} set-up failed: {_last_line(str(exc))}")
            live = [sd for sd in sides if sd.label in setup]
            if "official" in failed or len(live) < 2:
                rows.append({"backbone": name, "mode": mode, "error": "; ".join(failed.values())})
                continue
            warm = ", ".join(f"{k} warm-up {v['warmup_s']:.1f}s" for k, v in setup.items())
            log(f"{name} {mode}: set up ({warm})")
            for feed in FEEDS:
                times: dict[str, list[float]] = {sd.label: [] for sd in live}
                per_round: dict[str, list[float]] = {sd.label: [] for sd in live}
                for _ in range(args.rounds):
                    for sd in live:
                        t = sd.block(mode, feed, args.iters, args.warmup)
                        times[sd.label] += t
                        per_round[sd.label].append(statistics.median(t))
                med = {k: median(v) for k, v in times.items()}
                ref = med.get("official")
                row = {"backbone": name, "mode": mode, "feed": feed, "batch": batch, "crop": args.crop,
                       "median_s": med, "samples_s": times, "round_medians_s": per_round,
                       "warmup_s": {k: v["warmup_s"] for k, v in setup.items()},
                       "failed": {k: _last_line(v) for k, v in failed.items()},
                       "ratio": {k: (v / ref if v and ref else None) for k, v in med.items() if k != "official"}}
                rows.append(row)
                log(f"{name} {mode} {feed}: " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items())
                    + " | " + ", ".join(f"{k}/official {v:.2f}" for k, v in row["ratio"].items()))
    return rows


def _last_line(text: str) -> str:
    """The last non-empty line of a worker traceback (the exception itself)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(" ")]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or [text])[-1]


def run_equality(ours: Worker, off: Worker, args: argparse.Namespace, work: Path,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for name in args.backbones:
        bb = BACKBONES[name]
        batch = args.batch or bb.batch
        finish, semi_start = official_epochs(args.official, bb)
        for mode in MODES:
            init = work / f"init_{name}_{mode}.pth"
            try:
                o = ours.call("equality", backbone=name, mode=mode, batch=batch, iters=args.equality_iters,
                              epoch=finish, semi_start=semi_start, init_out=str(init),
                              teacher_offset=args.teacher_offset)
                f = off.call("equality", backbone=name, mode=mode, batch=batch, iters=args.equality_iters,
                             epoch=finish, init=str(init))
            except WorkerError as exc:
                log(f"{name} {mode} equality failed: {exc}")
                rows.append({"backbone": name, "mode": mode, "error": str(exc)})
                continue
            terms = sorted(set().union(*[r.keys() for r in o]))
            diff: dict[str, float] = {}
            rel: dict[str, float] = {}
            for t in terms:
                pairs = [(a.get(t), b.get(t)) for a, b in zip(o, f["rows"])]
                d = [abs(a - b) for a, b in pairs if a is not None and b is not None]
                diff[t] = max(d) if d else float("nan")
                rel[t] = max((abs(a - b) / max(abs(b), 1e-12) for a, b in pairs if a is not None and b is not None),
                             default=float("nan"))
            row = {"backbone": name, "mode": mode, "batch": batch, "epoch": finish, "iters": args.equality_iters,
                   "teacher_offset": args.teacher_offset,
                   "ours": o, "official": f["rows"], "consistency_weight": f["consistency_weight"],
                   "max_abs_diff": diff, "max_rel_diff": rel}
            rows.append(row)
            log(f"{name} {mode} equality: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    return rows


def _read_rows(path: Path, name_key: str, cols: dict[str, str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            key = Path(row.get(name_key) or "").stem
            if not key or key == "Average":
                continue
            out[key] = {ours: float(row[theirs]) for ours, theirs in cols.items()
                        if row.get(theirs) not in (None, "", "None")}
    return out


def run_eval(ours: Worker, args: argparse.Namespace, work: Path, envs: dict[str, dict[str, str]],
             log: Callable[[str], None]) -> dict[str, Any]:
    """Both evaluation scripts as fresh processes, interleaved; ``envs``: label -> environment (ours*, official)."""
    net = args.eval_network
    weight = work / f"eval_{net}.pth"
    ours.call("save_init", backbone=net, path=str(weight), seed=0)
    low, high = work / "eval" / "LOLv2" / "low", work / "eval" / "LOLv2" / "normal"
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in envs}
    for r in range(args.eval_rounds):
        for label, env in envs.items():
            report = work / f"eval_{label}_{r}.json"
            out = work / f"eval_{label}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            if label.startswith("ours"):
                cmd = [sys.executable, str(ENTRY), "--worker", "ours-eval", "--report", str(report), "--",
                       "-n", net, "-w", str(weight), "-d", "LOLv2", "--data-root", str(work / "eval"),
                       "--out", str(out), "--device", "cpu", "--workers", "0"]
                cwd = REPO_ROOT
            else:
                cmd = [args.official_python, str(ENTRY), "--worker", "official-eval", "--official",
                       str(args.official), "--report", str(report), "--eval-network", net, "--weight", str(weight),
                       "--low", str(low), "--high", str(high), "--result-dir", str(out)]
                cwd = work
            t0 = time.perf_counter()
            with open(args.out / "logs" / f"eval_{label}.log", "a") as fh:
                proc = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=fh, stderr=fh)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise WorkerError(f"{label} evaluation failed (code {proc.returncode}); see "
                                  f"{args.out}/logs/eval_{label}.log")
            rep = json.loads(report.read_text())
            rep.update(wall_s=wall, images_per_s=rep["images"] / wall, loop_images_per_s=rep["images"] / rep["loop_s"],
                       metric_share=rep["metrics_s"] / rep["loop_s"], out=str(out))
            runs[label].append(rep)
            log(f"eval {label} round {r}: {rep['images']} images in {wall:.1f}s end to end "
                f"({rep['images_per_s']:.3f} img/s), metrics {100 * rep['metric_share']:.1f}% of the loop")
    # per-image numbers of the last round of each side
    cols = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS"}
    scores = {label: (_read_rows(next(Path(rs[-1]["out"]).glob("metric_*.csv")), "image", cols)
                      if not label.startswith("ours") else
                      _read_rows(Path(rs[-1]["out"]) / "LOLv2" / "per_image.csv", "name", {k: k for k in cols}))
              for label, rs in runs.items()}
    theirs = scores["official"]
    common = sorted(set.intersection(*[set(v) for v in scores.values()]))
    diffs = {label: {m: max((abs(v[k][m] - theirs[k][m]) for k in common if m in v[k] and m in theirs[k]),
                            default=None) for m in cols}
             for label, v in scores.items() if label != "official"}
    means = {label: {m: statistics.mean(v[k][m] for k in common if m in v[k]) if common else None for m in cols}
             for label, v in scores.items()}
    summary: dict[str, Any] = {"network": net, "weights": "random init (seed 0), saved by our registry",
                               "images": len(common), "runs": runs, "max_abs_diff_per_image": diffs, "means": means,
                               "env": {k: {e: v for e, v in env.items() if e in args.ours_env_keys}
                                       for k, env in envs.items()}}
    for key in ("wall_s", "images_per_s", "loop_images_per_s", "metric_share", "forward_s", "metrics_s", "loop_s"):
        summary[key] = {label: median([r[key] for r in rs]) for label, rs in runs.items()}
    ref, ref_loop = summary["images_per_s"]["official"], summary["loop_images_per_s"]["official"]
    summary["speedup_end_to_end"] = {k: v / ref for k, v in summary["images_per_s"].items() if k != "official"}
    summary["speedup_loop"] = {k: v / ref_loop for k, v in summary["loop_images_per_s"].items() if k != "official"}
    return summary


def run_profile(sides: list[Side], args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per step: wall / user / sys seconds and page faults, and a torch.profiler table, for every side."""
    rows = []
    for name in args.backbones:
        batch = args.batch or BACKBONES[name].batch
        for mode in MODES:
            for sd in sides:
                if mode == "sup" and any(sw.startswith("ssll.") for sw in sd.switches):
                    continue  # an SSLL switch: the supervised config has no ssll section
                try:
                    sd.setup(name, mode, batch, 1)
                    if sd.variant is None:
                        res = sd.worker.call("profile", mode=mode, iters=args.iters)
                    else:
                        res = sd.worker.call("profile", mode=mode, variant=sd.variant, iters=args.iters)
                except WorkerError as exc:
                    log(f"profile {name} {mode} {sd.label} failed: {_last_line(str(exc))}")
                    continue
                path = args.out / f"profile_{name}_{mode}_{sd.label}.txt"
                path.write_text(res.pop("table"))
                rows.append({"backbone": name, "mode": mode, "side": sd.label, **res, "table": str(path)})
                log(f"profile {name} {mode} {sd.label}: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in res.items()))
    return rows
