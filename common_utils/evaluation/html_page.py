"""A self-contained HTML comparison page per evaluated dataset (``eval.py --html``).

:class:`ComparisonPage` receives every network's outputs through the evaluator's ``on_image``
hook and writes each picture as it comes (a JPEG thumbnail and a full-size PNG under
``<dataset>/page/``) on one background thread, a bounded number at a time, so neither memory nor
the evaluation loop grow with the dataset. :meth:`ComparisonPage.write` then writes
``<dataset>/index.html``: the summary with the metric protocol, then one row per image (input |
each network | ground truth, metrics under each), sortable by any metric or by the difference of
one metric between two columns, with a slider to compare two pictures of a row at the same spot.
The page needs no server and no network: CSS, script and data (JSON) are inline, the pictures are
relative, URL-encoded links (names with spaces or unicode work); the rows are drawn a page at a
time and the thumbnails load lazily, so large datasets stay fast. The page, its style and its
script are the template ``comparison_page.html`` beside this file; this module fills in the parts
that depend on the data.
"""
from __future__ import annotations

import functools
import html
import json
import math
import os
import re
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import torch

from data.image_io import write_image

INPUT, GT = "input", "gt"
#: metric key -> (label, digits shown, higher is better); other numeric row keys are shown as they are
METRICS: dict[str, tuple[str, int, bool]] = {
    "psnr": ("PSNR", 2, True), "ssim": ("SSIM", 4, True), "lpips": ("LPIPS", 4, False),
    "psnr_gt_mean": ("PSNR (GT mean)", 2, True), "ssim_gt_mean": ("SSIM (GT mean)", 4, True),
}
#: characters that are not allowed (or not portable) in file names
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')

OnImage = Callable[[int, dict[str, Any], torch.Tensor, dict[str, Any]], None]


def safe_stem(name: str, limit: int = 150) -> str:
    """``name`` as a portable file-name stem: path separators and reserved characters become ``_``;
    spaces and unicode stay (the page links are URL-encoded), at most ``limit`` UTF-8 bytes."""
    stem = _UNSAFE.sub("_", str(name)).strip(" .") or "image"
    while len(stem.encode("utf-8")) > limit:
        stem = stem[:-1]
    return stem


