"""Reproduce the papers' result tables from the checkpoints given and write a Markdown report.

Checkpoints come from a folder (``--checkpoints DIR``) and/or explicit ``--weight NAME=PATH``
pairs (:func:`parse_weight_spec`). In a folder, ``<Backbone>_baseline.pth`` / ``<Backbone>_ssll.pth``
(case-insensitive, names as in the models registry), ``RtxICE-Net.pth`` / ``ASMICE-Net.pth`` and the
official ICEML ``final_dehazing_model.pth`` are named by their file; any other ``.pth`` file is
identified by its content (a framework weights or run file records its network, a plain state dict
is matched against the official key manifests), e.g. the committed ``pretrained/`` files.

Low-light (SSLL paper, 7 backbones x 5 test sets x PSNR/SSIM/LPIPS): baselines and SSLL runs are
shown beside the paper's figures (common_utils/evaluation/paper_tables.yaml), with the differences
and the improved cells counted as the paper counts them (PSNR/SSIM higher, LPIPS lower). A
checkpoint whose variant is not known (no ``_baseline`` / ``_ssll`` in its name) gets its own
table. The sets are LOL-v1 and the paper's five unless ``datasets`` says otherwise.

Dehazing (ICEML paper, PSNR/SSIM, ICEML protocol): RICE-I, SOTS-outdoor and SOTS-indoor unless
``datasets`` says otherwise.

Every cell that could not be measured is named in the report with its reason (no checkpoint,
dataset not on disk, metric unavailable); ``--plot`` adds radar charts per low-light set and bars
for dehazing, whose footnote lists the missing cells in full.
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

from common_utils.checkpoint import (
    COMBINED_MANIFEST,
    ICEML_ENTRIES,
    CheckpointError,
    extract_state_dict,
    guess_network,
    load_network,
    read_checkpoint,
)
from common_utils.evaluation.runner import build_protocol, dataset_key, evaluate_datasets, open_datasets, select_device
from data.layouts import ALL_LOWLIGHT, EVAL_ALL, LAYOUTS, PAPER_DEHAZING, expand_dataset_names
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
#: the sets scored when none are given: LOL-v1 (the committed weights' set) and the papers' sets
DEFAULT_LOWLIGHT = EVAL_ALL
DEFAULT_DEHAZING = (*PAPER_DEHAZING, "SOTS-indoor")

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


@dataclass(frozen=True)
class Entry:
    """One network to score: its registry name, variant (``baseline``, ``ssll``, or None: not known), file."""

    network: str
    variant: str | None
    path: Path

    @property
    def task(self) -> str:
        return "haze" if self.network in DEHAZE_NETWORKS else "lowlight"

    @property
    def label(self) -> str:
        return f"{self.network}_{self.variant}" if self.variant else f"{self.network} [{self.path.stem}]"


def parse_weight_spec(text: str) -> list[Entry]:
    """``NAME=PATH``: ``<Backbone>_baseline``, ``<Backbone>_ssll``, ``<Backbone>`` (variant not known),
    ``RtxICE-Net``, ``ASMICE-Net``, or ``ICEML`` (both networks of one ICEML file)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UserError(f"--weight expects NAME=PATH (e.g. CIDNet_baseline=pretrained/cidnet_lol_real.pth), got "
                        f"'{text}'")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UserError(f"--weight {name}: checkpoint not found: {file}")
    if name.lower() == "iceml":
        return [Entry(net, None, file) for net in DEHAZE_NETWORKS]
    m = re.fullmatch(r"(.+)_(baseline|ssll)", name, flags=re.IGNORECASE)
    network, variant = (m.group(1), m.group(2).lower()) if m else (name, None)
    known = {n.lower(): n for n in list_networks()}
    network = backbone_key(network)
    if network.lower() not in known:
        raise UserError(f"--weight {name}: no network named '{network}' (networks: {', '.join(list_networks())}; "
                        f"or ICEML for both dehazing networks)")
    network = known[network.lower()]
    if network in DEHAZE_NETWORKS and variant:
        raise UserError(f"--weight {name}: the dehazing networks have no baseline/ssll variant; use {network}=PATH")
    return [Entry(network, variant, file)]


