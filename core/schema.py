"""The config schema: every valid key, its type and default.

Sections are nested dicts; leaves are :class:`Field`; ``FREE`` marks a mapping whose keys are
checked elsewhere (constructor arguments); :class:`ListOf` is a list of sub-sections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common_utils.evaluation.protocols import AUTO, PROTOCOLS


@dataclass(frozen=True)
class Field:
    """One config value: allowed types, default, whether None is allowed, allowed choices, and for
    numbers the smallest value allowed (``minimum``, inclusive) or a strict lower bound (``above``)
    and the largest (``maximum``, inclusive)."""

    types: tuple[type, ...]
    default: Any = None
    optional: bool = False
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class ListOf:
    """A list whose items follow ``schema``; a bare string item means ``{shorthand: item}``."""

    schema: dict[str, Any]
    shorthand: str | None = None
    default: tuple[dict[str, Any], ...] = ()


FREE = object()


def F(types: type | tuple[type, ...], default: Any = None, optional: bool = False, required: bool = False,
      choices: tuple[Any, ...] = (), minimum: float | None = None, above: float | None = None,
      maximum: float | None = None) -> Field:
    """Shorthand constructor for :class:`Field`."""
    t = types if isinstance(types, tuple) else (types,)
    return Field(t, default, optional or default is None and not required, required, choices, minimum, above,
                 maximum)


#: seeds feed numpy (32-bit), torch and SeedSequence; a rank or stream offset is added to them
SEED_MAX = 2 ** 31 - 1


def SEED(default: int | None = 0) -> Field:
    """A seed: an integer from 0 to :data:`SEED_MAX` (a negative one fails in numpy, a huge one overflows)."""
    return F(int, default, minimum=0, maximum=SEED_MAX)


NUM = (int, float)

DATASET = {
    "type": F(str, None),
    "args": FREE,
    "batch_size": F(int, None, minimum=1),
}

EVAL_DATASET = {
    "name": F(str, required=True),
    "type": F(str, None),
    "args": FREE,
}

LOSS = {
    "name": F(str, required=True),
    "weight": F(NUM, 1.0),
    "args": FREE,
}

BASE_SCHEMA: dict[str, Any] = {
    "name": F(str, required=True),
    "seed": SEED(),
    "trainer": F(str, "supervised"),
    "output_root": F(str, "experiments"),
    "device": F(str, "auto"),
    "demo_data": {
        "root": F(str, None),
        "seed": SEED(),
        "auto_create": F(bool, False),
        "kind": F(str, "lowlight", choices=("lowlight", "haze", "all")),
    },
    "network": {
        "name": F(str, required=True),
        "args": FREE,
        "init": F(str, None, choices=("normal", None)),
    },
    "pretrained": {
        "path": F(str, None),
        "teacher_from": F(str, "teacher", choices=("teacher", "student")),
    },
    "data": {
        "paired": DATASET,
        "unpaired": DATASET,
        "val": DATASET,
        "num_workers": F(int, 2, minimum=0),
        "pin_memory": F(bool, True),
        "prefetch_factor": F(int, 2, minimum=1),
        "batch_size": F(int, 4, minimum=1),
        "labelled_pairs": F(int, None, minimum=1),
        "label_split_seed": SEED(None),
        "unlabelled_to_pool": F(bool, True),
    },
    "optim": {
        "type": F(str, "adamw", choices=("adamw", "adam")),
        "lr": F(NUM, 2e-4, above=0),
        "betas": F(list, [0.9, 0.999]),
        "eps": F(NUM, 1e-8, above=0),
        "weight_decay": F(NUM, 0.0, minimum=0),
    },
    "scheduler": {
        "type": F(str, "cosine", choices=("cosine", "constant")),
        "period_epochs": F(int, None, minimum=1),
        "eta_min": F(NUM, 1e-6, minimum=0),
        "by_epoch": F(bool, True),
        "warmup_iters": F(int, 0, minimum=0),
    },
    "train": {
        "epochs": F(int, None, minimum=1),
        "iters": F(int, None, minimum=1),
        "iters_per_epoch": F(int, None, minimum=1),
        "log_every": F(int, 20, minimum=1),
        "val_every": F(int, None, minimum=1),
        "val_every_epochs": F(int, None, minimum=1),
        "save_every": F(int, None, minimum=1),
        "keep_last": F(int, 3, minimum=1),
        "amp": F(str, "off", choices=("off", "fp16", "bf16")),
        "tf32": F(bool, False),
        "grad_clip": F(NUM, None, above=0),
        "channels_last": F(bool, False),
        "compile": F(bool, False),
        "deterministic": F(bool, False),
        "max_nonfinite": F(int, 5, minimum=1),
        "ema_decay": F(NUM, 0.99, optional=True, minimum=0),
        "find_unused_parameters": F(bool, False),
        "ddp_timeout": F(NUM, 600, minimum=5),
        "output_clamp": F(str, "straight_through", choices=("straight_through", "hard")),
        "sample_images": F(int, 4, minimum=0),
        "threads": F((int, str), "auto"),
        # recompute each block's activations in backward instead of keeping them (less memory, more
        # time; the same gradients); for networks with supports_grad_checkpoint (models/grad_checkpoint.py)
        "grad_checkpoint": F(bool, False),
    },
    # experiment trackers beside TensorBoard (core/tracking.py); each optional, off by default
    "logging": {
        "mlflow": {
            "enabled": F(bool, False),
            # None: sqlite:///<output_root>/mlruns/mlflow.db, artifacts in <output_root>/mlruns/artifacts
            "tracking_uri": F(str, None),
            "experiment": F(str, None),  # None: the run's name
        },
        "wandb": {
            "enabled": F(bool, False),
            "project": F(str, None),  # None: the run's name
            "entity": F(str, None),
            "mode": F(str, "offline", choices=("offline", "online")),
            "dir": F(str, None),  # None: the run folder's logs/ (W&B writes logs/wandb/)
        },
    },
    "losses": ListOf(LOSS, shorthand="name"),
    "validation": {
        # None: the SSIM of the validation set's protocol (common_utils/evaluation/protocols.py)
        "ssim": F(str, None, choices=("y", "rgb", "piq", None)),
        "lpips": F(bool, False),
        "max_images": F(int, None, minimum=1),
        "watch": F(str, "psnr", choices=("psnr", "ssim", "lpips")),
    },
    "eval": {
        "after_train": F(bool, True),
        "datasets": ListOf(EVAL_DATASET, shorthand="name"),
        "data_root": F(str, None),
        # auto: each set with the protocol its paper scores it with (its layout's); ssim / resize
        # (None: the protocol's) override it for every set
        "protocol": F(str, AUTO, choices=(AUTO, *PROTOCOLS)),
        "ssim": F(str, None, choices=("y", "rgb", "piq", None)),
        "lpips": F(bool, True),
        "fast": F(bool, False),
        "checkpoint": F(str, "best", choices=("best", "last")),
        "resize": F(int, None, minimum=1),
        "tile": F(int, None, minimum=1),
        "tile_overlap": F(int, 32, minimum=0),
    },
    "ssll": {
        "semi_start_epoch": F(int, None, minimum=1),
        "curriculum_epochs": F(int, None, minimum=1),
        "ramp_epochs": F(int, 350, minimum=0),
        "semi_weight": F(NUM, 1.0),
        "lambda_p": F(NUM, 0.1),
        "gamma_p": F(NUM, 10.0),
        "margin_p": F(NUM, -0.25),
        # the unpaired terms: losses called as loss(student_out, teacher_out, input, mask), each
        # times its weight and the ramp w(e); default: the paper's L_con + 0.1 PICo(..., BA(x_c))
        "unpaired_losses": ListOf(LOSS, shorthand="name", default=(
            {"name": "consistency", "weight": 1.0},
            {"name": "pico_unpaired", "weight": 0.1, "args": {"gamma": 10.0, "margin": 0.25}})),
        "cutmix_sigma": F(NUM, 1.0),
        "cutmix_min": F(NUM, 0.1),
        "cutmix_max": F(NUM, 0.9),
        "official_unseeded_cutmix": F(bool, False),
        "official_lpips_range": F(bool, False),
        "fused_student_forward": F((str, bool), "auto", choices=("auto", True, False)),
    },
    "iceml": {
        "pretrain_epochs": F(int, None),
        "pretrain_iters": F(int, None, minimum=0),
        "mutual_lr": F(NUM, 2e-5, above=0),
        "w_rtx_j": F(NUM, 1.0),
        "w_rtx_inv": F(NUM, 0.0),
        "inv_target_clamp": F(NUM, 10.0),
        "w_asm_j": F(NUM, 1.0),
        "w_asm_t": F(NUM, 0.5),
        "w_asm_a": F(NUM, 0.5),
        "w_inverse": F(NUM, 1.0),
        "w_chroma": F(NUM, 1.0),
        "w_mutual_l1": F(NUM, 0.0),
        "w_saturation": F(NUM, 0.1),
        "saturation_target": F(NUM, 0.5),
        "w_dcp_t": F(NUM, 0.0),
        "w_dcp_a": F(NUM, 0.0),
        "dcp_patch": F(int, 15, minimum=1),
        "w_supervised": F(NUM, 0.0),
        "t_min": F(NUM, 0.1, above=0),
    },
}


#: config sections that belong to one trainer: setting them for another is an error
TRAINER_SECTIONS = {"ssll": "mean_teacher", "iceml": "iceml"}


def schema_for(trainer: str) -> dict[str, Any]:
    """The schema of ``trainer``: the common sections and its own (see :data:`TRAINER_SECTIONS`)."""
    return {k: v for k, v in BASE_SCHEMA.items() if TRAINER_SECTIONS.get(k, trainer) == trainer}


#: keys that only some trainers read (every other key is read by every trainer, or by its section's
#: owner in :data:`TRAINER_SECTIONS`); a subtree is named by its section or list key
KEY_READ_BY: dict[str, tuple[str, ...]] = {
    "losses": ("supervised", "mean_teacher"),
    "pretrained.teacher_from": ("supervised", "mean_teacher"),
    "data.unpaired": ("mean_teacher", "iceml"),
    "data.unlabelled_to_pool": ("mean_teacher", "iceml"),
    "scheduler.period_epochs": ("supervised", "mean_teacher"),
    "scheduler.by_epoch": ("supervised", "mean_teacher"),
    "scheduler.warmup_iters": ("supervised", "mean_teacher"),
    "train.ema_decay": ("supervised", "mean_teacher"),
    "train.output_clamp": ("supervised", "mean_teacher"),
}

#: one line of meaning per key (``docs/config_reference.md`` is generated from the schema and this;
#: ``tests/core/test_config_reference.py`` fails when a key has none or the committed page is stale)
KEY_DOCS: dict[str, str] = {
    "name": "run name: the run folder is `<output_root>/<name>/`",
    "seed": "seed of the network initialisation, data order, augmentations, CutMix draws and label split",
    "trainer": "the trainer that runs the config: `supervised`, `mean_teacher` (SSLL) or `iceml`",
    "output_root": "folder that holds the run folders (relative paths: from the repository root)",
    "device": "`auto` (the GPU when there is one, under torchrun the LOCAL_RANK one), `cpu`, `cuda`, `cuda:N`, "
              "`mps`; a device that is not there is an error",
    "demo_data.root": "folder of the generated demo data (default `demo_data/`)",
    "demo_data.seed": "seed of the demo-data synthesis",
    "demo_data.auto_create": "make the demo data before training when it is not there yet",
    "demo_data.kind": "which demo data to make: low-light pairs, synthetic haze, or both",
    "network.name": "registered network (`Restormer`, `NAFNet`, `UNet`, `LLFormer`, `RetinexFormer`, `MIRNet`, "
                    "`CIDNet`, `RtxICE-Net`, `ASMICE-Net`)",
    "network.args": "constructor arguments of the network (checked against its signature; default: the paper's "
                    "configuration)",
    "network.init": "`normal`: N(0, 0.02) weights and zero biases on conv/linear layers (the SSLL "
                    "`init_method: normal`); empty: the network's own initialisation",
    "pretrained.path": "checkpoint whose weights the networks start from (no optimizer state: a new run, unlike "
                       "`--resume`)",
    "pretrained.teacher_from": "which network of `pretrained.path` the EMA teacher starts from",
    "data.paired.type": "dataset type of the paired training set (docs/datasets.md); ICEML: the stage-1 "
                        "synthetic pairs",
    "data.paired.args": "arguments of that dataset type (checked against its constructor)",
    "data.paired.batch_size": "batch size of the paired stream per process (empty: `data.batch_size`)",
    "data.unpaired.type": "dataset type of the unpaired pool (SSLL: low-light images without ground truth; "
                          "ICEML stage 2: real hazy images)",
    "data.unpaired.args": "arguments of that dataset type",
    "data.unpaired.batch_size": "batch size of the unpaired stream per process (empty: the paired one)",
    "data.val.type": "dataset type of the validation set (empty: no validation)",
    "data.val.args": "arguments of that dataset type",
    "data.val.batch_size": "not used: validation scores whole images one at a time",
    "data.num_workers": "data-loading worker processes of every training stream, validation and the final "
                        "evaluation",
    "data.pin_memory": "pinned host memory for the loaders (CUDA only)",
    "data.prefetch_factor": "batches each loader worker prepares ahead",
    "data.batch_size": "batch size per process of every stream that sets none",
    "data.labelled_pairs": "keep this many pairs of `data.paired` (a seeded choice); the rest lose their ground "
                           "truth (empty: all pairs)",
    "data.label_split_seed": "seed of the `data.labelled_pairs` choice (empty: `seed`)",
    "data.unlabelled_to_pool": "with `data.labelled_pairs`: the inputs of the withheld pairs join the unpaired "
                               "pool",
    "optim.type": "optimizer",
    "optim.lr": "learning rate (ICEML: of stage 1; stage 2 uses `iceml.mutual_lr`)",
    "optim.betas": "Adam betas",
    "optim.eps": "Adam epsilon",
    "optim.weight_decay": "weight decay (decoupled for `adamw`)",
    "scheduler.type": "`cosine` annealing to `eta_min`, or a `constant` learning rate",
    "scheduler.period_epochs": "length of the cosine period in epochs (empty: the whole run)",
    "scheduler.eta_min": "the learning rate the cosine ends at",
    "scheduler.by_epoch": "the cosine steps once per epoch (as the SSLL recipe) instead of every iteration",
    "scheduler.warmup_iters": "linear warm-up over this many iterations before the schedule",
    "train.epochs": "length of the run in epochs of `train.iters_per_epoch` iterations (`train.iters` wins)",
    "train.iters": "length of the run in iterations (optimizer steps); overrides `train.epochs`",
    "train.iters_per_epoch": "iterations that make one epoch (empty: whole batches of the paired set per "
                             "process); every epoch-based key counts in these",
    "train.log_every": "log the mean loss terms every this many iterations",
    "train.val_every": "validate every this many iterations (`train.val_every_epochs` if empty; no validation "
                       "if both are empty)",
    "train.val_every_epochs": "validate every this many epochs",
    "train.save_every": "write `last.pth` every this many iterations (empty: at each validation, else once an "
                        "epoch)",
    "train.keep_last": "how many of the latest training states are kept as `iter_*.pth` hard links of `last.pth` (1: "
                       "only `last.pth`); weights files `net_*_iter_*.pth` that no kept state, `last.pth` or "
                       "`best.pth` names are deleted",
    "train.amp": "mixed precision: `fp16` (with a gradient scaler on CUDA) or `bf16`",
    "train.tf32": "TF32 matrix products and convolutions on CUDA",
    "train.grad_clip": "clip the gradient norm to this value (empty: no clipping)",
    "train.channels_last": "channels-last memory format for networks and inputs",
    "train.compile": "`torch.compile` the trained networks",
    "train.deterministic": "deterministic algorithms (slower; cuDNN benchmark off)",
    "train.max_nonfinite": "stop after this many non-finite losses in a row (each one skips its step)",
    "train.ema_decay": "decay of the EMA teacher (empty: no teacher; the mean_teacher trainer needs one)",
    "train.find_unused_parameters": "DDP `find_unused_parameters` for networks whose forward skips parameters",
    "train.ddp_timeout": "seconds a rank waits for the others in a collective before it reports a stalled rank "
                         "and stops (torchrun only); above the longest wait of a healthy run (rank 0 alone "
                         "writing a checkpoint or sample pictures)",
    "train.output_clamp": "how student outputs are clamped to [0, 1] before the losses: `straight_through` "
                          "passes the gradient on, `hard` is the official `torch.clamp`",
    "train.sample_images": "validation images drawn as input | networks | ground truth at each validation",
    "train.threads": "torch compute threads: `auto` = usable cores minus `data.num_workers`, at least 1 (an "
                     "explicit OMP_NUM_THREADS wins), or a number",
    "train.grad_checkpoint": "recompute the activations of the repeated blocks in the backward pass (Restormer, "
                             "LLFormer, MIRNet): less memory per step for more time; other networks refuse it",
    "logging.mlflow.enabled": "also log scalars, the resolved config, sample images and the summary to MLflow "
                              "(optional package; a resumed run continues the same MLflow run)",
    "logging.mlflow.tracking_uri": "MLflow store; default `sqlite:///<output_root>/mlruns/mlflow.db`",
    "logging.mlflow.experiment": "MLflow experiment name; default the run's name",
    "logging.wandb.enabled": "also log the same to Weights & Biases (optional package; resumed runs continue "
                             "the same W&B run)",
    "logging.wandb.project": "W&B project; default the run's name",
    "logging.wandb.entity": "W&B entity (user or team); default the account's",
    "logging.wandb.mode": "`offline` (no network: files under `dir`, `wandb sync` later) or `online`",
    "logging.wandb.dir": "where W&B writes; default the run folder's `logs/`",
    "losses": "the image losses between the clamped output and the ground truth, summed with their weights",
    "losses[].name": "registered loss (`l1`, `ssim`, `lpips`, ...)",
    "losses[].weight": "weight of the term",
    "losses[].args": "constructor arguments of the loss",
    "validation.ssim": "SSIM variant: `y` (Y channel, pyiqa style), `rgb`, or `piq` (the ICEML evaluation's)",
    "validation.lpips": "also score LPIPS at validation (needs the AlexNet weights)",
    "validation.max_images": "score at most this many validation images (empty: all)",
    "validation.watch": "the metric whose best value picks `best.pth`",
    "eval.after_train": "evaluate on `eval.datasets` when training ends (`run.py --no-eval` skips it)",
    "eval.datasets": "the final evaluation's sets: names of dataset layouts (`LOL-v1`, `SOTS-indoor`, ...) "
                     "or `{name, type, args}`",
    "eval.datasets[].name": "a dataset layout name, or the label of a `type` dataset",
    "eval.datasets[].type": "a dataset type (then `args` say where the images are)",
    "eval.datasets[].args": "arguments of that dataset type",
    "eval.data_root": "data root of the named layouts (empty: $SSIR_DATA_ROOT, config/datasets.yaml, "
                      "`datasets/`)",
    "eval.protocol": "metric protocol of the final evaluation: `auto` = each set's own (data/layouts.py: `iceml` "
                     "for RICE-I and SOTS-outdoor, `paper` else), or one name for every set",
    "eval.ssim": "SSIM variant of the final evaluation",
    "eval.lpips": "score LPIPS in the final evaluation (unavailable, not guessed, without the AlexNet weights)",
    "eval.fast": "autocast inference in the final evaluation",
    "eval.checkpoint": "`best` (`best.pth` when validation wrote one, else `last.pth`) or `last`",
    "eval.resize": "resize inputs and ground truth to N x N before inference (the ICEML protocol: 1024)",
    "eval.tile": "tiled inference with this tile size (empty: tiles only above 2048x2048 pixels)",
    "eval.tile_overlap": "overlap between tiles in pixels",
    "ssll.semi_start_epoch": "first epoch of the semi-supervised phase (empty: paired training only)",
    "ssll.curriculum_epochs": "epoch at which the CutMix paired share reaches its smallest mean (empty: "
                              "`scheduler.period_epochs`, else the whole run)",
    "ssll.ramp_epochs": "length R of the ramp w(e) of the unpaired terms, in epochs",
    "ssll.semi_weight": "the ramp's final weight",
    "ssll.lambda_p": "weight of the paired PICo term",
    "ssll.gamma_p": "gamma of the paired PICo term",
    "ssll.margin_p": "margin of the paired PICo term",
    "ssll.unpaired_losses": "the unpaired terms, each called as loss(student_out, teacher_out, input, mask), "
                            "times its weight and w(e)",
    "ssll.unpaired_losses[].name": "registered loss (`consistency`, `pico_unpaired`, ...)",
    "ssll.unpaired_losses[].weight": "weight of the term",
    "ssll.unpaired_losses[].args": "constructor arguments of the loss",
    "ssll.cutmix_sigma": "standard deviation of the CutMix area ratio around its curriculum mean",
    "ssll.cutmix_min": "smallest CutMix area ratio",
    "ssll.cutmix_max": "largest CutMix area ratio",
    "ssll.official_unseeded_cutmix": "draw CutMix boxes unseeded, as the official code (not resumable)",
    "ssll.official_lpips_range": "feed [0, 1] images to the LPIPS loss, as the official code (it expects "
                                 "[-1, 1])",
    "ssll.fused_student_forward": "one student pass over paired and mixed batches (`auto`: on CUDA only)",
    "iceml.pretrain_epochs": "length of stage 1 (synthetic pairs) in epochs, when `iceml.pretrain_iters` is "
                             "empty",
    "iceml.pretrain_iters": "length of stage 1 in iterations; stage 2 (mutual learning) runs the rest",
    "iceml.mutual_lr": "learning rate at the start of stage 2",
    "iceml.w_rtx_j": "stage 1: weight of L1(J_ret, clear)",
    "iceml.w_rtx_inv": "stage 1: weight of L1 of RtxICE-Net's inverse illumination to clear/hazy",
    "iceml.inv_target_clamp": "largest value of the clear/hazy target of `iceml.w_rtx_inv`",
    "iceml.w_asm_j": "stage 1: weight of L1(J_asm, clear)",
    "iceml.w_asm_t": "stage 1: weight of L1 of the transmission map, where the data knows it",
    "iceml.w_asm_a": "stage 1: weight of L1 of the airlight, where the data knows it",
    "iceml.w_inverse": "stage 2: weight of MSE(J_ret t + a (1 - t), I), the inverse consistency",
    "iceml.w_chroma": "stage 2: weight of the chromaticity agreement of the two clean images",
    "iceml.w_mutual_l1": "stage 2: weight of L1(J_ret, J_asm)",
    "iceml.w_saturation": "stage 2: weight of |saturation - target| of both outputs",
    "iceml.saturation_target": "the saturation that term aims at",
    "iceml.w_dcp_t": "stage 2: weight of L1 of t to the dark-channel-prior estimate",
    "iceml.w_dcp_a": "stage 2: weight of L1 of a to the dark-channel-prior estimate",
    "iceml.dcp_patch": "window of the dark-channel prior, in pixels",
    "iceml.w_supervised": "stage 2: weight of stage-1 batches mixed in as a safeguard (0: none)",
    "iceml.t_min": "lower bound of t in J = (I - a) / max(t, t_min) + a",
}
