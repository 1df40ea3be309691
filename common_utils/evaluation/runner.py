"""The one evaluation path: protocols, devices, datasets, and scoring networks on datasets.

``eval.py``, ``eval_with_any_backbone.py``, ``reproduce_tables.py`` and the trainer's final
evaluation all call :func:`evaluate_datasets`, which runs :func:`common_utils.evaluation.evaluator.evaluate`
for every network on every dataset and writes ``<dataset>/per_image.csv``, ``summary.json`` and
``summary.md``. The CLIs only parse arguments.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common_utils.device import select_device
from common_utils.evaluation.evaluator import EvalProtocol, evaluate
from common_utils.evaluation.protocols import AUTO, DEFAULT, PROTOCOLS
from common_utils.evaluation.report import write_rows_csv, write_summary
from common_utils.memory_budget import WHOLE_IMAGE_ONLY_NAMES
from common_utils.no_reference import try_build_niqe
from data import build_dataset
from data.datasets import DatasetMissing
from data.layouts import LAYOUTS, open_layout
from data.loaders import eval_loader
from data.paths import resolve_dataset_args
from foundation.errors import UserError
from models.lpips import try_build_lpips

__all__ = ["PROTOCOLS", "SEED", "build_protocol", "check_output_dir", "dataset_key", "dataset_protocol",
           "dataset_protocols", "evaluate_datasets", "identity", "open_datasets", "parse_network_args",
           "protocol_name_of", "select_device", "worse_than_input"]

SEED = 1951581  # the official SSLL evaluation's seed



def parse_network_args(text: str | None) -> dict[str, Any]:
    """``--network-args``: a JSON object (or a path to a .json file) of constructor arguments."""
    if not text:
        return {}
    src = Path(text).expanduser() if not text.lstrip().startswith("{") else None
    raw = src.read_text() if src is not None and src.is_file() else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--network-args is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--network-args must be a JSON object such as '{{\"width\": 32}}', got: {text}")
    return value


def score_line(entry: dict[str, Any]) -> str:
    """The scores of one summary entry that were computed, in the papers' order (one line)."""
    parts = []
    for key, label, digits in (("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("lpips", "LPIPS", 4),
                               ("ms_ssim", "MS-SSIM", 4), ("niqe", "NIQE", 3)):
        value = entry.get(key)
        if value is not None:
            parts.append(f"{label} {value:.{digits}f}")
        elif key == "lpips" and entry.get("psnr") is not None:
            parts.append("LPIPS n/a")
    return "  ".join(parts) or "no scores (no ground truth; add --niqe for a no-reference score)"


def build_protocol(protocol: str = "paper", ssim: str | None = None, resize: int | None = None, fast: bool = False,
                   tile: int | None = None, tile_overlap: int = 32, gt_mean: bool = False, lpips: bool = True,
                   device: torch.device | str = "cpu", lpips_off_reason: str = "disabled (--no-lpips)",
                   ms_ssim: bool = False, niqe: bool = False, self_ensemble: bool = False) -> EvalProtocol:
    """An :class:`EvalProtocol` from a protocol name and overrides; LPIPS and NIQE only when their files exist.

    ``self_ensemble``: every output is the mean over the 8 flips/rotations of the input
    (:func:`common_utils.inference.forward_self_ensemble`), 8 forwards per image."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}' (use {' or '.join(PROTOCOLS)})")
    base = PROTOCOLS[protocol]
    auto_tile = tile != 0  # --tile 0: never tile, not even a large image
    if tile is not None and tile < 0:
        raise UserError(f"--tile must be a positive tile size, or 0 to never tile, got {tile}")
    if tile == 0:
        tile = None
    if tile and tile_overlap * 2 >= tile:
        raise UserError(f"--tile-overlap {tile_overlap} must be less than half of --tile {tile}")
    if tile_overlap < 0:
        raise UserError("--tile-overlap must be >= 0")
    if resize is not None and resize <= 0:
        raise UserError(f"--resize must be a positive size, got {resize}")
    metric, reason = try_build_lpips() if lpips else (None, lpips_off_reason)
    niqe_metric, niqe_reason = try_build_niqe() if niqe else (None, None)
    return EvalProtocol(name=protocol, description=base["description"], ssim=ssim or base["ssim"],
                        lpips=metric.to(device) if metric is not None else None, lpips_reason=reason, fast=fast,
                        tile=tile, tile_overlap=tile_overlap,
                        resize=resize if resize is not None else base["resize"], gt_mean=gt_mean,
                        ms_ssim=ms_ssim, niqe=niqe_metric, niqe_reason=niqe_reason, self_ensemble=self_ensemble,
                        **({} if auto_tile else {"auto_tile_pixels": None}))


def protocol_name_of(spec: str | Mapping[str, Any]) -> str:
    """The protocol a dataset is scored with: its named layout's (``protocol`` in data/layouts.py,
    also for ``type: layout``), else :data:`common_utils.evaluation.protocols.DEFAULT`."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if spec.get("type") == "layout":
        args = spec.get("args") or {}
        name = args.get("name")
    else:
        name = None if spec.get("type") else spec.get("name")
    return LAYOUTS.get(name).protocol if isinstance(name, str) and name in LAYOUTS else DEFAULT