def identify_checkpoint(path: Path) -> list[str]:
    """The networks a checkpoint file holds, read from its content (empty: not recognised)."""
    try:
        ckpt = read_checkpoint(path)
    except UserError:
        return []
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("networks"), Mapping):
        if set(ckpt["networks"]) & set(ICEML_ENTRIES.values()):
            return [n for n, e in ICEML_ENTRIES.items() if e in ckpt["networks"]]
        if isinstance(ckpt.get("network"), str):
            return [backbone_key(ckpt["network"])]
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("network"), str):
        return [backbone_key(ckpt["network"])]
    try:
        guess = guess_network(extract_state_dict(ckpt))
    except CheckpointError:
        return []
    if guess == COMBINED_MANIFEST:
        return list(DEHAZE_NETWORKS)
    return [backbone_key(guess)] if guess else []


def find_entries(folder: Path) -> tuple[list[Entry], list[str]]:
    """Every checkpoint of ``folder``: by file name (see module docstring), else by content; and the
    files left out, each with its reason."""
    lowlight, ignored = find_checkpoints(folder)
    entries = [Entry(b, v, p) for b, variants in sorted(lowlight.items()) for v, p in sorted(variants.items())]
    entries += [Entry(n, None, p) for n, p in find_dehazing_checkpoints(folder).items()]
    named = {e.path.name for e in entries}
    left: list[str] = []
    for item in ignored:
        fname = item.split(" ", 1)[0]
        path = Path(folder) / fname
        nets = identify_checkpoint(path) if fname not in named and "(" not in item else []
        if nets:
            entries += [Entry(n, None, path) for n in nets]
        else:
            left.append(item if "(" in item else f"{item} (not a checkpoint of a known network)")
    return entries, left


def split_datasets(names: list[str] | None) -> tuple[list[str], list[str]]:
    """Low-light and dehazing sets (canonical names) of ``names``; the defaults when None."""
    if not names:
        return list(DEFAULT_LOWLIGHT), list(DEFAULT_DEHAZING)
    low, haze = [], []
    for name in expand_dataset_names(list(names)):
        task = LAYOUTS.get(name).task if name in LAYOUTS else "lowlight"
        (haze if task == "haze" else low).append(dataset_key(name))
    return low, haze


