"""The official side: its trainer (``models.model.Retinol``), its loaders and its evaluation loop."""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .protocol import BACKBONES, Backbone, Stamped, intervals, profile_steps, set_single_thread
from .shims import ScalarRecorder, install_cpu_shims, loader_without_workers

# official loss group -> our term name (per loss class); the unpaired groups carry the ramp weight
OFFICIAL_TERMS: dict[tuple[str, str], str] = {
    ("supervised_loss", "ModifiedSSIMLoss"): "ssim",
    ("supervised_loss", "LPIPSLoss"): "lpips",
    ("paired_contrastive_loss", "ContrastiveLoss"): "pico_paired",
    ("unpaired_consist_loss", "MaskConsistencyLoss"): "consistency",
    ("unpaired_contrastive_loss", "ContrastiveLoss"): "pico_unpaired",
}
UNPAIRED_GROUPS = ("unpaired_consist_loss", "unpaired_contrastive_loss")
# the tag each official step passes to its loss_fn -> loss group
OFFICIAL_TAG_GROUP: dict[str, str] = {
    "Supervised": "supervised_loss",
    "Paired-student-GT": "supervised_loss",
    "Paired-contrastive": "paired_contrastive_loss",
    "Unpaired-student-teacher": "unpaired_consist_loss",
    "CutMix-feature": "cutmix_loss",
    "Unpaired-contrastive": "unpaired_contrastive_loss",
}


def read_official_json(path: Path) -> dict[str, Any]:
    """An official JSON config (``//`` comments allowed, as its own parser does)."""
    text = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
    return json.loads(text)


def official_epochs(official: Path, bb: Backbone) -> tuple[int, int]:
    """(finish epoch, semi start epoch) of the official SSLL config (the equality check runs at the finish epoch)."""
    t = read_official_json(official / "config" / f"{bb.official_prefix}_Contra.json")["train"]
    return int(t["finish_epoch"]), int(t["semi_start_epoch"])


def official_missing(path: Path | None) -> str | None:
    """One line saying why ``path`` is not a usable official checkout, or None."""
    if path is None:
        return "official SSLL code: pass --official PATH (a checkout of github.com/eezkni/CMT)"
    if not (path / "models" / "model.py").is_file() or not (path / "config").is_dir():
        return (f"official SSLL code not found at {path} (expected a checkout of github.com/eezkni/CMT with "
                f"models/model.py and config/); nothing was run")
    return None


