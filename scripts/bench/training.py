"""(b) The training step of the real trainers on synthetic pairs."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from common_utils.benchmarking import (
    BenchRow,
    Timing,
    backend_flags,
    backend_state,
    fmt,
    free_memory,
    markdown_table,
    sync,
)

from .common import REPO_ROOT, log, lpips, out, ratio_text, write_pairs

SEMI_FLOOR = 8 / 3  # teacher fwd 2B + student fwd+bwd 2B (=6B) over fwd+bwd B (=3B), fwd = 1 unit


def trainer_overrides(name: str, mode: str, s: dict[str, Any], data: Path, lpips_ok: bool) -> list[str]:
    crop = s["train_size"]
    ov = [f"name=bench_{mode.replace(' ', '_').replace('-', '_')}_{name.lower()}", f"output_root={data.parent}/exp",
          f"device={s['device']}", f"data.paired.args.lq_dir={data}/low", f"data.paired.args.gt_dir={data}/high",
          f"data.paired.args.crop_size={crop}", "data.val.type=null", "data.num_workers=0",
          f"train.iters={s['train_warmup'] + s['train_repeats'] + 1}", "train.val_every=null",
          "train.val_every_epochs=null", "train.save_every=1000000000", "train.log_every=1000000000",
          "train.keep_last=1", "eval.after_train=false"]
    ov += [f"network.args.{k}={json.dumps(v)}" for k, v in s["network_args"].get(name, {}).items()]
    ov += [] if lpips_ok else ["losses=[ssim]"]
    if mode != "supervised":
        ov += [f"data.unpaired.args.root={data / 'unpaired'}", f"data.unpaired.args.crop_size={crop}",
               "ssll.semi_start_epoch=1", f"ssll.fused_student_forward={str(mode == 'semi fused').lower()}"]
    return ov


def time_trainer(trainer: Any, warmup: int) -> tuple[Timing, Timing, bool]:
    """Run ``trainer.train()`` timing each loop iteration between two batch fetches (synchronised).

    Returns the step timing after ``warmup`` steps, the fetch timing, and whether every batch carried
    the unpaired part. The last step ends in the end-of-run logging (no following fetch): not timed.
    """
    original, steps, fetches, kinds, last = trainer.next_batches, Timing(), Timing(), [], [None]

    def timed_next_batches() -> dict[str, Any]:
        sync(trainer.device)
        now = time.perf_counter()
        if last[0] is not None:
            steps.samples.append(now - last[0])
        batch = original()
        sync(trainer.device)
        last[0] = time.perf_counter()
        fetches.samples.append(last[0] - now)
        kinds.append("unpaired" in batch)
        return batch

    trainer.next_batches = timed_next_batches  # instance attribute: BaseTrainer.train calls it
    trainer.save_checkpoint = lambda *a, **k: None
    trainer.train()
    steps.samples = steps.samples[warmup:]
    return steps, fetches, bool(kinds) and all(kinds)


def training_row(name: str, mode: str, s: dict[str, Any], data: Path, lpips_ok: bool) -> BenchRow:
    from core import TRAINERS
    from core.config import load_config

    cfg_file = f"config/{'sup' if mode == 'supervised' else 'ssll'}_{name.lower()}.yaml"
    row = BenchRow("training", name, mode, items=0, extra={"network": name, "config": cfg_file,
                                                           "crop": s["train_size"]})
    trainer = None
    try:
        cfg = load_config(REPO_ROOT / cfg_file, trainer_overrides(name, mode, s, data, lpips_ok))
        row.items = batch = cfg.data.paired.batch_size or cfg.data.batch_size
        row.extra.update(batch=batch, trainer=cfg.trainer, losses=[x.name for x in cfg.losses], amp=cfg.train.amp,
                         tf32=cfg.train.tf32, channels_last=cfg.train.channels_last, compile=cfg.train.compile,
                         ema_decay=cfg.train.ema_decay)
        if mode != "supervised":
            row.extra.update(fused_student_forward=cfg.ssll.fused_student_forward,
                             unpaired_batch=cfg.data.unpaired.batch_size or batch)
        with backend_flags():  # the trainer sets TF32 / cudnn.benchmark from its config; restored after
            trainer = TRAINERS.get(cfg.trainer)(cfg)
            row.timing, fetches, semi = time_trainer(trainer, s["train_warmup"])
            row.extra["backend"] = backend_state()
        row.extra.update(fetch_median_s=fetches.median, nonfinite_steps=trainer.nonfinite_total)
        if mode != "supervised" and not semi:
            row.status, row.note = "error", "not every timed step was semi-supervised"
        elif not row.timing.samples:
            row.status, row.note = "error", "no step timed"
        elif trainer.nonfinite_total:
            row.note = f"{trainer.nonfinite_total} non-finite step(s) skipped (cheaper than a real step)"
    except Exception as exc:
        row.fail(exc)
    finally:
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.close()
        del trainer
        free_memory(s["device"])
    return row


def bench_training(s: dict[str, Any], device: torch.device, tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    lpips_ok, lpips_reason = lpips()[0] is not None, lpips()[1]
    names = [n for n in s["networks"] if (REPO_ROOT / "config" / f"sup_{n.lower()}.yaml").is_file()]
    notes = []
    if len(names) < len(s["networks"]):
        notes.append("no paper training config (config/sup_<net>.yaml) for "
                     f"{', '.join(n for n in s['networks'] if n not in names)}: not trained here")
    if not lpips_ok:
        notes.append("LPIPS weights unavailable: the training losses are [ssim] instead of the paper's "
                     "[ssim, lpips], so these step times exclude the LPIPS (AlexNet) forward and backward and "
                     f"underestimate the paper's step ({lpips_reason})")
    data, size = tmp / "train_data", s["train_size"] + 16
    write_pairs(data, 16, size, size, unpaired=True)
    rows, ratios = [], []
    for name in names:
        by_mode = {}
        for mode in ("supervised", "semi fused", "semi two-pass"):
            rows.append(by_mode.setdefault(mode, training_row(name, mode, s, data, lpips_ok)))
            log(f"[training] {name} {mode}: {fmt(rows[-1].median_s, 4)} s {rows[-1].status} {rows[-1].note}")
        sup = by_mode["supervised"].median_s
        ratio = {"network": name, "sup_s": sup}
        for mode, key in (("semi fused", "fused"), ("semi two-pass", "two_pass")):
            m = ratio[f"semi_{key}_s"] = by_mode[mode].median_s
            ratio[f"semi_{key}_over_sup"] = (m / sup) if (m and sup) else None
        ratios.append(ratio)
    return {"rows": [r.to_dict() for r in rows], "ratios": ratios, "lpips_in_loss": lpips_ok,
            "semi_over_sup_floor": SEMI_FLOOR, "synthetic_pairs": 16, "notes": notes}


def print_training(res: dict[str, Any], s: dict[str, Any]) -> None:
    out(f"## (b) Training step (crop {s['train_size']}, median of {s['train_repeats']} steps after "
        f"{s['train_warmup']} warm-up)")
    out()
    if res["rows"]:
        out(markdown_table(
            ["network", "step", "config", "batch", "losses", "amp", "median s/step", "pairs/s", "status", "note"],
            [[r["name"], r["variant"], r["config"], r.get("batch", "–"), ",".join(r.get("losses", [])) or "–",
              r.get("amp", "–"), fmt(r["median_s"], 4), fmt(r["per_second"], 1), r["status"], r["note"]]
             for r in res["rows"]]))
        out()
        out(markdown_table(
            ["network", "sup s", "semi fused s", "semi/sup fused", "semi two-pass s", "semi/sup two-pass"],
            [[x["network"], fmt(x["sup_s"], 4), fmt(x["semi_fused_s"], 4), ratio_text(x["semi_fused_over_sup"]),
              fmt(x["semi_two_pass_s"], 4), ratio_text(x["semi_two_pass_over_sup"])] for x in res["ratios"]]))
        out()
        out(f"Semi/sup arithmetic floor ~{SEMI_FLOOR:.2f}x in FLOPs (teacher forward on 2B + student forward and "
            "backward on 2B, against forward and backward on B); a measured ratio below it means the device was not "
            "saturated at batch B, so the larger semi-supervised batches cost less than their FLOPs. Timed: one "
            "BaseTrainer.train iteration without the data fetch (zero_grad, train_step, non-finite check, optimizer "
            "and scheduler step, EMA update); pairs/s = paired batch / step time.")
    for n in res["notes"]:
        out(f"- note: {n}")
    out()