# ----------------------------------------------------------------------------------------------- running
@dataclass
class ReproduceConfig:
    """What to reproduce and where (see :func:`reproduce`)."""

    checkpoints: Path | None = None
    weights: list[Entry] = field(default_factory=list)  # explicit --weight NAME=PATH entries
    datasets: list[str] | None = None  # None: DEFAULT_LOWLIGHT and DEFAULT_DEHAZING
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
    """Evaluate every checkpoint given, write ``report.md`` and ``report.json`` under ``cfg.out``; return the report."""
    entries: list[Entry] = list(cfg.weights)
    ignored: list[str] = []
    if cfg.checkpoints is not None:
        folder = Path(cfg.checkpoints)
        if not folder.is_dir():
            raise UserError(f"checkpoint folder not found: {folder}")
        found, ignored = find_entries(folder)
        given = {(e.network, e.variant) for e in entries}
        entries += [e for e in found if (e.network, e.variant) not in given or e.variant is None]
    if not entries:
        where = f"in {cfg.checkpoints}" if cfg.checkpoints is not None else "given"
        raise UserError(f"no checkpoints {where}: name them <Backbone>_baseline.pth / <Backbone>_ssll.pth "
                        f"(backbones: {', '.join(list_networks())}), RtxICE-Net.pth, ASMICE-Net.pth or "
                        f"{COMBINED_CHECKPOINT}, use weights files that record their network, or give "
                        f"--weight NAME=PATH" + (f" (left out: {'; '.join(ignored)})" if ignored else ""))
    low_sets, haze_sets = split_datasets(cfg.datasets)
    device = select_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = [str(cfg.checkpoints)] if cfg.checkpoints is not None else []
    sources += [f"{e.label}={e.path}" for e in cfg.weights]
    state: dict[str, Any] = {"checkpoints": ", ".join(sources), "data_root": cfg.data_root, "ignored": ignored,
                             "lowlight_sets": low_sets, "dehazing_sets": haze_sets, "lowlight": {},
                             "lowlight_other": {}, "dehazing": {}, "failed": {}}
    groups = {"lowlight": ([e for e in entries if e.task == "lowlight"], low_sets),
              "haze": ([e for e in entries if e.task == "haze"], haze_sets)}
    for task, (todo, sets) in groups.items():
        if not todo:
            continue
        if task == "lowlight":
            protocol = build_protocol("paper", fast=cfg.fast, lpips=cfg.lpips, device=device)
            metrics = METRICS
        else:
            protocol = build_protocol("iceml", fast=cfg.fast, lpips=False, device=device,
                                      lpips_off_reason="not part of the ICEML protocol (PSNR and SSIM only)")
            metrics = ("psnr", "ssim")
        key = "lowlight" if task == "lowlight" else "dehazing"
        datasets, missing = open_datasets(sets, cfg.data_root, {"smid_green_quirk": cfg.smid_green_quirk})
        state[f"{key}_missing"] = {k: next(iter(v.values())) for k, v in missing.items()}
        state[f"{key}_protocol"] = protocol.describe(device)
        if task == "lowlight" and cfg.lpips and protocol.lpips is None:
            state["lpips_unavailable"] = protocol.lpips_reason or "LPIPS unavailable"
        for entry in todo:
            print(f"== {entry.label} ({entry.path.name})", flush=True)
            try:
                net, info = load_network(entry.network, str(entry.path), _args_for(cfg, entry.network), device=device)
            except UserError as exc:
                state["failed"][entry.label] = str(exc)
                print(f"{entry.label}: skipped - {exc}", flush=True)
                continue
            title = f"{entry.network} ({VARIANT_TITLES[entry.variant]})" if entry.variant else entry.label
            run_dir = out / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", entry.label).strip("_")
            summary = evaluate_datasets({entry.network: net}, datasets, missing, protocol, device, run_dir,
                                        order=sets, workers=cfg.workers,
                                        extra={"protocol": "paper" if task == "lowlight" else "iceml", **info},
                                        title=title, max_images=cfg.max_images, page=cfg.html)
            scores = {ds: _metric_values(summary.get(ds), metrics) for ds in sets}
            if task == "haze":
                state["dehazing"][entry.label] = {"network": entry.network, "scores": scores}
            elif entry.variant:
                state["lowlight"].setdefault(entry.network, {})[entry.variant] = scores
            else:
                state["lowlight_other"][entry.label] = {"network": entry.network, "scores": scores}
            del net

    tables = load_paper_tables()
    report = render_report(state, tables)
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps(_report_json(state, tables), indent=2) + "\n")
    if cfg.plot:
        for f in plot_radar(state.get("lowlight", {}), paper_lowlight(tables), out, datasets=low_sets,
                            missing=state.get("lowlight_missing"), others=state.get("lowlight_other")):
            print(f"radar chart: {f}", flush=True)
        f = plot_dehazing(state.get("dehazing", {}), paper_dehazing(tables), out, datasets=haze_sets)
        print(f"bar chart: {f}", flush=True)
    print(f"report written to {out / 'report.md'}", flush=True)
    return out / "report.md"