def dataset_protocols(specs: Iterable[str | Mapping[str, Any]], protocol: str = AUTO, ssim: str | None = None,
                      resize: int | None = None, **options: Any) -> dict[str, EvalProtocol]:
    """``{dataset key: EvalProtocol}`` for the sets :func:`open_datasets` opens from ``specs``: each
    set's own protocol (``auto``) or the one named; ``ssim`` / ``resize`` override it, ``options``
    are :func:`build_protocol`'s (LPIPS is built once for all)."""
    if protocol != AUTO and protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}' (use {', '.join((AUTO, *PROTOCOLS))})")
    built: dict[str, EvalProtocol] = {}
    out: dict[str, EvalProtocol] = {}
    for spec in specs:
        spec, key = _spec_and_key(spec)
        name = protocol_name_of(spec) if protocol == AUTO else protocol
        if name not in built:
            if built:  # the same metrics objects, another protocol's SSIM and size
                first = next(iter(built.values()))
                built[name] = replace(first, name=name, description=PROTOCOLS[name]["description"],
                                      ssim=ssim or PROTOCOLS[name]["ssim"],
                                      resize=resize if resize is not None else PROTOCOLS[name]["resize"])
            else:
                built[name] = build_protocol(name, ssim, resize, **options)
        out[key] = built[name]
    return out


