"""Reproduce the papers' result tables from a folder of checkpoints and write a Markdown report.

Low-light (SSLL paper, 7 backbones x 5 test sets x PSNR/SSIM/LPIPS): for every backbone with
checkpoints ``<Backbone>_baseline.pth`` and/or ``<Backbone>_ssll.pth`` (case-insensitive, names
as in the models registry, e.g. ``restormer_ssll.pth``, ``MIRNet_baseline.pth``) the networks are
evaluated on LOLv2, SID, SDSD, SMID and LSRW-Huawei with the paper's protocol and shown beside
the paper's figures (common_utils/evaluation/paper_tables.yaml), with the differences and the
number of improved cells counted as the paper counts them (PSNR/SSIM higher, LPIPS lower).

Dehazing (ICEML paper, PSNR/SSIM on RICE-I and SOTS-outdoor, ICEML protocol): ``RtxICE-Net.pth``
and/or ``ASMICE-Net.pth``, or the official CombinedModel checkpoint ``final_dehazing_model.pth``
(holding both networks under ``retinex_model.`` / ``asm_model.``).

Missing datasets are marked ``missing`` in the report; ``--plot`` adds radar charts per dataset.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common_utils.checkpoint import ICEML_ENTRIES, load_network
from common_utils.evaluation.runner import build_protocol, evaluate_datasets, open_datasets, select_device
from data.layouts import ALL_LOWLIGHT, PAPER_DEHAZING
from foundation.errors import UserError
from models import list_networks, network_name

PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.yaml"
METRICS = ("psnr", "ssim", "lpips")
LOWER_IS_BETTER = frozenset({"lpips"})
VARIANTS = ("baseline", "ssll")
VARIANT_TITLES = {"baseline": "baseline", "ssll": "w/ SSLL"}
DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4}
DEHAZE_NETWORKS = tuple(ICEML_ENTRIES)
COMBINED_CHECKPOINT = "final_dehazing_model.pth"  # the official file name; an ICEML run checkpoint works too

Table = dict[str, dict[str, dict[str, dict[str, float | None]]]]  # backbone -> variant -> dataset -> metric -> v


# ----------------------------------------------------------------------------------------------- paper figures
def load_paper_tables(path: Path = PAPER_TABLES) -> dict[str, Any]:
    """The transcribed paper figures."""
    return yaml.safe_load(Path(path).read_text())


def backbone_key(name: str) -> str:
    """Registry display name for a backbone as the paper or a file names it (MIRNet-v2 -> MIRNet)."""
    try:
        return network_name(name)
    except UserError:
        norm = re.sub(r"[^a-z0-9]", "", name.lower())
        for n in list_networks():
            if re.sub(r"[^a-z0-9]", "", n.lower()) == norm:
                return n
        return name


def paper_lowlight(tables: Mapping[str, Any] | None = None) -> Table:
    """The SSLL table as backbone -> variant -> dataset -> {psnr, ssim, lpips}."""
    ssll = (tables or load_paper_tables())["ssll"]
    metrics = ssll["metrics"]
    out: Table = {}
    for backbone, variants in ssll["results"].items():
        out[backbone_key(backbone)] = {v: {ds: dict(zip(metrics, map(float, vals))) for ds, vals in rows.items()}
                                       for v, rows in variants.items()}
    return out


def paper_dehazing(tables: Mapping[str, Any] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """ICEML table 2 for the paper's own networks: network -> dataset -> {psnr, ssim}."""
    quality = (tables or load_paper_tables())["iceml"]["quality"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for net in DEHAZE_NETWORKS:
        out[net] = {ds: {"psnr": float(v[0]), "ssim": float(v[1])} for ds, v in quality.get(net, {}).items()}
    return out


def _lookup_ds(table: Mapping[str, Any], dataset: str) -> Any:
    """Dataset entry by case-insensitive name (the paper writes SOTS-Outdoor, the layouts SOTS-outdoor)."""
    for k, v in table.items():
        if k.lower() == dataset.lower():
            return v
    return None


def is_improved(metric: str, base: float, new: float) -> bool:
    """The paper's rule: PSNR/SSIM higher, LPIPS lower."""
    return new < base if metric in LOWER_IS_BETTER else new > base


def count_improved(table: Table, datasets: tuple[str, ...] = ALL_LOWLIGHT, metrics: tuple[str, ...] = METRICS,
                   only: Callable[[str, str, str], bool] | None = None) -> tuple[int, int]:
    """(improved, compared) over cells where both baseline and SSLL values exist (and ``only`` agrees)."""
    improved = total = 0
    for backbone, variants in table.items():
        for ds in datasets:
            b = (variants.get("baseline") or {}).get(ds) or {}
            s = (variants.get("ssll") or {}).get(ds) or {}
            for m in metrics:
                if b.get(m) is None or s.get(m) is None or (only and not only(backbone, ds, m)):
                    continue
                total += 1
                improved += is_improved(m, b[m], s[m])
    return improved, total


# ----------------------------------------------------------------------------------------------- checkpoints
def find_checkpoints(folder: Path) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """``<Backbone>_baseline.pth`` / ``<Backbone>_ssll.pth`` files: backbone -> variant -> path, and ignored names."""
    found: dict[str, dict[str, Path]] = {}
    ignored: list[str] = []
    known = {n.lower(): n for n in list_networks()}
    for f in sorted(Path(folder).glob("*.pth")):
        m = re.fullmatch(r"(.+)_(baseline|ssll)", f.stem, flags=re.IGNORECASE)
        if not m:
            if f.name.lower() not in {f"{n.lower()}.pth" for n in DEHAZE_NETWORKS} | {COMBINED_CHECKPOINT}:
                ignored.append(f.name)
            continue
        name = backbone_key(m.group(1))
        if name.lower() not in known:
            ignored.append(f"{f.name} (no network named '{m.group(1)}')")
            continue
        found.setdefault(name, {})[m.group(2).lower()] = f
    return found, ignored


def find_dehazing_checkpoints(folder: Path) -> dict[str, Path]:
    """network -> checkpoint for the ICEML networks present: ``<Network>.pth``, else the combined file
    (the official CombinedModel or a framework ICEML checkpoint, both holding the two networks)."""
    files = {f.name.lower(): f for f in Path(folder).glob("*.pth")}
    out: dict[str, Path] = {}
    for net in DEHAZE_NETWORKS:
        if f"{net.lower()}.pth" in files:
            out[net] = files[f"{net.lower()}.pth"]
        elif COMBINED_CHECKPOINT in files:
            out[net] = files[COMBINED_CHECKPOINT]
    return out


# ----------------------------------------------------------------------------------------------- running
@dataclass
class ReproduceConfig:
    """What to reproduce and where (see :func:`reproduce`)."""

    checkpoints: Path
    data_root: str | None = None
    out: Path = Path("results/reproduce")
    fast: bool = False
    network_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    plot: bool = False
    workers: int = 0
    lpips: bool = True
    smid_green_quirk: bool = True
    max_images: int | None = None
    html: bool = False  # a comparison page per run and dataset (runs/<run>/<dataset>/index.html)


def split_network_args(value: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"UNet": {"width": 4}}`` -> per-network arguments; a flat ``{"width": 4}`` applies to every network."""
    if not value:
        return {}
    known = {n.lower() for n in list_networks()}
    if all(isinstance(v, Mapping) and backbone_key(k).lower() in known for k, v in value.items()):
        return {backbone_key(k): dict(v) for k, v in value.items()}
    return {"*": dict(value)}


def _args_for(cfg: ReproduceConfig, network: str) -> dict[str, Any]:
    return dict(cfg.network_args.get(network, cfg.network_args.get("*", {})))


def _metric_values(entry: Mapping[str, Any] | None, metrics: tuple[str, ...]) -> dict[str, float | None] | None:
    if not entry or "psnr" not in entry:
        return None
    return {m: entry.get(m) for m in metrics}


def reproduce(cfg: ReproduceConfig) -> Path:
    """Evaluate every checkpoint found, write ``report.md`` and ``report.json`` under ``cfg.out``; return the report."""
    folder = Path(cfg.checkpoints)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder not found: {folder}")
    lowlight, ignored = find_checkpoints(folder)
    dehaze = find_dehazing_checkpoints(folder)
    if not lowlight and not dehaze:
        raise UserError(f"no checkpoints in {folder}: expected <Backbone>_baseline.pth / <Backbone>_ssll.pth "
                        f"(backbones: {', '.join(list_networks())}), RtxICE-Net.pth, ASMICE-Net.pth or "
                        f"{COMBINED_CHECKPOINT}")
    device = select_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"checkpoints": str(folder), "data_root": cfg.data_root, "ignored": ignored,
                             "lowlight": {}, "dehazing": {}, "failed": {}}

    if lowlight:
        protocol = build_protocol("paper", fast=cfg.fast, lpips=cfg.lpips, device=device)
        datasets, missing = open_datasets(ALL_LOWLIGHT, cfg.data_root, {"smid_green_quirk": cfg.smid_green_quirk})
        state["lowlight_missing"] = {k: next(iter(v.values())) for k, v in missing.items()}
        state["lowlight_protocol"] = protocol.describe(device)
        for backbone, variants in sorted(lowlight.items()):
            for variant in VARIANTS:
                if variant not in variants:
                    continue
                run_name = f"{backbone}_{variant}"
                print(f"== {run_name} ({variants[variant].name})", flush=True)
                try:
                    net, info = load_network(backbone, str(variants[variant]), _args_for(cfg, backbone),
                                             device=device)
                except UserError as exc:
                    state["failed"][run_name] = str(exc)
                    print(f"{run_name}: skipped - {exc}", flush=True)
                    continue
                summary = evaluate_datasets({backbone: net}, datasets, missing, protocol, device,
                                            out / "runs" / run_name, order=ALL_LOWLIGHT, workers=cfg.workers,
                                            extra={"protocol": "paper", **info},
                                            title=f"{backbone} ({VARIANT_TITLES[variant]})",
                                            max_images=cfg.max_images, page=cfg.html)
                state["lowlight"].setdefault(backbone, {})[variant] = {
                    ds: _metric_values(summary.get(ds), METRICS) for ds in ALL_LOWLIGHT}
                del net

    if dehaze:
        protocol = build_protocol("iceml", fast=cfg.fast, lpips=False, device=device,
                                  lpips_off_reason="not part of the ICEML protocol (PSNR and SSIM only)")
        datasets, missing = open_datasets(PAPER_DEHAZING, cfg.data_root)
        state["dehazing_missing"] = {k: next(iter(v.values())) for k, v in missing.items()}
        state["dehazing_protocol"] = protocol.describe(device)
        for net_name, path in dehaze.items():
            print(f"== {net_name} ({path.name})", flush=True)
            try:
                net, info = load_network(net_name, str(path), _args_for(cfg, net_name), device=device)
            except UserError as exc:
                state["failed"][net_name] = str(exc)
                print(f"{net_name}: skipped - {exc}", flush=True)
                continue
            summary = evaluate_datasets({net_name: net}, datasets, missing, protocol, device, out / "runs" / net_name,
                                        order=PAPER_DEHAZING, workers=cfg.workers,
                                        extra={"protocol": "iceml", **info}, title=net_name,
                                        max_images=cfg.max_images, page=cfg.html)
            state["dehazing"][net_name] = {ds: _metric_values(summary.get(ds), ("psnr", "ssim"))
                                           for ds in PAPER_DEHAZING}
            del net

    tables = load_paper_tables()
    report = render_report(state, tables)
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps(_report_json(state, tables), indent=2) + "\n")
    if cfg.plot:
        for f in plot_radar(state.get("lowlight", {}), paper_lowlight(tables), out):
            print(f"radar chart: {f}", flush=True)
        f = plot_dehazing(state.get("dehazing", {}), paper_dehazing(tables), out)
        print(f"bar chart: {f}", flush=True)
    print(f"report written to {out / 'report.md'}", flush=True)
    return out / "report.md"


# ----------------------------------------------------------------------------------------------- rendering
def _num(v: float | None, metric: str, paper: bool = False) -> str:
    if v is None:
        return "–"
    nd = DIGITS.get(metric, 4)
    s = f"{v:.{nd}f}"
    if paper and float(s) != v:  # keep every digit the paper prints (e.g. 0.60386)
        s = repr(float(v))
    return s


def _diff(a: float | None, b: float | None, metric: str) -> str:
    if a is None or b is None:
        return "–"
    return f"{a - b:+.{DIGITS.get(metric, 4)}f}"


def _gain(base: float | None, new: float | None, metric: str) -> str:
    if base is None or new is None:
        return "–"
    mark = "" if is_improved(metric, base, new) else " †"
    return f"{new - base:+.{DIGITS.get(metric, 4)}f}{mark}"


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "–"


def render_report(state: Mapping[str, Any], tables: Mapping[str, Any]) -> str:
    """The Markdown report (see module docstring)."""
    paper = paper_lowlight(tables)
    ours: Table = state.get("lowlight", {})
    lines = ["# Reproduction of the papers' tables", "",
             f"Checkpoints: `{state['checkpoints']}`; data root: `{state.get('data_root') or 'default'}`.", ""]
    if state.get("ignored"):
        lines += [f"Ignored files (not `<Backbone>_baseline.pth` / `<Backbone>_ssll.pth`): "
                  f"{', '.join(state['ignored'])}.", ""]
    if state.get("failed"):
        lines += ["Checkpoints that could not be evaluated:", ""]
        lines += [f"- {k}: {v}" for k, v in state["failed"].items()] + [""]

    p_imp, p_tot = count_improved(paper)
    lines += ["## Low-light enhancement: baseline vs w/ SSLL (SSLL paper)", ""]
    lines += ["Improved cells (w/ SSLL better than baseline: PSNR and SSIM higher, LPIPS lower):", "",
              f"- paper: **{p_imp} of {p_tot}** ({_pct(p_imp, p_tot)})"]
    if ours:
        o_imp, o_tot = count_improved(ours)
        s_imp, s_tot = count_improved(paper, only=lambda b, ds, m: _has(ours, b, ds, m))
        lines += [f"- ours: **{o_imp} of {o_tot}** evaluated cells ({_pct(o_imp, o_tot)}); the paper's figures "
                  f"for the same cells: {s_imp} of {s_tot}"]
    lines += [""]
    missing = state.get("lowlight_missing") or {}
    if missing:
        lines += ["Missing datasets (cells marked *missing*):", ""] + [f"- {k}: {v}" for k, v in missing.items()]
        lines += [""]
    if not ours:
        lines += ["No low-light checkpoints (`<Backbone>_baseline.pth`, `<Backbone>_ssll.pth`) were found.", ""]
    not_run = [b for b in paper if b not in ours]
    if ours and not_run:
        lines += [f"Backbones without checkpoints (paper figures only, in paper_tables.yaml): "
                  f"{', '.join(not_run)}.", ""]
    for backbone in sorted(ours):
        lines += _backbone_table(backbone, ours[backbone], paper.get(backbone, {}), missing)
    if state.get("lowlight_protocol"):
        lines += ["Protocol (low-light):", ""] + [f"- {k}: {v}" for k, v in state["lowlight_protocol"].items()]
        lines += [""]

    lines += ["## Dehazing (ICEML paper, table 2)", ""]
    if not state.get("dehazing"):
        lines += [f"No dehazing checkpoints (RtxICE-Net.pth, ASMICE-Net.pth or {COMBINED_CHECKPOINT}); "
                  f"section skipped.", ""]
    else:
        lines += _dehazing_table(state["dehazing"], paper_dehazing(tables), state.get("dehazing_missing") or {})
        if state.get("dehazing_protocol"):
            lines += ["Protocol (dehazing):", ""] + [f"- {k}: {v}" for k, v in state["dehazing_protocol"].items()]
            lines += [""]
    return "\n".join(lines).rstrip() + "\n"


def _has(ours: Table, backbone: str, ds: str, metric: str) -> bool:
    v = ours.get(backbone, {})
    return all(((v.get(var) or {}).get(ds) or {}).get(metric) is not None for var in VARIANTS)


def _backbone_table(backbone: str, ours: Mapping[str, Any], paper: Mapping[str, Any],
                    missing: Mapping[str, str]) -> list[str]:
    lines = [f"### {backbone}", "",
             "| dataset | metric | baseline (ours) | baseline (paper) | ours − paper | w/ SSLL (ours) | "
             "w/ SSLL (paper) | ours − paper | SSLL gain (ours) | SSLL gain (paper) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in ALL_LOWLIGHT:
        for m in METRICS:
            cells = []
            vals: dict[str, tuple[float | None, float | None]] = {}
            for var in VARIANTS:
                p = ((paper.get(var) or {}).get(ds) or {}).get(m)
                run = ours.get(var)
                if run is None:
                    o, shown = None, "–"
                elif ds in missing or run.get(ds) is None:
                    o, shown = None, "missing"
                else:
                    o = run[ds].get(m)
                    shown = "n/a" if o is None else _num(o, m)
                vals[var] = (o, p)
                cells += [shown, _num(p, m, paper=True), _diff(o, p, m)]
            (ob, pb), (os_, ps) = vals["baseline"], vals["ssll"]
            lines.append(f"| {ds} | {m.upper()} | " + " | ".join(cells) + f" | {_gain(ob, os_, m)} | "
                         f"{_gain(pb, ps, m)} |")
    return lines + ["", "† = not improved (PSNR/SSIM lower or LPIPS higher), as the paper marks it.", ""]


def _dehazing_table(ours: Mapping[str, Any], paper: Mapping[str, Any], missing: Mapping[str, str]) -> list[str]:
    lines = ["| network | dataset | PSNR (ours) | PSNR (paper) | ours − paper | SSIM (ours) | SSIM (paper) | "
             "ours − paper |", "|---|---|---|---|---|---|---|---|"]
    for net, per_ds in ours.items():
        for ds in PAPER_DEHAZING:
            p = _lookup_ds(paper.get(net, {}), ds) or {}
            o = per_ds.get(ds)
            cells = []
            for m in ("psnr", "ssim"):
                ov = None if o is None else o.get(m)
                shown = "missing" if o is None else _num(ov, m)
                cells += [shown, _num(p.get(m), m, paper=True), _diff(ov, p.get(m), m)]
            lines.append(f"| {net} | {ds} | " + " | ".join(cells) + " |")
    lines.append("")
    if missing:
        lines += ["Missing datasets:", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""]
    return lines


def _report_json(state: Mapping[str, Any], tables: Mapping[str, Any]) -> dict[str, Any]:
    paper = paper_lowlight(tables)
    ours = state.get("lowlight", {})
    p_imp, p_tot = count_improved(paper)
    o_imp, o_tot = count_improved(ours)
    return {"lowlight": {"ours": ours, "paper": {b: paper[b] for b in paper},
                         "improved": {"paper": [p_imp, p_tot], "ours": [o_imp, o_tot]},
                         "missing": state.get("lowlight_missing", {})},
            "dehazing": {"ours": state.get("dehazing", {}), "paper": paper_dehazing(tables),
                         "missing": state.get("dehazing_missing", {})},
            "failed": state.get("failed", {}), "ignored": state.get("ignored", [])}


# ----------------------------------------------------------------------------------------------- radar charts
def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    return plt


def plot_radar(ours: Table, paper: Table, out: Path) -> list[Path]:
    """One PNG per low-light dataset: a radar per metric, axes = backbones, paper (solid) beside ours (dashed).

    A backbone with no measured value is labelled "ours: missing" on its axis, and the figure's
    footer lists the missing cells, so an absent line is never mistaken for a bad one.
    """
    plt = _matplotlib()
    backbones = list(paper)
    angles = [2 * math.pi * i / len(backbones) for i in range(len(backbones))] + [0.0]
    files = []
    for ds in ALL_LOWLIGHT:
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.8), subplot_kw={"polar": True})
        handles: dict[str, Any] = {}
        missing_cells: list[str] = []
        for ax, m in zip(axes, METRICS):
            series = [("paper baseline", paper, "baseline", "tab:blue", "-"),
                      ("paper w/ SSLL", paper, "ssll", "tab:red", "-"),
                      ("ours baseline", ours, "baseline", "tab:blue", "--"),
                      ("ours w/ SSLL", ours, "ssll", "tab:red", "--")]
            seen: list[float] = []
            absent = {b: [] for b in backbones}
            for label, table, var, color, style in series:
                vals = [(((table.get(b) or {}).get(var) or {}).get(ds) or {}).get(m) for b in backbones]
                if table is ours:
                    for b, v in zip(backbones, vals):
                        if v is None:
                            absent[b].append(var)
                if all(v is None for v in vals):
                    continue
                seen += [v for v in vals if v is not None]
                ys = [float("nan") if v is None else v for v in vals]
                (line,) = ax.plot(angles, ys + ys[:1], style, color=color, marker="o", markersize=3)
                handles.setdefault(label, line)
            if seen:  # zoom the radius onto the data, as the paper's figure does
                lo, hi = min(seen), max(seen)
                pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 1.0
                ax.set_rlim(lo - pad, hi + pad)
            ax.set_xticks(angles[:-1])
            ax.set_xticklabels([b + ("\n(ours: missing)" if len(absent[b]) == 2 else
                                     f"\n(ours {absent[b][0]}: missing)" if absent[b] else "") for b in backbones],
                               fontsize=8)
            missing_cells += [f"{b} {'/'.join(v)} {m.upper()}" for b, v in absent.items() if v]
            ax.set_title(f"{m.upper()} ({'lower' if m in LOWER_IS_BETTER else 'higher'} is better)", fontsize=10)
        fig.legend(list(handles.values()), list(handles), loc="lower center", bbox_to_anchor=(0.5, 0.035),
                   ncol=len(handles), fontsize=9)
        note = ("not measured (no checkpoint, dataset or metric weights): " + ", ".join(missing_cells)
                if missing_cells else "every cell measured")
        fig.text(0.5, 0.005, note if len(note) < 220 else note[:217] + "...", ha="center", fontsize=7)
        fig.suptitle(f"{ds}: paper (solid) vs measured here (dashed)")
        fig.tight_layout(rect=(0, 0.1, 1, 0.94))
        f = out / f"radar_{ds}.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(f)
    return files


def plot_dehazing(ours: Mapping[str, Any], paper: Mapping[str, Any], out: Path) -> Path:
    """The ICEML table as bars: PSNR and SSIM per network and dataset, published beside measured;
    a measured bar that is missing is drawn as an empty outlined slot labelled "missing"."""
    plt = _matplotlib()
    nets = list(paper) or list(DEHAZE_NETWORKS)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, m in zip(axes, ("psnr", "ssim")):
        labels, xs = [], 0.0
        for net in nets:
            for ds in PAPER_DEHAZING:
                pv = (_lookup_ds(paper.get(net, {}), ds) or {}).get(m)
                ov = ((ours.get(net) or {}).get(ds) or {}).get(m)
                ax.bar(xs - 0.2, pv if pv is not None else 0, 0.4, color="tab:gray", label="paper" if xs == 0 else None)
                if ov is None:
                    top = pv if pv is not None else 1.0
                    ax.bar(xs + 0.2, top, 0.4, fill=False, hatch="//", edgecolor="tab:red",
                           label="measured: missing" if "measured: missing" not in ax.get_legend_handles_labels()[1]
                           else None)
                    ax.text(xs + 0.2, top * 0.5, "missing", rotation=90, ha="center", va="center", fontsize=7)
                else:
                    ax.bar(xs + 0.2, ov, 0.4, color="tab:green",
                           label="measured" if "measured" not in ax.get_legend_handles_labels()[1] else None)
                labels.append((xs, f"{net}\n{ds}"))
                xs += 1.0
        ax.set_xticks([x for x, _ in labels])
        ax.set_xticklabels([t for _, t in labels], fontsize=7)
        ax.set_title(m.upper())
        ax.legend(fontsize=7)
    fig.suptitle("ICEML: published vs measured (ICEML protocol)")
    fig.tight_layout()
    f = out / "bars_dehazing.png"
    fig.savefig(f, dpi=120)
    plt.close(fig)
    return f