def missing_cells(state: Mapping[str, Any], paper: Table) -> list[str]:
    """Every cell of the report that holds no measured value, each with its reason (one line per group)."""
    lines: list[str] = []
    low_sets = state.get("lowlight_sets", list(DEFAULT_LOWLIGHT))
    haze_sets = state.get("dehazing_sets", list(DEFAULT_DEHAZING))
    ours: Table = state.get("lowlight", {})
    for backbone in sorted(set(paper) | set(ours)):
        for var in VARIANTS:
            label = f"{backbone} {VARIANT_TITLES[var]}"
            if f"{backbone}_{var}" in state.get("failed", {}):
                lines.append(f"{label}: every cell (the checkpoint could not be loaded, see above)")
            elif var not in ours.get(backbone, {}):
                lines.append(f"{label}: every cell (no checkpoint given)")
    low_runs = [f"{b} {VARIANT_TITLES[v]}" for b in sorted(ours) for v in VARIANTS if v in ours[b]]
    low_runs += list(state.get("lowlight_other", {}))
    haze_runs = list(state.get("dehazing", {}))
    for runs, sets, key in ((low_runs, low_sets, "lowlight_missing"), (haze_runs, haze_sets, "dehazing_missing")):
        for ds, why in (state.get(key) or {}).items():
            if runs and ds in sets:
                reason = "not on disk (the paths looked for are listed above)" if "not found" in why else why
                lines.append(f"{ds}, every metric, of {', '.join(runs)}: {reason}")
    if low_runs and state.get("lpips_unavailable"):
        lines.append(f"LPIPS of {', '.join(low_runs)}: {state['lpips_unavailable']}")
    return lines


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
    low_sets = tuple(state.get("lowlight_sets", DEFAULT_LOWLIGHT))
    lines = ["# Reproduction of the papers' tables", "",
             f"Checkpoints: `{state['checkpoints']}`; data root: `{state.get('data_root') or 'default'}`.", ""]
    if state.get("ignored"):
        lines += [f"Files left out: {', '.join(state['ignored'])}.", ""]
    if state.get("failed"):
        lines += ["Checkpoints that could not be evaluated:", ""]
        lines += [f"- {k}: {v}" for k, v in state["failed"].items()] + [""]

    p_imp, p_tot = count_improved(paper)
    lines += ["## Low-light enhancement: baseline vs w/ SSLL (SSLL paper)", ""]
    lines += ["Improved cells (w/ SSLL better than baseline: PSNR and SSIM higher, LPIPS lower):", "",
              f"- paper: **{p_imp} of {p_tot}** ({_pct(p_imp, p_tot)})"]
    if ours:
        o_imp, o_tot = count_improved(ours, low_sets)
        s_imp, s_tot = count_improved(paper, only=lambda b, ds, m: _has(ours, b, ds, m))
        lines += [f"- ours: **{o_imp} of {o_tot}** evaluated cells ({_pct(o_imp, o_tot)}); the paper's figures "
                  f"for the same cells: {s_imp} of {s_tot}"]
    lines += [""]
    missing = state.get("lowlight_missing") or {}
    if missing:
        lines += ["Missing datasets (cells marked *missing*):", ""] + [f"- {k}: {v}" for k, v in missing.items()]
        lines += [""]
    if not ours and not state.get("lowlight_other"):
        lines += ["No low-light checkpoints were given.", ""]
    for backbone in sorted(ours):
        lines += _backbone_table(backbone, ours[backbone], paper.get(backbone, {}), missing, low_sets)
    for label, run in (state.get("lowlight_other") or {}).items():
        lines += _other_table(label, run, paper.get(run["network"], {}), missing, low_sets)
    if state.get("lowlight_protocol"):
        lines += ["Protocol (low-light):", ""] + [f"- {k}: {v}" for k, v in state["lowlight_protocol"].items()]
        lines += [""]

    lines += ["## Dehazing (ICEML paper, table 2)", ""]
    if not state.get("dehazing"):
        lines += [f"No dehazing checkpoints (RtxICE-Net.pth, ASMICE-Net.pth, {COMBINED_CHECKPOINT} or an ICEML "
                  f"weights file); section skipped.", ""]
    else:
        lines += _dehazing_table(state["dehazing"], paper_dehazing(tables), state.get("dehazing_missing") or {},
                                 tuple(state.get("dehazing_sets", DEFAULT_DEHAZING)))
        if state.get("dehazing_protocol"):
            lines += ["Protocol (dehazing):", ""] + [f"- {k}: {v}" for k, v in state["dehazing_protocol"].items()]
            lines += [""]
    cells = missing_cells(state, paper)
    lines += ["## Cells not measured", ""]
    lines += [f"- {c}" for c in cells] if cells else ["Every cell was measured."]
    return "\n".join(lines).rstrip() + "\n"


def _has(ours: Table, backbone: str, ds: str, metric: str) -> bool:
    v = ours.get(backbone, {})
    return all(((v.get(var) or {}).get(ds) or {}).get(metric) is not None for var in VARIANTS)


def _shown(run: Mapping[str, Any] | None, ds: str, m: str, missing: Mapping[str, str]) -> tuple[float | None, str]:
    """A measured value and its cell text: the number, ``missing`` (no dataset), ``n/a`` (no metric), ``–``."""
    if run is None:
        return None, "–"
    if ds in missing or run.get(ds) is None:
        return None, "missing"
    o = run[ds].get(m)
    return o, "n/a" if o is None else _num(o, m)


