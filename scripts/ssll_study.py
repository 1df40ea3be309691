"""Does SSLL beat its supervised baseline on real photographs? One command runs and reports the study.

For each label budget N and seed, two runs at equal iterations and equal labelled pairs:
(a) the supervised baseline on N labelled LOL-v1 pairs; (b) SSLL with the same N pairs plus an
unpaired pool (SICE dark frames and the remaining LOL training inputs, their ground truth
withheld). Every run is scored on LOL-v1 eval15 at full resolution with the paper's protocol
(PSNR on RGB, SSIM on Y). The run folders go to ``experiments/ssll_study/`` and the report
(table, curves, image grid, machine, commands, wall times) to ``experiments/ssll_study/report_<tag>/``;
only ``--publish`` writes the committed ``docs/studies/ssll_lol_<tag>/``. Interrupted studies
continue where they stopped; ``--report-only`` rebuilds the report from the run folders.

    python scripts/link_datasets.py           # lay ../shared/data out as datasets/LOL, datasets/SICE_dark
    python scripts/ssll_study.py              # 2 budgets x 3 seeds x 2 methods (~3 h on 2 CPU cores)
    python scripts/ssll_study.py --tag gpu --set data.batch_size=8 data.paired.args.crop_size=192 ...
    python scripts/ssll_study.py --tag why --budgets 20 --seeds 0 \
        --variant ramp400 ssll.ramp_epochs=400 --variant ema999 train.ema_decay=0.999   # ablations of SSLL

``--variant NAME KEY=VALUE ...`` adds an SSLL run with those overrides (``ssll_NAME``) beside the
plain SSLL run; the report compares every SSLL variant with the baseline of the same seed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common_utils.benchmarking import machine_info, markdown_table  # noqa: E402
from common_utils.cli import HelpFormatter, run_cli  # noqa: E402
from common_utils.study import (  # noqa: E402
    StudyRun,
    add_output_arguments,
    mean_std,
    pm,
    report_folder,
    run_training,
    runs_folder,
)
from common_utils.visual import image_grid, save_jpeg  # noqa: E402
from core.logger import read_scalars  # noqa: E402

#: the run folders go to experiments/<STUDY>/; the committed report is docs/studies/<COMMITTED>_<tag>/ (--publish)
STUDY, COMMITTED = "ssll_study", "ssll_lol"

METHODS = {"baseline": "config/study/lol_cidnet_sup.yaml", "ssll": "config/study/lol_cidnet_ssll.yaml"}
EVAL_SET = "LOL-v1"


def methods(args: argparse.Namespace) -> dict[str, tuple[str, tuple[str, ...]]]:
    """method -> (config, its own overrides): the baseline, SSLL, and SSLL variants (ablations)."""
    out = {"baseline": (args.baseline, ()), "ssll": (args.ssll, tuple(args.set_ssll))}
    for name, *overrides in args.variant or []:
        out[f"ssll_{name}"] = (args.ssll, (*args.set_ssll, *overrides))
    return {m: v for m, v in out.items() if not args.methods or m in args.methods}


def plan(args: argparse.Namespace) -> list[tuple[str, int, int, StudyRun]]:
    """(method, budget, seed, run) for every run, seed-major so early results come in pairs."""
    out = []
    for seed in args.seeds:
        for budget in args.budgets:
            for method, (cfg, own) in methods(args).items():
                name = f"{args.tag}_{method}_n{budget}_s{seed}"
                over = (f"seed={seed}", f"data.labelled_pairs={budget}", *args.set, *own)
                out.append((method, budget, seed, StudyRun(cfg, name, over)))
    return out


def scores(summary: dict[str, Any] | None) -> dict[str, Any]:
    """Teacher / student / input PSNR and SSIM on the evaluation set of one run's summary."""
    entry = (summary or {}).get(EVAL_SET) or {}
    pick = lambda d: {"psnr": d.get("psnr"), "ssim": d.get("ssim")} if isinstance(d, dict) else {}
    return {"network": entry.get("network"), "main": pick(entry), "teacher": pick(entry.get("teacher")),
            "student": pick(entry.get("student")), "input": pick(entry.get("input"))}


def collect(runs: list[tuple[str, int, int, StudyRun]], root: Path) -> list[dict[str, Any]]:
    rows = []
    for method, budget, seed, run in runs:
        s = run.summary(root)
        if s is None:
            continue
        rows.append({"method": method, "budget": budget, "seed": seed, "run": run.name,
                     "wall_s": run.wall_seconds(root), **scores(s)})
    return rows


