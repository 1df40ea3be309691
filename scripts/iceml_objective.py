"""Does the ICEML stage-2 objective prefer a dehazed image to the hazy input? (issue #22 item 1)

Stage 2 minimises a loss over (J_ret, J_asm, t, a) on hazy images without ground truth
(``core.iceml.stage2_terms``). Gradient descent can only improve a network if the loss is lower
for better outputs. This check scores the loss, per image, for fixed candidates:

* **input**: the hazy image itself (J_ret = J_asm = I, t = 1, a = the DCP airlight of I, the
  most favourable a for it);
* **stage 1**: the outputs of a stage-1 checkpoint (both networks, as they come out);
* **ground truth** (paired sets only): the clean image with the grey airlight and transmission
  that best explain the hazy image from it (``models.physics.fit_airlight_transmission``);
* **DCP** (for reference): the dark-channel-prior output with the DCP t and A.

An objective (the ``iceml`` weights of a config plus ``--objective NAME KEY=VALUE ...``
overrides) is **admissible** when its mean ranks ground truth < stage 1 < input on every paired
set and stage 1 < input on every unpaired set. Per-image rates of each order are reported too.
Images are resized to ``--side`` x ``--side`` as in training (the official loaders resize whole
images to 512; the DCP window ``iceml.dcp_patch`` should follow the side).

    python scripts/iceml_objective.py --weights pretrained/iceml_sots_stage1.pth \\
        --paired datasets/SOTS/indoor/hazy datasets/SOTS/indoor/gt 1410,1411,1430,1431,1432,1433 \\
        --unpaired datasets/DAWN/Fog --max-unpaired 40 \\
        --objective configured --objective dcp iceml.w_dcp_t=0.5 iceml.w_dcp_a=0.5

The result (``objective_check.json`` / ``.md``) goes to ``experiments/iceml_objective/``;
``--publish`` writes the committed ``docs/studies/iceml_objective/`` instead.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from common_utils.cli import HelpFormatter, run_cli  # noqa: E402
from common_utils.study import add_output_arguments, report_folder  # noqa: E402
from foundation.errors import UserError  # noqa: E402

NETS = {"rtx": "RtxICE-Net", "asm": "ASMICE-Net"}
CANDIDATES = ("ground truth", "stage 1", "input", "DCP")
DEFAULT_CONFIG = "config/study/sots_iceml_arms.yaml"


def load_pair(weights: str | Path) -> dict[str, nn.Module]:
    """RtxICE-Net and ASMICE-Net of an ICEML checkpoint or weights file."""
    from common_utils.checkpoint import load_network

    return {key: load_network(name, weights)[0] for key, name in NETS.items()}


def objective_config(config: str, overrides: list[str]) -> Any:
    """The ``iceml`` section of ``config`` with ``overrides`` (validated like any run config)."""
    from core.config import load_config

    return load_config(config, list(overrides)).iceml


def candidates(nets: dict[str, nn.Module] | None, hazy: torch.Tensor, gt: torch.Tensor | None, dcp_patch: int
               ) -> dict[str, tuple[torch.Tensor, ...]]:
    """(J_ret, J_asm, t, a) of every candidate for one hazy batch (see the module docstring)."""
    from models.physics import dcp_estimate, dehaze_image, fit_airlight_transmission

    a_dcp, t_dcp = dcp_estimate(hazy, patch=dcp_patch)
    a_map = a_dcp.expand_as(hazy)
    out = {"input": (hazy, hazy, torch.ones_like(hazy[:, :1]), a_map)}
    j_dcp = dehaze_image(hazy, t_dcp, a_dcp).clamp(0, 1)
    out["DCP"] = (j_dcp, j_dcp, t_dcp, a_map)
    if nets is not None:
        with torch.no_grad():
            j_ret, _ = nets["rtx"].forward_maps(hazy)
            j_asm, t, a = nets["asm"].forward_maps(hazy)
        out["stage 1"] = (j_ret, j_asm, t, a)
    if gt is not None:
        a_fit, t_fit = fit_airlight_transmission(hazy, gt)
        out["ground truth"] = (gt, gt, t_fit, a_fit.expand_as(hazy))
    return out


def score(cfg: Any, hazy: torch.Tensor, cands: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, dict[str, float]]:
    """Weighted stage-2 terms and their total per candidate (one image)."""
    from core.iceml import stage2_terms

    out = {}
    for name, (j_ret, j_asm, t, a) in cands.items():
        terms = {k: float(v) for k, v in stage2_terms(cfg, hazy, j_ret, j_asm, t, a).items()}
        terms["total"] = sum(terms.values())
        out[name] = terms
    return out


def ranking(per_image: list[dict[str, dict[str, float]]], paired: bool) -> dict[str, Any]:
    """Mean totals, the per-image rates of each required order, and whether the means keep it."""
    names = [c for c in CANDIDATES if per_image and c in per_image[0]]
    means = {c: statistics.fmean(im[c]["total"] for im in per_image) for c in names}
    terms = {c: {k: statistics.fmean(im[c][k] for im in per_image) for k in per_image[0][c]} for c in names}
    res: dict[str, Any] = {"images": len(per_image), "mean_total": means, "mean_terms": terms}
    if "stage 1" in means:
        res["rate_stage1_below_input"] = statistics.fmean(
            float(im["stage 1"]["total"] < im["input"]["total"]) for im in per_image)
        ok = means["stage 1"] < means["input"]
        if paired:
            res["rate_gt_below_stage1"] = statistics.fmean(
                float(im["ground truth"]["total"] < im["stage 1"]["total"]) for im in per_image)
            ok = ok and means["ground truth"] < means["stage 1"]
        res["order_kept"] = ok
    elif paired:
        res["order_kept"] = means["ground truth"] < means["input"]
    return res


def load_images(side: int, paired: list[list[str]] | None, unpaired: list[str] | None, max_unpaired: int | None
                ) -> dict[str, list[tuple[str, torch.Tensor, torch.Tensor | None]]]:
    """Image sets at ``side`` x ``side``: ``{set name: [(name, hazy, gt or None)]}``."""
    from data import build_dataset

    sets: dict[str, list] = {}
    for lq_dir, gt_dir, rooms in paired or []:
        include = [r for r in rooms.split(",") if r] or None
        ds = build_dataset("paired_folder", lq_dir=lq_dir, gt_dir=gt_dir, pairing="prefix", include=include,
                           resize=side)
        sets[f"paired:{lq_dir}"] = [(it["name"], it["lq"][None], it["gt"][None]) for it in (ds[i] for i in
                                                                                              range(len(ds)))]
    for folder in unpaired or []:
        ds = build_dataset("unpaired_folder", root=folder, resize=side)
        n = len(ds) if max_unpaired is None else min(len(ds), max_unpaired)
        idx = np.linspace(0, len(ds) - 1, n).round().astype(int) if n < len(ds) else range(len(ds))
        sets[f"unpaired:{folder}"] = [(it["name"], it["lq"][None], None) for it in (ds[int(i)] for i in idx)]
    if not sets:
        raise UserError("give --paired and/or --unpaired image sets")
    return sets


def check(nets: dict[str, nn.Module] | None, objectives: dict[str, Any],
          sets: dict[str, list[tuple[str, torch.Tensor, torch.Tensor | None]]]) -> dict[str, Any]:
    """Score every candidate of every image under every objective; rank; decide admissibility."""
    result: dict[str, Any] = {}
    cache: dict[tuple[str, int, int], dict[str, tuple[torch.Tensor, ...]]] = {}  # candidates per image and patch
    for oname, cfg in objectives.items():
        per_set = {}
        for sname, images in sets.items():
            per_image = []
            for i, (_, hazy, gt) in enumerate(images):
                key = (sname, i, cfg.dcp_patch)
                if key not in cache:
                    cache[key] = candidates(nets, hazy, gt, cfg.dcp_patch)
                per_image.append(score(cfg, hazy, cache[key]))
            per_set[sname] = ranking(per_image, paired=images[0][2] is not None)
        result[oname] = {"sets": per_set, "admissible": all(v.get("order_kept") for v in per_set.values()),
                         "weights": {k: cfg[k] for k in ("w_inverse", "w_chroma", "w_mutual_l1", "w_saturation",
                                                        "w_dcp_t", "w_dcp_a", "saturation_target", "dcp_patch")}}
    return result


def markdown(result: dict[str, Any], weights: str | None, side: int) -> str:
    lines = [f"# Stage-2 objective check ({weights or 'no checkpoint'}, images at {side} x {side})", "",
             "Mean weighted stage-2 loss per candidate (lower = preferred by the objective). Admissible: ground "
             "truth < stage 1 < input on the paired sets and stage 1 < input on the unpaired sets.", ""]
    for oname, r in result.items():
        w = ", ".join(f"{k}={v}" for k, v in r["weights"].items())
        lines += [f"## `{oname}`: {'ADMISSIBLE' if r['admissible'] else 'not admissible'}", "", f"Weights: {w}.", "",
                  "| set | images | ground truth | stage 1 | input | DCP | stage 1 < input (images) | "
                  "GT < stage 1 (images) |", "|---|---|---|---|---|---|---|---|"]
        for sname, s in r["sets"].items():
            m = s["mean_total"]
            tot = [f"{m[c]:.4f}" if c in m else "–" for c in CANDIDATES]
            rates = [f"{100 * s[k]:.0f} %" if k in s else "–"
                     for k in ("rate_stage1_below_input", "rate_gt_below_stage1")]
            lines.append(f"| {sname} | {s['images']} | " + " | ".join(tot + rates) + " |")
        lines.append("")
        lines.append("Mean terms per candidate:")
        lines.append("")
        for sname, s in r["sets"].items():
            for c, t in s["mean_terms"].items():
                lines.append(f"- {sname}, {c}: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items()))
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ real-haze statistics and grid (study helpers)
def image_statistics(img: torch.Tensor, patch: int = 7) -> dict[str, float]:
    """No-reference statistics of a (1, 3, H, W) image in [0, 1]: mean brightness (Rec. 601 luma),
    RMS contrast (std of luma), mean HSV saturation, mean dark channel (a haze-density proxy)."""
    from losses.dehaze import saturation_map
    from models.physics import dark_channel

    luma = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    return {"brightness": float(luma.mean()), "contrast": float(luma.std()),
            "saturation": float(saturation_map(img).mean()), "dark_channel": float(dark_channel(img, patch).mean())}


def _photo(path: Path, side: int) -> torch.Tensor:
    """A photograph as (1, 3, H, W) in [0, 1], long side ``side`` (aspect kept, sides multiples of 4)."""
    import cv2

    from data.image_io import read_image

    img = read_image(Path(path))
    h, w = img.shape[:2]
    s = side / max(h, w)
    img = cv2.resize(img, (max(4, round(w * s) // 4 * 4), max(4, round(h * s) // 4 * 4)), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())[None]


def dawn_statistics(ckpts: dict[str, Path], files: list[str], side: int = 512, config: str = DEFAULT_CONFIG,
                    objective: tuple[str, ...] = ("iceml.w_dcp_t=0.5", "iceml.w_dcp_a=0.5")) -> dict[str, dict]:
    """Mean no-reference scores of the input, the DCP output and each checkpoint's two outputs over
    ``files`` (long side ``side``): NIQE (``common_utils.no_reference``; None where its model file is
    absent), :func:`image_statistics`, and the mean stage-2 objective of each checkpoint's outputs."""
    from common_utils.no_reference import try_build_niqe
    from models.physics import dcp_dehaze

    niqe, _ = try_build_niqe()
    cfg = objective_config(config, list(objective))
    nets = {k: load_pair(p) for k, p in ckpts.items()}
    scale = side / 512
    dcp_args = {"patch": max(1, round(15 * scale) // 2 * 2 + 1), "radius": max(1, round(30 * scale))}
    acc: dict[str, list[dict[str, float | None]]] = {}
    with torch.no_grad():
        for f in files:
            x = _photo(Path(f), side)
            outs = {"hazy input": (x, None), "dark-channel prior": (dcp_dehaze(x, **dcp_args), None)}
            for k, pair in nets.items():
                j_ret, _ = pair["rtx"].forward_maps(x)
                j_asm, t, a = pair["asm"].forward_maps(x)
                obj = sum(score(cfg, x, {"c": (j_ret, j_asm, t, a)})["c"].values()) / 2
                outs[f"RtxICE-Net, {k}"] = (j_ret.clamp(0, 1), obj)
                outs[f"ASMICE-Net, {k}"] = (j_asm.clamp(0, 1), obj)
            for name, (img, obj) in outs.items():
                st: dict[str, float | None] = dict(image_statistics(img, dcp_args["patch"]))
                st["niqe"] = float(niqe(img)[0]) if niqe is not None else None
                st["objective"] = obj
                acc.setdefault(name, []).append(st)
    return {name: {k: (statistics.fmean(r[k] for r in rows) if rows[0][k] is not None else None) for k in rows[0]}
            for name, rows in acc.items()}


def real_haze_grid(ckpts: dict[str, Path], files: list[str], path: Path, side: int = 320) -> Path | None:
    """Grid of the same real photographs: input, DCP, then RtxICE-Net and ASMICE-Net of each checkpoint."""
    from common_utils.visual import image_grid, save_jpeg
    from models.physics import dcp_dehaze

    nets = {k: load_pair(p) for k, p in ckpts.items()}
    rows, labels = [], []
    with torch.no_grad():
        for f in files:
            x = _photo(Path(f), side)
            row = [x[0].permute(1, 2, 0).numpy(), dcp_dehaze(x, patch=9, radius=19)[0].permute(1, 2, 0).numpy()]
            for k in ckpts:
                for net in ("rtx", "asm"):
                    row.append(nets[k][net](x).clamp(0, 1)[0].permute(1, 2, 0).numpy())
            rows.append(row)
            labels.append(Path(f).name)
    cols = ["real hazy input", "dark-channel prior"] + [f"{n} {k}" for k in ckpts for n in ("RtxICE", "ASMICE")]
    save_jpeg(path, image_grid(rows, cols, tile_width=200, row_labels=labels))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--weights", default=None, help="stage-1 ICEML checkpoint or weights file")
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="config whose iceml section is the base objective")
    ap.add_argument("--objective", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                    help="an objective: a name and config overrides (repeatable; default: the config as is)")
    ap.add_argument("--paired", nargs=3, action="append", metavar=("HAZY_DIR", "GT_DIR", "IDS"),
                    help="paired set (prefix pairing; IDS comma-separated scene ids, '' for all)")
    ap.add_argument("--unpaired", nargs="+", default=None, help="folders of real hazy images")
    ap.add_argument("--max-unpaired", type=int, default=None, help="evenly spaced subset of each unpaired folder")
    ap.add_argument("--side", type=int, default=256, help="images are resized to SIDE x SIDE, as in training")
    add_output_arguments(ap, "iceml_objective", "iceml_objective", tag=None, runs=False)
    args = ap.parse_args(argv)

    def job() -> None:
        torch.set_grad_enabled(False)
        nets = load_pair(args.weights) if args.weights else None
        objectives = {name: objective_config(args.config, ov) for name, *ov in (args.objective or [["config"]])}
        sets = load_images(args.side, args.paired, args.unpaired, args.max_unpaired)
        result = check(nets, objectives, sets)
        text = markdown(result, args.weights, args.side)
        print(text)
        out = report_folder(args, "iceml_objective", "iceml_objective")
        out.mkdir(parents=True, exist_ok=True)
        (out / "objective_check.json").write_text(json.dumps(result, indent=2))
        (out / "objective_check.md").write_text(text + "\n")
        print(f"written to {out}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