def _backbone_table(backbone: str, ours: Mapping[str, Any], paper: Mapping[str, Any],
                    missing: Mapping[str, str], datasets: tuple[str, ...] = ALL_LOWLIGHT) -> list[str]:
    lines = [f"### {backbone}", "",
             "| dataset | metric | baseline (ours) | baseline (paper) | ours − paper | w/ SSLL (ours) | "
             "w/ SSLL (paper) | ours − paper | SSLL gain (ours) | SSLL gain (paper) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        for m in METRICS:
            cells = []
            vals: dict[str, tuple[float | None, float | None]] = {}
            for var in VARIANTS:
                p = ((paper.get(var) or {}).get(ds) or {}).get(m)
                o, shown = _shown(ours.get(var), ds, m, missing)
                vals[var] = (o, p)
                cells += [shown, _num(p, m, paper=True), _diff(o, p, m)]
            (ob, pb), (os_, ps) = vals["baseline"], vals["ssll"]
            lines.append(f"| {ds} | {m.upper()} | " + " | ".join(cells) + f" | {_gain(ob, os_, m)} | "
                         f"{_gain(pb, ps, m)} |")
    return lines + ["", "† = not improved (PSNR/SSIM lower or LPIPS higher), as the paper marks it. "
                    "– = the paper has no figure for this set, or no checkpoint was given.", ""]


def _other_table(label: str, run: Mapping[str, Any], paper: Mapping[str, Any], missing: Mapping[str, str],
                 datasets: tuple[str, ...]) -> list[str]:
    """A checkpoint whose variant is not known, beside both of the paper's figures for its network."""
    lines = [f"### {label}", "", "Variant not known from its name (give `--weight "
             f"{run['network']}_baseline=PATH` or `..._ssll=PATH` to place it in the table above).", "",
             "| dataset | metric | ours | baseline (paper) | w/ SSLL (paper) |", "|---|---|---|---|---|"]
    for ds in datasets:
        for m in METRICS:
            _, shown = _shown(run["scores"], ds, m, missing)
            pb = ((paper.get("baseline") or {}).get(ds) or {}).get(m)
            ps = ((paper.get("ssll") or {}).get(ds) or {}).get(m)
            lines.append(f"| {ds} | {m.upper()} | {shown} | {_num(pb, m, paper=True)} | {_num(ps, m, paper=True)} |")
    return lines + [""]


def _dehazing_table(ours: Mapping[str, Any], paper: Mapping[str, Any], missing: Mapping[str, str],
                    datasets: tuple[str, ...] = PAPER_DEHAZING) -> list[str]:
    lines = ["| network | dataset | PSNR (ours) | PSNR (paper) | ours − paper | SSIM (ours) | SSIM (paper) | "
             "ours − paper |", "|---|---|---|---|---|---|---|---|"]
    for label, run in ours.items():
        for ds in datasets:
            p = _lookup_ds(paper.get(run["network"], {}), ds) or {}
            o = run["scores"].get(ds)
            cells = []
            for m in ("psnr", "ssim"):
                ov = None if o is None else o.get(m)
                shown = "missing" if o is None else _num(ov, m)
                cells += [shown, _num(p.get(m), m, paper=True), _diff(ov, p.get(m), m)]
            lines.append(f"| {label} | {ds} | " + " | ".join(cells) + " |")
    lines.append("")
    if missing:
        lines += ["Missing datasets:", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""]
    return lines


def _report_json(state: Mapping[str, Any], tables: Mapping[str, Any]) -> dict[str, Any]:
    paper = paper_lowlight(tables)
    ours = state.get("lowlight", {})
    p_imp, p_tot = count_improved(paper)
    o_imp, o_tot = count_improved(ours, tuple(state.get("lowlight_sets", DEFAULT_LOWLIGHT)))
    return {"lowlight": {"ours": ours, "other": state.get("lowlight_other", {}), "paper": {b: paper[b] for b in paper},
                         "datasets": state.get("lowlight_sets"),
                         "improved": {"paper": [p_imp, p_tot], "ours": [o_imp, o_tot]},
                         "missing": state.get("lowlight_missing", {})},
            "dehazing": {"ours": state.get("dehazing", {}), "paper": paper_dehazing(tables),
                         "datasets": state.get("dehazing_sets"), "missing": state.get("dehazing_missing", {})},
            "cells_not_measured": missing_cells(state, paper),
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


def plot_radar(ours: Table, paper: Table, out: Path, datasets: tuple[str, ...] | list[str] = ALL_LOWLIGHT,
               missing: Mapping[str, str] | None = None, others: Mapping[str, Any] | None = None) -> list[Path]:
    """One PNG per low-light dataset: a radar per metric, axes = backbones, paper (solid) beside ours (dashed).

    ``others`` (checkpoints of unknown variant) are drawn dotted on their network's axis.
    A backbone with no measured value is labelled "ours: missing" on its axis, and the figure's
    footer lists every missing cell (wrapped over as many lines as it takes; the figure grows to
    hold them), so an absent line is never mistaken for a bad one.
    """
    import textwrap

    plt = _matplotlib()
    backbones = list(paper)
    angles = [2 * math.pi * i / len(backbones) for i in range(len(backbones))] + [0.0]
    files = []
    for ds in datasets:
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.8), subplot_kw={"polar": True})
        handles: dict[str, Any] = {}
        missing_cells: list[str] = []
        for ax, m in zip(axes, METRICS):
            series = [("paper baseline", paper, "baseline", "tab:blue", "-"),
                      ("paper w/ SSLL", paper, "ssll", "tab:red", "-"),
                      ("ours baseline", ours, "baseline", "tab:blue", "--"),
                      ("ours w/ SSLL", ours, "ssll", "tab:red", "--")]
            greens = ("tab:green", "tab:olive", "tab:cyan", "tab:purple")
            series += [(f"ours: {label}", {run["network"]: {"other": run["scores"]}}, "other", greens[i % 4], ":")
                       for i, (label, run) in enumerate((others or {}).items())]
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
        why = " (the dataset is not on disk)" if missing and ds in missing else " (no checkpoint, dataset or metric)"
        note = ("not measured" + why + ": " + ", ".join(missing_cells) if missing_cells else "every cell measured")
        wrapped = textwrap.wrap(note, 200) or [note]
        line_in = 0.14  # inches per footnote line at fontsize 7
        height = 5.8 + line_in * len(wrapped)
        fig.set_size_inches(15, height)
        foot = (0.1 + line_in * len(wrapped)) / height
        fig.text(0.5, 0.1 / height, "\n".join(wrapped), ha="center", va="bottom", fontsize=7)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="lower center", bbox_to_anchor=(0.5, foot),
                       ncol=min(len(handles), 4), fontsize=9)
        fig.suptitle(f"{ds}: paper (solid) vs measured here (dashed)" if paper_has(paper, ds) else
                     f"{ds}: measured here (the paper reports no figures for this set)")
        fig.tight_layout(rect=(0, foot + 0.45 / height, 1, 0.94))
        f = out / f"radar_{ds}.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(f)
    return files