def report_table(rows: list[dict[str, Any]], budgets: list[int], seeds: list[int], key: str = "main",
                 method: str = "ssll") -> list[str]:
    """Per-seed PSNR/SSIM of the baseline and ``method``, ``method`` minus baseline, then mean ± std per budget."""
    by = {(r["method"] if r["method"] != method else "ssll", r["budget"], r["seed"]): r for r in rows
          if r["method"] in ("baseline", method)}
    table = []
    for n in budgets:
        deltas_p, deltas_s, cols = [], [], {"baseline": ([], []), "ssll": ([], [])}
        for seed in seeds:
            b, s = by.get(("baseline", n, seed)), by.get(("ssll", n, seed))
            bp, bs = (b[key]["psnr"], b[key]["ssim"]) if b else (None, None)
            sp, ss = (s[key]["psnr"], s[key]["ssim"]) if s else (None, None)
            dp = sp - bp if bp is not None and sp is not None else None
            ds = ss - bs if bs is not None and ss is not None else None
            for m, (p, q) in (("baseline", (bp, bs)), ("ssll", (sp, ss))):
                cols[m][0].append(p)
                cols[m][1].append(q)
            deltas_p.append(dp)
            deltas_s.append(ds)
            f = lambda v, d=2: "–" if v is None else f"{v:+.{d}f}" if d < 0 else f"{v:.{d}f}"
            table.append([n, seed, f(bp), f(bs, 4), f(sp), f(ss, 4), "–" if dp is None else f"{dp:+.2f}",
                          "–" if ds is None else f"{ds:+.4f}"])
        table.append([n, "mean ± std", pm(cols["baseline"][0]), pm(cols["baseline"][1], 4), pm(cols["ssll"][0]),
                      pm(cols["ssll"][1], 4), _signed(deltas_p, 2), _signed(deltas_s, 4)])
    headers = ["labelled pairs", "seed", "baseline PSNR", "baseline SSIM", "SSLL PSNR", "SSLL SSIM",
               "Δ PSNR (SSLL − base)", "Δ SSIM"]
    return markdown_table(headers, table).splitlines()


