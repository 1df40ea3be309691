"""Arguments and the run of ``scripts/compare_official.py``: workers, sections, report."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __doc__ as DESCRIPTION
from .official import OfficialSide, official_missing, run_official_eval
from .ours import OursSide, run_ours_eval
from .prepare import ensure_alexnet, machine_info, make_batches, prepare_data, prepare_torch_home
from .protocol import BACKBONES, ENTRY, REPO_ROOT, Worker, WorkerError, serve, set_single_thread, worker_env
from .report import markdown
from .sections import Side, run_equality, run_eval, run_profile, run_training


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", type=Path, help="checkout of github.com/eezkni/CMT (the official SSLL code)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "compare_official")
    p.add_argument("--sections", nargs="+", default=["train", "equality", "eval"],
                   choices=["train", "equality", "eval", "profile"])
    p.add_argument("--official-python", default=sys.executable,
                   help="interpreter for the official side (needs piq, loguru, timm, pyiqa; default: this one)")
    p.add_argument("--alexnet", type=Path, default=None,
                   help="stand-in AlexNet state dict shared by both sides (default: <official>/../alexnet_standin.pth, "
                        "created from torchvision.models.alexnet() with seed 0 when missing)")
    p.add_argument("--train-data", type=Path, default=REPO_ROOT / "datasets" / "LOL" / "our485",
                   help="folder with low/ and high/ PNG pairs (paired set and unpaired pool are cut from it)")
    p.add_argument("--eval-data", type=Path, default=REPO_ROOT / "datasets" / "LOL" / "eval15")
    p.add_argument("--pairs", type=int, default=60, help="pairs in the paired set (as many low images form the pool)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=None,
                   help="override the paper batch (RetinexFormer 3, CIDNet 8, UNet 3)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per block")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations at the start of every block")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (official, ours, ours_fast, ours_env)")
    p.add_argument("--fast-switches", nargs="*", default=["train.channels_last=true", "train.compile=true"],
                   help="config overrides of the 'ours_fast' variant (none: skip it)")
    p.add_argument("--ours-env", nargs="*", default=[], metavar="VAR=VALUE",
                   help="environment of an extra 'ours_env' variant (defaults, own process; e.g. glibc malloc "
                        "tunables MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824); none: skip it")
    p.add_argument("--equality-iters", type=int, default=5)
    p.add_argument("--teacher-offset", type=float, default=1e-3,
                   help="equality check: initial teacher = student + this x N(0,1) per weight (0: equal)")
    p.add_argument("--eval-network", default="RetinexFormer", choices=list(BACKBONES))
    p.add_argument("--eval-copies", type=int, default=1, help="copies of the eval images (a larger set)")
    p.add_argument("--eval-rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    # worker modes (internal)
    p.add_argument("--worker", choices=["ours", "official", "ours-eval", "official-eval"], help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--weight", help=argparse.SUPPRESS)
    p.add_argument("--low", help=argparse.SUPPRESS)
    p.add_argument("--high", help=argparse.SUPPRESS)
    p.add_argument("--result-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        set_single_thread()
    if args.worker == "ours":
        return serve(lambda: OursSide(str(args.work), args.crop))
    if args.worker == "official":
        return serve(lambda: OfficialSide(str(args.official), str(args.work), args.crop))
    if args.worker == "ours-eval":
        return run_ours_eval(args.rest, args.report)
    if args.worker == "official-eval":
        return run_official_eval(args.official.resolve(), args.eval_network, args.weight, args.low, args.high,
                                 args.result_dir, args.report)

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # still closes the workers
    why = official_missing(args.official)
    if why:
        print(why)
        return 2
    set_single_thread()
    args.official = args.official.resolve()
    args.out = args.out.resolve()
    work = args.out / "work"
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    progress = open(args.out / "logs" / "progress.log", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        progress.write(line + "\n")
        progress.flush()

    alexnet = (args.alexnet or args.official.parent / "alexnet_standin.pth").resolve()
    result: dict[str, Any] = {
        "command": " ".join(["python", "scripts/compare_official.py", *(argv if argv is not None else sys.argv[1:])]),
        "official": str(args.official), "machine": machine_info(), "errors": [],
        "alexnet": str(alexnet), "alexnet_sha256": ensure_alexnet(alexnet),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("worker", "work", "report", "weight", "low", "high", "result_dir", "rest")},
    }
    env = worker_env(prepare_torch_home(work, alexnet))
    result["data"] = prepare_data(work, args.train_data.resolve(), args.eval_data.resolve(), args.eval_copies,
                                  args.pairs)
    for name in args.backbones:
        make_batches(work, name, args.batch or BACKBONES[name].batch, args.crop, max(args.equality_iters, 1),
                     args.seed + 17)
    log(f"data ready in {work}; out {args.out}")

    extra_env = dict(kv.split("=", 1) for kv in args.ours_env)
    args.ours_env_keys = sorted(extra_env)
    ours_cmd = [sys.executable, str(ENTRY), "--worker", "ours", "--work", str(work), "--crop", str(args.crop)]
    ours = Worker("ours", ours_cmd, env, REPO_ROOT, args.out / "logs" / "worker_ours.log")
    off = Worker("official", [args.official_python, str(ENTRY), "--worker", "official", "--official",
                              str(args.official), "--work", str(work), "--crop", str(args.crop)],
                 env, work, args.out / "logs" / "worker_official.log")
    workers = [ours, off]
    sides = [Side("official", off), Side("ours", ours, "default")]
    if args.fast_switches:
        sides.append(Side("ours_fast", ours, "fast", tuple(args.fast_switches)))
    profile_sides = [Side(f"ours_{v}", ours, v, tuple(sw)) for v, sw in
                     (("twopass", ["ssll.fused_student_forward=false"]),)] if "profile" in args.sections else []
    envs = {"official": env, "ours": env}
    if extra_env:
        ours_env = Worker("ours_env", ours_cmd, {**env, **extra_env}, REPO_ROOT,
                          args.out / "logs" / "worker_ours_env.log")
        workers.append(ours_env)
        sides.append(Side("ours_env", ours_env, "default"))
        envs["ours_env"] = {**env, **extra_env}
    try:
        info_o, info_f = ours.call("info"), off.call("info")
        result.update(torch=info_o["torch"], official_torch=info_f["torch"], official_commit=info_f["commit"],
                      ours_repo=info_o["repo"], ours_commit=info_o["commit"],
                      ours_uncommitted_files=info_o["uncommitted_files"])
        sections: list[tuple[str, Callable[[], Any]]] = [
            ("train", lambda: run_training(sides, args, log)),
            ("equality", lambda: run_equality(ours, off, args, work, log)),
            ("eval", lambda: run_eval(ours, args, work, envs, log)),
            ("profile", lambda: run_profile(sides + profile_sides, args, log)),
        ]
        for key, fn in sections:
            if key not in args.sections:
                continue
            try:
                result[{"train": "training"}.get(key, key)] = fn()
            except WorkerError as exc:
                log(f"{key} failed: {exc}")
                result["errors"].append(f"{key}: {exc}")
            (args.out / "compare_official.json").write_text(json.dumps(result, indent=1))
            (args.out / "compare_official.md").write_text(markdown(result))
    finally:
        for w in workers:
            w.close()
        progress.close()
    print(markdown(result))
    print(f"written: {args.out / 'compare_official.json'}, {args.out / 'compare_official.md'}")
    return 1 if result["errors"] else 0
