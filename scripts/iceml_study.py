"""Does ICEML's mutual learning on real hazy photographs beat supervised pre-training alone?

Per seed: stage 1 (supervised, SOTS-indoor pairs with two rooms held out) for P iterations, then
the same run continued through stage 2 (inverse-consistency mutual learning on the real DAWN
photographs) for M more iterations (an exact resume of the stage-1 run). A control run trains
stage 1 alone for P + M iterations, so "after stage 2" is also compared at equal iterations.
Scores: PSNR and SSIM (RGB) of RtxICE-Net and ASMICE-Net on the 24 held-out hazy images; image
grid: real hazy photographs (RTTS, Fattal's set; never trained on) before and after each stage.

    python scripts/link_datasets.py && python scripts/iceml_study.py      (~1 h on 2 CPU cores)
    python scripts/iceml_study.py --variant supervised iceml.w_supervised=0.5 --variant lowlr iceml.mutual_lr=2e-5

``--variant NAME KEY=VALUE ...`` adds a stage-2 run with those overrides, resumed from the same
stage-1 checkpoint (so a variant costs only the stage-2 iterations); the report compares it with
stage 1. Run folders: ``experiments/iceml_study/``; report: ``experiments/iceml_study/report_<tag>/``,
or with ``--publish`` the committed ``docs/studies/iceml_sots_dawn_<tag>/``.
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
from common_utils.checkpoint import copy_checkpoint  # noqa: E402
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

#: the run folders go to experiments/<STUDY>/; the committed report is docs/studies/<COMMITTED>_<tag>/ (--publish)
STUDY, COMMITTED = "iceml_study", "iceml_sots_dawn"

CONFIG = "config/study/sots_iceml.yaml"
EVAL_SET = "SOTS-indoor-heldout"
NETS = {"rtx": "RtxICE-Net", "asm": "ASMICE-Net"}


def plan(args: argparse.Namespace, seed: int) -> dict[str, StudyRun]:
    """The stage-1, stage-2 and control runs of one seed."""
    p, m = args.stage1_iters, args.stage2_iters
    common = (f"seed={seed}", f"iceml.pretrain_iters={p}", *args.set)
    runs = {"stage1": StudyRun(args.config, f"{args.tag}_stage1_s{seed}", (*common, f"train.iters={p}")),
            "stage2": StudyRun(args.config, f"{args.tag}_stage2_s{seed}", (*common, f"train.iters={p + m}"))}
    if args.control:
        runs["control"] = StudyRun(args.config, f"{args.tag}_stage1only_s{seed}",
                                   (f"seed={seed}", f"iceml.pretrain_iters={p + m}", f"train.iters={p + m}",
                                    *args.set))
    for name, *overrides in args.variant or []:
        runs[f"stage2_{name}"] = StudyRun(args.config, f"{args.tag}_stage2_{name}_s{seed}",
                                          (*common, f"train.iters={p + m}", *overrides))
    return runs


def execute(runs: dict[str, StudyRun], root: Path) -> None:
    """Stage 1, then stage 2 (and its variants) as resumes of stage 1's last checkpoint, then the control."""
    for key in ["stage1", "stage2", *(k for k in runs if k.startswith("stage2_")), "control"]:
        run = runs.get(key)
        if run is None or run.summary(root) is not None:
            continue
        if key.startswith("stage2"):
            src = runs["stage1"].folder(root) / "checkpoints" / "last.pth"
            dst = run.folder(root) / "checkpoints" / "last.pth"
            if not dst.is_file():  # the state with the weights files it names
                copy_checkpoint(src, dst)
        print(f"  {run.name}", flush=True)
        spent = run_training(run, root)
        print(f"    done in {spent / 60:.1f} min", flush=True)


def network_scores(summary: dict[str, Any] | None) -> dict[str, dict[str, float | None]]:
    entry = (summary or {}).get(EVAL_SET) or {}
    out = {k: {"psnr": (entry.get(k) or {}).get("psnr"), "ssim": (entry.get(k) or {}).get("ssim")} for k in NETS}
    out["input"] = {"psnr": (entry.get("input") or {}).get("psnr"), "ssim": (entry.get("input") or {}).get("ssim")}
    return out


def load_pair(ckpt: Path) -> dict[str, torch.nn.Module]:
    """RtxICE-Net and ASMICE-Net of an ICEML checkpoint (the checkpoint reader cuts out either)."""
    from common_utils.checkpoint import load_network

    return {key: load_network(name, ckpt)[0] for key, name in NETS.items()}


