"""The SSLL study with a scene split, a gate and paired seeds (CIDNet on real LOL-v1 photographs).

    python scripts/link_datasets.py
    python scripts/ssll_scene_study.py gate               # baseline at N labels vs the oracle, seed 0
    python scripts/ssll_scene_study.py study              # baseline and SSLL, seeds 0-4, then the ablations
    python scripts/ssll_scene_study.py study --arms ssll --seeds 1   # one slice (e.g. one job per core)
    python scripts/ssll_scene_study.py report             # rebuild the report from the run folders

Design (fixed before any run; see docs/studies/ssll_scenes_cpu/README.md):

- split: ``data/splits/lol_v1_train_scenes.yaml`` (61 scenes: 30 test, 5 validation, 8 labelled
  candidates, 18 pool); N labelled pairs are the first N candidates, one per scene;
- gate: the N-label baseline and the oracle (the same runs with the pool's ground truth) trained
  until they level off on the validation scenes; the study goes on only when the oracle's best
  validation PSNR beats the baseline's by at least 1 dB and the baseline gained less than 0.1 dB
  over its last quarter;
- arms (each seed resumes its baseline's checkpoint at iteration 500, the paper's semi_start - 1,
  so the supervised stage is shared exactly): ``ssll``; ``ssll_no_paired_pico`` (lambda_p = 0);
  ``paired_pico_only`` (unpaired terms weighted 0); ``ssll_sice`` (pool + the SICE dark frames of the pool scenes of
  ``data/splits/sice_dark_scenes.yaml``; its 40 held-out scenes are scored with NIQE);
  ``ssll_transductive`` (pool + the test inputs, as the paper does with SID);
- scoring: the last checkpoint, teacher and student, on the 30 test scenes (57 images) and eval15
  (15 images) at full resolution, PSNR-RGB / SSIM-Y / LPIPS-alex; differences paired by seed with a
  95 % t interval.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common_utils.cli import run_cli
from common_utils.study import StudyRun, run_training
from data.paths import REPO_ROOT
from data.splits import split_ids

SPLIT = "data/splits/lol_v1_train_scenes.yaml"
SUP, ORACLE, SSLL = "config/study/lol_scenes_sup.yaml", "config/study/lol_scenes_oracle.yaml", \
    "config/study/lol_scenes_ssll.yaml"
SEMI_START_ITER = 500
TEST_SETS = ("LOL-v1-test-scenes", "LOL-v1")  # 57 + 15 images
POOL = "datasets/LOL/our485/low"
ARMS: dict[str, tuple[str, ...]] = {
    "ssll": (),
    "ssll_no_paired_pico": ("ssll.lambda_p=0",),
    "paired_pico_only": ("ssll.semi_weight=0",),
    "ssll_sice": ("data.unpaired.args.extra_roots=[{root: datasets/SICE_dark, split_file: "
                  "data/splits/sice_dark_scenes.yaml, split_subset: pool}]",),
    "ssll_transductive": ("data.unpaired.args.split_subset=[pool,test]",
                          "data.unpaired.args.extra_roots=[datasets/LOL/eval15/low]"),
}
ABLATIONS = ("ssll_no_paired_pico", "paired_pico_only", "ssll_sice", "ssll_transductive")
#: re-choosing the shipped low-light weights by validation score (config/study/lol_ship_cidnet.yaml): each
#: candidate recipe on the 100 training pairs outside the validation scenes; the rule is written there
SHIP = "config/study/lol_ship_cidnet.yaml"
SHIP_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ssim_l1": (),  # the recipe of the file shipped so far (config/study/lol_cidnet_sup.yaml)
    "ssim_lpips": ("losses=[{name: ssim, weight: 1.0}, {name: lpips, weight: 1.0}]",),  # the paper's loss
}
SHIP_TIE_DB = 0.05


def ship_run(candidate: str, seed: int = 0) -> StudyRun:
    """The training of one shipped-weights candidate recipe."""
    return StudyRun(SHIP, f"ship_{candidate}_s{seed}", (f"seed={seed}", *SHIP_CANDIDATES[candidate]))


def run_of(arm: str, n: int, seed: int, root: Path) -> StudyRun:
    """The run of one arm, label budget and seed."""
    name = f"n{n}_{arm}_s{seed}"
    take = f"data.paired.args.split_take={n}"
    if arm == "baseline":
        return StudyRun(SUP, name, (f"seed={seed}", take, "train.keep_last=8"))
    if arm == "oracle":
        pool = len(split_ids(REPO_ROOT / SPLIT, "pool"))
        return StudyRun(ORACLE, name, (f"seed={seed}", f"data.paired.args.split_take={pool + n}"))
    base = root / f"n{n}_baseline_s{seed}" / "checkpoints"
    start = next((p for p in (base / f"at_iter_{SEMI_START_ITER}.pth", base / f"iter_{SEMI_START_ITER:08d}.pth")
                  if p.is_file()), base / f"iter_{SEMI_START_ITER:08d}.pth")
    return StudyRun(SSLL, name, (f"seed={seed}", take, *ARMS[arm]), start_from=start)


# ---------------------------------------------------------------------------------------- reading


# ------------------------------------------------------------------- run records that outlive their folders
# A finished run's summary, curves, config, wall time and extra scores are copied into the report's
# runs/<name>/ (committed); the report reads a run from its folder, else from that copy, so a run
# finished in an earlier session (whose folder is gone) stays in the tables.
RECORD_FILES = {"summary.json": "results/summary.json", "scalars.jsonl": "logs/scalars.jsonl",
                "config.yaml": "config.yaml", "wall.json": "wall.json",
                "extra_scores.json": "results/extra_scores.json"}


def record(name: str, root: Path, out: Path, file: str) -> Path | None:
    """A run's record file: from its run folder if that run finished there, else from the report's copy
    (a folder retrained only up to a checkpoint another run needs holds partial curves and wall time)."""
    finished = (root / name / RECORD_FILES["summary.json"]).is_file()
    for path in ((root / name / RECORD_FILES[file]) if finished else None, out / "runs" / name / file):
        if path is not None and path.is_file():
            return path
    return None


def read_record(name: str, root: Path, out: Path, file: str) -> Any:
    path = record(name, root, out, file)
    return json.loads(path.read_text()) if path is not None else None


def archive_run(name: str, root: Path, out: Path) -> None:
    """Copy a finished run's record files into ``out/runs/<name>/`` (nothing from a folder whose run did not
    finish there: a baseline retrained only up to its arm's start must not overwrite its full record)."""
    dst = out / "runs" / name
    if not (root / name / RECORD_FILES["summary.json"]).is_file():
        return
    for file, rel in RECORD_FILES.items():
        src = root / name / rel
        if src.is_file():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst / file)