def _signed(values: list[float | None], digits: int) -> str:
    m, s = mean_std(values)
    if m is None:
        return "–"
    return f"{m:+.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def plot_curves(runs: list[tuple[str, int, int, StudyRun]], root: Path, budgets: list[int], out: Path) -> Path | None:
    """Training loss and validation PSNR (teacher) over iterations, one panel pair per budget."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curves", file=sys.stderr)
        return None
    fig, axes = plt.subplots(len(budgets), 2, figsize=(11, 3.6 * len(budgets)), squeeze=False)
    colors = {"baseline": "tab:blue", "ssll": "tab:orange"}
    palette = iter(["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"])
    styles = ["-", "--", ":", "-."]
    for method, budget, seed, run in runs:
        if method not in colors:
            colors[method] = next(palette, "tab:gray")
        curves = read_scalars(run.folder(root) / "logs" / "scalars.jsonl")
        if not curves:
            continue
        row = budgets.index(budget)
        sup = [k for k in curves if k.startswith("train/") and k not in ("train/lr",)
               and not k.startswith(("train/pico", "train/consistency"))]
        if sup:
            steps = [s for s, _ in curves[sup[0]]]
            total = [sum(dict(curves[k]).get(s, 0.0) for k in sup) for s in steps]
            axes[row][0].plot(steps, total, styles[seed % 4], color=colors[method], lw=1,
                              label=f"{method} seed {seed}")
        val = curves.get("val/teacher/psnr")
        if val:
            axes[row][1].plot(*zip(*val), styles[seed % 4], marker="o", ms=3, color=colors[method], lw=1,
                              label=f"{method} seed {seed}")
    for row, n in enumerate(budgets):
        axes[row][0].set_title(f"{n} pairs: supervised loss (1-SSIM + L1), paired batch", fontsize=10)
        axes[row][1].set_title(f"{n} pairs: teacher PSNR, 5 eval15 images (monitoring)", fontsize=10)
        for ax in axes[row]:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_grids(runs: list[tuple[str, int, int, StudyRun]], root: Path, budgets: list[int], seed: int,
               count: int, out: Path) -> list[Path]:
    """input | baseline | SSLL | ground truth for the first ``count`` eval15 images, per budget."""
    from common_utils.checkpoint import load_network, safe_load
    from common_utils.evaluation.evaluator import EvalProtocol, enhance
    from data.layouts import open_layout

    ds = open_layout(EVAL_SET)
    items = [ds[i] for i in range(min(count, len(ds)))]
    paths = []
    for n in budgets:
        nets = {}
        for method, budget, s, run in runs:
            ckpt = run.folder(root) / "checkpoints" / "last.pth"
            if method in ("baseline", "ssll") and budget == n and s == seed and ckpt.is_file() \
                    and run.summary(root) is not None:
                trained_for = safe_load(ckpt)["network"]
                nets[method], _ = load_network(trained_for, str(ckpt), which="teacher")
        if set(nets) != {"baseline", "ssll"}:
            continue
        rows, labels = [], []
        with torch.inference_mode():
            for it in items:
                x = it["lq"][None]
                outs = [enhance(nets[m], x, EvalProtocol())[0] for m in ("baseline", "ssll")]
                rows.append([t.permute(1, 2, 0).numpy() for t in (it["lq"], *outs, it["gt"])])
                labels.append(it["name"])
        grid = image_grid(rows, ["input", f"baseline ({n} pairs)", f"SSLL ({n} pairs)", "ground truth"],
                          row_labels=labels)
        path = out / f"grid_n{n}_seed{seed}.jpg"
        save_jpeg(path, grid)
        paths.append(path)
    return paths


def write_report(args: argparse.Namespace, runs: list[tuple[str, int, int, StudyRun]], root: Path, out: Path,
                 started: float | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(runs, root)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    import csv

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "labelled_pairs", "seed", "network", "psnr", "ssim", "teacher_psnr", "teacher_ssim",
                    "student_psnr", "student_ssim", "input_psnr", "input_ssim", "wall_s", "run"])
        for r in rows:
            w.writerow([r["method"], r["budget"], r["seed"], r["network"], r["main"]["psnr"], r["main"]["ssim"],
                        r["teacher"].get("psnr"), r["teacher"].get("ssim"), r["student"].get("psnr"),
                        r["student"].get("ssim"), r["input"].get("psnr"), r["input"].get("ssim"), r["wall_s"],
                        r["run"]])
    curves = plot_curves(runs, root, args.budgets, out)
    grids = make_grids(runs, root, args.budgets, args.seeds[0], args.grid, out) if args.grid else []
    info = machine_info()
    walls = [r["wall_s"] for r in rows if r["wall_s"]]
    inp = next((r["input"] for r in rows if r["input"].get("psnr") is not None), {})
    lines = [f"# SSLL vs supervised baseline on real photographs ({args.tag})", "",
             f"Generated by `python scripts/ssll_study.py {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}.", "",
             f"- Configs: baseline `{args.baseline}`, SSLL `{args.ssll}` (their comments give every scaled knob); "
             f"overrides: {' '.join(args.set) or 'none'}; SSLL only: {' '.join(args.set_ssll) or 'none'}.",
             f"- Label budgets {args.budgets}, seeds {args.seeds}; the seed also picks the labelled pairs.",
             f"- Scored on {EVAL_SET} eval15 (15 real pairs, 600x400, full resolution; PSNR RGB, SSIM on Y), "
             f"the run's default network (EMA teacher), last checkpoint: no selection on test images.",
             f"- Input itself: PSNR {inp.get('psnr', float('nan')):.2f}, SSIM {inp.get('ssim', float('nan')):.4f}.",
             f"- Machine: {info['cpu_model']}, {info['cpu_cores_usable']} usable cores, torch {info['torch']}, "
             f"{'GPU ' + str(info['gpu']) if info['gpu'] else 'CPU only'}.",
             f"- Wall time: {len(walls)} runs, {sum(walls) / 60:.0f} min in all; per run "
             f"{min(walls) / 60:.1f}-{max(walls) / 60:.1f} min." if walls else "- Wall time: no finished run yet.",
             "", "## Teacher (the reported network)", "", *report_table(rows, args.budgets, args.seeds, "main"),
             "", "## Student", "", *report_table(rows, args.budgets, args.seeds, "student"), ""]
    for method, (_, own) in methods(args).items():
        if method.startswith("ssll_"):
            lines += [f"## Variant {method} ({' '.join(own)}), teacher", "",
                      *report_table(rows, args.budgets, args.seeds, "main", method), ""]
    if curves:
        lines += ["## Training curves", "", f"![curves]({curves.name})", ""]
    for g in grids:
        lines += [f"## {g.stem}", "", f"![{g.stem}]({g.name})", ""]
    missing = [run.name for *_, run in runs if run.summary(root) is None]
    if missing:
        lines += [f"Runs not finished yet: {', '.join(missing)}.", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--baseline", default=METHODS["baseline"], help="config of the supervised baseline")
    p.add_argument("--ssll", default=METHODS["ssll"], help="config of the SSLL run")
    p.add_argument("--budgets", type=int, nargs="+", default=[120, 20], help="numbers of labelled pairs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (each also seeds its label "
                   "split)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides for every run (e.g. a GPU recipe)")
    p.add_argument("--set-ssll", nargs="*", default=[], help="config overrides for the SSLL runs only (ssll.*, "
                   "data.unpaired.*)")
    p.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                   help="an SSLL variant: a name and its overrides (repeatable)")
    p.add_argument("--methods", nargs="*", default=None, help="run only these methods (baseline, ssll, ssll_NAME)")
    add_output_arguments(p, STUDY, COMMITTED)
    p.add_argument("--grid", type=int, default=4, help="eval15 images in the image grid (0: none)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the run folders")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv

    def job() -> None:
        root = runs_folder(args)
        out = report_folder(args, STUDY, COMMITTED)
        root.mkdir(parents=True, exist_ok=True)
        runs = plan(args)
        started = time.time()
        if not args.report_only:
            for i, (*_, run) in enumerate(runs, 1):
                if run.summary(root) is not None:
                    continue
                print(f"[{i}/{len(runs)}] {run.name}", flush=True)
                spent = run_training(run, root)
                print(f"    done in {spent / 60:.1f} min", flush=True)
                try:  # a report problem must not stop the runs; --report-only rebuilds it
                    write_report(args, runs, root, out, started)
                except Exception as exc:
                    print(f"    report not updated: {exc!r}", flush=True)
        print(f"report: {write_report(args, runs, root, out, started)}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