class OfficialSide:
    """The official trainer (``models.model.Retinol``) and its loaders, imported from ``official``."""

    def __init__(self, official: str, work: str, crop: int) -> None:
        set_single_thread()
        install_cpu_shims()
        self.root = Path(official).resolve()
        sys.path.insert(0, str(self.root))
        self.work, self.crop = Path(work), crop
        self.models: dict[str, Any] = {}
        self.backbone: str | None = None

    def info(self) -> dict[str, Any]:
        import torch

        head = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True, text=True)
        return {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "commit": head.stdout.strip() or None}

    def _options(self, bb: Backbone, mode: str, batch: int, run_dir: Path) -> Any:
        from utils.util import convert_dict_to_nonedict

        kind = "Baseline" if mode == "sup" else "Contra"
        opt = read_official_json(self.root / "config" / f"{bb.official_prefix}_{kind}.json")
        run_dir.mkdir(parents=True, exist_ok=True)
        opt["path"] = {"iqa_csv": str(run_dir / "iqa.csv"), "tensorboard_log_dir": str(run_dir / "tb"),
                       "results": str(run_dir / "results"), "checkpoint": str(run_dir / "checkpoint"),
                       "log_file": str(run_dir / "run.log"), "profile_path": None, "resume_state": None}
        ds = opt["datasets"]["train"]
        ds["which_dataset"]["paired_dataset"]["args"] = {"paired_path": str(self.work / "paired"),
                                                         "image_size": [self.crop, self.crop]}
        ds["which_dataset"]["unpaired_dataset"]["args"] = {"dir_list": [str(self.work / "unpaired")],
                                                           "image_size": [self.crop, self.crop]}
        ds["which_dataset"]["valid_datasets"] = {}
        for key in ("paired_args", "unpaired_args"):
            ds["dataloader"][key].update(batch_size=batch, num_workers=0, pin_memory=False)
        opt.update(phase="train", visual=False)
        return convert_dict_to_nonedict(opt)

    def _build(self, bb: Backbone, mode: str, batch: int, tag: str) -> dict[str, Any]:
        """The official Retinol trainer with its networks, losses, optimizer and loaders."""
        from utils.util import set_seed

        import data as odata
        import models as omodels
        from models.model import GradScaler, Retinol

        options = self._options(bb, mode, batch, self.work / "official_runs" / f"{bb.name}_{mode}_{tag}")
        set_seed(options["seed"])  # as run.py: seeds and deterministic algorithms
        if options["use_non_deterministic"]:
            import torch

            torch.use_deterministic_algorithms(False)
        paired_loader, unpaired_loader, _ = odata.create_dataloader(options)
        m = options["model"]
        net_opt = m["which_networks"][0]
        networks = [omodels.create_network(options, copy.deepcopy(net_opt), ema=False),
                    omodels.create_network(options, copy.deepcopy(net_opt), ema=True)]
        losses = {name: [omodels.create_loss(copy.deepcopy(o)) for o in lst]
                  for name, lst in m["which_losses"].items()}
        model_args = copy.deepcopy(m["which_model"]["args"])
        model = Retinol(networks, paired_loader, unpaired_loader, {}, losses, {}, model_args["optimizer"],
                        False, None, model_args.get("init_method"), options["path"]["tensorboard_log_dir"], options)
        model.summery_writer.close()
        model.summery_writer = ScalarRecorder()
        model.network.train()
        model.ema_network.train()
        scaler = GradScaler(enabled=bool(options["speed_up"]["enable_amp"]))
        return {"model": model, "options": options, "scaler": scaler, "losses": losses,
                "paired_loader": paired_loader, "unpaired_loader": unpaired_loader}

    def _epoch(self, entry: dict[str, Any], mode: str) -> int:
        return 1 if mode == "sup" else int(entry["options"]["train"]["semi_start_epoch"])

    def _step_fn(self, entry: dict[str, Any], mode: str, epoch: int) -> Callable[[], None]:
        model, options, scaler = entry["model"], entry["options"], entry["scaler"]

        def run() -> None:
            model.optimizer.zero_grad(set_to_none=True)  # as Retinol.train does per epoch
            if mode == "sup":
                model.supervise_train_step(options, epoch, scaler)
            else:
                model.semi_supervise_train_step(options, epoch, scaler)
        return run

    def _premade(self, index: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        b = torch.load(self.work / f"batches_{self.backbone}.pt", weights_only=True)
        x_p, gt, x_u = b["x_p"][index], b["gt"][index], b["x_u"][index]
        return ({"file_name": ["premade"] * x_p.shape[0], "student_input": x_p, "teacher_input": x_p,
                 "ground_truth": gt},
                {"file_name": ["premade"] * x_u.shape[0], "student_input": x_u, "teacher_input": x_u})

    def _feed(self, entry: dict[str, Any], feed: str, n: int, stamps: list[float] | None) -> None:
        model = entry["model"]
        if feed == "premade":
            paired, unpaired = self._premade()
            model.paired_loader = Stamped(lambda: iter(lambda: paired, None), n, stamps)
            model.unpaired_loader = Stamped(lambda: iter(lambda: unpaired, None), n, None)
        else:
            pl, ul = entry["paired_loader"], entry["unpaired_loader"]
            model.paired_loader = Stamped(lambda: _endless(pl), n, stamps)
            model.unpaired_loader = Stamped(lambda: _endless(ul), n, None)

    def setup(self, backbone: str, mode: str, batch: int, warmup: int) -> dict[str, Any]:
        if self.backbone != backbone:
            self.models.clear()
            gc.collect()
            self.backbone = backbone
        entry = self._build(BACKBONES[backbone], mode, batch, "timing")
        self.models[mode] = entry
        t0 = time.perf_counter()
        self._feed(entry, "premade", max(warmup, 1), None)
        self._step_fn(entry, mode, self._epoch(entry, mode))()
        return {"warmup_s": time.perf_counter() - t0,
                "params": sum(p.numel() for p in entry["model"].network.parameters())}

    def block(self, mode: str, feed: str, iters: int, warmup: int) -> list[float]:
        entry = self.models[mode]
        stamps: list[float] = []
        self._feed(entry, feed, warmup + iters, stamps)
        self._step_fn(entry, mode, self._epoch(entry, mode))()
        stamps.append(time.perf_counter())
        return intervals(stamps, warmup)

    def equality(self, backbone: str, mode: str, batch: int, iters: int, epoch: int,
                 init: str) -> dict[str, Any]:
        """Per-term losses (weighted as in the official total) from ``init`` weights and injected CutMix."""
        import torch

        import data as odata
        from models.model import get_current_consistency_weight

        self.backbone = backbone
        entry = self._build(BACKBONES[backbone], mode, batch, "equality")
        model, options = entry["model"], entry["options"]
        state = torch.load(init, weights_only=True)
        model.network.load_state_dict(state["student"], strict=True)
        model.ema_network.load_state_dict(state["teacher"], strict=True)
        model.global_step = 10 ** 6  # EMA decay at its plateau (the run is past its first steps)
        b = torch.load(self.work / f"batches_{backbone}.pt", weights_only=True)
        paired = [{"file_name": ["eq"] * batch, "student_input": b["x_p"][k], "teacher_input": b["x_p"][k],
                   "ground_truth": b["gt"][k]} for k in range(iters)]
        unpaired = [{"file_name": ["eq"] * batch, "student_input": b["x_u"][k], "teacher_input": b["x_u"][k]}
                    for k in range(iters)]
        mixes = iter([(b["x_c"][k], b["x_c"][k].clone(), b["mask"][k]) for k in range(iters)])
        model.paired_loader, model.unpaired_loader = paired, unpaired
        original_cutmix = odata.RandomCutMix
        odata.RandomCutMix = lambda *a, **k: next(mixes)
        try:
            self._step_fn(entry, mode, epoch)()
        finally:
            odata.RandomCutMix = original_cutmix
        cw = (get_current_consistency_weight(options["train"]["semi_loss_weight"],
                                             options["train"]["semi_loss_consistency_ramp_up"], epoch)
              if mode == "ssll" else 1.0)
        weights = {}
        for group, lst in entry["losses"].items():
            for loss in lst:
                weights[(group, type(loss).__name__)] = float(loss.weight_from_epoch(epoch)) * (
                    cw if group in UNPAIRED_GROUPS else 1.0)
        rows: dict[int, dict[str, float]] = {}
        for tag, value, step in model.summery_writer.rows:
            if not tag.startswith("[") or tag.endswith("Total Loss"):
                continue
            group_tag, cls = tag[1:].split("] ", 1)
            key = (OFFICIAL_TAG_GROUP.get(group_tag, group_tag), cls)
            if key in OFFICIAL_TERMS:
                rows.setdefault(step, {})[OFFICIAL_TERMS[key]] = value * weights[key]
        del entry, model
        gc.collect()
        return {"rows": [rows[s] for s in sorted(rows)], "consistency_weight": cw}

    def profile(self, mode: str, iters: int) -> dict[str, Any]:
        """Resource use of ``iters`` steps (no profiler), then a torch.profiler table of ``iters`` more."""
        entry = self.models[mode]

        def run(n: int) -> None:
            self._feed(entry, "premade", n, None)
            self._step_fn(entry, mode, self._epoch(entry, mode))()

        return profile_steps(run, iters)


def _endless(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


# ====================================================================== evaluation workers
class _Timed:
    """Wrap a callable and add its wall time to ``self.seconds``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def run_official_eval(official: Path, network: str, weight: str, low: str, high: str, result_dir: Path,
                      report: Path) -> int:
    """Run the official evaluation loop (``eval_one_dataset``) on one folder pair, metrics PSNR/SSIM/LPIPS."""
    import functools

    set_single_thread()
    install_cpu_shims()
    t0 = time.perf_counter()
    sys.path.insert(0, str(official))
    os.chdir(official)
    import torch.utils.data
    from utils.network_loader import load_network
    from utils.util import set_seed

    import common_utils.evaluation.eval as oeval
    from common_utils.evaluation import metrics as ometrics
    from data.general_dataset import PairedEvalDataset

    set_seed(oeval.SEED)
    result_dir.mkdir(parents=True, exist_ok=True)
    oeval.RESULT_DIR = str(result_dir)
    oeval.args = argparse.Namespace(save=False, dataset="LOLv2", network=network, weight=weight)
    oeval.get_dataset = lambda name: PairedEvalDataset(low, high)
    # the official loader starts 8 worker processes; one core is all this machine may use
    oeval.DataLoader = functools.partial(loader_without_workers, torch.utils.data.DataLoader)
    net = load_network(network, weight).cuda()
    net.eval()
    forward = _Timed(net)
    oeval.network = forward
    funcs = {"PSNR": _Timed(ometrics.PSNR()), "SSIM": _Timed(ometrics.SSIM()), "LPIPS": _Timed(ometrics.LPIPS())}
    values: dict[str, list[float]] = {k: [] for k in funcs}
    t1 = time.perf_counter()
    oeval.eval_one_dataset("LOLv2", network, funcs, values)
    loop = time.perf_counter() - t1
    report.write_text(json.dumps({"code": 0, "images": len(values["PSNR"]), "loop_s": loop,
                                  "forward_s": forward.seconds, "metrics_s": sum(f.seconds for f in funcs.values()),
                                  "in_process_s": time.perf_counter() - t0}))
    return 0
