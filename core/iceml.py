"""ICEML: semi-supervised dehazing with RtxICE-Net and ASMICE-Net (spec iceml.md §1, §4).

One run, two stages:

1. **Pre-training** (iterations ``[0, P)``) on synthetic pairs with known transmission and
   airlight: RtxICE-Net learns J_ret = I * Rtx(I) (L1 to the clear image, optionally L1 of the
   inverse illumination to clear/hazy), ASMICE-Net learns (t, a) and J_asm = (I - a)/max(t, 0.1) + a
   (L1 to the clear image, the transmission and the broadcast airlight).
2. **Inverse-consistency mutual learning** (iterations ``[P, end)``) on real unpaired hazy
   images: both networks run on the same I; Rtx's clean estimate is re-hazed with ASM's t and a,
   I_rec = J_ret t + a (1 - t), and must reproduce I; the two clean estimates agree in colour
   (chromaticity); a saturation term keeps colours natural; optional dark-channel priors on t and
   a; optional supervised synthetic batches as a safeguard (an addition, not in the paper).

The paper does not give loss weights, schedules or the unlabelled set: the defaults in
``core/schema.py`` (section ``iceml``) and ``config/iceml.yaml`` are a documented reconstruction.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from common_utils.checkpoint import ICEML_ENTRIES
from core import TRAINERS
from core.trainer import BaseTrainer
from foundation.errors import UserError
from losses import build_loss
from models.physics import dcp_estimate, haze_image


@TRAINERS.register("iceml")
class ICEMLTrainer(BaseTrainer):
    """Trains ``rtx`` (RtxICE-Net) and ``asm`` (ASMICE-Net) jointly; see the module docstring."""

    trained_networks = ("rtx", "asm")
    paired_example = "the synthetic pre-training set, e.g. haze_synthetic"

    #: checkpoint entry -> network (the inverse of the checkpoint reader's ICEML_ENTRIES)
    NETWORKS = {entry: net for net, entry in ICEML_ENTRIES.items()}

    def network_of(self, key: str) -> str:
        return self.NETWORKS[key]

    def network_args_of(self, key: str) -> dict[str, Any]:
        """ASMICE-Net's inversion clamp is ``iceml.t_min`` (recorded in each checkpoint's ``specs``)."""
        args = super().network_args_of(key)
        return {**args, "t_min": self.cfg.iceml.t_min} if key == "asm" else args

    def build_networks(self) -> dict[str, nn.Module]:
        if self.cfg.network.name.lower() not in ("rtxice-net", "asmice-net", "iceml"):
            raise UserError("the iceml trainer trains RtxICE-Net and ASMICE-Net: set network.name to RtxICE-Net")
        return {key: self.build_network_for(key) for key in self.NETWORKS}

    def build_teachers(self) -> dict[str, nn.Module]:
        return {}

    def pretrained_entry(self, key: str) -> str | None:
        """Both networks come from one checkpoint: the official CombinedModel or a framework ICEML run."""
        return None

    def build_losses(self) -> dict[str, nn.Module]:
        self.loss_weights = {}
        return {
            "l1": build_loss("l1"),
            "chroma": build_loss("chromaticity"),
            "saturation": build_loss("saturation", target=self.cfg.iceml.saturation_target),
            "inverse": build_loss("inverse_consistency"),
        }

    def build_data(self) -> None:
        """The base streams (synthetic pairs, label budget, validation) plus the real hazy images."""
        super().build_data()
        d, c = self.cfg.data, self.cfg.iceml
        self.pretrain_iters = c.pretrain_iters if c.pretrain_iters is not None else (
            (c.pretrain_epochs or 0) * self.iters_per_epoch)
        extra = {"extra_files": self.withheld_inputs} if self.withheld_inputs and d.unlabelled_to_pool else {}
        self.unpaired_set = self._dataset(d.unpaired, **extra) if d.unpaired.type else None
        if self.unpaired_set is not None:
            self.check_stream_size("unpaired", self.unpaired_set)
        if self.total_iters > self.pretrain_iters and self.unpaired_set is None:
            raise UserError("the mutual-learning stage needs data.unpaired (real hazy images without ground truth)")
        if self.pretrain_iters > self.total_iters:
            self.log.warning(f"this run ends at iteration {self.total_iters}, inside its pre-training stage "
                             f"({self.pretrain_iters} iterations, iceml.pretrain_iters/pretrain_epochs): mutual "
                             f"learning never runs; raise train.iters above {self.pretrain_iters}, or set "
                             f"iceml.pretrain_iters={self.total_iters} for a stage-1-only run")

    def lr_factor(self, step: int) -> float:
        """Cosine within each stage: from 1 in pre-training, from mutual_lr / lr in mutual learning."""
        s, c = self.cfg.scheduler, self.cfg.iceml
        base = self.cfg.optim.lr
        floor = s.eta_min / base if base > 0 else 0.0
        p = self.pretrain_iters
        if step < p:
            start, pos = 1.0, step / max(p, 1)
        else:
            start, pos = c.mutual_lr / base, (step - p) / max(self.total_iters - p, 1)
        if s.type == "constant":
            return start
        return floor + (start - floor) * 0.5 * (1 + math.cos(math.pi * min(pos, 1.0)))

    def start_streams(self) -> None:
        super().start_streams()
        self.unpaired_stream = None
        if self.unpaired_set is not None and self.iter < self.total_iters:
            # the unpaired stream counts mutual-learning iterations only
            self.unpaired_stream = self.make_stream(self.unpaired_set, self.batch_size("unpaired"),
                                                    start_iter=max(0, self.iter - self.pretrain_iters),
                                                    seed_offset=104729)

    @property
    def stage(self) -> str:
        return "pretrain" if self.iter < self.pretrain_iters else "mutual"

    def next_batches(self) -> dict[str, Any]:
        if self.stage == "pretrain":
            return next(self.paired_stream)
        batch = {"unpaired": next(self.unpaired_stream) if has_stage2_terms(self.cfg.iceml) else None}
        if self.cfg.iceml.w_supervised > 0:
            batch["paired"] = next(self.paired_stream)
        return batch

    # ------------------------------------------------------------------ losses
    def supervised_terms(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Stage-1 losses on a synthetic batch (hazy, clear, trans, A)."""
        c = self.cfg.iceml
        hazy, clear = self.to_input(batch["lq"]), batch["gt"]
        j_ret, lr_inv = _maps(self.wrapped["rtx"], hazy)
        j_asm, t, a = _maps(self.wrapped["asm"], hazy)
        terms = {"rtx_j": c.w_rtx_j * self.losses["l1"](j_ret, clear),
                 "asm_j": c.w_asm_j * self.losses["l1"](j_asm, clear)}
        if c.w_rtx_inv > 0:
            target = (clear / (hazy + 1e-8)).clamp(max=c.inv_target_clamp)
            terms["rtx_inv"] = c.w_rtx_inv * self.losses["l1"](lr_inv, target)
        # t and A are supervised where the synthetic set knows them (ITS-style files); a plain paired
        # set (SOTS: hazy/clear only) supervises the clean images alone
        trans = batch.get("trans")
        known = torch.isfinite(trans) if trans is not None else None
        if c.w_asm_t > 0 and known is not None and bool(known.any()):
            terms["asm_t"] = c.w_asm_t * (t - torch.nan_to_num(trans)).abs()[known].mean()
        A = batch.get("A")
        known_a = torch.isfinite(A).all(dim=1) if A is not None else None
        if c.w_asm_a > 0 and known_a is not None and bool(known_a.any()):
            target = torch.nan_to_num(A).view(-1, 3, 1, 1).expand_as(a)
            terms["asm_a"] = c.w_asm_a * (a - target).abs()[known_a].mean()
        return terms

    def mutual_terms(self, hazy: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-2 losses on real hazy images (no ground truth): :func:`stage2_terms` of both networks."""
        hazy = self.to_input(hazy)
        j_ret, _ = _maps(self.wrapped["rtx"], hazy)
        j_asm, t, a = _maps(self.wrapped["asm"], hazy)
        return stage2_terms(self.cfg.iceml, hazy, j_ret, j_asm, t, a, self.losses)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "unpaired" not in batch:
            terms = self.supervised_terms(batch)
        else:
            # every stage-2 weight 0 and a supervised batch: "stage 1 continued" at the stage-2 lr
            terms = self.mutual_terms(batch["unpaired"]["lq"]) if has_stage2_terms(self.cfg.iceml) else {}
            if "paired" in batch:
                sup = self.supervised_terms(batch["paired"])
                terms.update({f"sup_{k}": self.cfg.iceml.w_supervised * v for k, v in sup.items()})
        if not terms:
            raise UserError("iceml: every stage-2 weight and iceml.w_supervised are 0, so stage 2 has nothing "
                            "to train; set a stage-2 weight or w_supervised")
        self.backward(sum(terms.values()))
        return terms


STAGE2_WEIGHTS = ("w_inverse", "w_chroma", "w_mutual_l1", "w_saturation", "w_dcp_t", "w_dcp_a")


def has_stage2_terms(c: Any) -> bool:
    """Whether any stage-2 (unsupervised) loss weight of the ``iceml`` config section is non-zero."""
    return any(c[k] > 0 for k in STAGE2_WEIGHTS)


def stage2_terms(c: Any, hazy: torch.Tensor, j_ret: torch.Tensor, j_asm: torch.Tensor, t: torch.Tensor,
                 a: torch.Tensor, losses: dict[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """The weighted stage-2 (mutual-learning) loss terms of one hazy batch and the networks' outputs.

    The one definition of the stage-2 objective: the trainer minimises it and
    ``scripts/iceml_objective.py`` scores candidate outputs with it (the input itself, the
    stage-1 outputs, the ground truth). ``c`` is the ``iceml`` config section (weights
    ``w_inverse``, ``w_chroma``, ``w_mutual_l1``, ``w_saturation``, ``w_dcp_t``, ``w_dcp_a``,
    ``saturation_target``, ``t_min``, ``dcp_patch``); zero-weight terms are skipped.

    * inverse: MSE(J_ret t + a (1 - t), I) (Eq. 6, "Step 9 ... with I_rec mse");
    * chroma: L1 of the chromaticities of J_ret and J_asm (the mutual colour consistency);
    * mutual_l1: L1(J_ret, J_asm) (optional);
    * saturation: |S - target| of both outputs ("Step 8 with sat loss");
    * dcp_t, dcp_a: L1 of t and a to the dark-channel-prior estimates of I, computed with a
      ``dcp_patch`` window on the image as trained (the official unlabelled loader computes them
      at its 512 px resize with a 15 px window).
    """
    losses = losses or {"l1": nn.L1Loss(), "chroma": build_loss("chromaticity"),
                        "saturation": build_loss("saturation", target=c.saturation_target),
                        "inverse": build_loss("inverse_consistency")}
    terms: dict[str, torch.Tensor] = {}
    if c.w_inverse > 0:
        terms["inverse"] = c.w_inverse * losses["inverse"](haze_image(j_ret, t, a, t_min=c.t_min), hazy)
    if c.w_chroma > 0:
        terms["chroma"] = c.w_chroma * losses["chroma"](j_ret.clamp(0, 1), j_asm.clamp(0, 1))
    if c.w_mutual_l1 > 0:
        terms["mutual_l1"] = c.w_mutual_l1 * losses["l1"](j_ret, j_asm)
    if c.w_saturation > 0:
        terms["saturation"] = c.w_saturation * (losses["saturation"](j_ret) + losses["saturation"](j_asm))
    if c.w_dcp_t > 0 or c.w_dcp_a > 0:
        with torch.no_grad():
            a_dcp, t_dcp = dcp_estimate(hazy.float(), patch=c.dcp_patch)
        if c.w_dcp_t > 0:
            terms["dcp_t"] = c.w_dcp_t * losses["l1"](t, t_dcp.to(t.dtype))
        if c.w_dcp_a > 0:
            terms["dcp_a"] = c.w_dcp_a * losses["l1"](a, a_dcp.to(a.dtype).expand_as(a))
    return terms


def _maps(net: nn.Module, x: torch.Tensor):
    """``forward_maps`` through DDP / compile wrappers (DDP only hooks ``forward``)."""
    inner = getattr(net, "module", net)
    inner = getattr(inner, "_orig_mod", inner)
    if inner is net:
        return net.forward_maps(x)
    return _MapsCall.apply_through(net, inner, x)


class _MapsCall:
    """Run ``forward_maps`` of a wrapped network via its ``forward`` so DDP sees the call."""

    @staticmethod
    def apply_through(wrapper: nn.Module, inner: nn.Module, x: torch.Tensor):
        original = inner.forward
        inner.forward = inner.forward_maps  # type: ignore[method-assign]
        try:
            return wrapper(x)
        finally:
            inner.forward = original  # type: ignore[method-assign]