def paper_has(paper: Table, ds: str) -> bool:
    """Whether the paper's table has figures for the set ``ds``."""
    return any((variants.get(v) or {}).get(ds) for variants in paper.values() for v in VARIANTS)


def plot_dehazing(ours: Mapping[str, Any], paper: Mapping[str, Any], out: Path,
                  datasets: tuple[str, ...] | list[str] = PAPER_DEHAZING) -> Path:
    """The ICEML table as bars: PSNR and SSIM per network and dataset, published beside measured;
    a measured bar that is missing is drawn as an empty outlined slot labelled "missing"."""
    plt = _matplotlib()
    rows = [(label, run["network"], run["scores"]) for label, run in ours.items()]
    rows += [(net, net, {}) for net in (list(paper) or list(DEHAZE_NETWORKS)) if net not in {r[1] for r in rows}]
    fig, axes = plt.subplots(1, 2, figsize=(max(12, 1.1 * len(rows) * len(datasets)), 4.2))
    for ax, m in zip(axes, ("psnr", "ssim")):
        labels, xs = [], 0.0
        for label, net, scores in rows:
            for ds in datasets:
                pv = (_lookup_ds(paper.get(net, {}), ds) or {}).get(m)
                ov = ((scores or {}).get(ds) or {}).get(m)
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
                labels.append((xs, f"{label}\n{ds}"))
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
