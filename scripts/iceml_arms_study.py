"""Does ICEML's stage 2 beat "stage 1 continued"? In-domain arms with ground truth, then real haze.

Issue #22 items 2 and 3. One stage-1 run (supervised, 4 labelled SOTS-indoor rooms plus synthetic
haze with known t and A; ``config/study/sots_iceml_arms.yaml``, split in
``config/study/iceml_split.yaml``), then, per seed, every arm resumes its last checkpoint for the
same number of stage-2 iterations at the same (mutual) learning rate and differs only in its
``iceml.*`` loss weights (:data:`ARMS`). The seeds vary the stage-2 draws (batches, flips, the
supervised batches); stage 1 is shared (the arms start from ONE checkpoint), so the confidence
intervals cover stage-2 randomness only.

Scores: PSNR and SSIM (RGB) of RtxICE-Net and ASMICE-Net on the validation rooms (used to choose
the best arm) and the test rooms (reported), all images at 256 x 256, plus the hazy input and
the framework's dark-channel prior (``models.physics.dcp_dehaze``) on the same images.

Real haze (``--dawn``): the arm with the best mean validation score (ASMICE-Net PSNR) is run
once more from the same stage-1 checkpoint with the DAWN photographs (minus the fixed held-out
fifth, ``dawn_test`` in the split file) as the unlabelled set; it is scored on the SOTS test
rooms (retention) and, on the held-out DAWN photographs, with no-reference statistics
(``scripts/iceml_objective.py``'s image statistics) and an image grid.

    python scripts/link_datasets.py
    python scripts/iceml_arms_study.py                 # stage 1, the arms, 3 seeds (~2 h on a busy 2-core CPU)
    python scripts/iceml_arms_study.py --dawn          # + the real-haze run of the best arm
    python scripts/iceml_arms_study.py --report-only --dawn

Run folders: ``experiments/iceml_arms/``; report: ``experiments/iceml_arms/report_<tag>/``, or with
``--publish`` the committed ``docs/studies/iceml_arms_<tag>/``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from common_utils.benchmarking import machine_info, markdown_table  # noqa: E402
from common_utils.cli import HelpFormatter, run_cli  # noqa: E402
from common_utils.study import (  # noqa: E402
    StudyRun,
    add_output_arguments,
    report_folder,
    run_training,
    runs_folder,
)

#: the run folders go to experiments/<STUDY>/; the committed report is docs/studies/<COMMITTED>_<tag>/ (--publish)
STUDY, COMMITTED = "iceml_arms", "iceml_arms"

CONFIG = "config/study/sots_iceml_arms.yaml"
SPLIT = REPO / "config" / "study" / "iceml_split.yaml"
NETS = {"rtx": "RtxICE-Net", "asm": "ASMICE-Net"}
TEST, VAL = "SOTS-indoor-test", "SOTS-indoor-val"
SIDE = 256
DAWN_SIDE = 512  # NIQE needs whole 96-px blocks: at 256 px only 4 of them

#: the DCP prior weights of the reconstruction, chosen by the objective check (scripts/iceml_objective.py)
DCP = ("iceml.w_dcp_t=0.5", "iceml.w_dcp_a=0.5")
STAGE2_OFF = ("iceml.w_inverse=0", "iceml.w_chroma=0", "iceml.w_saturation=0")
#: arm -> (description, iceml overrides); every arm has the same iterations, lr and data
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "continued": ("stage 1 continued (supervised batch only)", (*STAGE2_OFF, "iceml.w_supervised=1")),
    "today": ("stage 2 as configured before this study (inverse + chroma + saturation, no DCP, no labels)", ()),
    "dcp": ("reconstruction: + DCP priors on t and a", DCP),
    "dcp_sup": ("reconstruction: + DCP priors + a supervised batch", (*DCP, "iceml.w_supervised=1")),
    "sup": ("reconstruction without DCP: + a supervised batch", ("iceml.w_supervised=1",)),
}


def split() -> dict[str, Any]:
    return yaml.safe_load(SPLIT.read_text())


def stage1_run(args: argparse.Namespace) -> StudyRun:
    p = args.stage1_iters
    return StudyRun(args.config, f"{args.tag}_stage1", (f"iceml.pretrain_iters={p}", f"train.iters={p}",
                                                        f"train.val_every={p}", *args.set))


def arm_run(args: argparse.Namespace, arm: str, seed: int, extra: tuple[str, ...] = (), name: str | None = None
            ) -> StudyRun:
    p, m = args.stage1_iters, args.stage2_iters
    return StudyRun(args.config, name or f"{args.tag}_{arm}_s{seed}",
                    (f"seed={seed}", f"iceml.pretrain_iters={p}", f"train.iters={p + m}", f"train.val_every={p + m}",
                     *ARMS[arm][1], *args.set, *extra))


def dawn_overrides() -> tuple[str, ...]:
    held = split()["dawn_test"]
    return ("data.unpaired.args.root=datasets/DAWN/Fog", "data.unpaired.args.include=null",
            f"data.unpaired.args.exclude=[{','.join(held)}]")


def execute(run: StudyRun, root: Path, start_from: StudyRun | None = None) -> None:
    if run.summary(root) is not None:
        return
    if start_from is not None:  # resumes its own last.pth once it has one, else branches from stage 1
        run = replace(run, start_from=start_from.folder(root) / "checkpoints" / "last.pth")
    print(f"  {run.name}", flush=True)
    print(f"    done in {run_training(run, root) / 60:.1f} min", flush=True)


def scores(run: StudyRun, root: Path) -> dict[str, Any] | None:
    s = run.summary(root)
    if s is None:
        return None
    out = {}
    for ds in (TEST, VAL):
        e = s.get(ds) or {}
        out[ds] = {k: {"psnr": (e.get(k) or {}).get("psnr"), "ssim": (e.get(k) or {}).get("ssim")}
                   for k in (*NETS, "input")}
    return out


# ------------------------------------------------------------------ reference rows (input, DCP)
def dcp_rows(cache: Path) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of the hazy input and of the dark-channel prior on the test and validation rooms."""
    if cache.is_file():
        return json.loads(cache.read_text())
    import torch

    from common_utils.metrics import psnr, ssim_rgb
    from data import build_dataset
    from models.physics import dcp_dehaze

    sp, out = split(), {}
    for ds, rooms in ((TEST, sp["test"]), (VAL, sp["validation"])):
        data = build_dataset("paired_folder", lq_dir="datasets/SOTS/indoor/hazy", gt_dir="datasets/SOTS/indoor/gt",
                             pairing="prefix", include=rooms, resize=SIDE)
        rows = {"input": [], "dcp": []}
        for i in range(len(data)):
            item = data[i]
            x, y = item["lq"][None], item["gt"][None]
            with torch.no_grad():
                j = dcp_dehaze(x, **DCP_ARGS)
            for k, img in (("input", x), ("dcp", j)):
                rows[k].append((float(psnr(img, y)), float(ssim_rgb(img, y))))
        out[ds] = {k: {"psnr": statistics.fmean(a for a, _ in v), "ssim": statistics.fmean(b for _, b in v)}
                   for k, v in rows.items()}
    cache.write_text(json.dumps(out, indent=2))
    return out


