"""Result tables: per-image CSV, ``summary.json`` and a Markdown table."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_rows_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-image metrics, one row per image plus an ``Average`` row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        path.write_text("")
        return
    keys = list(rows[0])
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        avg: dict[str, Any] = {"name": "Average"}
        for k in keys[1:]:
            vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
            avg[k] = _fmt(sum(vals) / len(vals)) if vals else ""
        w.writerow(avg)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.8f}" if math.isfinite(v) else str(v)
    return "" if v is None else v


def write_summary(out_dir: Path, summary: Mapping[str, Any], protocol: Mapping[str, Any] | None = None,
                  title: str = "Evaluation") -> None:
    """``summary.json`` ({dataset: {psnr, ssim, lpips, images, ...}}) and ``summary.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(summary)
    if protocol is not None:
        data["_protocol"] = dict(protocol)
    (out_dir / "summary.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    (out_dir / "summary.md").write_text(markdown_table(summary, protocol, title))


def _json_default(o: Any) -> Any:
    return str(o)


def markdown_table(summary: Mapping[str, Any], protocol: Mapping[str, Any] | None, title: str,
                   notes: bool = True) -> str:
    """A Markdown table of the summary (one row per dataset and network); ``notes`` adds the list of
    sets not evaluated with the reason (the console leaves it out: each was printed once already)."""
    entries = [e for ds, e in summary.items() if not ds.startswith("_") and isinstance(e, Mapping)]
    # NIQE (no reference) gets a column only when some set was scored with it
    niqe = any(e.get("niqe") is not None or any(isinstance(v, Mapping) and v.get("niqe") is not None
                                                for v in e.values()) for e in entries)
    head = ["dataset", "network", "images", "PSNR", "SSIM", "LPIPS"] + (["NIQE"] if niqe else []) + \
        ["latency (ms)", "FPS"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dashes = " – |" * (len(head) - 3)
    for ds, entry in summary.items():
        if ds.startswith("_") or not isinstance(entry, Mapping):
            continue
        if "missing" in entry:
            lines.append(f"| {ds} | – | missing |{dashes}")
            continue
        if "error" in entry:
            lines.append(f"| {ds} | – | failed |{dashes}")
            continue
        subs = [(k, v) for k, v in entry.items() if isinstance(v, Mapping)]
        label = entry.get("network")
        # the main network's means are both at the top level and under its label: show them once
        rows = subs if isinstance(label, str) and label in dict(subs) else [(label or "main", entry)] + subs
        for net, r in rows:
            cells = [_cell(r.get("psnr"), 2), _cell(r.get("ssim"), 4), _cell(r.get("lpips"), 4)]
            cells += [_cell(r.get("niqe"), 3)] if niqe else []
            cells += [_cell(r.get("latency_ms"), 1), _cell(r.get("fps"), 2)]
            lines.append(f"| {ds} | {net} | {r.get('images', '')} | " + " | ".join(cells) + " |")
    unevaluated = [(ds, e.get("missing") or e.get("error")) for ds, e in summary.items()
             if not ds.startswith("_") and isinstance(e, Mapping) and (e.get("missing") or e.get("error"))]
    if notes and unevaluated:
        lines += ["", "Not evaluated:", ""] + [f"- {ds}: {msg}" for ds, msg in unevaluated]
    if protocol:
        lines += ["", "Protocol:", ""] + [f"- {k}: {v}" for k, v in protocol.items()]
    return "\n".join(lines) + "\n"


def _cell(v: Any, nd: int) -> str:
    return "–" if v is None else f"{v:.{nd}f}"
