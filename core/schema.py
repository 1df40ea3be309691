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
        # seconds a rank waits in a collective for the others before it reports a stalled rank and
        # stops (torchrun runs only); above the longest wait of a healthy run (rank 0 alone writing a
        # checkpoint or sample pictures)
        "ddp_timeout": F(NUM, 600, minimum=5),
        "output_clamp": F(str, "straight_through", choices=("straight_through", "hard")),
        "sample_images": F(int, 4, minimum=0),
        "threads": F((int, str), "auto"),
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