#: the DCP baseline at 256 px: the 15 px window and 30 px guided-filter radius of ~600 px images, scaled
DCP_ARGS = {"patch": 7, "radius": 13, "eps": 1e-3}


# ------------------------------------------------------------------ statistics
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def diff_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its two-sided 95 % t interval (None for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def fmt_ci(values: list[float], n: int = 2) -> str:
    if not values:
        return "–"
    m, h = diff_ci(values)
    return f"{m:+.{n}f}" + (f" ± {h:.{n}f}" if h is not None else "")


# ------------------------------------------------------------------ report
def write_report(args: argparse.Namespace, root: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    s1 = scores(stage1_run(args), root)
    ref = dcp_rows(out / "reference_rows.json")
    per: dict[str, dict[int, Any]] = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for seed in args.seeds:
            sc = scores(arm_run(args, arm, seed), root)
            if sc:
                per[arm][seed] = sc
    record = {"stage1": s1, "arms": per, "reference": ref, "split": split(),
              "stage1_iters": args.stage1_iters, "stage2_iters": args.stage2_iters}
    lines = [f"# ICEML stage 2 vs stage 1 continued, in-domain with ground truth ({args.tag})", "",
             f"Generated by `python scripts/iceml_arms_study.py {' '.join(args.argv)}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    sp = split()
    info = machine_info()
    walls = [w for r in [stage1_run(args), *(arm_run(args, a, s) for a in ARMS for s in args.seeds)]
             if (w := r.wall_seconds(root))]
    lines += [f"- Config `{args.config}`, split `config/study/iceml_split.yaml` (fixed before any run): "
              f"labelled rooms {sp['labelled']}, unlabelled {sp['unlabelled']} (hazy images only), "
              f"validation {sp['validation']}, test {sp['test']}.",
              f"- Stage 1: {args.stage1_iters} iterations, one run (seed 0). Each arm: the same checkpoint "
              f"resumed for {args.stage2_iters} stage-2 iterations at the mutual lr, seeds {args.seeds}.",
              f"- Every image at {SIDE} x {SIDE}; PSNR and SSIM on RGB; last checkpoints; the best arm is chosen "
              "by the validation rooms only.",
              f"- Machine: {info['cpu_model']}, {info['cpu_cores_usable']} usable cores, torch {info['torch']}, "
              f"CPU only, busy with two other training jobs; wall time {sum(walls) / 60:.0f} min "
              f"over {len(walls)} runs.", ""]
    for ds in (TEST, VAL):
        rows = [["hazy input", "–", *_pair(ref[ds]["input"]), "", ""],
                ["dark-channel prior (models/physics.py dcp_dehaze)", "–", *_pair(ref[ds]["dcp"]), "", ""]]
        if s1:
            rows.append(["stage 1 (start of every arm)", "–", *_pair(s1[ds]["rtx"]), *_pair(s1[ds]["asm"])])
        for arm, (desc, _) in ARMS.items():
            for seed, sc in sorted(per[arm].items()):
                rows.append([f"{arm}: {desc}", seed, *_pair(sc[ds]["rtx"]), *_pair(sc[ds]["asm"])])
        lines += [f"## {ds} (mean over its images)", "",
                  markdown_table(["method / arm", "seed", "RtxICE PSNR", "RtxICE SSIM", "ASMICE PSNR", "ASMICE SSIM"],
                                 rows), ""]
    # paired differences arm - continued, per seed, with 95 % t intervals
    for ds in (TEST, VAL):
        rows = []
        for arm in ARMS:
            if arm == "continued":
                continue
            cells = [arm]
            for net in NETS:
                for metric, n in (("psnr", 2), ("ssim", 4)):
                    d = [per[arm][s][ds][net][metric] - per["continued"][s][ds][net][metric]
                         for s in args.seeds if s in per[arm] and s in per["continued"]]
                    cells.append(" / ".join(f"{v:+.{n}f}" for v in d) + f" (mean {fmt_ci(d, n)})" if d else "–")
            rows.append(cells)
        lines += [f"### {ds}: arm minus stage 1 continued, per seed (mean ± 95 % t half-width)", "",
                  markdown_table(["arm", "RtxICE Δ PSNR", "RtxICE Δ SSIM", "ASMICE Δ PSNR", "ASMICE Δ SSIM"], rows),
                  ""]
    best = best_arm(per, args.seeds)
    record["best_arm_by_validation"] = best
    lines += [f"Best arm by mean validation ASMICE-Net PSNR: **{best}**.", ""]
    if args.dawn:
        lines += dawn_section(args, root, out, record)
    (out / "results.json").write_text(json.dumps(record, indent=2))
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def _pair(m: dict[str, float | None]) -> list[str]:
    p, s = m.get("psnr"), m.get("ssim")
    return ["–" if p is None else f"{p:.2f}", "–" if s is None else f"{s:.4f}"]


def best_arm(per: dict[str, dict[int, Any]], seeds: list[int]) -> str | None:
    means = {arm: statistics.fmean(v[s][VAL]["asm"]["psnr"] for s in seeds if s in v)
             for arm, v in per.items() if any(s in v for s in seeds)}
    return max(means, key=means.get) if means else None


def dawn_run(args: argparse.Namespace, arm: str) -> StudyRun:
    return arm_run(args, arm, 0, dawn_overrides(), name=f"{args.tag}_dawn_{arm}_s0")


def dawn_section(args: argparse.Namespace, root: Path, out: Path, record: dict[str, Any]) -> list[str]:
    arm = record["best_arm_by_validation"]
    if arm is None:
        return []
    run = dawn_run(args, arm)
    sc = scores(run, root)
    if sc is None:
        return [f"## Real haze (DAWN): run `{run.name}` not finished", ""]
    from scripts.iceml_objective import dawn_statistics, real_haze_grid

    ckpts = {"stage 1": stage1_run(args).folder(root) / "checkpoints" / "last.pth",
             f"stage 2 ({arm})": run.folder(root) / "checkpoints" / "last.pth"}
    held = split()["dawn_test"]
    by_stem = {f.stem: f for f in (REPO / "datasets" / "DAWN" / "Fog").iterdir()}
    files = [str(by_stem[n]) for n in held]
    stats = dawn_statistics(ckpts, files, DAWN_SIDE)
    record["dawn"] = {"arm": arm, "sots_test": sc[TEST], "statistics": stats}
    s1 = record["stage1"][TEST] if record["stage1"] else None
    rows = []
    for net in NETS:
        rows.append([NETS[net], *(_pair(s1[net]) if s1 else ["–", "–"]), *_pair(sc[TEST][net])])
    picks = files[:: max(1, len(files) // 6)][:6]
    names = [Path(f).name for f in picks]
    grid = real_haze_grid(ckpts, picks, out / "grid_dawn_heldout.jpg")
    lines = [f"## Real haze: arm `{arm}` with DAWN as the unlabelled set", "",
             f"Run `{run.name}`: the stage-1 checkpoint resumed for {args.stage2_iters} iterations with the "
             f"{266 - len(held)} DAWN photographs not held out (whole images at {SIDE} x {SIDE}).", "",
             "SOTS-indoor test rooms (retention):", "",
             markdown_table(["network", "stage 1 PSNR", "stage 1 SSIM", "after DAWN stage 2 PSNR", "… SSIM"], rows), "",
             f"No-reference scores on the {len(held)} held-out DAWN photographs (long side {DAWN_SIDE} px, aspect "
             "kept; NIQE from common_utils/no_reference.py, lower is better; the others are plain statistics):", "",
             markdown_table(["output", "NIQE", "mean brightness (0-1)", "RMS contrast", "mean saturation",
                             "mean dark channel (haze proxy)", "stage-2 objective (reconstruction)"],
                            [[k, "–" if v.get("niqe") is None else f"{v['niqe']:.2f}",
                              f"{v['brightness']:.3f}", f"{v['contrast']:.3f}", f"{v['saturation']:.3f}",
                              f"{v['dark_channel']:.3f}",
                              "–" if v.get("objective") is None else f"{v['objective']:.4f}"]
                             for k, v in stats.items()]), ""]
    if grid:
        lines += [f"![DAWN held-out photographs]({grid.name})", "",
                  "Rows (held-out DAWN photographs, never trained on): " + ", ".join(names) + ".", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config", default=CONFIG, help="config of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="stage-2 seeds (stage 1 is shared)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM",
                    help=f"stage-2 arms to run ({', '.join(ARMS)})")
    ap.add_argument("--stage1-iters", type=int, default=500, help="iterations of the shared stage-1 run")
    ap.add_argument("--stage2-iters", type=int, default=60, help="stage-2 iterations of every arm")
    ap.add_argument("--stage1-only", action="store_true", help="train the stage-1 run and stop")
    ap.add_argument("--dawn", action="store_true", help="also the real-haze run of the best arm")
    ap.add_argument("--dawn-arm", default=None, help="run this arm on DAWN instead of the best by validation")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run")
    add_output_arguments(ap, STUDY, COMMITTED)
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from the run folders")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv

    def job() -> None:
        root = runs_folder(args)
        out = report_folder(args, STUDY, COMMITTED)
        root.mkdir(parents=True, exist_ok=True)
        if not args.report_only:
            s1 = stage1_run(args)
            execute(s1, root)
            if args.stage1_only:
                return
            for seed in args.seeds:
                print(f"seed {seed}", flush=True)
                for arm in args.arms:
                    execute(arm_run(args, arm, seed), root, start_from=s1)
                if seed == args.seeds[0] and args.dawn and args.dawn_arm:
                    execute(dawn_run(args, args.dawn_arm), root, start_from=s1)
            if args.dawn and not args.dawn_arm:
                per = {arm: {s: sc for s in args.seeds if (sc := scores(arm_run(args, arm, s), root))}
                       for arm in ARMS}
                execute(dawn_run(args, best_arm(per, args.seeds)), root, start_from=s1)
        print(f"report: {write_report(args, root, out)}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