def dataset_protocol(spec: str | Mapping[str, Any], ssim: str | None = None, resize: int | None = None,
                     **options: Any) -> EvalProtocol:
    """The :class:`EvalProtocol` of one dataset spec (a name, or ``{type, args}`` as ``data.val``)."""
    return build_protocol(protocol_name_of(spec), ssim, resize, **options)


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` resolved from the current directory, checked to be creatable and writable before
    any work is done (nothing is created here, so a failed start leaves the disk as it was)."""
    out = Path(path).expanduser().resolve()
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot write the {what} {out}: {probe} is a file, not a folder; choose another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {out}: {probe} is not writable; choose another folder")
    return out


def dataset_key(name: str) -> str:
    """Result key (and output sub-folder) of a dataset name or folder path."""
    p = Path(name)
    return p.name if (len(p.parts) > 1 or p.is_dir()) and p.name else name


def _spec_and_key(spec: str | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A dataset spec as a mapping, and its result key."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    return spec, spec["name"] if spec.get("type") else dataset_key(spec["name"])


def open_datasets(specs: Iterable[str | Mapping[str, Any]], data_root: str | None = None,
                  options: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Open evaluation datasets given by name (a named layout or a folder) or as ``{name, type, args}``.

    Returns ``({key: dataset}, {key: {"missing" | "error": why}})``: a set that is not on disk is
    ``missing``, one that is there but cannot be used (e.g. unmatched file names) is an ``error``;
    both are reported, not raised, so the others are still evaluated. ``options`` are options of
    named layouts (``smid_green_quirk``, ``pairing``, ...); a spec's own ``options`` override them.
    """
    found: dict[str, Any] = {}
    missing: dict[str, dict[str, str]] = {}
    for spec in specs:
        spec, key = _spec_and_key(spec)
        name = spec["name"]
        try:
            if spec.get("type"):
                args = spec.get("args") or {}
                args = args.to_dict() if hasattr(args, "to_dict") else dict(args)
                found[key] = build_dataset(spec["type"], **resolve_dataset_args(args))
            else:
                opts = {**(options or {}), **dict(spec.get("options") or {})}
                found[key] = open_layout(name, data_root, pairing=opts.pop("pairing", None), **opts)
        except DatasetMissing as exc:
            missing[key] = {"missing": str(exc)}
        except UserError as exc:
            if name in LAYOUTS or spec.get("type") or Path(name).is_dir():
                missing[key] = {"error": str(exc)}
            else:
                raise
    return found, missing


Network = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The input itself, scored as a network (the ``input`` row of a summary)."""
    return x


def evaluate_datasets(nets: Mapping[str, Network], datasets: Mapping[str, Any],
                      missing: Mapping[str, Mapping[str, str]], protocol: EvalProtocol | Mapping[str, EvalProtocol],
                      device: torch.device,
                      out_dir: Path, main: str | None = None, order: Iterable[str] | None = None, save: bool = False,
                      workers: int = 0, with_input: bool = False, extra: Mapping[str, Any] | None = None,
                      title: str = "Evaluation", max_images: int | None = None,
                      log: Callable[[str], None] | None = print, annotate: Mapping[str, Any] | None = None,
                      on_bad_image: str = "skip", page: bool = False, report_failures: bool = True
                      ) -> dict[str, Any]:
    """Score every network of ``nets`` on every dataset; write the result files; return the summary.

    ``protocol`` is one for every set or ``{dataset key: protocol}`` (:func:`dataset_protocols`);
    ``_protocol`` in the summary then names, for each field the sets differ in, every set's value.
    Per dataset the summary holds the ``main`` network's means at the top level (its per-image
    rows in ``per_image.csv``, its outputs under ``images/`` with ``save``), each network under
    its label when there are several, and with ``with_input`` the input's own scores under
    ``input``, and ``warnings`` lists the datasets where the main network scores below its input.
    ``annotate`` is added to every evaluated dataset's entry. ``missing`` holds the sets that could
    not be opened (``{"missing": why}`` or ``{"error": why}``, see :func:`open_datasets`).
    Unreadable images are left out and listed under ``skipped`` (``on_bad_image="stop"``: the
    dataset fails with the image's name); a dataset that fails is recorded as ``error`` (and said
    with ``log`` unless ``report_failures`` is false: a caller that names them itself).
    ``page`` also writes ``<dataset>/index.html``, a comparison page of every image (input, each
    network, ground truth) with its pictures under ``<dataset>/page/``
    (:class:`common_utils.evaluation.html_page.ComparisonPage`).
    """
    main = main or next(iter(nets))
    summary: dict[str, Any] = {}
    say = log or (lambda _: None)
    protocols = {k: protocol[k] for k in datasets} if isinstance(protocol, Mapping) else {k: protocol for k in datasets}
    described = {**_describe(protocols, device, protocol), **dict(extra or {})}
    for key in (list(order) if order is not None else [*datasets, *missing]):
        if key in missing:
            summary[key] = dict(missing[key])
            kind, why = next(iter(missing[key].items()))
            if kind == "missing" or report_failures:
                say(f"{key}: {'missing' if kind == 'missing' else 'failed'} - {why}")
            continue
        ds_dir = out_dir / key
        n = len(datasets[key]) if max_images is None else min(max_images, len(datasets[key]))
        loader = eval_loader(datasets[key], num_workers=min(workers, len(datasets[key])),
                             pin_memory=device.type == "cuda", on_bad_image=on_bad_image)

        def bar(label: str, n: int = n, key: str = key) -> Callable[[Iterable], Iterable]:
            # on a terminal a live bar; in a log file a line every 10 s, so a long evaluation shows progress
            return lambda it: tqdm(it, total=n, desc=f"{key} [{label}]", leave=False, file=sys.stderr,
                                   mininterval=2.0 if sys.stderr.isatty() else 10.0, disable=n < 2)

        book = None
        if page:
            from common_utils.evaluation.html_page import ComparisonPage  # only when a page is asked for
            book = ComparisonPage(ds_dir, key, list(nets), main=main, title=f"{title}: {key}")
        hook = book.hook if book is not None else lambda label: None
        try:
            scored = {label: evaluate(net, loader, device, protocols[key], max_images=max_images, progress=bar(label),
                                      save_dir=ds_dir / "images" if save and label == main else None,
                                      on_image=hook(label))
                      for label, net in nets.items()}
            if with_input:
                as_is = dataclasses.replace(protocols[key], self_ensemble=False)  # the input is the input
                scored["input"] = evaluate(identity, loader, device, as_is, max_images=max_images,
                                           time_forward=False, on_image=hook("input"), progress=bar("input"))
        except UserError as exc:
            if book is not None:
                book.close(check=False)
            summary[key] = {"error": str(exc)}
            if report_failures:
                say(f"{key}: failed - {exc}")
            continue
        write_rows_csv(ds_dir / "per_image.csv", scored[main].rows)
        entry: dict[str, Any] = {**scored[main].summary(), "network": main, **dict(annotate or {})}
        if len(scored) > 1:
            entry.update({label: res.summary() for label, res in scored.items()})
            entry.get("input", {}).pop("latency_ms", None)
            entry.get("input", {}).pop("fps", None)
        summary[key] = entry
        report_left_out(entry.get("skipped", []), len(entry.get("tiled_automatically", [])), protocols[key],
                        lambda line, key=key: say(f"{key}: {line}"), in_strips=len(entry.get("scored_in_strips", [])))
        if not entry["images"]:
            summary[key] = {**entry, "error": "no image could be evaluated (see the warnings above)"}
            if report_failures:
                say(f"{key}: failed - no image could be evaluated")
            continue
        say(f"{key}: {entry['images']} images  {main}: {score_line(entry)}  "
            f"{entry.get('ms_per_image', float('nan')):.1f} ms/image "
            f"(median {entry.get('latency_ms', float('nan')):.1f} after the first)"
            + (f"  | input: {score_line(entry['input'])}" if with_input and "input" in entry else ""))
        if book is not None:
            where = book.write(entry, described)
            say(f"{key}: comparison page {where} ({book.seconds:.2f} s)")
    warnings = worse_than_input(summary)
    for w in warnings:
        say(f"WARNING: {w}")
    if warnings:
        summary["warnings"] = warnings
    write_summary(out_dir, summary, described, title=title)
    return summary


def report_left_out(skipped: Iterable[str], tiled: int, protocol: EvalProtocol,
                    say: Callable[[str], None] | None = None, in_strips: int = 0) -> None:
    """Name every image left out (once each), count those that ran in tiles automatically and those
    scored in strips (:mod:`common_utils.memory_budget`): the lines both evaluation CLIs end a set with
    (``say``: default, warnings to stderr and the notes to stdout)."""
    note = say or (lambda m: print(m, flush=True))
    for why in skipped:
        (say or (lambda m: print(m, file=sys.stderr, flush=True)))(f"warning: skipped {why}")
    if tiled:
        note(f"note: {tiled} large image(s) ran in tiles of {protocol.auto_tile} pixels (above "
             f"{protocol.auto_tile_pixels} pixels; --tile N to choose, --tile 0 never tiles)")
    if in_strips:
        note(f"note: {in_strips} image(s) above {protocol.full_metric_pixels} pixels were scored in strips: PSNR "
             f"and SSIM exact, {WHOLE_IMAGE_ONLY_NAMES} not computed "
             f"for them (those means are over the other images; see scored_in_strips in the summary)")


def _describe(protocols: Mapping[str, EvalProtocol], device: torch.device,
              fallback: EvalProtocol | Mapping[str, EvalProtocol]) -> dict[str, Any]:
    """The ``_protocol`` of a summary: the protocol's fields, or per set where the sets' protocols differ."""
    if not protocols:
        first = next(iter(fallback.values()), None) if isinstance(fallback, Mapping) else fallback
        return first.describe(device) if first is not None else {}
    each = {k: p.describe(device) for k, p in protocols.items()}
    out: dict[str, Any] = {}
    for field_name in next(iter(each.values())):
        values = {k: d.get(field_name) for k, d in each.items()}
        same = len({repr(v) for v in values.values()}) == 1
        out[field_name] = next(iter(values.values())) if same else "; ".join(f"{k}: {v}" for k, v in values.items())
    return out


def worse_than_input(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per dataset whose main network scores below the input itself (PSNR or SSIM)."""
    out = []
    for name, entry in summary.items():
        if name.startswith("_") or not isinstance(entry, Mapping) or not isinstance(entry.get("input"), Mapping):
            continue
        low = [m for m in ("psnr", "ssim") if entry.get(m) is not None and entry["input"].get(m) is not None
               and entry[m] < entry["input"][m]]
        if not low:
            continue
        shown = ", ".join(f"{m.upper()} {entry[m]:.4g} < input {entry['input'][m]:.4g}" for m in low)
        if len(low) == 2:  # worse on both counts: nothing was learned
            why = "it did not learn the task (check optim.lr, the losses and the data)"
        else:  # better on one metric: it learned something, with a side effect worth seeing
            better = "SSIM" if low == ["psnr"] else "PSNR"
            why = (f"its {better} is above the input's, so it changes the images in a way {low[0].upper()} "
                   f"penalises (look at its outputs, e.g. with --html)")
        out.append(f"on {name} the {entry.get('network')} network scores below its own input ({shown}): {why}")
    return out