def _finite(v: Any) -> float | None:
    """A JSON-safe metric value (NaN and infinities have no JSON form: shown as missing)."""
    return round(float(v), 6) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _to_pixels(image: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) tensor in [0, 1] as an (H, W, 3) uint8 RGB array on the host (converted on the
    tensor's device, so a GPU sends a quarter of the bytes)."""
    return image[0].detach().float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_picture(pixels: np.ndarray, full: Path, thumb: Path, thumb_size: tuple[int, int], jpeg_quality: int) -> None:
    """Write an RGB uint8 picture as a full-size PNG (lossless) and a JPEG thumbnail of ``thumb_size`` (w, h)."""
    write_image(full, pixels, fast_png=True)
    if thumb_size != (pixels.shape[1], pixels.shape[0]):
        pixels = cv2.resize(np.ascontiguousarray(pixels), thumb_size, interpolation=cv2.INTER_AREA)
    write_image(thumb, pixels, jpeg_quality=jpeg_quality)


def spare_cores() -> int:
    """Encoder threads for the page: the cores this process may use but one (for the evaluation), 1 to 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores - 1))


class BackgroundWriter:
    """Runs jobs on ``threads`` worker threads, at most ``depth`` queued (OpenCV encoding releases the
    GIL, so it overlaps the evaluation); the first error is raised by the next :meth:`submit` or :meth:`close`."""

    def __init__(self, threads: int = 1, depth: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="html-page")
        self._slots = threading.BoundedSemaphore(max(1, depth))
        self.error: BaseException | None = None

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        self._slots.acquire()  # waits while ``depth`` jobs are queued: memory stays bounded
        self._pool.submit(self._run, fn, args)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # kept for the evaluation thread to raise
            self.error = self.error or exc
        finally:
            self._slots.release()

    def close(self, check: bool = True) -> None:
        """Wait for the queued jobs; raise the first error (with ``check``)."""
        self._pool.shutdown(wait=True)
        if check and self.error is not None:
            raise self.error


class ComparisonPage:
    """The comparison page of one dataset: feed it with :meth:`hook`, finish it with :meth:`write`.

    ``networks`` are the column labels in order (the first one's images also bring the input and
    the ground truth); the label ``input`` is the input scored as a network (its metrics go under
    the input column). ``seconds`` is the time the page cost the evaluation thread. Pictures are
    encoded on ``threads`` threads (default :func:`spare_cores`), at most ``queue`` per thread in flight.
    """

    def __init__(self, folder: Path, dataset: str, networks: Sequence[str], main: str | None = None,
                 title: str | None = None, thumb_size: int = 256, jpeg_quality: int = 82, threads: int | None = None,
                 queue: int = 4) -> None:
        self.folder = Path(folder)
        self.dataset = dataset
        self.networks = [n for n in networks if n != INPUT]
        self.main = main or self.networks[0]
        self.title = title or f"{dataset}: comparison"
        self.thumb_size = thumb_size
        self.jpeg_quality = jpeg_quality
        self.rows: dict[int, dict[str, Any]] = {}
        self.seconds = 0.0
        threads = threads or spare_cores()
        self._writer = BackgroundWriter(threads, queue * threads)
        self._stems: set[str] = set()
        self.dirs: dict[str, str] = {INPUT: "_input", GT: "_gt"}
        for label in self.networks:
            self.dirs[label] = self._unique(safe_stem(label), {d.lower() for d in self.dirs.values()})

    @staticmethod
    def _unique(stem: str, taken: set[str]) -> str:
        """``stem``, or ``stem~N`` when taken (compared without case: some file systems ignore it)."""
        out, n = stem, 1
        while out.lower() in taken:
            n += 1
            out = f"{stem}~{n}"
        return out

    # ------------------------------------------------------------------ collecting
    def hook(self, label: str) -> OnImage:
        """The ``on_image`` callback of the evaluation of column ``label``."""
        def on_image(index: int, batch: dict[str, Any], output: torch.Tensor, row: dict[str, Any]) -> None:
            t0 = perf_counter()
            self.add(label, index, batch, output, row)
            self.seconds += perf_counter() - t0
        return on_image

    def add(self, label: str, index: int, batch: Mapping[str, Any], output: torch.Tensor,
            row: Mapping[str, Any]) -> None:
        """Record image ``index``'s metrics for ``label`` and queue its pictures for writing."""
        rec = self.rows.get(index)
        if rec is None:
            h, w = (int(s) for s in output.shape[-2:])
            scale = min(1.0, self.thumb_size / max(h, w))
            stem = self._unique(safe_stem(row["name"]), self._stems)
            self._stems.add(stem.lower())
            rec = self.rows[index] = {"name": str(row["name"]), "stem": stem, "w": w, "h": h,
                                      "tw": max(1, round(w * scale)), "th": max(1, round(h * scale)), "m": {},
                                      "gt": False}
        metrics = {k: _finite(v) for k, v in row.items() if k != "name"}
        if metrics:
            rec["m"][label] = metrics
        if label == INPUT:  # its pictures come with the first network's
            return
        self._queue(label, rec, output)
        if label == self.networks[0]:
            self._queue(INPUT, rec, batch["lq"])
            if batch.get("gt") is not None:
                self._queue(GT, rec, batch["gt"])
                rec["gt"] = True

    def _queue(self, column: str, rec: Mapping[str, Any], image: torch.Tensor) -> None:
        base = f"{self.dirs[column]}/{rec['stem']}"
        self._writer.submit(write_picture, _to_pixels(image), self.folder / "page" / "full" / f"{base}.png",
                            self.folder / "page" / "thumbs" / f"{base}.jpg", (rec["tw"], rec["th"]),
                            self.jpeg_quality)

    def close(self, check: bool = True) -> None:
        """Finish writing the pictures; ``check=False`` after a failed evaluation (its error is reported)."""
        self._writer.close(check)

    # ------------------------------------------------------------------ the page
    def write(self, summary: Mapping[str, Any] | None = None, protocol: Mapping[str, Any] | None = None) -> Path:
        """Wait for the pictures, then write ``index.html`` (summary entry and protocol as in ``summary.json``)."""
        t0 = perf_counter()
        self.close()
        path = self.folder / "index.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(summary or {}, protocol or {}), encoding="utf-8")
        self.seconds += perf_counter() - t0
        return path

    def columns(self) -> list[tuple[str, str]]:
        """(key, label) of the picture columns: input, the networks, the ground truth when there is one."""
        cols = [(INPUT, "input"), *((n, n) for n in self.networks)]
        return cols + [(GT, "ground truth")] if any(r["gt"] for r in self.rows.values()) else cols

    def metric_keys(self) -> list[str]:
        """The metrics found in the rows, known ones first."""
        found = {k for r in self.rows.values() for m in r["m"].values() for k, v in m.items() if v is not None}
        return [k for k in METRICS if k in found] + sorted(found - set(METRICS))

    def render(self, summary: Mapping[str, Any], protocol: Mapping[str, Any]) -> str:
        """The page's HTML; the image rows are drawn by the script from the JSON, one page of rows at a time."""
        metrics = self.metric_keys()
        columns = self.columns()
        scored = [(k, lbl) for k, lbl in columns if any(k in r["m"] for r in self.rows.values())]
        data = {
            "columns": [{"key": k, "label": lbl, "dir": quote(self.dirs[k])} for k, lbl in columns],
            "metrics": {k: {"label": _label(k), "digits": METRICS.get(k, ("", 4))[1]} for k in metrics},
            "rows": [{"name": r["name"], "stem": quote(r["stem"]), "w": r["w"], "h": r["h"], "tw": r["tw"],
                      "th": r["th"], "m": r["m"]} for _, r in sorted(self.rows.items())],
        }
        # JSON inside <script>: "<" escaped so that no name can close the element
        blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
        right = GT if columns[-1][0] == GT else INPUT
        return _page_template().substitute(
            title=_esc(self.title), summary=self._summary_html(summary, protocol, metrics, scored),
            controls=self._controls_html(metrics, scored), page_sizes=_page_sizes_html(),
            table_head=_table_head_html(columns, metrics, {k for k, _ in scored}),
            compare_left=_options_html(columns, self.main), compare_right=_options_html(columns, right), data=blob)

    def _summary_html(self, summary: Mapping[str, Any], protocol: Mapping[str, Any], metrics: list[str],
                      scored: list[tuple[str, str]]) -> str:
        fields = [("images", "images", 0), *((k, _label(k), METRICS.get(k, ("", 4))[1]) for k in metrics),
                  ("latency_ms", "latency (ms)", 1), ("fps", "FPS", 2)]
        head = "".join(f"<th>{_esc(lbl)}</th>" for _, lbl, _ in fields)
        lines = [f"<section id=\"summary\"><h2>Summary</h2><table class=\"summary\"><tr><th>network</th>{head}</tr>"]
        for key, label in [(n, n) for n in self.networks] + [(k, lbl) for k, lbl in scored if k == INPUT]:
            entry = summary.get(key)
            entry = entry if isinstance(entry, Mapping) else summary if key == self.main else {}
            cells = "".join(f"<td>{_cell(entry.get(k), d)}</td>" for k, _, d in fields)
            lines.append(f"<tr><th>{_esc(label)}</th>{cells}</tr>")
        lines.append("</table>")
        if summary.get("skipped"):
            lines.append("<p>Left out:</p><ul>" + "".join(f"<li>{_esc(s)}</li>" for s in summary["skipped"]) + "</ul>")
        if protocol:
            lines.append("<h2>Metric protocol</h2><dl class=\"protocol\">" + "".join(
                f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in protocol.items()) + "</dl>")
        lines.append("</section>")
        return "\n".join(lines)

    @staticmethod
    def _controls_html(metrics: list[str], scored: list[tuple[str, str]]) -> str:
        hint = ("Click a metric under a column title to sort by it (again to reverse); click a thumbnail for the "
                "full-size picture, <b>compare</b> to slide between two pictures of a row.")
        if len(scored) < 2 or not metrics:
            return f"<p class=\"controls\">{hint} <span id=\"status\" role=\"status\"></span></p>"
        opts = lambda items: "".join(f"<option value=\"{_esc(k)}\">{_esc(v)}</option>" for k, v in items)
        pick = lambda ident, sel: (f"<select id=\"{ident}\">" + "".join(
            f"<option value=\"{_esc(k)}\"{' selected' if i == sel else ''}>{_esc(v)}</option>"
            for i, (k, v) in enumerate(scored)) + "</select>")
        return (f"<p class=\"controls\">{hint}<br>Sort by the difference of <select id=\"diff-metric\">"
                f"{opts((k, _label(k)) for k in metrics)}</select>: {pick('diff-a', len(scored) - 1)} minus "
                f"{pick('diff-b', 0)} <button type=\"button\" id=\"diff-sort\">sort by difference</button> "
                f"<span id=\"status\" role=\"status\"></span></p>")


def _table_head_html(columns: list[tuple[str, str]], metrics: list[str], scored: set[str]) -> str:
    """The image table's head cells (sort buttons under each scored column); rows come from the JSON."""
    head = ['<th><button type="button" class="sort" data-col="" data-metric="index" title="#">#</button> '
            '<button type="button" class="sort" data-col="" data-metric="name" title="name">name</button></th>']
    for key, label in columns:
        buttons = "".join(f' <button type="button" class="sort" data-col="{_esc(key)}" data-metric="{_esc(m)}" '
                          f'title="{_esc(label)} {_esc(_label(m))}">{_esc(_label(m))}</button>' for m in metrics
                          ) if key in scored else ""
        head.append(f"<th>{_esc(label)}<br>{buttons}</th>")
    head.append('<th class="delta">&Delta;</th>')
    return "".join(head)


def _page_sizes_html() -> str:
    """The choices of rows per page (100 first shown; 0: all)."""
    return "".join(f'<option value="{n}"{" selected" if n == 100 else ""}>{n or "all"}</option>'
                   for n in (25, 100, 500, 0))


def _label(metric: str) -> str:
    return METRICS[metric][0] if metric in METRICS else metric


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, bool) or v is None:
        return "&ndash;" if v is None else str(v)
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return _esc(v)


def _options_html(columns: list[tuple[str, str]], selected: str) -> str:
    """The picture columns as the options of a compare-dialog choice, ``selected`` chosen."""
    return "".join(f"<option value=\"{_esc(k)}\"{' selected' if k == selected else ''}>{_esc(v)}</option>"
                   for k, v in columns)


class _PageTemplate(string.Template):
    """``{{name}}`` places: the page's script uses ``$`` for itself."""

    pattern = r"\{\{(?:(?P<named>[a-z_]+)\}\}|(?P<braced>(?!))|(?P<escaped>(?!))|(?P<invalid>))"


#: the page, its style and its script (filled by :meth:`ComparisonPage.render`)
PAGE_TEMPLATE = Path(__file__).resolve().parent / "comparison_page.html"


@functools.lru_cache(maxsize=1)
def _page_template() -> _PageTemplate:
    return _PageTemplate(PAGE_TEMPLATE.read_text(encoding="utf-8"))