def make_grid(args: argparse.Namespace, runs: dict[str, StudyRun], root: Path, out: Path) -> Path | None:
    from common_utils.evaluation.evaluator import EvalProtocol, enhance
    from data.image_io import list_images, read_image
    from data.paths import resolve_path

    ckpts = {k: runs[k].folder(root) / "checkpoints" / "last.pth" for k in ("stage1", "stage2")}
    if not all(p.is_file() for p in ckpts.values()):
        return None
    nets = {k: load_pair(p) for k, p in ckpts.items()}
    files = []
    for folder in args.grid_folders:
        path = Path(resolve_path(folder))
        if path.is_dir():
            files += list_images(path)[: args.grid_per_folder]
    import cv2

    rows, labels = [], []
    with torch.inference_mode():
        for f in files:
            img = read_image(f)
            h, w = img.shape[:2]
            s = min(1.0, 512 / max(h, w))
            img = cv2.resize(img, (round(w * s) // 8 * 8, round(h * s) // 8 * 8), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
            outs = [enhance(nets[st][k], x, EvalProtocol())[0].permute(1, 2, 0).numpy()
                    for k in ("rtx", "asm") for st in ("stage1", "stage2")]
            rows.append([img, *outs])
            labels.append(f.name)
    grid = image_grid(rows, ["real hazy input", "RtxICE stage 1", "RtxICE stage 2", "ASMICE stage 1",
                             "ASMICE stage 2"], tile_width=240, row_labels=labels)
    path = out / f"grid_real_haze_seed{args.seeds[0]}.jpg"
    save_jpeg(path, grid)
    return path


def _variant_rows(args: argparse.Namespace, records: list[dict[str, Any]]) -> list[list[str]]:
    """Mean ± std over seeds of every stage-2 run (plain and variants), and its change from stage 1."""
    variants = {"stage2": "(config)", **{f"stage2_{name}": " ".join(o) for name, *o in args.variant or []}}
    if len(variants) == 1:
        return []
    rows = []
    for key, overrides in variants.items():
        for net, name in NETS.items():
            cols = {m: [] for m in ("p", "s", "dp", "ds")}
            for rec in records:
                s1, s2 = (rec.get("stage1") or {}).get(net), (rec.get(key) or {}).get(net)
                if not s1 or not s2 or s2.get("psnr") is None:
                    continue
                cols["p"].append(s2["psnr"])
                cols["s"].append(s2["ssim"])
                cols["dp"].append(s2["psnr"] - s1["psnr"])
                cols["ds"].append(s2["ssim"] - s1["ssim"])
            signed = [f"{m:+.{n}f}" + (f" ± {sd:.{n}f}" if sd is not None else "") if m is not None else "–"
                      for (m, sd), n in ((mean_std(cols["dp"]), 2), (mean_std(cols["ds"]), 4))]
            rows.append([key, overrides, name, pm(cols["p"]), pm(cols["s"], 4), *signed])
    return rows


def write_report(args: argparse.Namespace, root: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows, records = [], []
    per_net: dict[str, dict[str, list]] = {k: {"s1p": [], "s1s": [], "s2p": [], "s2s": [], "cp": [], "cs": [],
                                               "dp": [], "ds": [], "dcp": []} for k in NETS}
    inp: dict[str, Any] = {}
    walls = []
    for seed in args.seeds:
        runs = plan(args, seed)
        sc = {k: network_scores(r.summary(root)) if r.summary(root) else None for k, r in runs.items()}
        walls += [w for r in runs.values() if (w := r.wall_seconds(root))]
        records.append({"seed": seed, **{k: v for k, v in sc.items()}})
        for key, name in NETS.items():
            s1 = (sc.get("stage1") or {}).get(key, {})
            s2 = (sc.get("stage2") or {}).get(key, {})
            c = (sc.get("control") or {}).get(key, {})
            inp = inp or (sc.get("stage1") or {}).get("input", {})
            d = lambda a, b: a - b if a is not None and b is not None else None
            f = lambda v, n=2: "–" if v is None else f"{v:.{n}f}"
            g = lambda v, n=2: "–" if v is None else f"{v:+.{n}f}"
            vals = {"s1p": s1.get("psnr"), "s1s": s1.get("ssim"), "s2p": s2.get("psnr"), "s2s": s2.get("ssim"),
                    "cp": c.get("psnr"), "cs": c.get("ssim"), "dp": d(s2.get("psnr"), s1.get("psnr")),
                    "ds": d(s2.get("ssim"), s1.get("ssim")), "dcp": d(s2.get("psnr"), c.get("psnr"))}
            for k2, v in vals.items():
                per_net[key][k2].append(v)
            rows.append([name, seed, f(vals["s1p"]), f(vals["s1s"], 4), f(vals["s2p"]), f(vals["s2s"], 4),
                         g(vals["dp"]), g(vals["ds"], 4), f(vals["cp"]), f(vals["cs"], 4), g(vals["dcp"])])
    for key, name in NETS.items():
        v = per_net[key]

        def sg(xs: list, n: int = 2) -> str:
            m, s = mean_std(xs)
            return "–" if m is None else f"{m:+.{n}f}" + (f" ± {s:.{n}f}" if s is not None else "")

        rows.append([name, "mean ± std", pm(v["s1p"]), pm(v["s1s"], 4), pm(v["s2p"]), pm(v["s2s"], 4), sg(v["dp"]),
                     sg(v["ds"], 4), pm(v["cp"]), pm(v["cs"], 4), sg(v["dcp"])])
    (out / "results.json").write_text(json.dumps(records, indent=2))
    variant_rows = _variant_rows(args, records)
    grid = None
    try:
        grid = make_grid(args, plan(args, args.seeds[0]), root, out)
    except Exception as exc:  # the table stays useful without the grid
        print(f"no image grid: {exc}", file=sys.stderr)
    info = machine_info()
    p, m = args.stage1_iters, args.stage2_iters
    lines = [f"# ICEML on real hazy photographs: stage 1 alone vs after stage 2 ({args.tag})", "",
             f"Generated by `python scripts/iceml_study.py {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}.", "",
             f"- Config `{args.config}` (its comments give the split and every setting); overrides: "
             f"{' '.join(args.set) or 'none'}.",
             f"- Stage 1: {p} iterations on 56 SOTS-indoor pairs (14 scenes). Stage 2: {m} iterations of mutual "
             f"learning on 266 real DAWN fog photographs, resumed exactly from the stage-1 checkpoint. Control: "
             f"stage 1 alone for {p + m} iterations.",
             f"- Scored on the {EVAL_SET} images (rooms 1410-1411 and 1430-1433, 24 hazy images at 4 haze levels, "
             f"620x460, full resolution; PSNR and SSIM on RGB), last checkpoints.",
             f"- Hazy input itself: PSNR {inp.get('psnr') or float('nan'):.2f}, "
             f"SSIM {inp.get('ssim') or float('nan'):.4f}.",
             f"- Machine: {info['cpu_model']}, {info['cpu_cores_usable']} usable cores, torch {info['torch']}, "
             f"{'GPU ' + str(info['gpu']) if info['gpu'] else 'CPU only'}.",
             f"- Wall time: {len(walls)} runs, {sum(walls) / 60:.0f} min in all." if walls
             else "- Wall time: none yet.",
             "", markdown_table(["network", "seed", "stage 1 PSNR", "stage 1 SSIM", "stage 2 PSNR", "stage 2 SSIM",
                                 "Δ PSNR (2 − 1)", "Δ SSIM", f"stage 1 only ({p + m} it) PSNR", "… SSIM",
                                 "Δ PSNR (2 − stage-1-only)"], rows), ""]
    if variant_rows:
        lines += ["## Stage-2 variants (each resumed from the same stage-1 checkpoints)", "",
                  markdown_table(["stage 2", "overrides", "network", "PSNR", "SSIM", "Δ PSNR vs stage 1",
                                  "Δ SSIM vs stage 1"], variant_rows), ""]
    if grid:
        lines += ["## Real hazy photographs (never trained on)", "", f"![grid]({grid.name})", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config", default=CONFIG, help="config of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds")
    ap.add_argument("--stage1-iters", type=int, default=600, help="iterations of stage 1 (P)")
    ap.add_argument("--stage2-iters", type=int, default=200, help="iterations of stage 2 (M)")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the stage-1-only control run (control runs: %(default)s)")
    ap.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                    help="a stage-2 variant: a name and its overrides (repeatable)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run")
    add_output_arguments(ap, STUDY, COMMITTED)
    ap.add_argument("--grid-folders", nargs="*", default=["datasets/RTTS/JPEGImages", "datasets/Fattal"],
                    help="folders of real hazy photographs for the image grid")
    ap.add_argument("--grid-per-folder", type=int, default=3, help="grid images per folder")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from the run folders")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv

    def job() -> None:
        root = runs_folder(args)
        out = report_folder(args, STUDY, COMMITTED)
        root.mkdir(parents=True, exist_ok=True)
        if not args.report_only:
            for seed in args.seeds:
                print(f"seed {seed}", flush=True)
                execute(plan(args, seed), root)
                try:  # a report problem must not stop the runs; --report-only rebuilds it
                    write_report(args, root, out)
                except Exception as exc:
                    print(f"    report not updated: {exc!r}", flush=True)
        print(f"report: {write_report(args, root, out)}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