#: sets scored after training besides the test sets: no reference (NIQE) and, where on disk, other cameras
#: (CrossDomain-samples: 3 real pairs from public repositories, data/cross_domain_samples.yaml; too few to
#: read as a result, scored so the pipeline is in place for a larger set)
NO_REFERENCE_SETS = ("DICM", "LIME", "NPE", "SICE-dark-heldout")
EXTRA_SETS = (*NO_REFERENCE_SETS, "CrossDomain-samples")


def score_extra(run: StudyRun, root: Path, sets: tuple[str, ...] = EXTRA_SETS, who: str = "teacher") -> Path | None:
    """Score a finished run's last checkpoint (``who``) on those of ``sets`` it has no score for yet, with
    the evaluation CLI; the scores are merged into ``results/extra_scores.json`` of the run folder (so a set
    added later is scored without redoing the others). None when there is no score and no checkpoint."""
    folder = run.folder(root)
    last = folder / "checkpoints" / "last.pth"
    dst = folder / "results" / "extra_scores.json"
    done = json.loads(dst.read_text()) if dst.is_file() else {"network": who}
    missing = [k for k in sets if k not in done]
    if not missing or not last.is_file():
        return dst if dst.is_file() else None
    out = folder / "results" / f"extra_eval_{who}_{len(done) - 1}"
    cmd = [sys.executable, str(REPO_ROOT / "common_utils" / "evaluation" / "eval.py"), "-n", "CIDNet", "-w", str(last),
           "--ema" if who == "teacher" else "--student", "-d", ",".join(missing), "-o", str(out), "--threads", "1",
           "--workers", "0", "--no-ms-ssim"]
    with open(folder.with_suffix(".extra.out"), "a") as log:
        code = subprocess.call(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0 or not (out / "summary.json").is_file():
        raise RuntimeError(f"scoring {run.name} on {', '.join(missing)} failed (exit {code}); see {log.name}")
    summary = json.loads((out / "summary.json").read_text())
    dst.write_text(json.dumps({**done, **{k: v for k, v in summary.items() if k in missing}}, indent=1))
    return dst


def val_curve(folder: Path, who: str = "teacher") -> list[tuple[int, float]]:
    """(iteration, validation PSNR) of a run's network ``who``; ``folder`` is a run folder or a record copy."""
    path = folder / "logs" / "scalars.jsonl"
    path = path if path.is_file() else folder / "scalars.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        if f"val/{who}/psnr" in row:
            out.append((int(row["step"]), float(row[f"val/{who}/psnr"])))
    return out


def test_scores(summary: dict[str, Any] | None, who: str) -> dict[str, float] | None:
    """Image-weighted PSNR/SSIM/LPIPS of ``who`` (teacher, student, input) over the test sets."""
    if not summary:
        return None
    tot: dict[str, float] = {}
    n = 0
    for key in TEST_SETS:
        entry = summary.get(key) or {}
        sub = entry.get(who) if who in entry else (entry if entry.get("network") == who else None)
        if not sub or "images" not in entry:
            return None
        k = entry["images"]
        for m in ("psnr", "ssim", "lpips"):
            if sub.get(m) is not None:
                tot[m] = tot.get(m, 0.0) + k * sub[m]
        n += k
    return {m: v / n for m, v in tot.items()} | {"images": n}


def t95(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and the 95 % t interval of ``values``."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    m, s = statistics.fmean(values), statistics.stdev(values)
    h = t.ppf(0.975, len(values) - 1) * s / math.sqrt(len(values))
    return m, m - h, m + h


def last_validation(folder: Path, who: str) -> dict[str, float] | None:
    """PSNR/SSIM/LPIPS of ``who`` at a run's last validation (``folder``: a run folder or a record copy)."""
    path = folder / "logs" / "scalars.jsonl"
    path = path if path.is_file() else folder / "scalars.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if f"val/{who}/psnr" in r]
    if not rows:
        return None
    last = rows[-1]
    return {"step": int(last["step"]), **{m: float(last[f"val/{who}/{m}"]) for m in ("psnr", "ssim", "lpips")
                                          if f"val/{who}/{m}" in last}}


def choose_shipped(root: Path, out: Path) -> dict[str, Any]:
    """Apply the rule of config/study/lol_ship_cidnet.yaml to the finished candidates; write ship.json and ship.md.

    Every (recipe, network) at the last checkpoint is a candidate; the highest validation PSNR wins, and a
    candidate within SHIP_TIE_DB of it with a lower validation LPIPS wins over it. eval15 is only reported.
    """
    rows = []
    for cand in SHIP_CANDIDATES:
        run = ship_run(cand)
        path = record(run.name, root, out, "scalars.jsonl")
        summary = read_record(run.name, root, out, "summary.json")
        for who in ("teacher", "student"):
            val = last_validation(path.parent, who) if path is not None else None
            test = ((summary or {}).get("LOL-v1") or {}).get(who)
            rows.append({"recipe": cand, "network": who, "run": run.name, "val": val, "eval15": test})
    done = [r for r in rows if r["val"] is not None and r["eval15"] is not None]
    choice = None
    if len(done) == len(rows):
        best = max(done, key=lambda r: r["val"]["psnr"])
        near = [r for r in done if best["val"]["psnr"] - r["val"]["psnr"] <= SHIP_TIE_DB]
        choice = min(near, key=lambda r: r["val"].get("lpips", math.inf))
    result = {"rule": f"highest validation PSNR (13 images, 5 scenes), ties within {SHIP_TIE_DB} dB: lower LPIPS",
              "candidates": rows, "choice": None if choice is None else {k: choice[k] for k in ("recipe", "network")}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ship.json").write_text(json.dumps(result, indent=1))
    lines = ["# Shipped low-light weights, re-chosen by validation score", "",
             "Rebuilt by `python scripts/ssll_scene_study.py ship`; the rule and the candidates are in "
             "`config/study/lol_ship_cidnet.yaml` (fixed before the runs). Each candidate trained on the 100 "
             "LOL-v1 training pairs outside the 5 validation scenes; last checkpoint; eval15 (15 test pairs) is "
             "shown but plays no part in the choice.", "",
             "| recipe | network | val PSNR | val SSIM | val LPIPS | eval15 PSNR | eval15 SSIM | eval15 LPIPS | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, t = r["val"] or {}, r["eval15"] or {}
        mark = "**chosen**" if choice is not None and r is choice else ""
        lines.append(f"| {r['recipe']} | {r['network']} | {fmt(v.get('psnr'))} | {fmt(v.get('ssim'), 4)} | "
                     f"{fmt(v.get('lpips'), 4)} | {fmt(t.get('psnr'))} | {fmt(t.get('ssim'), 4)} | "
                     f"{fmt(t.get('lpips'), 4)} | {mark} |")
    lines += ["", f"Rule: {result['rule']}." if choice is not None else
              "Not all candidates have finished: no choice yet."]
    (out / "ship.md").write_text("\n".join(lines) + "\n")
    return result


# ---------------------------------------------------------------------------------------- report


def gate_verdict(root: Path, n: int, report: Path | None = None) -> dict[str, Any]:
    """The gate's numbers from the seed-0 baseline and oracle validation curves (teacher)."""
    out: dict[str, Any] = {}
    for arm in ("baseline", "oracle"):
        name = f"n{n}_{arm}_s0"
        path = record(name, root, report, "scalars.jsonl") if report is not None else None
        curve = val_curve(path.parent if path is not None else root / name)
        if not curve:
            continue
        last_q = [p for i, p in curve if i >= 0.75 * curve[-1][0]]
        before = [p for i, p in curve if i < 0.75 * curve[-1][0]]
        out[arm] = {"best": max(p for _, p in curve), "final": curve[-1][1], "iters": curve[-1][0],
                    "gain_last_quarter": (max(last_q) - max(before)) if before and last_q else None,
                    "curve": curve}
    if "baseline" in out and "oracle" in out:
        gap = out["oracle"]["best"] - out["baseline"]["best"]
        flat = out["baseline"]["gain_last_quarter"] is not None and out["baseline"]["gain_last_quarter"] < 0.1
        out["gap_db"] = gap
        out["passes"] = bool(gap >= 1.0 and flat)
    return out


def plot_gate(gate: dict[str, Any], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not any(arm in gate for arm in ("baseline", "oracle")):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, style in (("baseline", "-o"), ("oracle", "-s")):
        if arm in gate:
            xs, ys = zip(*gate[arm]["curve"])
            ax.plot(xs, ys, style, ms=3, label=f"{arm} (best {gate[arm]['best']:.2f} dB)")
    ax.axvline(SEMI_START_ITER, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR, teacher (dB)")
    ax.set_title("Gate: validation scenes (13 images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "gate_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def extra_scores(summary: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    """{set: {niqe | psnr/ssim/lpips, input_niqe, images}} of a run's extra scoring."""
    if not summary:
        return None
    out = {}
    for key, entry in summary.items():
        if key.startswith("_") or not isinstance(entry, dict) or "images" not in entry:
            continue
        row = {m: entry[m] for m in ("psnr", "ssim", "lpips", "niqe") if entry.get(m) is not None}
        row["images"] = entry["images"]
        if isinstance(entry.get("input"), dict) and entry["input"].get("niqe") is not None:
            row["input_niqe"] = entry["input"]["niqe"]
        out[key] = row
    return out


def extra_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: NIQE on the no-reference sets (teacher), image-weighted, per arm and seed."""
    scored = [r for r in rows if r.get("extra")]
    if not scored:
        return []
    sets = [k for k in NO_REFERENCE_SETS if any(k in r["extra"] for r in scored)]
    lines = ["", "## No-reference sets (teacher, last checkpoint; NIQE, lower is better)", "",
             "| arm | seed | " + " | ".join(f"{k} NIQE" for k in sets) + " | all (image-weighted) |",
             "|---|---|" + "---|" * (len(sets) + 1)]

    def weighted(extra: dict[str, dict[str, float]], key: str = "niqe") -> float | None:
        pairs = [(e["images"], e[key]) for k, e in extra.items() if k in sets and e.get(key) is not None]
        return sum(k * v for k, v in pairs) / sum(k for k, _ in pairs) if pairs else None

    first = scored[0]["extra"]
    lines.append("| input | – | " + " | ".join(fmt(first.get(k, {}).get("input_niqe"), 3) for k in sets)
                 + f" | {fmt(weighted(first, 'input_niqe'), 3)} |")
    for r in scored:
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(fmt(r["extra"].get(k, {}).get("niqe"), 3)
                                                              for k in sets) + f" | {fmt(weighted(r['extra']), 3)} |")
    paired = [k for k in sorted({k for r in scored for k in r["extra"]})
              if any(r["extra"].get(k, {}).get("psnr") is not None for r in scored)]
    for key in paired:
        n = next(r["extra"][key]["images"] for r in scored if key in r["extra"])
        lines += ["", f"## {key} ({n} images from other cameras/sources; teacher, last checkpoint)", "",
                  "| arm | seed | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|"]
        for r in scored:
            e = r["extra"].get(key)
            if e and e.get("psnr") is not None:
                lines.append(f"| {r['arm']} | {r['seed']} | {fmt(e['psnr'])} | {fmt(e.get('ssim'), 4)} | "
                             f"{fmt(e.get('lpips'), 4)} |")
    return lines


def fmt(v: float | None, d: int = 2) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def write_report(root: Path, out: Path, n: int, seeds: list[int]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    gate = gate_verdict(root, n, out)
    plot = plot_gate(gate, out)
    rows = []
    for arm in ("baseline", "oracle", *ARMS):
        for seed in seeds:
            run = run_of(arm, n, seed, root)
            s = read_record(run.name, root, out, "summary.json")
            if s is None:
                continue
            archive_run(run.name, root, out)
            wall = read_record(run.name, root, out, "wall.json") or {}
            rows.append({"arm": arm, "seed": seed, "teacher": test_scores(s, "teacher"),
                         "student": test_scores(s, "student"), "input": test_scores(s, "input"),
                         "extra": extra_scores(read_record(run.name, root, out, "extra_scores.json")),
                         "wall_min": wall.get("seconds", 0) / 60})
    (out / "results.json").write_text(json.dumps({"gate": {k: v for k, v in gate.items()}, "rows": rows}, indent=1))
    lines = ["# SSLL study with a scene split and a gate (CIDNet, real LOL-v1 photographs, CPU)", "",
             "Rebuilt by `python scripts/ssll_scene_study.py report` from the run folders; the design, the",
             "pre-registered reading and the status are in the hand-written part below the tables.", "",
             f"## Gate (N = {n} labelled pairs, seed 0, validation scenes only)", ""]
    if gate:
        lines += ["| run | best val PSNR (teacher) | final | gain over the last quarter | iterations |",
                  "|---|---|---|---|---|"]
        for arm in ("baseline", "oracle"):
            if arm in gate:
                g = gate[arm]
                lines.append(f"| {arm} | {g['best']:.2f} | {g['final']:.2f} | "
                             f"{fmt(g['gain_last_quarter'])} dB | {g['iters']} |")
        if "gap_db" in gate:
            lines += ["", f"Oracle − baseline (best validation PSNR): **{gate['gap_db']:+.2f} dB**; gate "
                      f"{'passes' if gate['passes'] else 'does not pass'} (needs ≥ 1 dB and a baseline gain "
                      f"< 0.1 dB over its last quarter)."]
        if plot:
            lines += ["", f"![gate curves]({plot.name})"]
    lines += ["", "## Test scenes + eval15 (72 images), last checkpoint", ""]
    lines += ["| arm | seed | teacher PSNR / SSIM / LPIPS | student PSNR / SSIM / LPIPS | wall (min) |",
              "|---|---|---|---|---|"]
    for r in rows:
        t, s = r["teacher"] or {}, r["student"] or {}
        lines.append(f"| {r['arm']} | {r['seed']} | {fmt(t.get('psnr'))} / {fmt(t.get('ssim'), 4)} / "
                     f"{fmt(t.get('lpips'), 4)} | {fmt(s.get('psnr'))} / {fmt(s.get('ssim'), 4)} / "
                     f"{fmt(s.get('lpips'), 4)} | {r['wall_min']:.0f} |")
    base = {r["seed"]: r for r in rows if r["arm"] == "baseline"}
    lines += ["", "## Differences from the baseline, paired by seed (teacher, test scenes + eval15)", "",
              "| arm | seeds | Δ PSNR per seed | mean Δ PSNR [95 % CI] | mean Δ LPIPS [95 % CI] |",
              "|---|---|---|---|---|"]
    for arm in ARMS:
        pairs = [(r, base[r["seed"]]) for r in rows if r["arm"] == arm and r["seed"] in base
                 and r["teacher"] and base[r["seed"]]["teacher"]]
        if not pairs:
            continue
        dp = [a["teacher"]["psnr"] - b["teacher"]["psnr"] for a, b in pairs]
        dl = [a["teacher"]["lpips"] - b["teacher"]["lpips"] for a, b in pairs
              if a["teacher"].get("lpips") is not None and b["teacher"].get("lpips") is not None]
        ci_p, ci_l = t95(dp), t95(dl)
        cell = lambda ci, d: "n < 2" if ci is None else f"{ci[0]:+.{d}f} [{ci[1]:+.{d}f}, {ci[2]:+.{d}f}]"
        lines.append(f"| {arm} | {len(pairs)} | {', '.join(f'{v:+.2f}' for v in dp)} | {cell(ci_p, 2)} | "
                     f"{cell(ci_l, 4)} |")
    lines += extra_table(rows)
    notes = out / "NOTES.md"
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=("gate", "study", "score", "report", "ship"),
                   help="gate: baseline vs oracle; study: the arms; score: the extra (no-reference) sets of every "
                        "finished run; report: rebuild the report; ship: the shipped-weights candidates and the "
                        "choice among them by validation score")
    p.add_argument("--candidates", nargs="+", choices=tuple(SHIP_CANDIDATES), default=list(SHIP_CANDIDATES),
                   help="ship: the candidate recipes to train (the choice is made once all have finished)")
    p.add_argument("--n", type=int, default=4, help="labelled pairs (one per scene)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--arms", nargs="+", default=None,
                   help=f"arms to run (default: baseline, ssll on every seed, then the ablations {ABLATIONS} "
                        "on the first 3 seeds)")
    p.add_argument("--runs", type=Path, default=REPO_ROOT / "experiments" / "ssll_scenes", help="run folders")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "experiments" / "ssll_scenes_report",
                   help="report folder (the committed one is docs/studies/ssll_scenes_cpu); finished runs' records "
                        "are copied to its runs/ and read from there when a run folder is gone")
    p.add_argument("--no-extra", action="store_true",
                   help=f"do not score finished runs on the no-reference sets ({', '.join(EXTRA_SETS)}, NIQE)")
    args = p.parse_args(argv)

    def job() -> None:
        root = args.runs.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if args.what == "gate":
            todo = [run_of(a, args.n, 0, root) for a in ("baseline", "oracle")]
        elif args.what == "study":
            if args.arms:
                todo = [run_of(a, args.n, s, root) for s in args.seeds for a in args.arms]
            else:
                todo = [run_of(a, args.n, s, root) for s in args.seeds for a in ("baseline", "ssll")]
                todo += [run_of(a, args.n, s, root) for s in args.seeds[:3] for a in ABLATIONS]
        elif args.what == "ship":
            for run in (ship_run(c) for c in args.candidates):
                if run.summary(root) is None and read_record(run.name, root, args.out, "summary.json") is None:
                    print(f"{run.name}: training", flush=True)
                    print(f"{run.name}: {run_training(run, root) / 60:.1f} min", flush=True)
                archive_run(run.name, root, args.out)
            choice = choose_shipped(root, args.out)["choice"]
            print(f"choice: {choice or 'not yet (candidates missing)'} -> {args.out / 'ship.md'}")
            return
        elif args.what == "score":  # the extra sets for every finished run still on disk
            todo = [run_of(a, args.n, s, root) for s in args.seeds for a in ("baseline", "oracle", *ARMS)]
            todo = [r for r in todo if r.summary(root) is not None]
        else:
            todo = []
        # a baseline whose folder is gone is trained again (deterministic: its record is reproduced) only
        # when an arm still needs its iteration-500 checkpoint
        needed = {Path(r.start_from).parents[1].name for r in todo if r.start_from is not None
                  and r.summary(root) is None and not Path(r.start_from).is_file()}
        todo = sorted(todo, key=lambda r: r.name not in needed)
        starts = {Path(r.start_from).parents[1].name: Path(r.start_from) for r in todo if r.start_from is not None}
        for run in todo:
            if run.summary(root) is None:
                recorded = read_record(run.name, root, args.out, "summary.json") is not None
                if recorded and (run.name not in needed or starts[run.name].is_file()):
                    continue  # finished in an earlier session: its record is in the report
                until = starts[run.name] if recorded else None  # only as far as an arm needs it
                print(f"{run.name}: training" + (f" until {until.name} exists (its record is kept)" if until else ""),
                      flush=True)
                print(f"{run.name}: {run_training(run, root, until=until) / 60:.1f} min", flush=True)
                if until is not None:
                    continue  # not finished: nothing to score, the record stays the earlier session's
            if not args.no_extra:
                try:  # the extra sets never stop the study's trainings
                    if score_extra(run, root) is not None:
                        print(f"{run.name}: scored on {', '.join(EXTRA_SETS)}", flush=True)
                except RuntimeError as exc:
                    print(f"{run.name}: WARNING: {exc}", flush=True)
            write_report(root, args.out, args.n, args.seeds)
        print(f"report: {write_report(root, args.out, args.n, args.seeds)}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
